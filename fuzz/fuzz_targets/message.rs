//! Decoding of m and of address blocks on arbitrary input. Decoding is strict (zero padding,
//! minimal lengths), so anything that decodes must re-encode to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mix_sphinx::{ADDRESS_SIZE, AddressBlock, MESSAGE_SIZE, Padding, message};

fuzz_target!(|data: &[u8]| {
    let mut m = [0u8; MESSAGE_SIZE];
    let n = data.len().min(MESSAGE_SIZE);
    m[..n].copy_from_slice(&data[..n]);
    for padding in [Padding::SeqNo, Padding::Plain] {
        if let Ok(decoded) = message::decode_forward(padding, &m) {
            let mut again = [0u8; MESSAGE_SIZE];
            let seqno = decoded.seqno.unwrap_or(0);
            if decoded.is_cover() {
                message::encode_cover(padding, seqno, decoded.body, &mut again).unwrap();
            } else {
                message::encode_forward(padding, seqno, decoded.codec, &decoded.surbs, decoded.body, &mut again)
                    .unwrap();
            }
            assert_eq!(again, m, "forward message does not round-trip");
        }
        if let Ok((body, seqno)) = message::decode_reply(padding, &m) {
            let mut again = [0u8; MESSAGE_SIZE];
            message::encode_reply(padding, seqno.unwrap_or(0), body, &mut again).unwrap();
            assert_eq!(again, m, "reply does not round-trip");
        }
    }
    if data.len() >= ADDRESS_SIZE {
        let block = AddressBlock::from_slice(&data[..ADDRESS_SIZE]).unwrap();
        if let Ok((addr, peer)) = block.decode() {
            assert_eq!(AddressBlock::encode(&addr, &peer).unwrap(), block, "address does not round-trip");
        }
    }
});
