//! The sending half of one direction: bytes in, shards out, until acknowledged.
//!
//! Written bytes wait in a bounded buffer until they fill a block, a flush or close asks for
//! them, or they have waited [`StreamConfig::coalesce`]. Each block is compressed (when that
//! helps), cut into `k` data shards plus parity and queued shard by shard. A block stays in
//! flight, shards and all, until the receiver acknowledges it; the receiver's bitmaps say which
//! shards arrived, so a block whose acknowledgement is overdue gets just the shards it still
//! needs, with fresh parity on top. At most `window` blocks are in flight, and never beyond the
//! window the receiver advertises: that is the flow control, and [`SendHalf::write`] takes
//! only what the buffer has room for.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::coding::{self, Coder, MAX_BLOCK_BYTES};
use crate::config::StreamConfig;
use crate::frame::{Ack, COMPLETE, DATA_COMPRESSED, DATA_FIN, Data};

struct Block {
    shards: Vec<Vec<u8>>,
    k: u8,
    flags: u8,
    len: u32,
    /// Shards the receiver reported.
    received: u32,
    /// Shards waiting in the send queue.
    queued: u32,
    /// When the first shard of its latest round (first send or resend) left.
    round_sent: Option<Instant>,
    /// Its latest round is queued and its first shard has not left yet.
    round_pending: bool,
    /// When its latest shard left.
    last_sent: Option<Instant>,
    /// Retransmission timeouts it took (each doubles its timeout).
    retries: u32,
    /// Rounds resent early, on evidence of loss (see [`SendHalf::on_ack`]).
    early: u32,
}

impl Block {
    fn n(&self) -> u8 {
        self.shards.len() as u8
    }
}

/// How long a block still short, sent before a block that arrived whole, may be waited for
/// before it counts as lost (see [`SendHalf::resend_lost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LossWait {
    /// Added to the round trip of the block that arrived: how much later than it a shard sent
    /// before it may arrive.
    pub(crate) reorder: Duration,
    /// The least wait from the block's last shard.
    pub(crate) floor: Duration,
}

/// Why a direction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unacknowledged(pub(crate) u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fin {
    Open,
    /// Close was asked for; the last block is not formed yet.
    Requested,
    /// The last block is formed.
    Sent(u32),
}

/// What a sender did, for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Bytes taken from the application.
    pub bytes_written: u64,
    /// Blocks formed.
    pub blocks: u64,
    /// Blocks whose input was compressed.
    pub compressed_blocks: u64,
    /// Shards handed out, first sends and resends.
    pub shards_sent: u64,
    /// Shards sent again.
    pub shards_resent: u64,
    /// Parity shards among the first sends.
    pub parity_shards: u64,
    /// Blocks that needed a retransmission (their first sends were not enough).
    pub blocks_retransmitted: u64,
}

pub(crate) struct SendHalf {
    shard_len: usize,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already formed into blocks.
    taken: usize,
    /// When the oldest unsent byte was written.
    waiting_since: Option<Instant>,
    flush: bool,
    fin: Fin,
    next_block: u32,
    acked_below: u32,
    peer_window_end: u32,
    in_flight: BTreeMap<u32, Block>,
    queue: VecDeque<(u32, u8)>,
    failed: Option<Unacknowledged>,
    /// Data shards of the latest full block (the loss decides).
    block_shards: u8,
    /// Doublings of the timeout that every block waits for, since the last round trip
    /// measured: Karn's backoff, kept across blocks (see [`SendHalf::handle_timeout`]).
    backoff: u32,
    /// The newest block known to have arrived on its only round: when its first shard left,
    /// and how long it took from its last shard to its acknowledgement.
    arrived: Option<(Instant, Duration)>,
    stats: SendStats,
}

impl std::fmt::Debug for SendHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendHalf")
            .field("buffered", &self.buffered())
            .field("in_flight", &self.in_flight.len())
            .field("acked_below", &self.acked_below)
            .finish_non_exhaustive()
    }
}

impl SendHalf {
    /// A sender whose frames carry shards of at most `shard_len` bytes.
    pub(crate) fn new(shard_len: usize, window: u32) -> Self {
        Self {
            shard_len: shard_len.max(1),
            buffer: Vec::new(),
            taken: 0,
            waiting_since: None,
            flush: false,
            fin: Fin::Open,
            next_block: 0,
            acked_below: 0,
            peer_window_end: window,
            in_flight: BTreeMap::new(),
            queue: VecDeque::new(),
            failed: None,
            block_shards: u8::MAX,
            backoff: 0,
            arrived: None,
            stats: SendStats::default(),
        }
    }

    /// A half that never sends (the opener of a message does not read, so its peer's half
    /// is this).
    pub(crate) fn finished() -> Self {
        let mut half = Self::new(1, 0);
        half.fin = Fin::Sent(0);
        half.next_block = 1;
        half.acked_below = 1;
        half
    }

    /// A round trip was measured without ambiguity (a frame's, see [`SendHalf::handle_timeout`]):
    /// blocks wait for the plain timeout again.
    pub(crate) fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    pub(crate) fn stats(&self) -> SendStats {
        self.stats
    }

    pub(crate) fn buffered(&self) -> usize {
        self.buffer.len() - self.taken
    }

    /// Takes as much of `data` as the buffer has room for.
    pub(crate) fn write(&mut self, now: Instant, data: &[u8], config: &StreamConfig) -> usize {
        if self.fin != Fin::Open {
            return 0;
        }
        let n = data.len().min(config.send_buffer.saturating_sub(self.buffered()));
        if n == 0 {
            return 0;
        }
        if self.taken > 0 && self.taken * 2 >= self.buffer.len() {
            self.buffer.drain(..self.taken);
            self.taken = 0;
        }
        self.buffer.extend_from_slice(&data[..n]);
        self.waiting_since.get_or_insert(now);
        self.stats.bytes_written += n as u64;
        n
    }

    /// Sends what is buffered without waiting for more.
    pub(crate) fn flush(&mut self) {
        if self.buffered() > 0 {
            self.flush = true;
        }
    }

    /// No more writes: what is buffered goes out, then the last block.
    pub(crate) fn finish(&mut self) {
        if self.fin == Fin::Open {
            self.fin = Fin::Requested;
        }
    }

    /// No more writes are taken.
    pub(crate) fn is_write_closed(&self) -> bool {
        self.fin != Fin::Open
    }

    /// Every byte was handed to the network at least once.
    pub(crate) fn is_flushed(&self) -> bool {
        self.buffered() == 0 && self.queue.is_empty()
    }

    /// Closed, and the last block acknowledged.
    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.fin, Fin::Sent(last) if self.acked_below > last)
    }

    pub(crate) fn failed(&self) -> Option<Unacknowledged> {
        self.failed
    }

    /// Blocks sent and not yet acknowledged.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a shard is ready to go now.
    pub(crate) fn has_shard(&self, now: Instant, config: &StreamConfig) -> bool {
        let live = |(b, i): &(u32, u8)| {
            self.in_flight.get(b).is_some_and(|block| block.received & (1 << i) == 0)
        };
        self.queue.iter().any(live) || self.can_form(now, config)
    }

    fn window_open(&self, config: &StreamConfig) -> bool {
        self.next_block < self.acked_below.saturating_add(config.window)
            && self.next_block < self.peer_window_end
    }

    fn can_form(&self, now: Instant, config: &StreamConfig) -> bool {
        if self.failed.is_some() || matches!(self.fin, Fin::Sent(_)) || !self.window_open(config) {
            return false;
        }
        let full = self.shard_len * usize::from(config.data_shards.min(self.block_shards));
        self.buffered() >= full
            || (self.buffered() > 0
                && (self.flush
                    || self.fin == Fin::Requested
                    || self.waiting_since.is_some_and(|t| now >= t + config.coalesce)))
            || (self.buffered() == 0 && self.fin == Fin::Requested)
    }

    /// The next shard to send, forming a block if one is due.
    pub(crate) fn poll_shard(
        &mut self,
        now: Instant,
        config: &StreamConfig,
        coder: &mut Coder,
        loss: f64,
    ) -> Option<Data> {
        loop {
            if let Some((number, index)) = self.queue.pop_front() {
                let Some(block) = self.in_flight.get_mut(&number) else { continue };
                block.queued &= !(1 << index);
                if block.received & (1 << index) != 0 {
                    continue;
                }
                block.last_sent = Some(now);
                if block.round_pending {
                    block.round_pending = false;
                    block.round_sent = Some(now);
                }
                self.stats.shards_sent += 1;
                return Some(Data {
                    block: number,
                    index,
                    k: block.k,
                    n: block.n(),
                    flags: block.flags,
                    len: block.len,
                    shard: block.shards[usize::from(index)].clone(),
                });
            }
            if !self.can_form(now, config) {
                return None;
            }
            self.form_block(config, coder, loss);
        }
    }

    fn form_block(&mut self, config: &StreamConfig, coder: &mut Coder, loss: f64) {
        self.block_shards = config.block_shards(loss);
        let max_coded = (self.shard_len * usize::from(self.block_shards)).min(MAX_BLOCK_BYTES);
        let input = &self.buffer[self.taken..];
        let (coded, used, compressed) = coding::next_block(input, max_coded, config.compression);
        self.taken += used;
        if self.buffered() == 0 {
            self.waiting_since = None;
            self.flush = false;
        }
        let number = self.next_block;
        self.next_block += 1;
        let mut flags = if compressed { DATA_COMPRESSED } else { 0 };
        if self.fin == Fin::Requested && self.buffered() == 0 {
            flags |= DATA_FIN;
            self.fin = Fin::Sent(number);
        }
        let k = coded.len().div_ceil(self.shard_len).max(1) as u8;
        let m = config.parity(k, loss);
        let shards = coder.encode(&coded, k, m);
        let n = shards.len() as u8;
        self.stats.blocks += 1;
        self.stats.compressed_blocks += u64::from(compressed);
        self.stats.parity_shards += u64::from(m);
        let all = all_shards(n);
        self.queue.extend((0..n).map(|i| (number, i)));
        self.in_flight.insert(
            number,
            Block {
                shards,
                k,
                flags,
                len: coded.len() as u32,
                received: 0,
                queued: all,
                round_sent: None,
                round_pending: true,
                last_sent: None,
                retries: 0,
                early: 0,
            },
        );
    }

    /// An acknowledgement of this direction arrived. Old ones, overtaken by newer, change
    /// nothing.
    ///
    /// Returns how long the blocks it completed took from their last shard to this
    /// acknowledgement (blocks sent once only, as Karn's rule has it): what the retransmission
    /// timer waits for, ack coalescing and the slowest path included.
    pub(crate) fn on_ack(&mut self, now: Instant, ack: &Ack) -> Option<Duration> {
        self.peer_window_end = self.peer_window_end.max(ack.window_end);
        let mut done = Vec::new();
        if ack.next > self.acked_below {
            self.acked_below = ack.next.min(self.next_block);
            let keep = self.in_flight.split_off(&self.acked_below);
            done.extend(std::mem::replace(&mut self.in_flight, keep).into_values());
        }
        for &(number, bitmap) in &ack.blocks {
            if bitmap == COMPLETE {
                done.extend(self.in_flight.remove(&number));
            } else if let Some(block) = self.in_flight.get_mut(&number) {
                // Bits past the block's shards would leave nothing to resend.
                block.received |= bitmap & all_shards(block.n());
            }
        }
        // Blocks below the lowest one in flight are all acknowledged.
        self.acked_below = self.in_flight.keys().next().copied().unwrap_or(self.next_block);
        let once = done.iter().filter(|b| b.retries == 0 && b.early == 0 && b.queued == 0);
        let took = |b: &Block| Some((b.round_sent?, now.saturating_duration_since(b.last_sent?)));
        let samples: Vec<(Instant, Duration)> = once.filter_map(took).collect();
        if let Some(&newest) = samples.iter().max_by_key(|s| s.0)
            && self.arrived.is_none_or(|a| newest.0 >= a.0)
        {
            self.arrived = Some(newest);
        }
        let sample = samples.into_iter().map(|s| s.1).max();
        if sample.is_some() {
            self.backoff = 0;
        }
        sample
    }

    /// When `block`, still short, counts as lost rather than late (see
    /// [`SendHalf::resend_lost`]).
    fn lost_at(&self, block: &Block, wait: LossWait, config: &StreamConfig) -> Option<Instant> {
        let (arrived_sent, took) = self.arrived?;
        let last = block.last_sent?;
        // Early rounds count against the same cap as timeouts, so that a receiver reporting
        // the same gap again and again gets no more resends than one that never answers.
        let more = block.retries + block.early < config.max_retries;
        (block.queued == 0 && more && last <= arrived_sent)
            .then(|| last + (took + wait.reorder).max(wait.floor))
    }

    /// Resends, without waiting for their timeout, what lost blocks still need. A block is
    /// lost when a block sent after all of its shards arrived whole (on its only round), and
    /// it is still short once `wait` has passed since its own last shard left: its missing
    /// shards would have been acknowledged by then (as TCP's RACK decides).
    ///
    /// Waiting for the timeout instead stalls the stream: the window cannot move past its
    /// lowest short block, the receiver, holding everything else, has nothing to
    /// acknowledge, and the timeout is long (padded for the slowest block, and doubled
    /// after each resend while no block sent once is acknowledged). Each round is resent
    /// this way at most once, since the new round's shards leave after the evidence did.
    pub(crate) fn resend_lost(
        &mut self,
        now: Instant,
        wait: LossWait,
        config: &StreamConfig,
        loss: f64,
    ) {
        if self.failed.is_some() {
            return;
        }
        let lost: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, b)| self.lost_at(b, wait, config).is_some_and(|t| now >= t))
            .map(|(n, _)| *n)
            .collect();
        for number in lost {
            if let Some(block) = self.in_flight.get_mut(&number) {
                block.early += 1;
                requeue(now, number, block, config, loss, &mut self.queue, &mut self.stats);
            }
        }
    }

    /// Resends what overdue blocks still need: `k` minus what arrived, plus parity for the
    /// measured loss, from the shards not known to have arrived. Backs off exponentially.
    /// Returns whether any block timed out.
    ///
    /// The backoff holds for every block, not only the one that timed out, until a block sent
    /// once is acknowledged (Karn's rule, as TCP keeps it across segments). A timeout that
    /// fired because the round trip grew (the mix nodes' queues filled) would otherwise fire
    /// again for each later block, and every block would be sent twice: retransmitted blocks
    /// give no round-trip samples, so the timeout would never learn the longer round trip.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        rto: Duration,
        config: &StreamConfig,
        loss: f64,
    ) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let mut timed_out = false;
        for (&number, block) in &mut self.in_flight {
            let Some(sent) = block.last_sent else { continue };
            let doublings = block.retries.max(self.backoff);
            if block.queued != 0 || now < sent + backoff(rto, doublings, config.max_rto) {
                continue;
            }
            if block.retries + block.early >= config.max_retries {
                self.failed = Some(Unacknowledged(number));
                return timed_out;
            }
            timed_out = true;
            block.retries += 1;
            self.backoff = self.backoff.max(block.retries);
            requeue(now, number, block, config, loss, &mut self.queue, &mut self.stats);
        }
        timed_out
    }

    /// When [`Self::handle_timeout`], [`Self::resend_lost`] or the coalescing timer has
    /// something to do.
    pub(crate) fn poll_timeout(
        &self,
        rto: Duration,
        wait: Option<LossWait>,
        config: &StreamConfig,
    ) -> Option<Instant> {
        let retransmit = self
            .in_flight
            .values()
            .filter(|b| b.queued == 0)
            .filter_map(|b| {
                let doublings = b.retries.max(self.backoff);
                Some(b.last_sent? + backoff(rto, doublings, config.max_rto))
            })
            .min();
        let lost = wait
            .and_then(|w| self.in_flight.values().filter_map(|b| self.lost_at(b, w, config)).min());
        let coalesce = self
            .waiting_since
            .filter(|_| self.buffered() > 0 && self.window_open(config))
            .map(|t| t + config.coalesce);
        [retransmit, lost, coalesce].into_iter().flatten().min()
    }
}

/// Queues a new round of `block`: `k` minus what arrived, plus parity for the measured loss
/// (see [`StreamConfig::resend_parity`]),
/// from the shards not known to have arrived.
fn requeue(
    now: Instant,
    number: u32,
    block: &mut Block,
    config: &StreamConfig,
    loss: f64,
    queue: &mut VecDeque<(u32, u8)>,
    stats: &mut SendStats,
) {
    let rounds = block.retries + block.early;
    if rounds == 1 {
        stats.blocks_retransmitted += 1;
    }
    let have = block.received.count_ones() as u8;
    let need = block.k.saturating_sub(have).max(1);
    let extra = config.resend_parity(need, loss);
    let mut chosen = 0;
    // Fresh picks rotate with the round, so a shard lost twice is not the only one tried
    // again.
    let n = block.n();
    for step in 0..n {
        let i = ((usize::from(step) + rounds as usize * usize::from(need)) % usize::from(n)) as u8;
        if chosen == need + extra {
            break;
        }
        if block.received & (1 << i) == 0 {
            block.queued |= 1 << i;
            queue.push_back((number, i));
            chosen += 1;
        }
    }
    stats.shards_resent += u64::from(chosen);
    if chosen == 0 {
        // The receiver claims every shard yet not the block (a lying peer): an empty round,
        // timed from now, so that its timers move on and the rounds run out.
        block.last_sent = Some(now);
        block.round_sent = Some(now);
        return;
    }
    block.round_pending = true;
}

/// The bits of a block's `n` shards.
fn all_shards(n: u8) -> u32 {
    if n >= 32 { u32::MAX } else { (1u32 << n) - 1 }
}

fn backoff(rto: Duration, retries: u32, max: Duration) -> Duration {
    rto.saturating_mul(1 << retries.min(16)).min(max.max(rto))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARD: usize = 1000;

    fn config() -> StreamConfig {
        // Blocks small enough that their parity fits at 10 % loss: each write of a block's
        // worth forms one block at once.
        StreamConfig { compression: None, data_shards: 16, ..StreamConfig::default() }
    }

    /// Writes one full block and sends all of its shards at `at`; returns how many.
    fn send_block(half: &mut SendHalf, coder: &mut Coder, at: Instant) -> usize {
        let config = config();
        let k = usize::from(config.data_shards);
        assert_eq!(config.block_shards(0.1), config.data_shards);
        assert_eq!(half.write(at, &vec![7u8; SHARD * k], &config), SHARD * k);
        std::iter::from_fn(|| half.poll_shard(at, &config, coder, 0.1)).count()
    }

    fn ack(blocks: Vec<(u32, u32)>) -> Ack {
        Ack { next: 0, window_end: 8, blocks, ..Ack::default() }
    }

    fn resent_blocks(half: &mut SendHalf, coder: &mut Coder, at: Instant) -> Vec<u32> {
        std::iter::from_fn(|| half.poll_shard(at, &config(), coder, 0.1)).map(|d| d.block).collect()
    }

    #[test]
    fn a_block_still_short_after_a_later_one_arrived_is_resent_before_its_timeout() {
        let (mut half, mut coder, t0) = (SendHalf::new(SHARD, 8), Coder::default(), Instant::now());
        let wait =
            LossWait { reorder: Duration::from_millis(40), floor: Duration::from_millis(100) };
        send_block(&mut half, &mut coder, t0);
        send_block(&mut half, &mut coder, t0 + Duration::from_millis(50));
        // Block 1 arrived whole 250 ms after it left; block 0, sent before it, has 10 of 16.
        let t1 = t0 + Duration::from_millis(300);
        half.on_ack(t1, &ack(vec![(0, (1 << 10) - 1), (1, COMPLETE)]));
        // Block 0's round trip (250 ms) plus the reordering window passed at t0 + 290 ms.
        assert_eq!(
            half.poll_timeout(Duration::from_secs(2), Some(wait), &config()),
            Some(t0 + Duration::from_millis(290))
        );
        half.resend_lost(t1, wait, &config(), 0.1);
        let resent = resent_blocks(&mut half, &mut coder, t1);
        let need = usize::from(config().data_shards) - 10;
        assert!(resent.len() > need && resent.iter().all(|&b| b == 0), "{resent:?}");
        assert_eq!(half.stats().blocks_retransmitted, 1);
        // Once per round: the new shards left after the evidence did.
        half.resend_lost(t1 + Duration::from_millis(500), wait, &config(), 0.1);
        assert!(resent_blocks(&mut half, &mut coder, t1).is_empty());
        // The block's own timeout did not double.
        assert_eq!(half.backoff, 0);
    }

    #[test]
    fn a_block_sent_with_the_one_that_arrived_is_late_not_lost_until_its_round_trip_passed() {
        let (mut half, mut coder, t0) = (SendHalf::new(SHARD, 8), Coder::default(), Instant::now());
        let wait =
            LossWait { reorder: Duration::from_millis(40), floor: Duration::from_millis(100) };
        send_block(&mut half, &mut coder, t0);
        send_block(&mut half, &mut coder, t0);
        let t1 = t0 + Duration::from_millis(300);
        half.on_ack(t1, &ack(vec![(0, (1 << 10) - 1), (1, COMPLETE)]));
        half.resend_lost(t1, wait, &config(), 0.1);
        assert!(resent_blocks(&mut half, &mut coder, t1).is_empty(), "still within reordering");
        half.resend_lost(t1 + wait.reorder, wait, &config(), 0.1);
        assert_eq!(resent_blocks(&mut half, &mut coder, t1 + wait.reorder).first(), Some(&0));
    }

    #[test]
    fn nothing_is_lost_before_a_later_block_arrived() {
        let (mut half, mut coder, t0) = (SendHalf::new(SHARD, 8), Coder::default(), Instant::now());
        send_block(&mut half, &mut coder, t0);
        send_block(&mut half, &mut coder, t0 + Duration::from_millis(50));
        // Block 0 complete, block 1 short: nothing sent after block 1 arrived.
        let t1 = t0 + Duration::from_secs(1);
        half.on_ack(t1, &ack(vec![(0, COMPLETE), (1, 1)]));
        let wait = LossWait { reorder: Duration::ZERO, floor: Duration::ZERO };
        half.resend_lost(t1, wait, &config(), 0.1);
        assert!(resent_blocks(&mut half, &mut coder, t1).is_empty());
        assert_eq!(
            half.poll_timeout(Duration::from_secs(2), Some(wait), &config()),
            Some(t0 + Duration::from_millis(2050))
        );
    }

    #[test]
    fn a_block_is_not_lost_before_a_frames_timeout_however_fast_the_later_one_was() {
        let (mut half, mut coder, t0) = (SendHalf::new(SHARD, 8), Coder::default(), Instant::now());
        let wait =
            LossWait { reorder: Duration::from_millis(10), floor: Duration::from_millis(100) };
        send_block(&mut half, &mut coder, t0);
        send_block(&mut half, &mut coder, t0 + Duration::from_millis(10));
        // Block 1 took 20 ms; block 0 could count as lost at 40 ms but for the floor.
        let t1 = t0 + Duration::from_millis(30);
        half.on_ack(t1, &ack(vec![(0, 1), (1, COMPLETE)]));
        half.resend_lost(t0 + Duration::from_millis(99), wait, &config(), 0.1);
        assert!(resent_blocks(&mut half, &mut coder, t1).is_empty());
        half.resend_lost(t0 + Duration::from_millis(100), wait, &config(), 0.1);
        assert_eq!(resent_blocks(&mut half, &mut coder, t1).first(), Some(&0));
    }

    #[test]
    fn a_receiver_reporting_the_same_gap_again_and_again_gets_no_more_resends_than_silence() {
        let config = StreamConfig { max_retries: 3, ..config() };
        let (mut half, mut coder, t0) =
            (SendHalf::new(SHARD, 64), Coder::default(), Instant::now());
        let wait = LossWait { reorder: Duration::ZERO, floor: Duration::from_millis(100) };
        send_block(&mut half, &mut coder, t0);
        let mut at = t0;
        let mut early_rounds = 0;
        for later in 1..10u32 {
            at += Duration::from_millis(200);
            send_block(&mut half, &mut coder, at);
            // Each later block "arrived", block 0 never does.
            at += Duration::from_millis(10);
            half.on_ack(at, &ack(vec![(0, 1), (later, COMPLETE)]));
            at += Duration::from_millis(100);
            half.resend_lost(at, wait, &config, 0.1);
            early_rounds += usize::from(resent_blocks(&mut half, &mut coder, at).contains(&0));
        }
        assert_eq!(early_rounds, 3, "max_retries rounds in all");
        assert!(half.failed().is_none());
        // Its timeout then ends the stream at once: the rounds are used up.
        assert!(!half.handle_timeout(
            at + Duration::from_secs(60),
            Duration::from_secs(2),
            &config,
            0.1
        ));
        assert_eq!(half.failed(), Some(Unacknowledged(0)));
    }

    #[test]
    fn a_receiver_claiming_every_shard_but_not_the_block_moves_no_timer_into_the_past() {
        let (mut half, mut coder, t0) = (SendHalf::new(SHARD, 8), Coder::default(), Instant::now());
        let wait = LossWait { reorder: Duration::ZERO, floor: Duration::from_millis(100) };
        send_block(&mut half, &mut coder, t0);
        send_block(&mut half, &mut coder, t0 + Duration::from_millis(10));
        let t1 = t0 + Duration::from_millis(200);
        half.on_ack(t1, &ack(vec![(0, u32::MAX >> 1), (1, COMPLETE)]));
        half.resend_lost(t1, wait, &config(), 0.1);
        assert!(resent_blocks(&mut half, &mut coder, t1).is_empty(), "nothing left to resend");
        let next = half.poll_timeout(Duration::from_secs(2), Some(wait), &config()).unwrap();
        assert!(next > t1, "the empty round is timed from now");
    }
}
