//! Hop processing on arbitrary input. The first byte picks the wire format and whether the
//! rest is a raw packet or the contents of a packet forged to pass the MAC, which sends the
//! input through routing-block parsing, role detection, payload decryption and blinding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mix_sphinx::{
    BETA_SIZE, NodeSecretKey, PACKET_SIZE, PAYLOAD_SIZE, Packet, Padding, PayloadCipher,
    WireFormat, testing,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let cipher = if mode & 1 == 0 { PayloadCipher::Lioness } else { PayloadCipher::AesCtr };
    let format = WireFormat::new(cipher, Padding::Plain).with_max_path_len(3 + usize::from(mode >> 2) % 3);
    let key = NodeSecretKey::from_bytes([0x42; 32]);

    let mut bytes = [0u8; PACKET_SIZE];
    let n = rest.len().min(PACKET_SIZE);
    bytes[..n].copy_from_slice(&rest[..n]);
    let packet = if mode & 2 == 0 {
        Packet::from_slice(&bytes).ok()
    } else {
        let alpha: [u8; 32] = bytes[..32].try_into().unwrap();
        let routing: &[u8; BETA_SIZE] = bytes[32..32 + BETA_SIZE].try_into().unwrap();
        let payload: &[u8; PAYLOAD_SIZE] = bytes[PACKET_SIZE - PAYLOAD_SIZE..].try_into().unwrap();
        testing::authenticated_packet(&key, &alpha, routing, payload)
    };
    if let Some(mut packet) = packet {
        if let Ok(opened) = key.open(&format, &mut packet) {
            let _ = opened.replay_tag();
            let _ = opened.peel();
        }
    }
});
