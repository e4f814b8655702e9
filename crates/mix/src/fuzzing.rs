//! What the fuzz targets in `fuzz/` run, and the default tests replay over the committed
//! corpus (`fuzz/corpus/mix_frames`, `fuzz/corpus/mix_record`): the frame reader of
//! `/mix/1.0.0` and of exit replies, and discovery records with their signature envelope.

use std::time::Duration;

use futures::executor::block_on;
use futures::io::Cursor;
use libp2p_identity::PeerId;
use mix_sphinx::PACKET_SIZE;

use crate::discovery::record::MixRecord;
use crate::protocol::{self, ReadRule};

/// Reads frames from `data` as a stream of `/mix/1.0.0` would, until it ends or fails, and
/// one exit reply by each rule. No frame is longer than the reader's limit.
pub fn frames(data: &[u8]) {
    // A packet, or a packet and a per-hop proof.
    for max in [PACKET_SIZE, PACKET_SIZE + 64] {
        let mut io = Cursor::new(data);
        let mut frames = 0;
        while let Ok(Some(frame)) =
            block_on(protocol::read_frame(&mut io, max, Duration::from_secs(5)))
        {
            assert!(frame.len() <= max, "a frame over the limit was read");
            frames += 1;
            assert!(frames <= data.len(), "more frames than bytes");
        }
    }
    for rule in [ReadRule::Exact(32), ReadRule::LengthPrefixed { max: 1024 }] {
        if let Ok(reply) = block_on(protocol::read_reply(&mut Cursor::new(data), rule)) {
            assert!(reply.len() <= 1024 + 10, "a reply over the limit was read");
        }
    }
}

/// Decodes `data` as a record and verifies it as a signed record stored for a fixed peer:
/// what decodes must encode to the same bytes' meaning, and a stranger's bytes never verify.
pub fn record(data: &[u8]) {
    if let Ok(record) = MixRecord::decode(data) {
        let again = MixRecord::decode(&record.encode()).expect("what decoded encodes and decodes");
        assert_eq!(again, record, "decode ∘ encode is the identity on decoded records");
    }
    let peer = PeerId::from_bytes(&[0x00, 0x02, 0x08, 0x01]).expect("an identity multihash");
    for now in [0, 1_800_000_000, u64::MAX] {
        let _ = MixRecord::verify(data, &peer, now);
    }
}

#[cfg(test)]
mod tests {
    /// Every committed corpus file through the fuzz targets' functions (stable toolchain).
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        for (target, run) in
            [("mix_frames", super::frames as fn(&[u8])), ("mix_record", super::record)]
        {
            let dir =
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/").to_owned() + target;
            let mut files = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
                run(&std::fs::read(entry.unwrap().path()).unwrap());
                files += 1;
            }
            assert!(files > 0, "{dir} is empty");
        }
    }
}
