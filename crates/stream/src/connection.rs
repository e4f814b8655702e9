//! One stream, on either side, as a state machine.
//!
//! The *opener* knows the acceptor's X25519 key and sends frames as one-way mix messages. The
//! *acceptor* answers only through SURBs the opener sent it ahead, inside its frames, so it
//! never learns who or where the opener is. Each side has a sending and a receiving half
//! ([`crate::send`], [`crate::recv`]); frames carry shards of either and acknowledgements of
//! the other.
//!
//! ```text
//!   opener                                            acceptor
//!   write ─> SendHalf ─┐                          ┌─> RecvHalf ─> read
//!                      ├─ frame (mix message) ───>┤
//!   SURBs (SurbSource)─┘   OPEN, SURBS, ACK, DATA └─> SURB stock
//!   read <─ RecvHalf <──── frame (SURB reply) <──── SendHalf <─ write
//!                          WANT, ACK, DATA
//! ```
//!
//! The opener keeps the acceptor stocked: every reverse frame reports the SURBs it holds and
//! wants (WANT), and the opener sends what is missing, counting what is still on its way and
//! what will expire. An acceptor that got SURBs and had no reason to answer confirms them once,
//! so an idle stream costs one frame each way per SURB lifetime.
//!
//! Nothing here touches a socket, a clock or global randomness: frames go out through
//! `poll_transmit`, time comes in as `now`, and randomness (the ephemeral key, the jitter) is
//! drawn from an RNG passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha12Rng;

use crate::coding::Coder;
use crate::config::{ConfigError, StreamConfig};
use crate::estimate::{LossMeter, RateMeter, Rtt, Seen, SeenWindow, SendTimes};
use crate::frame::{
    self, DATA_HEADER_LEN, Envelope, FRAME_OVERHEAD, FrameError, Items, MAX_FRAME_SURBS,
    MAX_SHARDS, OPEN_MESSAGE, Opening, SurbBytes, Surbs, Want,
};
use crate::keys::{self, ReceiverKey, StreamId, StreamKeys};
use crate::labels::{self, Label, LabelUpdate, LabelWindow, Lookup};
use crate::recv::{RecvHalf, RecvStats, ShardError};
use crate::send::{LossWait, SendHalf, SendStats};

/// Room left in every data frame for small items (OPEN, WANT, an ACK without gaps).
const SMALL_ITEMS: usize = 32;
/// The reordering allowance of loss detection is the smoothed round trip over this.
const REORDER_SHARE: u32 = 4;
/// Blocks an opener assumes the acceptor takes before its first acknowledgement.
const INITIAL_WINDOW: u32 = 8;
/// The acceptor considers a SURB usable for this share of the lifetime the opener gave it
/// (the rest covers the frame's own travel and clock differences).
const SURB_USABLE_SHARE: f64 = 0.75;
/// Frames one loss sample covers at most.
const LOSS_SAMPLE: u32 = 512;
/// How long an opener waits before asking its SURB source again after it had none.
const SURB_RETRY: Duration = Duration::from_millis(50);
/// SURBs the opener may send for each frame it received from the acceptor, beyond the
/// first supply: room for the supply to grow while the acceptor's rate does.
const SURBS_PER_FRAME_RECEIVED: u64 = 8;
/// SURBs the opener may have outstanding whatever the acceptor sent: the generous supply of
/// a stream's first round trips under loss (with none, 25 % loss cost `bench loss` 4 s at
/// the 95th percentile instead of 0.3 s).
const SURB_CREDIT_BASE: u64 = 64;
/// SURBs the opener may send for each shard it sent: the acknowledgements (and their
/// losses) it asks of the acceptor.
const SURBS_PER_SHARD_SENT: u64 = 4;
/// SURBs an acceptor holds at most, whatever openers send.
pub(crate) const MAX_HELD_SURBS: usize = 1024;
/// Labels a receiver keeps below the highest frame it saw: frames overtaken by more than this
/// many are taken for lost (their blocks are sent again).
pub(crate) const LABELS_BEHIND: u32 = 1024;
/// Labels a receiver expects above the highest frame it saw, at most.
pub(crate) const MAX_LABELS_AHEAD: u32 = 8192;

/// Which side of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Knows the acceptor; sends mix messages.
    Opener,
    /// Knows nothing of the opener; answers through SURBs.
    Acceptor,
}

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes both ways.
    Stream,
    /// One message from the opener; nothing comes back but acknowledgements.
    Message,
}

/// The largest frame each direction carries: what one mix message (forward) and one SURB
/// reply (reverse) hold for this protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Opener to acceptor.
    pub forward: usize,
    /// Acceptor to opener.
    pub reverse: usize,
}

impl FrameLimits {
    fn shard_len(frame: usize) -> usize {
        frame.saturating_sub(FRAME_OVERHEAD + DATA_HEADER_LEN + SMALL_ITEMS)
    }
}

/// Where an opener gets SURBs back to itself.
pub trait SurbSource {
    /// Up to `count` SURBs, and how long they stay usable; `None` if none can be made now.
    fn make_surbs(&mut self, count: usize) -> Option<(Vec<SurbBytes>, Duration)>;
}

/// Why a stream ended before both sides closed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer reset the stream.
    #[error("reset by the peer (code {0})")]
    Reset(u8),
    /// This side reset the stream.
    #[error("reset locally (code {0})")]
    LocallyReset(u8),
    /// A block was sent every time allowed without an acknowledgement.
    #[error("block {0} was never acknowledged")]
    Unacknowledged(u32),
    /// Nothing was heard from the peer for the idle timeout.
    #[error("nothing heard from the peer for {0:?}")]
    IdleTimeout(Duration),
    /// The transport gave up on the stream (no path, not allowed to send).
    #[error("transport: {0}")]
    Transport(String),
    /// This direction used every sequence number: one more frame would reuse a nonce.
    #[error("the stream used all its sequence numbers")]
    SequenceExhausted,
}

/// Why a received frame was dropped. Nothing of it was used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameDrop {
    /// Not a frame of this stream, or altered.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Its label is not one this stream expects now (another stream's, or too old).
    #[error("unknown frame label")]
    UnknownLabel,
    /// Its sequence number was seen before.
    #[error("replayed frame")]
    Replay,
    /// Its sequence number is too far behind the newest to tell.
    #[error("frame too old")]
    TooOld,
    /// An item this side never receives.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// Its shard was refused (the rest of the frame was used).
    #[error(transparent)]
    Shard(#[from] ShardError),
}

/// Figures of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnectionStats {
    /// This side's sending half.
    pub send: SendStats,
    /// This side's receiving half.
    pub recv: RecvStats,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames sent with an opening envelope (opener): each costs both sides a Diffie-Hellman.
    pub openings_sent: u64,
    /// Frames received and authenticated.
    pub frames_received: u64,
    /// SURBs sent (opener) or received (acceptor).
    pub surbs: u64,
    /// SURBs that expired unused (acceptor).
    pub surbs_expired: u64,
    /// The smoothed round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// The measured share of this side's frames lost.
    pub loss: f64,
    /// Frames the loss measurement covered (0: `loss` is still the initial assumption).
    pub loss_sampled: u64,
}

#[derive(Debug, Clone, Copy)]
struct Batch {
    at: Instant,
    expires: Instant,
    count: u64,
    /// SURBs sent up to and including this batch.
    end: u64,
}

/// The opener's picture of the acceptor's SURB stock.
#[derive(Debug)]
struct Supply {
    batches: VecDeque<Batch>,
    total: u64,
    report: Option<Want>,
    /// When the latest report came, and nudges sent since without a new one.
    report_at: Option<Instant>,
    nudges: u32,
    last_nudge: Option<Instant>,
    /// Nudges sent in all (each may top up `min_surbs` unasked).
    nudged: u64,
    /// When a block timed out, since the latest nudge or report: a nudge is due then (see
    /// [`Connection::nudge_at`]).
    timed_out: Option<Instant>,
    /// SURBs of batches whose lifetime ended (by this side's clock).
    expired: u64,
    /// The source had no SURBs to give; ask again after this.
    blocked_until: Option<Instant>,
}

impl Supply {
    fn new() -> Self {
        Self {
            batches: VecDeque::new(),
            total: 0,
            report: None,
            report_at: None,
            nudges: 0,
            last_nudge: None,
            nudged: 0,
            timed_out: None,
            expired: 0,
            blocked_until: None,
        }
    }

    fn on_report(&mut self, now: Instant, want: Want) {
        // Reports travel on different paths; the one that has seen the most SURBs is newest.
        if self.report.is_none_or(|r| want.received >= r.received) {
            self.report = Some(want);
            self.report_at = Some(now);
            self.nudges = 0;
            self.timed_out = None;
        }
    }

    /// A top-up went out unasked.
    fn nudged(&mut self, now: Instant) {
        self.nudges += 1;
        self.nudged += 1;
        self.last_nudge = Some(now);
        self.timed_out = None;
    }

    fn sent(&mut self, now: Instant, count: usize, lifetime: Duration) {
        self.total += count as u64;
        self.batches.push_back(Batch {
            at: now,
            expires: now + lifetime,
            count: count as u64,
            end: self.total,
        });
    }

    /// SURBs the acceptor holds that stay usable past `now + margin`, and SURBs on their way
    /// to it (sent after its latest report, not yet presumed lost).
    fn stock(&mut self, now: Instant, margin: Duration, lost_after: Duration) -> (u64, u64) {
        while let Some(b) = self.batches.front().filter(|b| b.expires <= now) {
            self.expired += b.count;
            self.batches.pop_front();
        }
        let received = self.report.map_or(0, |r| u64::from(r.received));
        let mut held = self.report.map_or(0, |r| u64::from(r.held));
        let (mut fresh, mut transit) = (0, 0);
        // The acceptor spends its newest SURBs first, and drops them at about the time this
        // side stops counting them usable: what it holds is the oldest usable ones it got.
        for b in &self.batches {
            if b.expires <= now + margin {
                continue;
            }
            let start = b.end - b.count;
            let unreported = b.end.saturating_sub(received.max(start));
            if now < b.at + lost_after {
                transit += unreported;
            }
            let take = (b.count - unreported).min(held);
            held -= take;
            fresh += take;
        }
        (fresh, transit)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Open,
    Failed(ConnectionError),
}

/// One stream.
pub struct Connection {
    role: Role,
    mode: Mode,
    keys: StreamKeys,
    /// Opener: the acceptor's key, for the envelope of every opening frame.
    receiver: Option<[u8; 32]>,
    /// The labels of the frames this side may receive next.
    labels: LabelWindow,
    /// Label key of the frames this side sends.
    tx_labels: zeroize::Zeroizing<[u8; 32]>,
    /// An instant and the Unix time at it, for the time in openings.
    wall_clock: (Instant, Duration),
    /// The peer's latest acknowledgement: the highest frame it saw and the labels it expects
    /// above it.
    peer_labels: Option<(u32, u32)>,
    /// Acceptor: the Unix second the first opening it read was sealed at, and its number.
    opened_unix: Option<u64>,
    opening_seq: u32,
    config: StreamConfig,
    send: SendHalf,
    recv: RecvHalf,
    coder: Coder,
    frame_len: usize,
    tx_seq: u32,
    sent_times: SendTimes,
    seen: SeenWindow,
    /// How far behind the newest frames have arrived lately.
    reorder: u32,
    /// Frames received per second (the opener stocks SURBs for the acceptor's rate).
    rx_rate: RateMeter,
    /// Blocks formed per second (each second one calls for an acknowledgement).
    block_rate: RateMeter,
    /// When the highest sequence number so far arrived.
    rx_largest_at: Option<Instant>,
    /// Frames arrived since this side's latest acknowledgement.
    frames_unacked: bool,
    rtt: Rtt,
    /// From a block's last shard to its acknowledgement: what retransmission waits for.
    block_rtt: Rtt,
    /// The newest frame whose acknowledgement gave a round-trip sample.
    rtt_seq: Option<u32>,
    loss: LossMeter,
    last_heard: Instant,
    next_tx: Instant,
    rng: ChaCha12Rng,
    state: State,
    reset_pending: Option<u8>,
    /// Opener: the acceptor has not answered yet, so every frame says OPEN.
    open_pending: bool,
    supply: Supply,
    /// Acceptor: SURBs held, soonest to expire first (the newest are used first).
    surbs: VecDeque<(Instant, SurbBytes)>,
    surbs_received: u32,
    /// Acceptor: SURBs arrived since this side last sent a frame.
    unconfirmed_since: Option<Instant>,
    stats: ConnectionStats,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("mode", &self.mode)
            .field("send", &self.send)
            .field("recv", &self.recv)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The acceptor's key is not a usable X25519 key.
    #[error("the acceptor's key is a low-order point")]
    BadKey,
    /// Frames this short cannot carry a shard.
    #[error("frames of {0} bytes are too short")]
    FrameTooShort(usize),
}

impl Connection {
    /// Opens a stream to the holder of `receiver`.
    pub fn open<R: rand::CryptoRng + ?Sized>(
        receiver: &[u8; 32],
        mode: Mode,
        config: StreamConfig,
        limits: FrameLimits,
        now: Instant,
        rng: &mut R,
    ) -> Result<Self, OpenError> {
        config.validate()?;
        // A receiver key that gives no shared secret is refused now, not at the first frame.
        keys::opening_keys(receiver, rng).ok_or(OpenError::BadKey)?;
        let keys = StreamKeys::generate(rng);
        let shard_len = FrameLimits::shard_len(limits.forward);
        if shard_len == 0 || limits.reverse < FRAME_OVERHEAD + 64 {
            return Err(OpenError::FrameTooShort(limits.forward.min(limits.reverse)));
        }
        let recv = match mode {
            Mode::Stream => RecvHalf::new(config.window),
            Mode::Message => RecvHalf::finished(),
        };
        let send = SendHalf::new(shard_len, INITIAL_WINDOW);
        let mut conn =
            Self::new(Role::Opener, mode, keys, config, send, recv, limits.forward, now, rng);
        conn.receiver = Some(*receiver);
        Ok(conn)
    }

    #[allow(clippy::too_many_arguments, reason = "one private constructor for both roles")]
    fn new<R: rand::CryptoRng + ?Sized>(
        role: Role,
        mode: Mode,
        keys: StreamKeys,
        config: StreamConfig,
        send: SendHalf,
        recv: RecvHalf,
        frame_len: usize,
        now: Instant,
        rng: &mut R,
    ) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        // Everything the sender may have sent since it last heard what we had seen: a window
        // of blocks of up to 32 shards in flight, as much again while our acknowledgement
        // travelled and was held back (retransmissions and fresh parity included), and some
        // frames of its own. Frames beyond it carry an opening: a Diffie-Hellman on each side.
        let ahead = config.window.saturating_mul(2 * u32::from(MAX_SHARDS)).saturating_add(64);
        let (rx_labels, tx_labels) = match role {
            Role::Opener => (keys.reverse_labels.clone(), keys.forward_labels.clone()),
            Role::Acceptor => (keys.forward_labels.clone(), keys.reverse_labels.clone()),
        };
        let labels = LabelWindow::new(rx_labels, ahead.clamp(256, MAX_LABELS_AHEAD), LABELS_BEHIND);
        Self {
            role,
            mode,
            keys,
            receiver: None,
            labels,
            tx_labels,
            wall_clock: (now, Duration::ZERO),
            opened_unix: None,
            opening_seq: 0,
            peer_labels: None,
            loss: LossMeter::new(config.initial_loss),
            config,
            send,
            recv,
            coder: Coder::default(),
            frame_len,
            tx_seq: 0,
            sent_times: SendTimes::default(),
            seen: SeenWindow::new(),
            reorder: 0,
            rx_rate: RateMeter::default(),
            block_rate: RateMeter::default(),
            rx_largest_at: None,
            frames_unacked: false,
            rtt: Rtt::new(),
            block_rtt: Rtt::new(),
            rtt_seq: None,
            last_heard: now,
            next_tx: now,
            rng: ChaCha12Rng::from_seed(seed),
            state: State::Open,
            reset_pending: None,
            open_pending: role == Role::Opener,
            supply: Supply::new(),
            surbs: VecDeque::new(),
            surbs_received: 0,
            unconfirmed_since: None,
            stats: ConnectionStats::default(),
        }
    }

    /// The acceptor's side of a stream, from a frame whose stream id is unknown: derives the
    /// keys with whichever of `keys` opens it. The frame is then handled as any other.
    pub fn accept<R: rand::CryptoRng + ?Sized>(
        keys: &[ReceiverKey],
        frame: &[u8],
        config: StreamConfig,
        limits: FrameLimits,
        now: Instant,
        rng: &mut R,
    ) -> Result<Self, AcceptError> {
        let (label, e) = frame::split(frame)?;
        let e = keys::opening_key(&e);
        let (stream_keys, opening, items) = keys
            .iter()
            .filter_map(|k| k.envelope_key(&e))
            .find_map(|key| {
                let opening = frame::open_envelope(&key, frame).ok()?;
                let sk = StreamKeys::from_secret(opening.secret.clone());
                // The label binds the envelope to the frame it came in.
                if labels::label(&sk.forward_labels, opening.seq) != label {
                    return None;
                }
                let items = frame::open(&sk.forward, opening.seq, frame).ok()?;
                Some((sk, opening, items))
            })
            .ok_or(AcceptError::Frame(FrameError::Authentication))?;
        let Some(flags) = items.open else { return Err(AcceptError::NotAnOpening) };
        let mode = if flags & OPEN_MESSAGE != 0 { Mode::Message } else { Mode::Stream };
        let shard_len = FrameLimits::shard_len(limits.reverse);
        let send = match mode {
            Mode::Stream => SendHalf::new(shard_len, INITIAL_WINDOW),
            Mode::Message => SendHalf::finished(),
        };
        let recv = RecvHalf::new(config.window);
        let mut conn = Self::new(
            Role::Acceptor,
            mode,
            stream_keys,
            config,
            send,
            recv,
            limits.reverse,
            now,
            rng,
        );
        conn.opened_unix = Some(opening.unix_secs);
        conn.opening_seq = opening.seq;
        // The frame authenticated; a shard it carries may still be refused on its own.
        let _ = conn.handle_frame(now, frame);
        Ok(conn)
    }

    /// The stream's local name: both sides derive it from the stream secret, and it is never
    /// written on the wire.
    pub fn id(&self) -> &StreamId {
        &self.keys.id
    }

    /// The stream's keys: the fuzz target seals frames a peer holding them could send.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn keys(&self) -> &StreamKeys {
        &self.keys
    }

    /// SURBs held for replies (acceptor).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn held_surbs(&self) -> usize {
        self.surbs.len()
    }

    /// Sets the Unix time at `now`, which openings carry (the acceptor refuses stale ones).
    pub fn set_wall_clock(&mut self, now: Instant, unix: Duration) {
        self.wall_clock = (now, unix);
    }

    /// Acceptor: the Unix second the opening it was accepted from was sealed at.
    pub fn opened_unix(&self) -> Option<u64> {
        self.opened_unix
    }

    /// Acceptor: the sequence number of the opening it was accepted from.
    pub(crate) fn opening_seq(&self) -> u32 {
        self.opening_seq
    }

    /// The labels of the frames this side may receive next.
    pub(crate) fn expected_labels(&self) -> impl Iterator<Item = &Label> {
        self.labels.labels()
    }

    /// How many labels this side expects now (its share of the label index's memory).
    pub fn expected_label_count(&self) -> usize {
        self.labels.len()
    }

    /// Starts keeping the changes to [`Self::expected_labels`] for
    /// [`Self::drain_label_updates`].
    pub(crate) fn record_label_updates(&mut self) {
        self.labels.record_updates();
    }

    /// Labels that came into or left the window since the last call (once recording).
    pub(crate) fn drain_label_updates(&mut self) -> Vec<LabelUpdate> {
        self.labels.drain_updates().collect()
    }

    /// Which side this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// What the stream carries.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Figures so far.
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            send: self.send.stats(),
            recv: self.recv.stats(),
            rtt: self.rtt.smoothed(),
            loss: self.loss.estimate(),
            loss_sampled: self.loss.sampled(),
            ..self.stats
        }
    }

    /// The error that ended the stream, if one did.
    pub fn error(&self) -> Option<&ConnectionError> {
        match &self.state {
            State::Failed(e) => Some(e),
            State::Open => None,
        }
    }

    fn check(&self) -> Result<(), ConnectionError> {
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            State::Open => Ok(()),
        }
    }

    /// Ends the stream with `error` (a transport failure, say).
    pub fn fail(&mut self, error: ConnectionError) {
        if self.state == State::Open {
            self.state = State::Failed(error);
        }
    }

    /// Takes as much of `data` as the send buffer has room for (0: wait for room).
    pub fn write(&mut self, now: Instant, data: &[u8]) -> Result<usize, ConnectionError> {
        self.check()?;
        Ok(self.send.write(now, data, &self.config))
    }

    /// Bytes written and not yet formed into blocks.
    pub fn buffered(&self) -> usize {
        self.send.buffered()
    }

    /// Bytes received and held: shards of incomplete blocks, blocks waiting for an earlier
    /// one, and bytes the application has not read.
    pub fn received_buffered(&self) -> usize {
        self.recv.buffered_bytes()
    }

    /// Caps the rebuilt bytes this stream holds, waiting for an earlier block or for the
    /// application; shards that would complete a block past it are refused
    /// ([`ShardError::OverBudget`]) and sent again by the peer. Unlimited by default.
    pub fn set_rebuilt_limit(&mut self, bytes: usize) {
        self.recv.set_rebuilt_limit(bytes);
    }

    /// Sends what is buffered now, without waiting for more.
    pub fn flush(&mut self) {
        self.send.flush();
    }

    /// Whether everything written went out at least once.
    pub fn is_flushed(&self) -> bool {
        self.send.is_flushed()
    }

    /// Closes this side's direction: buffered bytes go out, then the end of the stream.
    pub fn finish(&mut self) {
        self.send.finish();
    }

    /// Whether this side closed its direction (writes are refused from then on).
    pub fn is_write_closed(&self) -> bool {
        self.send.is_write_closed()
    }

    /// Whether this side closed its direction and the peer acknowledged all of it.
    pub fn is_finished(&self) -> bool {
        self.send.is_finished()
    }

    /// Reads what arrived, in order.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConnectionError> {
        let n = self.recv.read(buf);
        if n == 0 && !self.recv.is_eof() {
            self.check()?;
        }
        Ok(n)
    }

    /// Bytes ready to read.
    pub fn readable(&self) -> usize {
        self.recv.readable()
    }

    /// Whether the peer closed its direction and everything was read.
    pub fn is_eof(&self) -> bool {
        self.recv.is_eof()
    }

    /// Aborts the stream: the peer is told (as soon as a frame can carry it) and both sides'
    /// reads and writes fail.
    pub fn reset(&mut self, code: u8) {
        if self.state == State::Open {
            self.reset_pending = Some(code);
            self.state = State::Failed(ConnectionError::LocallyReset(code));
        }
    }

    /// Whether nothing remains to do: both directions ended and acknowledged, or the stream
    /// failed (and a reset, if any, went out).
    pub fn is_closed(&self) -> bool {
        match self.state {
            State::Failed(_) => self.reset_pending.is_none() || self.cannot_send(),
            State::Open => {
                self.send.is_finished() && self.recv.is_eof() && !self.recv.ack_pending()
            }
        }
    }

    /// The code of a reset that was made and has not gone out yet.
    pub(crate) fn reset_unsent(&self) -> Option<u8> {
        self.reset_pending
    }

    fn cannot_send(&self) -> bool {
        self.role == Role::Acceptor && self.surbs.is_empty()
    }

    /// The retransmission timeout: the smoothed time from a block's last shard to its
    /// acknowledgement, with four deviations; never less than the frames' round trip (with
    /// its deviations) plus the time the peer may hold its acknowledgement back. Blocks sent
    /// again give no samples (Karn's rule), but every frame's round trip is measured without
    /// ambiguity, so that floor follows a round trip that grows while blocks are resent.
    fn rto(&self) -> Duration {
        let frames = self.frame_rto();
        if self.block_rtt.smoothed().is_some() {
            let (initial, min, max) =
                (self.config.initial_rto, self.config.min_rto, self.config.max_rto);
            return self.block_rtt.rto(initial, min, max).max(frames);
        }
        frames
    }

    /// How long the answer to one frame may take: the frames' smoothed round trip with four
    /// deviations, plus the time the peer may hold its acknowledgement back. Unlike
    /// [`Self::rto`] it does not wait for the slowest shard of a block, so it is what SURBs
    /// (which the acceptor reports on its next frame) are judged by.
    fn frame_rto(&self) -> Duration {
        let (initial, min, max) =
            (self.config.initial_rto, self.config.min_rto, self.config.max_rto);
        (self.rtt.rto(initial, min, max) + self.config.ack_delay).min(max)
    }

    /// How long a block left short behind one that arrived is waited for (see
    /// [`SendHalf::resend_lost`]): the round trip of the block that arrived plus a quarter of
    /// the smoothed round trip for reordering (as TCP's RACK starts from), and never less than
    /// a frame's timeout, since the mixing delays that make up most of the round trip reorder
    /// frames by much of it (with a quarter alone, 2 % of blocks were sent again on a
    /// lossless channel). None before a round trip is measured.
    fn loss_wait(&self) -> Option<LossWait> {
        let srtt = self.rtt.smoothed()?;
        Some(LossWait { reorder: srtt / REORDER_SHARE, floor: self.frame_rto() })
    }

    /// Takes a frame from the peer.
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<(), FrameDrop> {
        let (label, _) = frame::split(bytes)?;
        let seq = match self.labels.lookup(&label) {
            Lookup::New(seq) => seq,
            Lookup::Seen(_) => return Err(FrameDrop::Replay),
            // The opener knows which stream a reverse frame is for (its SURB says), and
            // nobody else can send one through that SURB: it can afford to look further
            // ahead than the window, for frames that overtook a long run of lost ones.
            Lookup::Unknown if self.role == Role::Opener => {
                let from = self.labels.highest().map_or(0, |h| h.saturating_add(1));
                let to = from.saturating_add(MAX_LABELS_AHEAD);
                self.labels.search(&label, from, to).ok_or(FrameDrop::UnknownLabel)?
            }
            Lookup::Unknown => return Err(FrameDrop::UnknownLabel),
        };
        self.handle_numbered(now, label, seq, bytes)
    }

    /// Acceptor: a frame whose label this stream does not expect (see
    /// [`FrameDrop::UnknownLabel`]), which may be an opening of it sent further ahead than its
    /// window reaches: opens its envelope under `keys` and, if it names this stream, takes it.
    /// Costs a Diffie-Hellman per key.
    pub fn handle_stray_opening(
        &mut self,
        keys: &[ReceiverKey],
        now: Instant,
        bytes: &[u8],
    ) -> Result<(), FrameDrop> {
        let (_, e) = frame::split(bytes)?;
        let e = keys::opening_key(&e);
        let opening = keys
            .iter()
            .filter_map(|k| k.envelope_key(&e))
            .find_map(|key| frame::open_envelope(&key, bytes).ok())
            .ok_or(FrameDrop::UnknownLabel)?;
        // Compared without an early exit: the secret is the stream's.
        let differ =
            opening.secret.iter().zip(self.keys.secret.iter()).fold(0, |d, (a, b)| d | (a ^ b));
        if differ != 0 {
            return Err(FrameDrop::UnknownLabel);
        }
        self.handle_opening(now, opening.seq, bytes)
    }

    /// Acceptor: an opening frame of this stream that its label window did not cover (it
    /// overtook many others); `seq` is what its envelope says, and its label must match.
    pub(crate) fn handle_opening(
        &mut self,
        now: Instant,
        seq: u32,
        bytes: &[u8],
    ) -> Result<(), FrameDrop> {
        let (label, _) = frame::split(bytes)?;
        let rx_key = match self.role {
            Role::Acceptor => &self.keys.forward_labels,
            Role::Opener => &self.keys.reverse_labels,
        };
        if labels::label(rx_key, seq) != label {
            return Err(FrameDrop::UnknownLabel);
        }
        if self.labels.lookup(&label) != Lookup::Unknown {
            return self.handle_frame(now, bytes);
        }
        self.handle_numbered(now, label, seq, bytes)
    }

    fn handle_numbered(
        &mut self,
        now: Instant,
        label: Label,
        seq: u32,
        bytes: &[u8],
    ) -> Result<(), FrameDrop> {
        match self.seen.check(seq) {
            Seen::New => {}
            Seen::Duplicate => return Err(FrameDrop::Replay),
            Seen::TooOld => return Err(FrameDrop::TooOld),
        }
        let key = match self.role {
            Role::Acceptor => &self.keys.forward,
            Role::Opener => &self.keys.reverse,
        };
        let items = frame::open(key, seq, bytes)?;
        self.labels.mark(&label, seq);
        match self.seen.highest() {
            Some(h) if seq < h => {
                // How far frames arrive out of order: loss samples stay behind that.
                self.reorder = self.reorder.max(h - seq);
            }
            _ => {
                self.rx_largest_at = Some(now);
                self.reorder -= self.reorder / 256;
            }
        }
        self.seen.mark(seq);
        self.rx_rate.record(now);
        self.stats.frames_received += 1;
        self.frames_unacked = true;
        self.last_heard = now;
        if self.state != State::Open {
            // A reset made before any SURB arrived takes them from any frame (the opener sends
            // some with every frame until it hears back), or it could never go out and the
            // opener would wait for its idle timeout.
            if self.role == Role::Acceptor
                && self.reset_pending.is_some()
                && let Some(surbs) = items.surbs
            {
                self.take_surbs(now, surbs);
            }
            return Ok(());
        }
        if let Some(code) = items.reset {
            self.state = State::Failed(ConnectionError::Reset(code));
            return Ok(());
        }
        if let Some(labels) = items.ahead {
            self.labels.expect_ahead(u32::from(labels));
        }
        match self.role {
            Role::Opener => {
                self.open_pending = false;
                if items.surbs.is_some() || items.open.is_some() {
                    return Err(FrameDrop::Protocol("acceptor sent an opener's item"));
                }
                if let Some(want) = items.want {
                    // SURBs that were never sent cannot have arrived. Taken as true, such a
                    // count makes every SURB sent look spent, and the refill never ends.
                    if u64::from(want.received) > self.supply.total {
                        return Err(FrameDrop::Protocol("SURB report counts more than were sent"));
                    }
                    self.supply.on_report(now, want);
                }
            }
            Role::Acceptor => {
                if items.want.is_some() {
                    return Err(FrameDrop::Protocol("opener sent an acceptor's item"));
                }
                if let Some(surbs) = items.surbs {
                    self.take_surbs(now, surbs);
                }
            }
        }
        if let Some(ack) = &items.ack {
            if self.peer_labels.is_none_or(|(largest, _)| ack.largest_seq >= largest) {
                self.peer_labels = Some((ack.largest_seq, u32::from(ack.labels_ahead)));
            }
            if self.rtt_seq.is_none_or(|s| ack.largest_seq > s)
                && let Some(sent) = self.sent_times.sent_at(ack.largest_seq)
            {
                let delay = Duration::from_millis(u64::from(ack.ack_delay_ms));
                let sample = now.saturating_duration_since(sent).saturating_sub(delay);
                self.rtt.sample(sample.max(Duration::from_micros(100)));
                self.rtt_seq = Some(ack.largest_seq);
                self.send.reset_backoff();
            }
            self.loss.on_sample(ack.sample_end, ack.sample_len, ack.sample_got);
            if let Some(sample) = self.send.on_ack(now, ack) {
                self.block_rtt.sample(sample.max(Duration::from_micros(100)));
            }
            if let Some(reorder) = self.loss_wait() {
                let loss = self.loss.estimate();
                self.send.resend_lost(now, reorder, &self.config, loss);
            }
        }
        if let Some(data) = items.data {
            let refuse = match (self.role, self.mode) {
                (Role::Opener, Mode::Message) => Some("data back on a message"),
                _ => None,
            };
            if let Some(why) = refuse {
                return Err(FrameDrop::Protocol(why));
            }
            self.recv.on_data(now, data, &mut self.coder)?;
        }
        Ok(())
    }

    fn take_surbs(&mut self, now: Instant, surbs: Surbs) {
        let usable = Duration::from_millis(u64::from(surbs.lifetime_ms)).mul_f64(SURB_USABLE_SHARE);
        let count = surbs.surbs.len();
        self.surbs_received = self.surbs_received.wrapping_add(count as u32);
        self.stats.surbs += count as u64;
        for surb in surbs.surbs {
            if self.surbs.len() >= MAX_HELD_SURBS {
                self.stats.surbs_expired += 1;
                continue;
            }
            // Bundles of one opener share a lifetime: keep the order by expiry.
            let expires = now + usable;
            let at = self.surbs.partition_point(|(e, _)| *e <= expires);
            self.surbs.insert(at, (expires, surb));
        }
        self.unconfirmed_since.get_or_insert(now);
    }

    fn drop_expired_surbs(&mut self, now: Instant) {
        while self.surbs.front().is_some_and(|(e, _)| *e <= now) {
            self.surbs.pop_front();
            self.stats.surbs_expired += 1;
        }
    }

    /// The SURBs the acceptor wants in all: what its queued frames need plus a reserve.
    fn wanted(&self, now: Instant) -> u16 {
        let reserve = usize::from(self.config.min_surbs);
        let queued = if self.send.has_shard(now, &self.config) {
            usize::from(self.config.data_shards) * 2
        } else {
            0
        };
        let backlog = self.send.in_flight() * 2;
        (reserve + queued + backlog).min(usize::from(self.config.max_surbs)) as u16
    }

    /// Seals the next frame; `None` (and the stream failed) once the sequence numbers are
    /// used up.
    fn seal(&mut self, now: Instant, items: &Items) -> Option<Vec<u8>> {
        let seq = self.tx_seq;
        if seq == u32::MAX {
            // The last number is never used: the nonce of every frame stays unique.
            self.fail(ConnectionError::SequenceExhausted);
            return None;
        }
        self.tx_seq += 1;
        self.sent_times.record(seq, now);
        self.stats.frames_sent += 1;
        if !self.config.jitter.is_zero() {
            let gap = self.config.jitter.mul_f64(self.rng.random::<f64>());
            self.next_tx = now + gap;
        }
        let label = labels::label(&self.tx_labels, seq);
        // Until the acceptor answers, every frame can open the stream on its own; later, a
        // frame beyond the labels the acceptor said it expects names its stream the same way.
        // Those labels stay expected (the acceptor's window only moves up), however late the
        // acknowledgement that announced them.
        let beyond = self
            .peer_labels
            .is_none_or(|(largest, ahead)| u64::from(seq) > u64::from(largest) + u64::from(ahead));
        let opening = match (self.role, self.open_pending || beyond, self.receiver) {
            (Role::Opener, true, Some(receiver)) => {
                let (ephemeral, key) = keys::opening_keys(&receiver, &mut self.rng)?;
                self.stats.openings_sent += 1;
                let (at, unix) = self.wall_clock;
                let unix = unix + now.saturating_duration_since(at);
                let opening =
                    Opening { secret: self.keys.secret.clone(), seq, unix_secs: unix.as_secs() };
                Some((ephemeral, key, opening))
            }
            _ => None,
        };
        let envelope = opening.as_ref().map(|(ephemeral, key, opening)| Envelope {
            ephemeral: *ephemeral,
            key,
            opening,
        });
        let key = match self.role {
            Role::Opener => &self.keys.forward,
            Role::Acceptor => &self.keys.reverse,
        };
        let rng = &mut self.rng;
        let sealed = frame::seal(key, &label, seq, items, envelope, self.frame_len, &mut |b| {
            rng.fill_bytes(b)
        });
        debug_assert!(sealed.is_ok(), "items are sized to the frame");
        sealed.ok()
    }

    fn make_ack(&mut self, now: Instant) -> frame::Ack {
        self.frames_unacked = false;
        let mut ack = self.recv.make_ack();
        let largest = self.seen.highest().unwrap_or(0);
        ack.largest_seq = largest;
        ack.labels_ahead = self.labels.advertise(largest).min(u32::from(u16::MAX)) as u16;
        // A loss sample over frames old enough that the late ones have arrived.
        let end = largest.saturating_sub(self.reorder + 8);
        let start =
            end.saturating_sub(LOSS_SAMPLE).max(largest.saturating_sub(SeenWindow::SPAN - 1));
        if let Some(got) = self.seen.count(start, end) {
            ack.sample_end = end;
            ack.sample_len = (end - start) as u16;
            ack.sample_got = got as u16;
        }
        ack.ack_delay_ms = self.rx_largest_at.map_or(0, |t| {
            now.saturating_duration_since(t).as_millis().min(u128::from(u16::MAX)) as u16
        });
        ack
    }

    /// Labels to ask the peer to expect above the largest sequence number it acknowledged,
    /// when this side runs further ahead of it than half of what the peer said it expects:
    /// twice the distance, so that the window still covers this side a round trip later.
    /// Without it every frame beyond the peer's window would need an opening (a
    /// Diffie-Hellman on each side), and a peer that sees frames arrive in order cannot tell
    /// how far ahead of its acknowledgements the sender runs.
    fn ahead_request(&self) -> Option<u16> {
        let (largest, ahead) = self.peer_labels?;
        let lag = self.tx_seq.saturating_sub(largest);
        let max = u32::from(u16::MAX);
        (lag > ahead / 2 && ahead < max).then(|| lag.saturating_mul(2).min(max) as u16)
    }

    fn room(&self) -> usize {
        self.frame_len.saturating_sub(FRAME_OVERHEAD)
    }

    /// The opener's next frame (one mix message to the acceptor), if one is due.
    pub fn poll_transmit(&mut self, now: Instant, source: &mut dyn SurbSource) -> Option<Vec<u8>> {
        debug_assert_eq!(self.role, Role::Opener);
        if now < self.next_tx {
            return None;
        }
        let mut items = Items::default();
        if let Some(code) = self.reset_pending.take() {
            items.reset = Some(code);
            return self.seal(now, &items);
        }
        if self.state != State::Open {
            return None;
        }
        if self.open_pending {
            items.open = Some(if self.mode == Mode::Message { OPEN_MESSAGE } else { 0 });
        }
        let ack_due = self.recv.ack_due(now, self.config.ack_delay);
        let data_ready = self.send.has_shard(now, &self.config);
        let (deficit, urgent, headroom, nudging) = self.surb_deficit(now);
        let first = self.stats.frames_sent == 0;
        let surbs_now = deficit > 0 && (urgent || deficit >= MAX_FRAME_SURBS as u64 || !data_ready);
        if surbs_now || (first && !data_ready) {
            if ack_due {
                items.ack = Some(self.make_ack(now));
            }
            let room = self.room().saturating_sub(items.encoded_len() + 6);
            let fit = (room / mix_sphinx::SURB_SIZE).min(MAX_FRAME_SURBS);
            // A frame costs the same with one SURB as with five: fill it, up to the cap.
            let count = if deficit > 0 { fit.min(headroom as usize) } else { 0 };
            let made = if count > 0 { source.make_surbs(count) } else { None };
            if count > 0 && made.as_ref().is_none_or(|(s, _)| s.is_empty()) {
                self.supply.blocked_until = Some(now + SURB_RETRY);
            }
            if let Some((surbs, lifetime)) = made.filter(|(s, _)| !s.is_empty()) {
                self.supply.blocked_until = None;
                self.supply.sent(now, surbs.len(), lifetime);
                if nudging {
                    self.supply.nudged(now);
                }
                self.stats.surbs += surbs.len() as u64;
                // Whole seconds: near a key epoch's end the lifetime ends with the opener's
                // epoch, and to the millisecond it would tell the acceptor the opener's clock
                // (which can link one sender's streams) more finely than openings do.
                let whole = lifetime.as_secs().saturating_mul(1000);
                let lifetime_ms = whole.min(u64::from(u32::MAX)) as u32;
                items.surbs = Some(Surbs { lifetime_ms, surbs });
            }
            if !items.is_empty() {
                return self.seal(now, &items);
            }
        }
        if data_ready {
            items.ahead = self.ahead_request();
            if ack_due {
                let ack = self.make_ack(now);
                if items.encoded_len() + ack.encoded_len() <= SMALL_ITEMS {
                    items.ack = Some(ack);
                } else {
                    // Too many gaps to ride along: a frame of its own.
                    items.ack = Some(ack);
                    return self.seal(now, &items);
                }
            } else if self.frames_unacked && !self.recv.ack_pending() {
                // Frames came back since the latest acknowledgement: say so where it fits, at
                // no cost (the room is kept anyway). The acceptor gets round-trip samples
                // from it, which it has none of otherwise until it sends data: its timeouts
                // (its last block's, on closing) would stay at `initial_rto`.
                let ack = self.make_ack(now);
                if items.encoded_len() + ack.encoded_len() <= SMALL_ITEMS {
                    items.ack = Some(ack);
                }
            }
            let loss = self.loss.estimate();
            let blocks = self.send.stats().blocks;
            if let Some(data) = self.send.poll_shard(now, &self.config, &mut self.coder, loss) {
                items.data = Some(data);
            }
            if self.send.stats().blocks > blocks {
                self.block_rate.record(now);
            }
            if !items.is_empty() {
                return self.seal(now, &items);
            }
        }
        if ack_due {
            items.ack = Some(self.make_ack(now));
            return self.seal(now, &items);
        }
        None
    }

    /// How long before their expiry the opener stops counting SURBs as usable.
    fn surb_margin(&self) -> Duration {
        let lifetime = self
            .supply
            .batches
            .back()
            .map_or(Duration::ZERO, |b| b.expires.saturating_duration_since(b.at));
        lifetime.mul_f64(1.0 - SURB_USABLE_SHARE).max(self.rto())
    }

    /// When the opener tops the acceptor up unasked: its latest report is old while it owes
    /// us something (an acknowledgement, or data it said it had), so the frames that would
    /// have told us more may have been lost with the SURBs they used; or sooner, a frame's
    /// timeout after the latest top-up, once a block timed out (the acceptor may hold the
    /// block and no SURB to say so). Backs off while nothing answers.
    fn nudge_at(&self) -> Option<Instant> {
        let expecting =
            self.send.in_flight() > 0 || self.supply.report.is_some_and(|r| r.wanted > r.held);
        if !expecting || self.stats.frames_sent == 0 {
            return None;
        }
        let backoff = 1u32 << self.supply.nudges.min(8);
        let every =
            (self.frame_rto() * 2).saturating_mul(backoff).min(self.config.idle_timeout / 4);
        let since = self.supply.report_at.unwrap_or(self.last_heard);
        let since = self.supply.last_nudge.map_or(since, |t| t.max(since));
        let after_timeout = self.supply.timed_out.map(|t| {
            let gap = self.frame_rto().saturating_mul(backoff);
            self.supply.last_nudge.map_or(t, |last| t.max(last + gap))
        });
        Some(after_timeout.map_or(since + every, |t| t.min(since + every)))
    }

    /// SURBs to send now, whether the acceptor is (about to be) without, how many more it may
    /// be sent at most, and whether they are a top-up unasked (see [`Self::nudge_at`]).
    fn surb_deficit(&mut self, now: Instant) -> (u64, bool, u64, bool) {
        if self.supply.blocked_until.is_some_and(|t| now < t) {
            return (0, false, 0, false);
        }
        let rto = self.rto();
        let margin = self.surb_margin();
        let (fresh, transit) = self.supply.stock(now, margin, self.frame_rto() * 2);
        // Enough for what the acceptor asks, and for two round trips of the frames it sends
        // at its current rate (the refill takes a round trip to arrive).
        // Frames lost on the way in both directions make SURBs scarcer still.
        let delivered = (1.0 - self.loss.estimate()).clamp(0.3, 1.0);
        let blocks = self.block_rate.rate(now);
        let rate = self.rx_rate.rate(now).max(blocks / 2.0 + 1.0);
        let spending = rate * self.rtt.smoothed().unwrap_or(rto).as_secs_f64() / delivered;
        // Generous while data flows: a SURB that expires unused costs one SURB's construction
        // per lifetime, a starved acceptor stalls the stream for a round trip.
        let margin = if blocks > 1.0 { 8 } else { 0 };
        let pace = u64::from(self.config.min_surbs) + margin + (4.0 * spending).ceil() as u64;
        let transit = (transit as f64 * delivered) as u64;
        let target = match self.supply.report {
            None => u64::from(self.config.initial_surbs),
            Some(r) => u64::from(r.wanted).max(pace),
        }
        .min(u64::from(self.config.max_surbs));
        let mut deficit = target.saturating_sub(fresh + transit);
        let min = u64::from(self.config.min_surbs);
        let mut urgent = fresh + transit < min;
        // Counted once SURBs went out (`Supply::nudged`), but the credit below covers them.
        let nudging = self.nudge_at().is_some_and(|t| now >= t);
        if nudging {
            deficit = deficit.max(min);
            urgent = true;
        }
        // The acceptor's reports can claim any need; what it cannot fake is the frames it
        // sent (each spent a SURB), the data this side sent (which it must acknowledge) and
        // the lifetimes this side gave. Past the first supply, the unasked top-ups and
        // replacements of expired SURBs, SURBs follow those, a few for each, so reports
        // alone do not make this side build SURBs faster than the stream needs them.
        let allowed = u64::from(self.config.initial_surbs)
            + SURB_CREDIT_BASE
            + u64::from(self.config.min_surbs) * (self.supply.nudged + u64::from(nudging))
            + SURBS_PER_FRAME_RECEIVED * self.stats.frames_received
            + SURBS_PER_SHARD_SENT * self.stats.send.shards_sent;
        let outstanding = self.stats.surbs.saturating_sub(self.supply.expired);
        let credit = allowed.saturating_sub(outstanding);
        let headroom = u64::from(self.config.max_surbs).saturating_sub(fresh + transit).min(credit);
        (deficit.min(headroom), urgent && deficit > 0, headroom, nudging)
    }

    /// The acceptor's next frame and the SURB to send it through, if one is due and a SURB
    /// is at hand.
    pub fn poll_transmit_reply(&mut self, now: Instant) -> Option<(SurbBytes, Vec<u8>)> {
        debug_assert_eq!(self.role, Role::Acceptor);
        self.drop_expired_surbs(now);
        if self.surbs.is_empty() || now < self.next_tx {
            return None;
        }
        let mut items = Items::default();
        if let Some(code) = self.reset_pending.take() {
            items.reset = Some(code);
        } else if self.state == State::Open {
            let ack_due = self.recv.ack_due(now, self.config.ack_delay);
            let data_ready = self.send.has_shard(now, &self.config);
            // SURBs that arrived are confirmed when nothing else would tell, unless that would
            // use up the reserve (the opener would refill it, and that would be confirmed...).
            let confirm = self.unconfirmed_since.is_some_and(|t| now >= t + self.config.ack_delay)
                && self.surbs.len() > usize::from(self.config.min_surbs);
            if !(ack_due || data_ready || confirm) {
                return None;
            }
            if ack_due {
                items.ack = Some(self.make_ack(now));
            }
            let ahead = self.ahead_request();
            let fits = items.encoded_len() + ahead.map_or(0, |_| 3) <= SMALL_ITEMS - 9;
            if data_ready && fits {
                items.ahead = ahead;
                let loss = self.loss.estimate();
                items.data = self.send.poll_shard(now, &self.config, &mut self.coder, loss);
            }
        } else {
            return None;
        }
        // The newest SURB first: it was built with what the opener knew last of the network
        // (nodes that died since the older ones were made are avoided), and the older ones,
        // if they were not needed, expire.
        let (_, surb) = self.surbs.pop_back()?;
        let wanted = self.wanted(now);
        items.want = Some(Want {
            held: self.surbs.len().min(usize::from(u16::MAX)) as u16,
            wanted,
            received: self.surbs_received,
        });
        self.unconfirmed_since = None;
        Some((surb, self.seal(now, &items)?))
    }

    /// Moves timers along: resends overdue blocks, ends a stream that went quiet.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Open {
            return;
        }
        if now >= self.last_heard + self.config.idle_timeout {
            self.state = State::Failed(ConnectionError::IdleTimeout(self.config.idle_timeout));
            return;
        }
        let rto = self.rto();
        let loss = self.loss.estimate();
        if let Some(reorder) = self.loss_wait() {
            self.send.resend_lost(now, reorder, &self.config, loss);
        }
        if self.send.handle_timeout(now, rto, &self.config, loss) && self.role == Role::Opener {
            // No acknowledgement for a whole timeout: the data may have arrived and the
            // acceptor run out of SURBs to say so. The resent shards go out behind a top-up.
            self.supply.timed_out.get_or_insert(now);
        }
        if let Some(e) = self.send.failed() {
            self.state = State::Failed(ConnectionError::Unacknowledged(e.0));
        }
    }

    /// When [`Self::handle_timeout`] or a transmit has something to do next. Every time
    /// returned is one at which one of them changes something.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let can_send = self.role == Role::Opener || !self.surbs.is_empty();
        if self.state != State::Open {
            return (self.reset_pending.is_some() && can_send).then_some(self.next_tx.max(now));
        }
        let mut times = vec![self.last_heard + self.config.idle_timeout];
        if can_send {
            let rto = self.rto();
            let mut sends: Vec<Instant> = Vec::new();
            sends.extend(self.send.poll_timeout(rto, self.loss_wait(), &self.config));
            if self.recv.ack_pending() {
                sends.push(self.recv.ack_deadline(self.config.ack_delay).unwrap_or(now));
            }
            if self.send.has_shard(now, &self.config) {
                sends.push(now);
            }
            match self.role {
                Role::Opener => {
                    if self.stats.frames_sent == 0 {
                        sends.push(now);
                    }
                    // Usable SURBs run low at known times; top-ups are checked then.
                    let margin = self.surb_margin();
                    let later = |t: Instant| (t > now).then_some(t);
                    sends.extend(
                        self.supply
                            .batches
                            .iter()
                            .filter_map(|b| later(b.expires - margin.min(b.expires - b.at))),
                    );
                    sends.extend(self.nudge_at().and_then(later));
                    sends.extend(self.supply.blocked_until.and_then(later));
                }
                Role::Acceptor => {
                    if self.surbs.len() > usize::from(self.config.min_surbs) {
                        sends.extend(self.unconfirmed_since.map(|t| t + self.config.ack_delay));
                    }
                }
            }
            times.extend(sends.into_iter().map(|t| t.max(self.next_tx)));
        }
        times.into_iter().min()
    }
}

/// Why a frame did not open a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// Not a frame for any of this node's keys.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame of a stream this side does not know, without an OPEN: the stream ended here
    /// already, or never began.
    #[error("frame of an unknown stream without OPEN")]
    NotAnOpening,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::MIX_LIMITS;

    struct NoSurbs;

    impl SurbSource for NoSurbs {
        fn make_surbs(&mut self, _: usize) -> Option<(Vec<SurbBytes>, Duration)> {
            None
        }
    }

    struct OneSurb(Duration);

    impl SurbSource for OneSurb {
        fn make_surbs(&mut self, _: usize) -> Option<(Vec<SurbBytes>, Duration)> {
            Some((vec![zeroize::Zeroizing::new(vec![7u8; mix_sphinx::SURB_SIZE])], self.0))
        }
    }

    /// An opener of a stream, seeded, that sends without jitter.
    fn unjittered_opener(seed: u64, now: Instant) -> Connection {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let key = ReceiverKey::generate(&mut rng);
        let config = StreamConfig { jitter: Duration::ZERO, ..StreamConfig::default() };
        Connection::open(&key.public(), Mode::Stream, config, MIX_LIMITS, now, &mut rng).unwrap()
    }

    /// The SURB lifetime an opener writes is in whole seconds: to the millisecond, near the
    /// end of a key epoch, it gave away the opener's clock.
    #[test]
    fn surb_lifetimes_go_out_in_whole_seconds() {
        let now = Instant::now();
        let mut conn = unjittered_opener(4, now);
        conn.write(now, b"x").unwrap();
        conn.flush();
        let mut source = OneSurb(Duration::from_millis(42_987));
        let mut lifetimes = Vec::new();
        while let Some(frame) = conn.poll_transmit(now, &mut source) {
            let seq = conn.tx_seq - 1;
            let items = frame::open(&conn.keys.forward, seq, &frame).unwrap();
            lifetimes.extend(items.surbs.map(|s| s.lifetime_ms));
        }
        assert!(!lifetimes.is_empty(), "no SURB went out");
        assert!(lifetimes.iter().all(|&ms| ms == 42_000), "{lifetimes:?}");
    }

    /// The nonce of a frame is its sequence number: the last number is never used, and the
    /// stream fails with a typed error instead of wrapping around.
    #[test]
    fn sequence_numbers_never_wrap() {
        let now = Instant::now();
        let mut conn = unjittered_opener(3, now);
        conn.tx_seq = u32::MAX - 2;
        for _ in 0..2 {
            conn.reset_pending = Some(1);
            assert!(conn.poll_transmit(now, &mut NoSurbs).is_some());
        }
        conn.reset_pending = Some(1);
        assert_eq!(conn.poll_transmit(now, &mut NoSurbs), None);
        assert_eq!(conn.error(), Some(&ConnectionError::SequenceExhausted));
        assert_eq!(conn.tx_seq, u32::MAX);
    }
}
