//! Blocks back into stream order, and what is still missing.
//!
//! Blocks are rebuilt in whatever order their shards complete; a stream's bytes must come out
//! in block order. [`InOrder`] holds blocks that arrived ahead of a gap, within a bounded
//! window, and names the gaps so that the receiver can acknowledge what it has and ask for the
//! rest.

use std::collections::BTreeMap;

/// Why a block was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// The block is further ahead of the next expected one than the window allows.
    #[error("block {block} is beyond the window (next expected {next}, window {window})")]
    BeyondWindow {
        /// The block.
        block: u32,
        /// The next block expected.
        next: u32,
        /// The window.
        window: u32,
    },
}

/// Reorders a stream's blocks.
#[derive(Debug, Clone)]
pub struct InOrder {
    next: u32,
    window: u32,
    ahead: BTreeMap<u32, Vec<u8>>,
}

impl InOrder {
    /// Accepts blocks up to `window` ahead of the next one expected.
    pub fn new(window: u32) -> Self {
        Self { next: 0, window: window.max(1), ahead: BTreeMap::new() }
    }

    /// The next block expected: every block before it was released.
    pub fn next_expected(&self) -> u32 {
        self.next
    }

    /// Bytes held ahead of a gap.
    pub fn buffered_bytes(&self) -> usize {
        self.ahead.values().map(Vec::len).sum()
    }

    /// Takes block `block`; returns the data now releasable in order (possibly several
    /// blocks, possibly none). Blocks already released are ignored.
    pub fn push(&mut self, block: u32, data: Vec<u8>) -> Result<Vec<Vec<u8>>, OrderError> {
        if block < self.next {
            return Ok(Vec::new());
        }
        if block - self.next >= self.window {
            return Err(OrderError::BeyondWindow { block, next: self.next, window: self.window });
        }
        self.ahead.entry(block).or_insert(data);
        let mut out = Vec::new();
        while let Some(data) = self.ahead.remove(&self.next) {
            out.push(data);
            self.next += 1;
        }
        Ok(out)
    }

    /// The highest block held ahead of a gap.
    pub fn highest(&self) -> Option<u32> {
        self.ahead.keys().next_back().copied()
    }

    /// Blocks missing below the highest one received, at most `max` of them, lowest first.
    pub fn missing(&self, max: usize) -> Vec<u32> {
        let Some(&highest) = self.ahead.keys().next_back() else { return Vec::new() };
        (self.next..highest).filter(|b| !self.ahead.contains_key(b)).take(max).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_out_in_order_and_gaps_are_named() {
        let mut o = InOrder::new(8);
        assert_eq!(o.push(2, b"c".to_vec()), Ok(vec![]));
        assert_eq!(o.push(4, b"e".to_vec()), Ok(vec![]));
        assert_eq!(o.missing(10), vec![0, 1, 3]);
        assert_eq!(o.push(0, b"a".to_vec()), Ok(vec![b"a".to_vec()]));
        assert_eq!(o.push(1, b"b".to_vec()), Ok(vec![b"b".to_vec(), b"c".to_vec()]));
        assert_eq!(o.missing(10), vec![3]);
        assert_eq!(o.push(1, b"again".to_vec()), Ok(vec![]), "already released");
        assert_eq!(o.buffered_bytes(), 1);
        assert_eq!(o.push(3, b"d".to_vec()), Ok(vec![b"d".to_vec(), b"e".to_vec()]));
        assert_eq!(o.next_expected(), 5);
        assert!(o.missing(10).is_empty());
        assert_eq!(
            o.push(13, vec![]),
            Err(OrderError::BeyondWindow { block: 13, next: 5, window: 8 })
        );
        assert_eq!(o.push(12, vec![]), Ok(vec![]));
    }
}
