//! The receiving half of one direction: shards in, ordered bytes and acknowledgements out.
//!
//! Shards arrive in any order, some twice, some never. A block is rebuilt once `k` distinct
//! shards of it are in; rebuilt blocks are released in block order into the read buffer.
//! Blocks are accepted only within the window `[next, next + window - unread)`, where `unread`
//! counts released blocks the application has not read yet: a slow reader closes the window,
//! and the sender stops. Memory is bounded by the window times the largest block.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::coding::{self, BlockError, Coder};
use crate::frame::{Ack, COMPLETE, DATA_COMPRESSED, DATA_FIN, Data, MAX_ACK_BLOCKS};

/// Why a shard was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// Its block is beyond the receive window.
    #[error("block beyond the receive window")]
    BeyondWindow,
    /// It disagrees with its block's other shards, or its length with its block's.
    #[error("shard inconsistent with its block")]
    Inconsistent,
    /// Its block is after the last block of the stream.
    #[error("block after the end of the stream")]
    AfterEnd,
    /// The block it completed could not be rebuilt.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// It would complete a block while the stream holds its share of the node's memory in
    /// rebuilt blocks not read yet: refused, and sent again by the peer later.
    #[error("the stream holds its share of rebuilt bytes")]
    OverBudget,
}

struct Partial {
    k: u8,
    n: u8,
    flags: u8,
    len: u32,
    shards: Vec<Option<Vec<u8>>>,
    bitmap: u32,
}

impl Partial {
    fn held_bytes(&self) -> usize {
        self.shards.iter().flatten().map(Vec::len).sum()
    }
}

/// What a receiver did, for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Blocks rebuilt.
    pub blocks: u64,
    /// Blocks rebuilt with the help of parity (some data shard was missing).
    pub recovered: u64,
    /// Shards of blocks already complete, or repeated.
    pub duplicate_shards: u64,
    /// Bytes released to the application.
    pub bytes_read: u64,
    /// Shards taken (of any block, new or not).
    pub shards: u64,
    /// Blocks that were complete but numbered past the block that ended the stream: dropped,
    /// never read (an honest sender sends none).
    pub discarded_blocks: u64,
}

pub(crate) struct RecvHalf {
    window: u32,
    next: u32,
    partial: BTreeMap<u32, Partial>,
    /// Rebuilt blocks waiting for an earlier one.
    ready: BTreeMap<u32, (Vec<u8>, bool)>,
    /// Bytes in `ready`.
    ready_bytes: usize,
    /// Rebuilt bytes (`ready` and `readable`) past which no block is completed, unless
    /// none are held (see [`Self::set_rebuilt_limit`]).
    rebuilt_limit: usize,
    /// A block was refused for the limit since the last read that made room.
    over_budget: bool,
    readable: VecDeque<Vec<u8>>,
    /// Bytes of the front of `readable` already read.
    read_offset: usize,
    readable_bytes: usize,
    end: Option<u32>,
    eof: bool,
    /// Blocks completed since the last acknowledgement.
    unacked_blocks: u32,
    /// Since when something is not acknowledged that the sender needs to hear: a complete
    /// block, or a shard of one it already has (it missed our acknowledgement). Shards of
    /// blocks still incomplete wait for the next acknowledgement, which lists them.
    unacked_since: Option<Instant>,
    /// Reading opened a window that was half closed or more.
    window_update: bool,
    stats: RecvStats,
}

impl std::fmt::Debug for RecvHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvHalf")
            .field("next", &self.next)
            .field("partial", &self.partial.len())
            .field("readable", &self.readable_bytes)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl RecvHalf {
    pub(crate) fn new(window: u32) -> Self {
        Self {
            window: window.max(1),
            next: 0,
            partial: BTreeMap::new(),
            ready: BTreeMap::new(),
            ready_bytes: 0,
            rebuilt_limit: usize::MAX,
            over_budget: false,
            readable: VecDeque::new(),
            read_offset: 0,
            readable_bytes: 0,
            end: None,
            eof: false,
            unacked_blocks: 0,
            unacked_since: None,
            window_update: false,
            stats: RecvStats::default(),
        }
    }

    /// A half whose peer never sends (the acceptor of a message).
    pub(crate) fn finished() -> Self {
        let mut half = Self::new(1);
        half.eof = true;
        half.end = Some(0);
        half.next = 1;
        half
    }

    pub(crate) fn stats(&self) -> RecvStats {
        self.stats
    }

    /// Bytes held: shards of incomplete blocks, blocks waiting for an earlier one, and bytes
    /// not read yet.
    pub(crate) fn buffered_bytes(&self) -> usize {
        let partial: usize = self.partial.values().map(Partial::held_bytes).sum();
        partial + self.ready_bytes + self.readable_bytes
    }

    /// Caps the rebuilt bytes held (blocks waiting for an earlier one, and bytes not read).
    /// A shard sent as a few bytes can rebuild a block of [`coding::MAX_BLOCK_BYTES`]
    /// (compressed zeros), so shards alone do not bound them; a shard that would complete a
    /// block past the cap (at its rebuilt length) is refused and the peer sends it again
    /// later. A stream whose application has read everything always completes its next block
    /// in order, so it can always make progress.
    pub(crate) fn set_rebuilt_limit(&mut self, bytes: usize) {
        self.rebuilt_limit = bytes;
    }

    fn window_end(&self) -> u32 {
        let unread = self.readable.len() as u32;
        self.next.saturating_add(self.window.saturating_sub(unread))
    }

    /// Takes one shard.
    pub(crate) fn on_data(
        &mut self,
        now: Instant,
        data: Data,
        coder: &mut Coder,
    ) -> Result<(), ShardError> {
        self.stats.shards += 1;
        if data.block < self.next || self.ready.contains_key(&data.block) {
            // The sender resends: it missed our acknowledgement. Say it again (after the usual
            // delay, so that a burst of resent shards costs one acknowledgement).
            self.stats.duplicate_shards += 1;
            self.unacked_since.get_or_insert(now);
            return Ok(());
        }
        if self.end.is_some_and(|end| data.block > end) {
            return Err(ShardError::AfterEnd);
        }
        if data.block >= self.window_end() {
            return Err(ShardError::BeyondWindow);
        }
        if data.shard.len() != coding::shard_len(data.len as usize, data.k) {
            return Err(ShardError::Inconsistent);
        }
        let partial = self.partial.entry(data.block).or_insert_with(|| Partial {
            k: data.k,
            n: data.n,
            flags: data.flags,
            len: data.len,
            shards: vec![None; usize::from(data.n)],
            bitmap: 0,
        });
        if (partial.k, partial.n, partial.flags, partial.len)
            != (data.k, data.n, data.flags, data.len)
        {
            return Err(ShardError::Inconsistent);
        }
        let bit = 1u32 << data.index;
        if partial.bitmap & bit != 0 {
            self.stats.duplicate_shards += 1;
            return Ok(());
        }
        partial.bitmap |= bit;
        partial.shards[usize::from(data.index)] = Some(data.shard);
        if partial.bitmap.count_ones() < u32::from(partial.k) {
            return Ok(());
        }
        let mut partial = self.partial.remove(&data.block).expect("present");
        let missing_data = partial.shards[..usize::from(partial.k)].iter().any(Option::is_none);
        let coded =
            coder.decode(partial.k, partial.n, partial.len as usize, &mut partial.shards)?;
        let bytes = coding::unpack(coded, partial.flags & DATA_COMPRESSED != 0)?;
        // The next block in order counts only what waits for the application: the blocks
        // waiting for it would otherwise keep it out for good.
        let rebuilt = if data.block == self.next {
            self.readable_bytes
        } else {
            self.ready_bytes + self.readable_bytes
        };
        if rebuilt > 0 && rebuilt + bytes.len() > self.rebuilt_limit {
            // Counted at its real length, known only once rebuilt. The other shards stay;
            // this one is sent again, and a read that makes room says so at once.
            partial.bitmap &= !bit;
            partial.shards[usize::from(data.index)] = None;
            self.partial.insert(data.block, partial);
            self.over_budget = true;
            return Err(ShardError::OverBudget);
        }
        let fin = partial.flags & DATA_FIN != 0;
        if fin {
            self.end = Some(data.block);
            // Nothing after the end can complete, and what already did is never read.
            self.partial.retain(|b, _| *b < data.block);
            let before = self.ready.len();
            self.ready.retain(|b, _| *b < data.block);
            self.ready_bytes = self.ready.values().map(|(b, _)| b.len()).sum();
            self.stats.discarded_blocks += (before - self.ready.len()) as u64;
        }
        self.stats.blocks += 1;
        self.stats.recovered += u64::from(missing_data);
        self.unacked_blocks += 1;
        self.unacked_since.get_or_insert(now);
        self.ready_bytes += bytes.len();
        self.ready.insert(data.block, (bytes, fin));
        while let Some((bytes, fin)) = self.ready.remove(&self.next) {
            self.ready_bytes -= bytes.len();
            self.next += 1;
            if !bytes.is_empty() {
                self.readable_bytes += bytes.len();
                self.readable.push_back(bytes);
            }
            if fin {
                self.eof = true;
            }
        }
        Ok(())
    }

    /// Bytes ready to read.
    pub(crate) fn readable(&self) -> usize {
        self.readable_bytes
    }

    /// Reads into `buf`; returns how many bytes (0 with nothing ready, see [`Self::is_eof`]).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.readable.front() else { break };
            let chunk = &front[self.read_offset..];
            let take = chunk.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&chunk[..take]);
            n += take;
            self.read_offset += take;
            if self.read_offset == front.len() {
                // A sender held back by a closing window learns of the room at once.
                if self.readable.len() as u32 * 2 >= self.window {
                    self.window_update = true;
                }
                self.readable.pop_front();
                self.read_offset = 0;
            }
        }
        self.readable_bytes -= n;
        self.stats.bytes_read += n as u64;
        if n > 0 && self.over_budget {
            // The sender resends what was refused only when it hears, or at its next
            // retransmission timeout (which backs off to seconds).
            self.over_budget = false;
            self.window_update = true;
        }
        n
    }

    /// Every byte was read and the last block released.
    pub(crate) fn is_eof(&self) -> bool {
        self.eof && self.readable_bytes == 0
    }

    /// Complete blocks acknowledged together (a few, so the sender's window keeps moving).
    fn ack_every(&self) -> u32 {
        (self.window / 8).clamp(2, 4)
    }

    /// Whether an acknowledgement should go out now.
    pub(crate) fn ack_due(&self, now: Instant, delay: Duration) -> bool {
        self.window_update
            || self.unacked_blocks >= self.ack_every()
            || (self.eof && self.unacked_blocks > 0)
            || self.unacked_since.is_some_and(|t| now >= t + delay)
    }

    /// When an acknowledgement will be due, if one is pending.
    pub(crate) fn ack_deadline(&self, delay: Duration) -> Option<Instant> {
        self.unacked_since.map(|t| t + delay)
    }

    /// Whether anything is not acknowledged yet.
    pub(crate) fn ack_pending(&self) -> bool {
        self.unacked_since.is_some() || self.window_update || self.unacked_blocks > 0
    }

    /// The acknowledgement of what arrived (the frame fields are filled in by the caller).
    pub(crate) fn make_ack(&mut self) -> Ack {
        let mut blocks: Vec<(u32, u32)> = Vec::new();
        let mut partial = self.partial.iter().map(|(b, p)| (*b, p.bitmap)).peekable();
        let mut ready = self.ready.keys().map(|b| (*b, COMPLETE)).peekable();
        while blocks.len() < MAX_ACK_BLOCKS {
            let next = match (partial.peek(), ready.peek()) {
                (Some(p), Some(r)) if p.0 < r.0 => partial.next(),
                (Some(_), Some(_)) | (None, Some(_)) => ready.next(),
                (Some(_), None) => partial.next(),
                (None, None) => None,
            };
            let Some(entry) = next else { break };
            blocks.push(entry);
        }
        self.unacked_blocks = 0;
        self.unacked_since = None;
        self.window_update = false;
        Ack { next: self.next, window_end: self.window_end(), blocks, ..Ack::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(block: u32, bytes: &[u8], fin: bool) -> Data {
        let flags = if fin { DATA_FIN } else { 0 };
        let len = u32::try_from(bytes.len()).unwrap();
        Data { block, index: 0, k: 1, n: 1, flags, len, shard: bytes.to_vec() }
    }

    /// A block that completes before the block ending the stream, but is numbered after it,
    /// used to be released to the reader after the end.
    #[test]
    fn blocks_past_the_end_are_never_read() {
        let mut recv = RecvHalf::new(8);
        let mut coder = Coder::default();
        let now = Instant::now();
        recv.on_data(now, block(2, b" and after", false), &mut coder).unwrap();
        recv.on_data(now, block(1, b" end", true), &mut coder).unwrap();
        assert_eq!(recv.on_data(now, block(3, b"!", false), &mut coder), Err(ShardError::AfterEnd));
        recv.on_data(now, block(0, b"start", false), &mut coder).unwrap();
        let mut buf = [0u8; 64];
        let n = recv.read(&mut buf);
        assert_eq!(&buf[..n], b"start end");
        assert!(recv.is_eof());
        assert_eq!(recv.stats().discarded_blocks, 1);
        assert_eq!(recv.buffered_bytes(), 0);
    }

    fn compressed(block: u32, bytes: &[u8]) -> Data {
        let shard = zstd::bulk::compress(bytes, 1).unwrap();
        let len = u32::try_from(shard.len()).unwrap();
        Data { block, index: 0, k: 1, n: 1, flags: DATA_COMPRESSED, len, shard }
    }

    /// Rebuilt bytes are held to the limit at their rebuilt length: blocks out of order are
    /// refused past it (and taken when sent again once there is room), the next block in
    /// order is taken whatever waits for it, and a read after a refusal asks for an
    /// acknowledgement at once.
    #[test]
    fn rebuilt_bytes_stay_within_the_limit() {
        let mut recv = RecvHalf::new(32);
        recv.set_rebuilt_limit(coding::MAX_BLOCK_BYTES);
        let mut coder = Coder::default();
        let now = Instant::now();
        let small = vec![1u8; 10_000];
        // Compressed blocks count what they rebuild to, not the most they could.
        recv.on_data(now, compressed(2, &small), &mut coder).unwrap();
        recv.on_data(now, compressed(3, &small), &mut coder).unwrap();
        let big = vec![0u8; coding::MAX_BLOCK_BYTES - 15_000];
        assert_eq!(recv.on_data(now, compressed(4, &big), &mut coder), Err(ShardError::OverBudget));
        assert!(recv.buffered_bytes() < 30_000, "{}", recv.buffered_bytes());
        // The next in order is taken, and everything flows to the reader.
        recv.on_data(now, compressed(0, &big), &mut coder).unwrap();
        recv.on_data(now, compressed(1, &small), &mut coder).unwrap();
        assert_eq!(recv.readable(), big.len() + 3 * small.len());
        recv.window_update = false;
        // Unread, it holds block 4 out: reading makes room and says so.
        assert_eq!(recv.on_data(now, compressed(4, &big), &mut coder), Err(ShardError::OverBudget));
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(recv.read(&mut buf), big.len() + 3 * small.len());
        assert!(recv.window_update, "the sender hears of the room");
        recv.on_data(now, compressed(4, &big), &mut coder).unwrap();
        assert_eq!(recv.read(&mut buf), big.len());
    }
}
