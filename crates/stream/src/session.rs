//! Reliable delivery over a lossy, reordering channel, as two state machines.
//!
//! [`Outgoing`] (the opener) turns bytes into blocks, keeps each block's shards until the
//! receiver acknowledges it, and sends them again, with exponential backoff, when no
//! acknowledgement came in time. At most `window` blocks are unacknowledged at once: that is
//! the stream's flow control, and [`Outgoing::write`] takes only what fits.
//! [`Incoming`] (the acceptor) rebuilds blocks, releases them in order and answers with an
//! [`Ack`]: the next block it expects and the gaps it sees above it.
//!
//! Neither touches the network or a clock: shards and acks go out through `poll_transmit`, and
//! time comes in as `now`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::ReceiverKey;
use crate::ordering::{InOrder, OrderError};
use crate::reassembly::{Reassembler, ReassemblyConfig, ReassemblyError};
use crate::shard::ShardHeader;
use crate::stream::{CodingConfig, EncodeError, MAX_INPUT_BLOCKS, StreamSender};

/// What the acceptor has: every block below `next`, and not the blocks in `missing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Every block below this one was received.
    pub next: u32,
    /// Blocks above `next` known to be missing (others above `next` may have arrived).
    pub missing: Vec<u32>,
    /// The highest block received, if any above `next`.
    pub highest: Option<u32>,
}

/// Most gaps an ack names.
const MAX_MISSING: usize = 64;

impl Ack {
    /// `next u32 | highest u32 (u32::MAX: none) | count u8 | count × u32`, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let missing = &self.missing[..self.missing.len().min(MAX_MISSING)];
        let mut out = Vec::with_capacity(9 + 4 * missing.len());
        out.extend_from_slice(&self.next.to_be_bytes());
        out.extend_from_slice(&self.highest.unwrap_or(u32::MAX).to_be_bytes());
        out.push(missing.len() as u8);
        for m in missing {
            out.extend_from_slice(&m.to_be_bytes());
        }
        out
    }

    /// Parses an ack; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let next = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
        let highest = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
        let count = usize::from(*bytes.get(8)?);
        let rest = bytes.get(9..)?;
        if rest.len() != 4 * count || count > MAX_MISSING {
            return None;
        }
        let missing =
            rest.chunks(4).map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes"))).collect();
        Some(Self { next, missing, highest: (highest != u32::MAX).then_some(highest) })
    }
}

/// Settings of an [`Outgoing`] stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// How blocks are coded.
    pub coding: CodingConfig,
    /// Blocks sent and not yet acknowledged, at most.
    pub window: u32,
    /// How long to wait for an acknowledgement before sending a block again (doubled on
    /// each retry).
    pub retransmit_after: Duration,
    /// Retries of one block before the stream fails.
    pub max_retries: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            coding: CodingConfig::default(),
            window: 64,
            retransmit_after: Duration::from_secs(2),
            max_retries: 8,
        }
    }
}

/// Why a stream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A block was sent `max_retries + 1` times without an acknowledgement.
    #[error("block {0} was never acknowledged")]
    Unacknowledged(u32),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

struct InFlight {
    shards: Vec<Vec<u8>>,
    due: Instant,
    sent: Instant,
    retries: u32,
}

/// The opener's side of a stream.
pub struct Outgoing {
    sender: StreamSender,
    config: SessionConfig,
    in_flight: BTreeMap<u32, InFlight>,
    /// Bytes taken by `write` that do not fill a block yet.
    pending: Vec<u8>,
    transmit: VecDeque<Vec<u8>>,
    acked_below: u32,
    failed: Option<SessionError>,
    shards_sent: u64,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("in_flight", &self.in_flight.len())
            .field("acked_below", &self.acked_below)
            .finish_non_exhaustive()
    }
}

impl Outgoing {
    /// A stream to the holder of `receiver`.
    pub fn new<R: rand::CryptoRng + ?Sized>(
        receiver: &[u8; 32],
        config: SessionConfig,
        rng: &mut R,
    ) -> Result<Self, SessionError> {
        Ok(Self {
            sender: StreamSender::new(receiver, config.coding, rng)?,
            config,
            in_flight: BTreeMap::new(),
            pending: Vec::new(),
            transmit: VecDeque::new(),
            acked_below: 0,
            failed: None,
            shards_sent: 0,
        })
    }

    /// Takes as much of `data` as the window allows; returns how many bytes were taken
    /// (0: wait for acknowledgements). Bytes are cut into blocks once enough are buffered to
    /// fill a block even after compression; the rest waits for more or [`Self::flush`].
    pub fn write(&mut self, now: Instant, data: &[u8]) -> Result<usize, SessionError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let cap = self.config.coding.max_block_len() * MAX_INPUT_BLOCKS;
        let mut taken = 0;
        while taken < data.len() && self.has_room() {
            let want = (cap - self.pending.len()).min(data.len() - taken);
            self.pending.extend_from_slice(&data[taken..taken + want]);
            taken += want;
            if self.pending.len() == cap {
                self.send_block(now)?;
            }
        }
        Ok(taken)
    }

    /// Sends everything buffered, as far as the window allows. Returns whether nothing is
    /// left buffered.
    pub fn flush(&mut self, now: Instant) -> Result<bool, SessionError> {
        while !self.pending.is_empty() && self.has_room() {
            self.send_block(now)?;
        }
        Ok(self.pending.is_empty())
    }

    fn has_room(&self) -> bool {
        (self.in_flight.len() as u32) < self.config.window
    }

    /// Sends one block from the front of the buffer.
    fn send_block(&mut self, now: Instant) -> Result<(), SessionError> {
        let (block, used) = self.sender.encode_prefix(&self.pending)?;
        self.pending.drain(..used);
        self.transmit.extend(block.shards.iter().cloned());
        self.shards_sent += block.shards.len() as u64;
        self.in_flight.insert(
            block.number,
            InFlight {
                shards: block.shards,
                due: now + self.config.retransmit_after,
                sent: now,
                retries: 0,
            },
        );
        Ok(())
    }

    /// An acknowledgement came back.
    pub fn on_ack(&mut self, now: Instant, ack: &Ack) {
        self.acked_below = self.acked_below.max(ack.next);
        let below = self.acked_below;
        self.in_flight.retain(|b, _| *b >= below);
        // Blocks between `next` and `highest` that are not named missing have arrived (when
        // the list of gaps was cut short, only up to its last entry).
        if let Some(highest) = ack.highest {
            let known = match ack.missing.last() {
                Some(&last) if ack.missing.len() >= MAX_MISSING => last,
                _ => highest,
            };
            self.in_flight.retain(|b, _| *b > known || ack.missing.contains(b));
        }
        // Named gaps below the highest received are resent early rather than on the timer,
        // but not again before half a timeout has passed: acks arrive out of order, and an old
        // one still names gaps that a resend already filled.
        let min_gap = self.config.retransmit_after / 2;
        for b in &ack.missing {
            if let Some(f) = self.in_flight.get_mut(b)
                && now.saturating_duration_since(f.sent) >= min_gap
            {
                f.due = f.due.min(now);
            }
        }
    }

    /// Resends blocks whose acknowledgement is overdue.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (block, f) in self.in_flight.iter_mut() {
            if f.due > now {
                continue;
            }
            if f.retries >= self.config.max_retries {
                self.failed = Some(SessionError::Unacknowledged(*block));
                return;
            }
            f.retries += 1;
            f.sent = now;
            f.due = now + self.config.retransmit_after * 2u32.saturating_pow(f.retries);
            self.transmit.extend(f.shards.iter().cloned());
            self.shards_sent += f.shards.len() as u64;
        }
    }

    /// When [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.values().map(|f| f.due).min()
    }

    /// The next shard to send (each as one mix message, on a path of its own).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// Whether everything written was sent and acknowledged.
    pub fn is_done(&self) -> bool {
        self.in_flight.is_empty() && self.pending.is_empty()
    }

    /// The error that ended the stream, if any.
    pub fn error(&self) -> Option<SessionError> {
        self.failed
    }

    /// Shards handed out so far, first sends and resends.
    pub fn shards_sent(&self) -> u64 {
        self.shards_sent
    }
}

/// The acceptor's side: shards in, ordered bytes and acknowledgements out. One `Incoming`
/// serves every stream sent to its key; streams are told apart by their ephemeral ids, which
/// name nothing about their senders.
pub struct Incoming {
    reassembler: Reassembler,
    order: BTreeMap<[u8; 32], InOrder>,
    window: u32,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").field("streams", &self.order.len()).finish_non_exhaustive()
    }
}

/// What a shard made readable on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readable {
    /// The stream (the opener's ephemeral key; it names nothing else).
    pub stream: [u8; 32],
    /// Bytes now readable in order; empty when the shard only calls for an acknowledgement.
    pub bytes: Vec<u8>,
}

/// Why a shard gave nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IncomingError {
    /// The shard was refused.
    #[error(transparent)]
    Reassembly(#[from] ReassemblyError),
    /// The block was beyond the stream's window.
    #[error(transparent)]
    Order(#[from] OrderError),
}

impl Incoming {
    /// An acceptor with `key`, reordering up to `window` blocks per stream.
    pub fn new(key: ReceiverKey, config: ReassemblyConfig, window: u32) -> Self {
        Self { reassembler: Reassembler::new(key, config), order: BTreeMap::new(), window }
    }

    /// Takes a shard; returns the stream it belongs to and the bytes now readable in order
    /// (acknowledge it), or `None` for a shard that completed nothing.
    ///
    /// A shard of a block that was already rebuilt also returns its stream (with no bytes):
    /// the opener is resending because an acknowledgement was lost, so acknowledge again.
    pub fn accept(
        &mut self,
        now: Instant,
        shard: &[u8],
    ) -> Result<Option<Readable>, IncomingError> {
        let Some(block) = self.reassembler.accept(now, shard)? else {
            let (header, _) = ShardHeader::parse(shard).map_err(ReassemblyError::from)?;
            let done = self.reassembler.is_done(&header.stream, header.block);
            return Ok(done.then(|| Readable { stream: header.stream, bytes: Vec::new() }));
        };
        let window = self.window;
        let order = self.order.entry(block.stream).or_insert_with(|| InOrder::new(window));
        let bytes: Vec<u8> = order.push(block.block, block.data)?.concat();
        Ok(Some(Readable { stream: block.stream, bytes }))
    }

    /// The acknowledgement for `stream`, to send back to its opener.
    pub fn ack(&self, stream: &[u8; 32]) -> Option<Ack> {
        let order = self.order.get(stream)?;
        let missing = order.missing(MAX_MISSING);
        Some(Ack { next: order.next_expected(), highest: order.highest(), missing })
    }

    /// Drops stalled blocks and forgotten streams.
    pub fn expire(&mut self, now: Instant) {
        self.reassembler.expire(now);
    }
}
