//! What the core counts: plain numbers, no metrics library. The rust-libp2p driver exports
//! them to Prometheus after every poll ([`crate::Metrics`]); the simulator reads them directly.

use std::collections::BTreeMap;
use std::time::Duration;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Its tag was seen before under this mix key.
    Replay,
    /// Sphinx processing failed (MAC, α, final block or payload prefix).
    Sphinx(mix_sphinx::ProcessError),
    /// The frame was not 4608 bytes.
    BadLength,
    /// The next hop's address block does not decode.
    BadNextHop,
    /// The exit's destination address block does not decode.
    BadDestination,
    /// The message inside m does not parse.
    MalformedMessage,
    /// A reply for a SURB we do not hold (expired, or never ours).
    UnknownSurb,
    /// Another copy of a reply whose request was already answered through another SURB.
    DuplicateReply,
    /// Another copy of a message sent over several paths, already delivered.
    DuplicateMessage,
    /// A reply whose payload does not decrypt under its SURB's secrets.
    ReplyIntegrity,
    /// The delay queue was full.
    DelayQueueFull,
    /// The per-peer send queue was full.
    PeerQueueFull,
    /// The next hop could not be reached (dial or stream failure after one retry).
    Unreachable,
    /// A frame announced more than a packet's size.
    OversizedFrame,
    /// A frame did not complete within the read timeout.
    FrameTimeout,
    /// Too many inbound streams on one connection.
    TooManyStreams,
    /// An inbound stream failed in the middle of a frame.
    StreamError,
    /// Its spam-protection proof was refused (per-hop proofs before any Sphinx work; exit
    /// proofs before delivery).
    Proof(crate::spam::ProofError),
    /// More connections or pending dials than the node allows.
    TooManyPeers,
    /// An own packet waited for a cover slot until the keys it was built with expired.
    KeyExpired,
    /// Dropped on purpose by fault injection (`core::Config::drop_rate`, feature `testing`).
    Injected,
    /// As the exit: as many deliveries are queued or in flight as the node allows
    /// ([`crate::Config::max_exit_jobs`]).
    ExitQueueFull,
    /// As the exit: as many deliveries to this one destination are queued or in flight as the
    /// node allows ([`crate::Config::max_exit_jobs_per_destination`]).
    ExitDestinationFull,
    /// As the exit: a new destination would need a dial, and dials to destinations are
    /// rate-limited ([`crate::Config::exit_dial_rate`]).
    ExitDialRate,
    /// As the exit: a delivery given up to make room for a delivery to a less busy
    /// destination while the exit was full (the oldest of the destination holding the most,
    /// see [`crate::Config::max_exit_jobs`]).
    ExitEvicted,
    /// The replay filter of the key that opened it is full: accepting more packets would raise
    /// its false-positive rate past the design value.
    ReplayFilterFull,
    /// The node was stopping: received after the stop began, or still held for mixing when
    /// the time allowed for sending held packets on ran out.
    Stopping,
    /// Opening or building it failed inside this node (a hop worker panicked, or the workers
    /// are gone): a bug, never the packet's sender's doing.
    Internal,
    /// A message for a routed protocol ([`crate::Behaviour::route_protocol`]) arrived while
    /// its channel was full: the application is not reading it fast enough.
    RouteFull,
    /// Its next hop, or as the exit its destination, is not a pool member and its address is
    /// not one this node dials for others ([`crate::Config::local_addresses`]).
    LocalAddress,
}

impl DropReason {
    /// A stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::Sphinx(e) => e.reason(),
            Self::BadLength => "bad_length",
            Self::BadNextHop => "bad_next_hop",
            Self::BadDestination => "bad_destination",
            Self::MalformedMessage => "malformed_message",
            Self::UnknownSurb => "unknown_surb",
            Self::DuplicateReply => "duplicate_reply",
            Self::DuplicateMessage => "duplicate_message",
            Self::ReplyIntegrity => "reply_integrity",
            Self::DelayQueueFull => "delay_queue_full",
            Self::PeerQueueFull => "peer_queue_full",
            Self::Unreachable => "unreachable",
            Self::OversizedFrame => "oversized_frame",
            Self::FrameTimeout => "frame_timeout",
            Self::TooManyStreams => "too_many_streams",
            Self::StreamError => "stream_error",
            Self::Proof(e) => e.label(),
            Self::TooManyPeers => "too_many_peers",
            Self::KeyExpired => "key_expired",
            Self::Injected => "injected",
            Self::ExitQueueFull => "exit_queue_full",
            Self::ExitDestinationFull => "exit_destination_full",
            Self::ExitDialRate => "exit_dial_rate",
            Self::ExitEvicted => "exit_evicted",
            Self::ReplayFilterFull => "replay_filter_full",
            Self::Stopping => "stopping",
            Self::Internal => "internal_error",
            Self::RouteFull => "route_full",
            Self::LocalAddress => "local_address",
        }
    }
}

/// What kind of packet left the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SentKind {
    /// A packet this node originated.
    Own,
    /// A packet forwarded for another sender.
    Forward,
    /// A reply through a SURB, sent as an exit.
    Reply,
    /// A loop (cover) packet.
    Cover,
}

impl SentKind {
    /// A stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Own => "own",
            Self::Forward => "forward",
            Self::Reply => "reply",
            Self::Cover => "cover",
        }
    }
}

/// The counters and levels of one core, as [`crate::core::MixCore::stats`] returns them.
/// Counters only grow; levels (`delay_queue`, `replay_fill`, `replay_stages`) are the latest.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct CoreStats {
    /// Packets handed to the core by the driver.
    pub packets_received: u64,
    /// Messages delivered as an exit (to a destination, or to this node).
    pub deliveries: u64,
    /// Cover (loop) messages received as an exit.
    pub cover_received: u64,
    /// Own loops that came back.
    pub loops_returned: u64,
    /// Own loops that did not come back in time.
    pub loops_lost: u64,
    /// Cover slots left empty because the outbound rate budget was used up.
    pub cover_skipped: u64,
    /// Mix key rotations.
    pub key_rotations: u64,
    /// SURB replies received for own requests.
    pub replies_received: u64,
    /// Own requests that got no reply in time, or whose packets never left.
    pub requests_timed_out: u64,
    /// As the exit: delivered messages whose SURBs expired unanswered.
    pub answers_expired: u64,
    /// As the exit: deliveries to this node whose SURBs newer ones pushed out.
    pub answers_evicted: u64,
    /// As the exit: deliveries to destinations whose SURBs were not kept (their budget was
    /// full).
    pub answers_refused: u64,
    /// Packets held for their mixing delay now.
    pub delay_queue: usize,
    /// As the exit: delivered messages whose answer is awaited now.
    pub awaited_answers: usize,
    /// The current key's replay filter: tags over design capacity.
    pub replay_fill: f64,
    /// Bloom filter stages of the current key's replay filter.
    pub replay_stages: usize,
    sent: [u64; 4],
    dropped: BTreeMap<&'static str, u64>,
    mismatches: BTreeMap<&'static str, u64>,
    /// Grows with every change: the driver exports only when it moved.
    pub(crate) changes: u64,
}

impl CoreStats {
    /// Packets sent of `kind`.
    pub fn sent(&self, kind: SentKind) -> u64 {
        self.sent[kind as usize]
    }

    /// Packets forwarded for other senders.
    pub fn packets_forwarded(&self) -> u64 {
        self.sent(SentKind::Forward)
    }

    /// Loop packets sent.
    pub fn loops_sent(&self) -> u64 {
        self.sent(SentKind::Cover)
    }

    /// Own loops that came back (`true`) or were lost (`false`).
    pub fn loops(&self, returned: bool) -> u64 {
        if returned { self.loops_returned } else { self.loops_lost }
    }

    /// Packets the core dropped for `reason`.
    pub fn packets_dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason.label()).copied().unwrap_or(0)
    }

    /// Every drop so far, by reason label.
    pub fn drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.dropped.iter().map(|(reason, count)| (*reason, *count))
    }

    /// Packets suspected of being built for another wire format, of `kind`.
    pub fn wire_mismatches(&self, kind: super::Mismatch) -> u64 {
        self.mismatches.get(kind.label()).copied().unwrap_or(0)
    }

    /// Every suspected wire mismatch so far, by kind label.
    pub fn mismatches(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.mismatches.iter().map(|(kind, count)| (*kind, *count))
    }

    pub(crate) fn count_sent(&mut self, kind: SentKind) {
        self.sent[kind as usize] += 1;
        self.changes += 1;
    }

    pub(crate) fn count_dropped(&mut self, reason: DropReason) {
        *self.dropped.entry(reason.label()).or_default() += 1;
        self.changes += 1;
    }

    pub(crate) fn count_mismatch(&mut self, kind: super::Mismatch) {
        *self.mismatches.entry(kind.label()).or_default() += 1;
        self.changes += 1;
    }

    /// Bumps one of the plain counters.
    pub(crate) fn count(&mut self, counter: impl FnOnce(&mut Self) -> &mut u64) {
        *counter(self) += 1;
        self.changes += 1;
    }

    pub(crate) fn set_delay_queue(&mut self, depth: usize) {
        if self.delay_queue != depth {
            self.delay_queue = depth;
            self.changes += 1;
        }
    }

    pub(crate) fn answers_expired(&mut self, count: u64) {
        self.answers_expired += count;
        self.changes += 1;
    }

    pub(crate) fn answers_evicted(&mut self, count: u64) {
        if count > 0 {
            self.answers_evicted += count;
            self.changes += 1;
        }
    }

    pub(crate) fn set_awaited_answers(&mut self, awaited: usize) {
        if self.awaited_answers != awaited {
            self.awaited_answers = awaited;
            self.changes += 1;
        }
    }

    pub(crate) fn set_replay_fill(&mut self, fill: f64, stages: usize) {
        self.replay_fill = fill;
        self.replay_stages = stages;
        self.changes += 1;
    }
}

/// Samples for distributions (histograms in the driver's metrics), kept until the driver takes
/// them; past [`Observations::CAPACITY`] each, new samples are not kept.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Observations {
    /// Sampled per-hop mixing delays of packets this node held.
    pub hop_delays: Vec<Duration>,
    /// Round-trip times of own loops.
    pub loop_rtts: Vec<Duration>,
}

impl Observations {
    /// Samples kept of each kind until taken.
    pub const CAPACITY: usize = 4096;

    pub(crate) fn hop_delay(&mut self, delay: Duration) {
        if self.hop_delays.len() < Self::CAPACITY {
            self.hop_delays.push(delay);
        }
    }

    pub(crate) fn loop_rtt(&mut self, rtt: Duration) {
        if self.loop_rtts.len() < Self::CAPACITY {
            self.loop_rtts.push(rtt);
        }
    }
}
