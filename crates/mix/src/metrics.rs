//! Prometheus metrics of a mix node. The core and the driver update them; an application
//! registers them in its own registry with [`Metrics::register`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    /// Dropped on purpose by fault injection ([`crate::core::Config::drop_rate`]).
    Injected,
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
        }
    }
}

/// What kind of packet left the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SentKind {
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
    fn label(self) -> &'static str {
        match self {
            Self::Own => "own",
            Self::Forward => "forward",
            Self::Reply => "reply",
            Self::Cover => "cover",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The metrics of one node. Clones share the same values.
#[derive(Debug, Clone)]
pub struct Metrics {
    packets_received: Counter,
    packets_sent: Family<KindLabel, Counter>,
    packets_dropped: Family<ReasonLabel, Counter>,
    deliveries: Counter,
    cover_received: Counter,
    loops: Family<OutcomeLabel, Counter>,
    cover_skipped: Counter,
    key_rotations: Counter,
    replies_received: Counter,
    requests_timed_out: Counter,
    exit_requests: Family<OutcomeLabel, Counter>,
    delay_queue: Gauge,
    outbound_queue: Gauge,
    hop_delay_seconds: Histogram,
    loop_rtt_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            packets_received: Counter::default(),
            packets_sent: Family::default(),
            packets_dropped: Family::default(),
            deliveries: Counter::default(),
            cover_received: Counter::default(),
            loops: Family::default(),
            cover_skipped: Counter::default(),
            key_rotations: Counter::default(),
            replies_received: Counter::default(),
            requests_timed_out: Counter::default(),
            exit_requests: Family::default(),
            delay_queue: Gauge::default(),
            outbound_queue: Gauge::default(),
            hop_delay_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
            loop_rtt_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl Metrics {
    /// Registers every metric under the prefix `mix`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("mix");
        r.register(
            "packets_received",
            "Packets received on /mix/1.0.0",
            self.packets_received.clone(),
        );
        r.register(
            "packets_sent",
            "Packets sent, by kind (own, forward, reply, cover)",
            self.packets_sent.clone(),
        );
        r.register("packets_dropped", "Packets dropped, by reason", self.packets_dropped.clone());
        r.register("deliveries", "Messages delivered as an exit", self.deliveries.clone());
        r.register("cover_received", "Cover (loop) messages received", self.cover_received.clone());
        r.register("loops", "Own loop packets by outcome (returned, lost)", self.loops.clone());
        r.register(
            "cover_skipped",
            "Cover slots left empty because the outbound rate budget was used up",
            self.cover_skipped.clone(),
        );
        r.register(
            "loop_rtt_seconds",
            "Round-trip times of own loops",
            self.loop_rtt_seconds.clone(),
        );
        r.register("key_rotations", "Mix key rotations", self.key_rotations.clone());
        r.register(
            "replies_received",
            "SURB replies received for our requests",
            self.replies_received.clone(),
        );
        r.register(
            "requests_timed_out",
            "Requests that got no reply in time",
            self.requests_timed_out.clone(),
        );
        r.register(
            "exit_requests",
            "Exit deliveries to destinations, by outcome",
            self.exit_requests.clone(),
        );
        r.register(
            "delay_queue_depth",
            "Packets held for their mixing delay",
            self.delay_queue.clone(),
        );
        r.register(
            "outbound_queue_depth",
            "Packets queued for a peer's stream",
            self.outbound_queue.clone(),
        );
        r.register(
            "hop_delay_seconds",
            "Sampled per-hop mixing delays",
            self.hop_delay_seconds.clone(),
        );
    }

    pub(crate) fn received(&self) {
        self.packets_received.inc();
    }

    pub(crate) fn sent(&self, kind: SentKind) {
        self.packets_sent.get_or_create(&KindLabel { kind: kind.label() }).inc();
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.packets_dropped.get_or_create(&ReasonLabel { reason: reason.label() }).inc();
    }

    pub(crate) fn delivered(&self) {
        self.deliveries.inc();
    }

    pub(crate) fn cover(&self) {
        self.cover_received.inc();
    }

    pub(crate) fn loop_outcome(&self, outcome: &'static str) {
        self.loops.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn loop_rtt(&self, rtt: std::time::Duration) {
        self.loop_rtt_seconds.observe(rtt.as_secs_f64());
    }

    pub(crate) fn cover_skipped(&self) {
        self.cover_skipped.inc();
    }

    pub(crate) fn key_rotated(&self) {
        self.key_rotations.inc();
    }

    pub(crate) fn reply_received(&self) {
        self.replies_received.inc();
    }

    pub(crate) fn request_timed_out(&self) {
        self.requests_timed_out.inc();
    }

    pub(crate) fn exit_request(&self, outcome: &'static str) {
        self.exit_requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn set_delay_queue(&self, depth: usize) {
        self.delay_queue.set(depth as i64);
    }

    pub(crate) fn add_outbound_queue(&self, delta: i64) {
        self.outbound_queue.inc_by(delta);
    }

    pub(crate) fn hop_delay(&self, seconds: f64) {
        self.hop_delay_seconds.observe(seconds);
    }

    /// Packets waiting in the connections' send queues now.
    pub fn outbound_queue(&self) -> i64 {
        self.outbound_queue.get()
    }

    /// Packets held for their mixing delay now.
    pub fn delay_queue(&self) -> i64 {
        self.delay_queue.get()
    }

    /// Every packet dropped so far, whatever the reason, by reason label.
    pub fn drops_by_reason(&self) -> Vec<(String, u64)> {
        let mut registry = Registry::default();
        registry.register("d", "", self.packets_dropped.clone());
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return Vec::new();
        }
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("d_total{reason=\"")?;
                let (reason, value) = rest.split_once("\"} ")?;
                Some((reason.to_owned(), value.trim().parse::<f64>().ok()? as u64))
            })
            .collect()
    }

    /// Packets received so far.
    pub fn packets_received(&self) -> u64 {
        self.packets_received.get()
    }

    /// Packets forwarded for other senders so far.
    pub fn packets_forwarded(&self) -> u64 {
        self.packets_sent.get_or_create(&KindLabel { kind: SentKind::Forward.label() }).get()
    }

    /// Packets this node originated so far (including requests' packets).
    pub fn packets_originated(&self) -> u64 {
        self.packets_sent.get_or_create(&KindLabel { kind: SentKind::Own.label() }).get()
    }

    /// Packets dropped for `reason` so far.
    pub fn packets_dropped(&self, reason: DropReason) -> u64 {
        self.packets_dropped.get_or_create(&ReasonLabel { reason: reason.label() }).get()
    }

    /// Messages delivered as an exit so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.get()
    }

    /// Loop packets sent so far.
    pub fn loops_sent(&self) -> u64 {
        self.packets_sent.get_or_create(&KindLabel { kind: SentKind::Cover.label() }).get()
    }

    /// Own loops that came back (`true`) or were lost (`false`) so far.
    pub fn loops(&self, returned: bool) -> u64 {
        let outcome = if returned { "returned" } else { "lost" };
        self.loops.get_or_create(&OutcomeLabel { outcome }).get()
    }

    /// Cover messages received as an exit (other nodes' loops, and own ones) so far.
    pub fn cover_received(&self) -> u64 {
        self.cover_received.get()
    }

    /// Mix key rotations so far.
    pub fn key_rotations(&self) -> u64 {
        self.key_rotations.get()
    }

    /// Requests that timed out so far.
    pub fn requests_timed_out(&self) -> u64 {
        self.requests_timed_out.get()
    }
}
