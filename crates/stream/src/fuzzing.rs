//! What the fuzz targets in `fuzz/` run, and the default tests replay over the committed
//! corpus (`fuzz/corpus/stream_frame`): a frame's clear fields, and the items inside a frame
//! that authenticated (a peer that holds the stream's keys chooses them freely).

use crate::frame::{self, Items};

/// `data` as a whole frame and as the plaintext of one.
pub fn frame(data: &[u8]) {
    let _ = frame::split(data);
    // Under a key nobody used: authentication fails, nothing else happens.
    let _ = frame::open(&[7; 32], 0, data);
    let _ = frame::open_envelope(&[7; 32], data);
    if let Ok(items) = Items::decode(data) {
        let again = Items::decode(&items.encode()).expect("what decoded encodes and decodes");
        assert_eq!(again, items, "decode ∘ encode is the identity on decoded items");
    }
}

#[cfg(test)]
mod tests {
    /// Every committed corpus file through the fuzz target's function (stable toolchain).
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/stream_frame");
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
            super::frame(&std::fs::read(entry.unwrap().path()).unwrap());
            files += 1;
        }
        assert!(files > 0, "{dir} is empty");
    }
}
