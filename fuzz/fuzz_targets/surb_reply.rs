//! SURB handling on arbitrary input: parse a 734-byte SURB, build its reply packet, run it along
//! a fixed return path, and recover arbitrary reply payloads with fixed SURB secrets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mix_sphinx::{
    Action, AddressBlock, EphemeralSecret, Hop, MESSAGE_SIZE, NodeSecretKey, PACKET_SIZE, Packet,
    Padding, PayloadCipher, Route, SURB_SIZE, Surb, SurbId, SurbKey, WireFormat, message,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let cipher = if mode & 1 == 0 { PayloadCipher::Lioness } else { PayloadCipher::AesCtr };
    let format = WireFormat::new(cipher, Padding::Plain);
    let keys: Vec<NodeSecretKey> = (1..=3).map(|i| NodeSecretKey::from_bytes([i; 32])).collect();
    let hops = keys
        .iter()
        .map(|k| Hop { public_key: k.public_key(), address: AddressBlock::from_bytes([7; 94]) })
        .collect();
    let route = Route::new(hops, vec![1, 1]).unwrap();
    let (_, secrets) = route
        .surb_with_secret(&format, SurbId::from_bytes([9; 16]), SurbKey::from_bytes([5; 16]), &EphemeralSecret::from_bytes([3; 32]))
        .unwrap();

    if mode & 2 == 0 {
        // Arbitrary bytes as a reply packet that reached the initiator.
        let mut bytes = [0u8; PACKET_SIZE];
        let n = rest.len().min(PACKET_SIZE);
        bytes[..n].copy_from_slice(&rest[..n]);
        let mut packet = Packet::from_slice(&bytes).unwrap();
        if let Ok(m) = secrets.recover(&format, &mut packet) {
            let _ = message::decode_reply(format.padding(), m);
        }
    } else {
        // An arbitrary SURB as an exit receives it, used and carried along the return path.
        let mut surb_bytes = [0u8; SURB_SIZE];
        let n = rest.len().min(SURB_SIZE);
        surb_bytes[..n].copy_from_slice(&rest[..n]);
        let surb = Surb::from_bytes(&surb_bytes);
        let mut reply = [0u8; MESSAGE_SIZE];
        let tail = &rest[n..];
        let _ = message::encode_reply(format.padding(), 0, &tail[..tail.len().min(3000)], &mut reply);
        let mut packet = surb.reply_packet(&format, &reply);
        let _ = surb.first_hop().decode();
        for key in &keys {
            match key.process(&format, &mut packet) {
                Ok((_, Action::Forward { .. })) => continue,
                Ok((_, Action::Reply { .. })) => {
                    let _ = secrets.recover(&format, &mut packet);
                }
                _ => {}
            }
            break;
        }
    }
});
