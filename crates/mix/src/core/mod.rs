//! The mix node as a plain state machine: no sockets, no clock, no global randomness.
//!
//! Time comes in as `now` arguments and the RNG is owned and injected, so the same code runs
//! in the libp2p driver, in deterministic tests and in the simulator. The driver feeds it
//! received packets and timeouts and carries out its [`Output`]s:
//!
//! ```text
//!   send / request / reply ─┐            ┌─> Output::Transmit (packet to a peer, when due)
//!   answer(id) / forget(id) ┤            │
//!   handle_packet ──────────┼─> MixCore ─┼─> Output::Deliver { id, .. }  (we are the exit)
//!   handle_timeout(now) ────┘            ├─> Output::Reply    (answer to our request)
//!                                        └─> Output::RequestTimedOut
//!   poll_timeout() -> when to call handle_timeout next
//! ```
//!
//! The costly halves of opening a packet and of building an own message can run on other
//! threads: [`MixCore::prepare_packet`] / [`HopJob`] / [`MixCore::finish_packet`], and with
//! [`MixCore::set_build_jobs`], [`MixCore::next_build_job`] / [`BuildJob`] /
//! [`MixCore::finish_build`]; the core decides everything else, one step at a time.
//!
//! A delivered message's SURBs stay in the core: the driver (or the application) answers the
//! delivery by its id ([`MixCore::answer`]), or says none comes ([`MixCore::forget`]); unanswered
//! ones expire ([`Config::answer_timeout`]), within bounds per kind (deliveries to destinations,
//! [`Config::max_awaited_exit_answers`]; to this node, [`Config::max_awaited_local_answers`]).

mod answers;
mod build;
mod cover;
mod delay;
mod hop;
mod keys;
mod pool;
mod replay;
mod select;
pub mod stats;
mod surbs;
mod wire;

use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use mix_sphinx::{
    Action, AddressBlock, BuildError, EphemeralSecret, Hop, MESSAGE_SIZE, MessageError,
    NodeSecretKey, Packet, ProcessError, Route, Surb, SurbId, SurbKey, WireFormat, message,
};
use multiaddr::Multiaddr;
use rand::{CryptoRng, RngExt};

pub use build::{BuildDone, BuildJob, BuildTicket};
pub use cover::{CoverConfig, CoverMode};
pub use delay::{
    DelaySemantics, DelayStrategy, ExponentialDelay, NoDelay, UniformDelay,
    truncated_exponential_cdf,
};
pub use hop::{HopDone, HopJob};
pub use keys::{EpochKeys, RotationConfig};
#[cfg(test)]
pub(crate) use pool::tests::node as test_node;
pub use pool::{
    DynamicPool, LocalAddresses, MixNode, NodePool, PoolError, StaticPool, SubnetLimits, is_local,
    is_public,
};
#[cfg(feature = "net")]
pub(crate) use pool::{REFUSALS, same_address};
pub(crate) use replay::MAX_HASHES;
pub use replay::{
    MAX_STAGES, ReplayConfig, ReplayFilter, ReplayFull, ReplaySnapshot, StageSnapshot,
};
pub use wire::{Mismatch, UnknownWire, Wire};

/// The replay filters of a node's keys, as saved across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayState {
    /// Saved at a clean stop: it holds every packet the run processed. Otherwise it was a
    /// periodic save, and the packets of the last interval before the stop are missing.
    pub clean: bool,
    /// Each key's filter, by the key's public half.
    pub keys: Vec<([u8; 32], ReplaySnapshot)>,
}
pub use select::{
    HybridPaths, LastHop, LayeredPaths, PathError, PathSelection, PathSelector, RandomPaths,
    RttPaths,
};

use crate::spam::{Placement, ProofError, SpamConfig};
pub use answers::DeliveryId;
use answers::{Held, HeldReplies};
use cover::{LoopTracker, RateMeter};
use keys::KeyRing;
pub use stats::{CoreStats, DropReason, Observations, SentKind};
use surbs::SurbStore;

/// Identifies a request until its reply or timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

/// Identifies a one-way message this node sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(u64);

/// Where an anonymous message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Any libp2p peer: the exit dials it with the origin protocol, so it needs no mix support.
    /// Its address must fit an address block (IPv4 TCP/QUIC-v1, secp256k1 peer id).
    Peer {
        /// The destination.
        peer_id: PeerId,
        /// Where the exit dials it.
        addr: Multiaddr,
    },
    /// A mix node in the pool that serves the protocol itself: it is the exit and handles the
    /// message locally.
    MixNode(PeerId),
}

/// Settings every node of a network should share, plus local limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// The wire generation of the network: payload cipher, padding and what a written delay
    /// means. Every node of a network must use the same one.
    pub wire: Wire,
    /// Advanced: a packet format other than `wire`'s (a custom cipher and padding pair, or a
    /// shorter longest path). `None`: [`Wire::format`].
    pub format_override: Option<WireFormat>,
    /// Advanced: delay semantics other than `wire`'s. `None`: [`Wire::delay_semantics`].
    pub delay_semantics_override: Option<DelaySemantics>,
    /// Hops per path. 3 is the only length reference nodes accept.
    pub path_len: usize,
    /// Mean of the random (exponential) delay before a packet this node originates leaves it,
    /// so that the time of a send does not reveal the time of the application's call.
    pub pre_send_delay: Duration,
    /// How long a request waits for a reply.
    pub request_timeout: Duration,
    /// Requests awaiting a reply at once.
    pub max_pending_requests: usize,
    /// SURBs whose secrets this node holds at once, of requests and [`SurbBundle`]s.
    pub max_pending_surbs: usize,
    /// How long the SURBs of a [`SurbBundle`] stay usable.
    pub surb_lifetime: Duration,
    /// As the exit: how long the SURBs of a delivered message wait for its answer (keep it
    /// above the driver's exit timeout).
    pub answer_timeout: Duration,
    /// As the exit: deliveries to destinations whose answer is awaited at once. Past it, a new
    /// one's SURBs are not kept (`answers_refused`); the driver bounds its exit jobs below it.
    pub max_awaited_exit_answers: usize,
    /// As the exit: deliveries to this node whose answer the application may still give.
    /// Past it, the oldest are pushed out (`answers_evicted`).
    pub max_awaited_local_answers: usize,
    /// Packets held for their mixing delay at once, counting own packets still being built.
    /// When full, newly arriving packets are dropped (tail drop): the packets already
    /// accepted keep their place and their delay.
    pub max_delayed_packets: usize,
    /// Sizing of the replay filter.
    pub replay: ReplayConfig,
    /// How paths are chosen.
    pub path_selection: PathSelection,
    /// Consecutive packets this node originates leave at least a random gap in
    /// `[0, send_jitter]` apart, so a burst (say, the fragments of one message) does not leave
    /// as a burst. Zero turns this off (pre-send delays alone then order departures).
    pub send_jitter: Duration,
    /// Message ids remembered to deliver redundant copies once.
    pub dedupe_capacity: usize,
    /// Cover traffic and the outbound rate budget.
    pub cover: CoverConfig,
    /// Mix key rotation; `None` keeps one key for the node's lifetime (as reference nodes do).
    pub rotation: Option<RotationConfig>,
    /// Originate anonymous traffic only while this node also serves as a mix node (see
    /// [`MixCore::set_serving`]): users of the mixnet carry their share of it.
    pub tit_for_tat: bool,
    /// Fault injection for tests and benchmarks of loss tolerance: drop this share of the
    /// packets the node receives, at random, before any processing (counted as
    /// `injected`). Only with the `testing` feature.
    #[cfg(any(test, feature = "testing"))]
    pub drop_rate: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            wire: Wire::default(),
            format_override: None,
            delay_semantics_override: None,
            path_len: mix_sphinx::DEFAULT_PATH_LEN,
            pre_send_delay: Duration::from_millis(5),
            request_timeout: Duration::from_secs(30),
            max_pending_requests: 1024,
            max_pending_surbs: 65_536,
            surb_lifetime: Duration::from_secs(60),
            answer_timeout: Duration::from_secs(60),
            max_awaited_exit_answers: 8192,
            max_awaited_local_answers: 1024,
            max_delayed_packets: 20_000,
            replay: ReplayConfig::default(),
            path_selection: PathSelection::Random,
            send_jitter: Duration::from_millis(10),
            dedupe_capacity: 65_536,
            cover: CoverConfig::default(),
            rotation: None,
            tit_for_tat: true,
            #[cfg(any(test, feature = "testing"))]
            drop_rate: 0.0,
        }
    }
}

impl Config {
    /// This configuration speaking `wire` (overrides, if set, still replace its parts).
    pub fn with_wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// The packet format in use: the override, or `wire`'s.
    pub fn format(&self) -> WireFormat {
        self.format_override.unwrap_or(self.wire.format())
    }

    /// The delay semantics in use: the override, or `wire`'s.
    pub fn delay_semantics(&self) -> DelaySemantics {
        self.delay_semantics_override.unwrap_or(self.wire.delay_semantics())
    }
}

/// The origin codec that wraps a message sent over several paths: its body is a 16-byte
/// message id, the real codec (u8 length, then the bytes) and the real body. The receiving mix
/// node delivers the first copy and drops the others.
pub const REDUNDANT_CODEC: &str = "/mix/redundant/1.0.0";

/// The one trailer value neither this node nor the reference writes (the reference's is a sum
/// mod 2³² − 1): a message that ends in it was padded without a trailer.
const NOT_A_SEQNO: u32 = u32::MAX;

/// Per-message choices.
///
/// Hops see the path length they are on only as a position, but they do see the delay value
/// encoded for them: traffic that picks its own delays stands out from the rest unless every
/// user of a network picks from the same few presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// Copies sent over independent paths (distinct first hops and exits, and no shared node
    /// where the pool allows). More than one needs a [`Destination::MixNode`], which delivers
    /// the first copy to arrive; other destinations would see every copy.
    pub copies: usize,
    /// Hops of this message's path and of its SURBs' return paths; `None`:
    /// [`Config::path_len`]. Reference nodes accept only 3.
    pub path_len: Option<usize>,
    /// The mean delay of each intermediate hop: written for every hop under
    /// [`DelaySemantics::Mean`] (where the network's policy is exponential, hops sample around
    /// it), or the mean of the exponential the sender draws each hop's delay from under
    /// [`DelaySemantics::Exact`]. `None`: the node's [`DelayStrategy`].
    pub hop_delay: Option<Duration>,
    /// The longest random gap before this packet after the node's previous own packet;
    /// `None`: [`Config::send_jitter`].
    pub jitter: Option<Duration>,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self { copies: 1, path_len: None, hop_delay: None, jitter: None }
    }
}

/// SURBs handed to the application, to carry in its own messages (a stream's return
/// channel). Each answers once, separately, as an [`Output::Reply`] naming [`Self::id`];
/// the secrets are forgotten at [`Self::expires`] ([`Output::SurbsExpired`]).
#[derive(Debug)]
pub struct SurbBundle {
    /// Names the bundle in the replies that come back through its SURBs.
    pub id: RequestId,
    /// The SURBs, each on a return path of its own.
    pub surbs: Vec<Surb>,
    /// When this node forgets them: replies after it are unknown.
    pub expires: Instant,
}

/// Why a send or request was refused. Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message does not fit one packet with this codec and SURB count.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// Too few nodes for a path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The destination's address does not fit an address block.
    #[error("destination: {0}")]
    Destination(mix_sphinx::AddressError),
    /// [`Destination::MixNode`] names a node that is not in the pool.
    #[error("mix node {0} is not in the pool")]
    UnknownMixNode(PeerId),
    /// A request must carry at least one SURB.
    #[error("a request needs at least one SURB")]
    NoSurbs,
    /// Too many requests await replies.
    #[error("{0} requests already await replies")]
    TooManyPendingRequests(usize),
    /// The path length is not supported by the wire format.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The configured path length is invalid.
    #[error(transparent)]
    Route(#[from] mix_sphinx::RouteError),
    /// The node holds as many delayed packets as it may: try again later. (Packets forwarded
    /// for others are dropped instead; the application's own are refused, so it can slow down.)
    #[error("the delay queue is full ({0} packets)")]
    QueueFull(usize),
    /// Redundant copies need a destination that is a mix node, which delivers them once.
    #[error("redundant copies need a Destination::MixNode, which delivers them once")]
    RedundancyNeedsMixNode,
    /// Tit-for-tat: this node does not serve as a mix node, so it may not originate traffic.
    #[error("this node does not serve as a mix node (tit-for-tat is on)")]
    NotMixing,
    /// The node's share of the outbound rate budget is used up: try again later.
    #[error("own traffic is limited to {0:.1} packets/s by the rate budget")]
    RateLimited(f64),
    /// The keys advertised by a node on the chosen path are for an older epoch.
    #[error("mix node {0} advertises no key for the current epoch")]
    StaleKey(PeerId),
    /// No spam-protection proof could be made.
    #[error("spam protection: {0}")]
    Proof(ProofError),
    /// The node holds the secrets of as many SURBs as it may.
    #[error("{0} SURBs are already outstanding")]
    TooManySurbs(usize),
    /// The node is stopping ([`MixCore::stop`]).
    #[error("the node is stopping")]
    Stopping,
}

/// A message this node delivers as the exit.
#[derive(Debug)]
pub struct Delivery {
    /// Names it, to answer it through its SURBs ([`MixCore::answer`]) or to say no answer
    /// comes ([`MixCore::forget`]).
    pub id: DeliveryId,
    /// The peer to deliver to, or `None` when this node is the destination.
    pub destination: Option<(PeerId, Multiaddr)>,
    /// The origin protocol.
    pub codec: String,
    /// The application bytes, to be written as they are.
    pub body: Vec<u8>,
    /// SURBs the core holds for the answer (one reply packet each); 0 if the sender expects
    /// none.
    pub replies: usize,
}

/// What a packet that leaves a node is to that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PacketKind {
    /// A message or request of its own.
    Own,
    /// Another sender's packet, forwarded.
    Forward,
    /// A reply it sends through a SURB, as an exit.
    Reply,
    /// Cover traffic: a loop or a drop.
    Cover,
}

impl From<SentKind> for PacketKind {
    fn from(kind: SentKind) -> Self {
        match kind {
            SentKind::Own => Self::Own,
            SentKind::Forward => Self::Forward,
            SentKind::Reply => Self::Reply,
            SentKind::Cover => Self::Cover,
        }
    }
}

/// A transmitted packet's place in its node's history: `number` is the one the node gave it
/// when it took the packet in (see [`MixCore::last_packet_number`]), so that a simulator knows
/// which call produced which output. Nothing of it goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    /// The node's number for the packet.
    pub number: u64,
    /// What the packet is to the node.
    pub kind: PacketKind,
}

/// What the driver must do.
#[derive(Debug)]
pub enum Output {
    /// Send `packet` to `peer` now.
    Transmit {
        /// The next hop.
        peer: PeerId,
        /// Its address.
        addr: Multiaddr,
        /// The packet.
        packet: Packet,
        /// The per-hop spam-protection proof to send after the packet (empty without one).
        proof: Vec<u8>,
        /// Which packet of this node's this is (for simulators and traces; a driver needs
        /// nothing from it).
        trace: Trace,
    },
    /// The node's mix keys rotated: advertise these (e.g. republish the discovery record).
    KeysRotated(EpochKeys),
    /// Deliver a message as the exit.
    Deliver(Delivery),
    /// The reply to one of our requests.
    Reply {
        /// The request.
        request: RequestId,
        /// The reply bytes as the destination wrote them.
        body: Vec<u8>,
        /// Time from the request to its reply.
        rtt: Duration,
    },
    /// A request got no reply in time, or its packets never left (they could not be built,
    /// or a stop gave them up).
    RequestTimedOut(RequestId),
    /// The SURBs of a [`SurbBundle`] that were not used expired.
    SurbsExpired(RequestId),
}

struct Scheduled {
    due: Instant,
    seq: u64,
    peer: PeerId,
    addr: Multiaddr,
    packet: Packet,
    kind: SentKind,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so that the max-heap pops the earliest packet first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// A mix node: it forwards, delivers, sends and receives anonymous messages.
pub struct MixCore<R> {
    config: Config,
    /// [`Config::format`] and [`Config::delay_semantics`], resolved once.
    format: WireFormat,
    delay_semantics: DelaySemantics,
    /// How this node names its format in diagnostics.
    wire_description: String,
    mismatches: wire::MismatchMonitor,
    local: MixNode,
    keys: KeyRing,
    pool: Box<dyn NodePool>,
    delay: Box<dyn DelayStrategy>,
    selector: Box<dyn PathSelector>,
    rng: R,
    surbs: SurbStore,
    /// The SURBs of delivered messages, until answered.
    answers: HeldReplies,
    scheduled: BinaryHeap<Scheduled>,
    seq: u64,
    next_request: u64,
    next_message: u64,
    outputs: VecDeque<Output>,
    stats: CoreStats,
    observations: Observations,
    /// When this node's last own packet is due, for send jitter.
    last_own_due: Option<Instant>,
    seen: SeenIds,
    spam: Option<SpamConfig>,
    /// An instant and the Unix time it corresponds to.
    wall_clock: Option<(Instant, Duration)>,
    loops: LoopTracker,
    outbound_rate: RateMeter,
    own_rate: RateMeter,
    /// The next cover slot (or loop), once cover traffic has started.
    next_slot: Option<Instant>,
    /// [`CoverMode::Loopix`]: the next loop of the loop stream.
    next_loop: Option<Instant>,
    /// [`CoverMode::Loopix`]: own packets waiting for a slot.
    own_queue: VecDeque<Queued>,
    serving: bool,
    /// [`Self::stop`] was called: no packet is taken in and no traffic starts here.
    stopping: bool,
    /// [`Self::abandon_held`] was called: packets still being opened are dropped too.
    abandoned: bool,
    replay_full_logged: bool,
    /// Own messages handed out as jobs ([`Self::set_build_jobs`]).
    builds: build::Builds,
}

/// A cover packet, its first hop, the nodes it goes through (this node excluded) and its id.
struct CoverPacket {
    first: (PeerId, Multiaddr),
    through: Vec<PeerId>,
    id: [u8; 16],
    packet: Packet,
}

/// An own packet waiting for a cover slot.
struct Queued {
    peer: PeerId,
    addr: Multiaddr,
    packet: Packet,
    kind: SentKind,
    number: u64,
    queued_at: Instant,
}

/// A bounded set of message ids, oldest forgotten first.
#[derive(Debug)]
struct SeenIds {
    set: std::collections::HashSet<[u8; 16]>,
    order: VecDeque<[u8; 16]>,
    capacity: usize,
}

impl SeenIds {
    fn new(capacity: usize) -> Self {
        Self { set: Default::default(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Records `id`; returns whether it was new.
    fn insert(&mut self, id: [u8; 16]) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

impl<R> std::fmt::Debug for MixCore<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixCore")
            .field("local", self.local.peer_id())
            .field("scheduled", &self.scheduled.len())
            .field("pending_requests", &self.surbs.pending())
            .finish_non_exhaustive()
    }
}

/// What every copy of one own message shares.
struct MessagePlan<'a> {
    destination: &'a Destination,
    dest_peer: PeerId,
    path_len: usize,
    hop_delay: Option<Duration>,
    surbs: usize,
    /// The body as sent (wrapped, for redundant copies).
    body: &'a [u8],
    exit_proof: usize,
    epoch: Option<u64>,
    unix: u64,
}

impl<R: CryptoRng> MixCore<R> {
    /// A node known to others as `local` (its public entry), holding `secret` (the private half
    /// of `local`'s mix key).
    pub fn new(
        config: Config,
        local: MixNode,
        secret: NodeSecretKey,
        pool: Box<dyn NodePool>,
        delay: Box<dyn DelayStrategy>,
        mut rng: R,
    ) -> Self {
        debug_assert_eq!(&secret.public_key(), local.mix_key());
        let answers = HeldReplies::starting_at(rng.random());
        Self {
            keys: KeyRing::new(secret, config.rotation, config.replay),
            selector: config.path_selection.selector(),
            seen: SeenIds::new(config.dedupe_capacity),
            last_own_due: None,
            spam: None,
            wall_clock: None,
            loops: LoopTracker::default(),
            outbound_rate: RateMeter::default(),
            own_rate: RateMeter::default(),
            next_slot: None,
            next_loop: None,
            own_queue: VecDeque::new(),
            serving: true,
            stopping: false,
            abandoned: false,
            replay_full_logged: false,
            builds: build::Builds::default(),
            format: config.format(),
            delay_semantics: config.delay_semantics(),
            wire_description: wire::describe(&config.format(), config.delay_semantics()),
            mismatches: wire::MismatchMonitor::default(),
            config,
            local,
            pool,
            delay,
            rng,
            surbs: SurbStore::default(),
            answers,
            scheduled: BinaryHeap::new(),
            seq: 0,
            next_request: 0,
            next_message: 0,
            outputs: VecDeque::new(),
            stats: CoreStats::default(),
            observations: Observations::default(),
        }
    }

    /// Protects packets with `spam` (see [`crate::spam`]). Every node of a network must agree
    /// on the placement and the mechanism.
    pub fn with_spam_protection(mut self, spam: SpamConfig) -> Self {
        self.set_spam_protection(spam);
        self
    }

    /// [`Self::with_spam_protection`] in place.
    pub fn set_spam_protection(&mut self, spam: SpamConfig) {
        self.spam = Some(spam);
    }

    /// The length of the proof the sender appends to every message body for the exit to check
    /// (0 without one): message bodies are that much shorter than [`Self::max_message_size`].
    pub fn exit_proof_len(&self) -> usize {
        match &self.spam {
            Some(s) if s.placement == Placement::Exit => s.protection.proof_len(),
            _ => 0,
        }
    }

    /// The length of the per-hop proof that follows every packet on the wire (0 without one).
    pub fn frame_proof_len(&self) -> usize {
        match &self.spam {
            Some(s) if s.placement == Placement::PerHop => s.protection.proof_len(),
            _ => 0,
        }
    }

    /// Ties the core's instants to the wall clock: `at` is Unix time `unix`. Epochs and proof
    /// timestamps are Unix times, so call this before the core builds or opens packets; the
    /// core reads no clock itself. Until it is called, the first instant the core sees counts
    /// as Unix time 0 (deterministic, but no other node agrees with it).
    pub fn set_wall_clock(&mut self, at: Instant, unix: Duration) {
        self.wall_clock = Some((at, unix));
    }

    fn unix(&mut self, now: Instant) -> Duration {
        if self.wall_clock.is_none() {
            tracing::warn!(
                "the mix core was used before set_wall_clock: its clock starts at Unix time 0, \
                 so its key epochs and proof timestamps agree with no other node"
            );
        }
        let (at, unix) = *self.wall_clock.get_or_insert((now, Duration::ZERO));
        if now >= at { unix + (now - at) } else { unix.saturating_sub(at - now) }
    }

    fn instant_at(&mut self, unix: Duration, now: Instant) -> Instant {
        let current = self.unix(now);
        now + unix.saturating_sub(current)
    }

    /// The epoch at `now`, if keys rotate.
    fn epoch(&mut self, now: Instant) -> Option<u64> {
        let rotation = *self.keys.rotation()?;
        Some(rotation.epoch_at(self.unix(now)))
    }

    /// The key epoch at `now` (`None` without rotation): which of a rotating node's
    /// advertised keys a sender uses ([`MixNode::key_for`]).
    pub fn epoch_now(&self, now: Instant) -> Option<u64> {
        let rotation = *self.keys.rotation()?;
        let unix = match self.wall_clock {
            Some((at, unix)) if now >= at => unix + (now - at),
            Some((at, unix)) => unix.saturating_sub(at - now),
            None => Duration::ZERO,
        };
        Some(rotation.epoch_at(unix))
    }

    /// Whether this node serves as a mix node (accepts and forwards packets). The driver
    /// clears it for a client-only node; with [`Config::tit_for_tat`] such a node cannot send.
    pub fn set_serving(&mut self, serving: bool) {
        self.serving = serving;
    }

    /// The replay filters of the keys this node holds, to save across restarts (see
    /// [`crate::state`]); `clean` marks a state saved at a clean stop.
    pub fn replay_state(&self, clean: bool) -> ReplayState {
        ReplayState { clean, keys: self.keys.replay_snapshots() }
    }

    /// Restores the replay filters saved for keys this node still holds (matched by public
    /// key; others are ignored). Returns how many were restored. With key rotation, a node
    /// starts with fresh keys, so nothing matches and nothing needs to.
    pub fn restore_replay_state(&mut self, state: &ReplayState) -> usize {
        self.keys.restore_replay(&state.keys)
    }

    /// The secret halves of the epoch keys this node holds now (current, previous, next), once
    /// rotation has started; empty without rotation. For layers above that accept traffic
    /// encrypted to the key this node advertises (streams); never send them anywhere.
    pub fn epoch_secrets(&self) -> Vec<zeroize::Zeroizing<[u8; 32]>> {
        self.keys.epoch_secrets()
    }

    /// The keys this node advertises, once rotation has started (see [`Config::rotation`]).
    pub fn epoch_keys(&self) -> Option<EpochKeys> {
        self.keys.epoch_keys()
    }

    /// Own loops awaiting their return.
    pub fn loops_in_flight(&self) -> usize {
        self.loops.in_flight()
    }

    /// Own packets waiting for a cover slot ([`CoverMode::Loopix`]).
    pub fn queued_own(&self) -> usize {
        self.own_queue.len()
    }

    /// This node's public entry.
    pub fn local(&self) -> &MixNode {
        &self.local
    }

    /// What the core counted so far (the driver exports it; see [`stats`]).
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// The distribution samples recorded since the last call (hop delays, loop round trips).
    pub fn take_observations(&mut self) -> Observations {
        std::mem::take(&mut self.observations)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The pool paths are drawn from.
    pub fn pool(&self) -> &dyn NodePool {
        &*self.pool
    }

    /// Changes the address this node advertises in its SURBs (e.g. once it knows its listen
    /// address).
    pub fn set_local_address(&mut self, addr: Multiaddr) -> Result<(), PoolError> {
        self.local =
            MixNode::new(*self.local.peer_id(), addr, *self.local.mix_key(), self.local.is_exit())?;
        Ok(())
    }

    /// Replaces the strategy that picks each hop's mixing delay for own packets.
    pub fn set_delay(&mut self, delay: Box<dyn DelayStrategy>) {
        self.delay = delay;
    }

    /// Replaces the pool (for example after discovery found new nodes).
    pub fn set_pool(&mut self, pool: Box<dyn NodePool>) {
        self.pool = pool;
    }

    /// Chooses paths by `selector` instead of [`Config::path_selection`].
    pub fn with_path_selector(mut self, selector: Box<dyn PathSelector>) -> Self {
        self.set_path_selector(selector);
        self
    }

    /// Replaces the path selector.
    pub fn set_path_selector(&mut self, selector: Box<dyn PathSelector>) {
        self.selector = selector;
    }

    /// The pool, for updates (discovery, liveness, RTT).
    pub fn pool_mut(&mut self) -> &mut dyn NodePool {
        &mut *self.pool
    }

    /// `peer` failed to accept a packet or a probe: stop choosing it (see [`NodePool`]).
    pub fn peer_unreachable(&mut self, peer: &PeerId, now: Instant) {
        self.pool.report_unreachable(peer, now);
    }

    /// The number this node gave the latest packet it took in to send (forwarded, its own,
    /// a reply or cover), as [`Output::Transmit`]'s [`Trace`] names it later. Numbers grow by
    /// one per packet: read before and after a call, they say which packets the call took in
    /// (none when a packet is delivered here or dropped).
    pub fn last_packet_number(&self) -> u64 {
        self.seq
    }

    /// Packets held for their delay.
    pub fn delayed_packets(&self) -> usize {
        self.scheduled.len()
    }

    /// Requests awaiting a reply (being built included).
    pub fn pending_requests(&self) -> usize {
        self.surbs.pending() + self.builds.requests
    }

    /// The largest message body for `codec` with `surbs` SURBs.
    pub fn max_message_size(&self, codec: &str, surbs: usize) -> Result<usize, MessageError> {
        message::max_message_size(self.format.padding(), codec, surbs)
    }

    /// Sends `body` anonymously to `destination`, to be handled there by protocol `codec`.
    ///
    /// With build jobs ([`Self::set_build_jobs`]) `Ok` means accepted, with room kept for its
    /// packets: they exist once their job is finished, and a build that fails then is counted
    /// as dropped ([`DropReason::Internal`]).
    pub fn send(
        &mut self,
        now: Instant,
        destination: &Destination,
        codec: &str,
        body: &[u8],
    ) -> Result<MessageId, SendError> {
        self.send_with(now, destination, codec, body, SendOptions::default())
    }

    /// [`Self::send`] with per-message options (redundant copies).
    pub fn send_with(
        &mut self,
        now: Instant,
        destination: &Destination,
        codec: &str,
        body: &[u8],
        options: SendOptions,
    ) -> Result<MessageId, SendError> {
        self.originate(now, destination, codec, body, 0, options, None)?;
        self.next_message += 1;
        Ok(MessageId(self.next_message - 1))
    }

    /// Sends `body` anonymously with `surbs` SURBs; the reply (or a timeout) comes out as
    /// [`Output::Reply`] / [`Output::RequestTimedOut`] (at once, with build jobs, if its
    /// packets could not be built).
    pub fn request(
        &mut self,
        now: Instant,
        destination: &Destination,
        codec: &str,
        body: &[u8],
        surbs: usize,
    ) -> Result<RequestId, SendError> {
        self.request_with(now, destination, codec, body, surbs, SendOptions::default())
    }

    /// [`Self::request`] with per-message options. Each copy carries `surbs` SURBs; the first
    /// reply through any of them answers the request.
    pub fn request_with(
        &mut self,
        now: Instant,
        destination: &Destination,
        codec: &str,
        body: &[u8],
        surbs: usize,
        options: SendOptions,
    ) -> Result<RequestId, SendError> {
        if surbs == 0 {
            return Err(SendError::NoSurbs);
        }
        let pending = self.surbs.pending() + self.builds.requests;
        if pending >= self.config.max_pending_requests {
            return Err(SendError::TooManyPendingRequests(pending));
        }
        let request = RequestId(self.next_request);
        self.originate(now, destination, codec, body, surbs, options, Some(request))?;
        self.next_request += 1;
        Ok(request)
    }

    #[allow(clippy::too_many_arguments, reason = "one private entry point for all sends")]
    fn originate(
        &mut self,
        now: Instant,
        destination: &Destination,
        codec: &str,
        body: &[u8],
        surb_count: usize,
        options: SendOptions,
        request: Option<RequestId>,
    ) -> Result<(), SendError> {
        let copies = options.copies.max(1);
        if copies > 1 && !matches!(destination, Destination::MixNode(_)) {
            return Err(SendError::RedundancyNeedsMixNode);
        }
        self.check_may_send(now, copies, surb_count)?;
        let epoch = self.epoch(now);
        let unix = self.unix(now).as_secs();
        let path_len = options.path_len.unwrap_or(self.config.path_len);
        let exit_proof = match &self.spam {
            Some(s) if s.placement == Placement::Exit => s.protection.proof_len(),
            _ => 0,
        };
        let padding = self.format.padding();
        let wrapped;
        let (codec, body) = if copies > 1 {
            let id: [u8; 16] = self.rng.random();
            wrapped = wrap_redundant(&id, codec, body)?;
            (REDUNDANT_CODEC, wrapped.as_slice())
        } else {
            (codec, body)
        };
        let max = message::max_message_size(padding, codec, surb_count)?.saturating_sub(exit_proof);
        if body.len() > max {
            return Err(MessageError::TooLarge { len: body.len(), max }.into());
        }
        let (dest_peer, dest_block) = match destination {
            Destination::Peer { peer_id, addr } => {
                (*peer_id, AddressBlock::encode(addr, peer_id).map_err(SendError::Destination)?)
            }
            Destination::MixNode(peer) => (*peer, AddressBlock::ZERO),
        };
        if let Destination::MixNode(peer) = destination
            && self.pool.get(peer).is_none()
        {
            return Err(SendError::UnknownMixNode(*peer));
        }
        if path_len > self.format.max_path_len() {
            let max = self.format.max_path_len();
            return Err(BuildError::PathTooLong { len: path_len, max }.into());
        }

        let message = MessagePlan {
            destination,
            dest_peer,
            path_len,
            hop_delay: options.hop_delay,
            surbs: surb_count,
            body,
            exit_proof,
            epoch,
            unix,
        };
        let mut plans = Vec::with_capacity(copies);
        let mut used: Vec<PeerId> = Vec::new();
        for _ in 0..copies {
            plans.push(self.plan_copy(&message, &mut used)?);
        }
        let job = BuildJob::new(self.format, codec, body, dest_block, plans);
        let request =
            request.map(|r| (r, self.surb_deadline(now, epoch, self.config.request_timeout)));
        let jitter = options.jitter.unwrap_or(self.config.send_jitter);
        let pending = build::PendingBuild {
            at: now,
            request,
            jitter,
            packets: copies,
            surbs: copies * surb_count,
        };
        for _ in 0..copies {
            self.own_rate.record(now);
        }
        if self.builds.as_jobs {
            self.builds.hand_out(job, pending);
            return Ok(());
        }
        // Built in place, an error sends nothing and goes back to the caller.
        let (_, built) = job.run().into_parts();
        match self.schedule_built(now, pending, built?) {
            true => Err(SendError::QueueFull(self.scheduled.len())),
            false => Ok(()),
        }
    }

    /// One copy of a message, on a path disjoint from those in `used` (extended with it), with
    /// every random draw made in the order building in place has always made them: the
    /// simulator's seeded runs stay what they were.
    fn plan_copy(
        &mut self,
        message: &MessagePlan<'_>,
        used: &mut Vec<PeerId>,
    ) -> Result<build::CopyPlan, SendError> {
        let override_delay = message.hop_delay.map(|v| FixedDelayValue::new(v, &*self.delay));
        let delay: &dyn DelayStrategy = match &override_delay {
            Some(fixed) => fixed,
            None => &*self.delay,
        };
        let (epoch, path_len) = (message.epoch, message.path_len);
        let path = disjoint_path(
            &*self.pool,
            &mut *self.selector,
            &mut self.rng,
            self.local.peer_id(),
            path_len,
            message.destination,
            message.dest_peer,
            used,
        )?;
        used.extend(path.iter().map(|n| *n.peer_id()));
        let exit = *path[path.len() - 1].peer_id();
        let first = (*path[0].peer_id(), path[0].addr().clone());
        let route = build_route(&path, delay, self.delay_semantics, &mut self.rng, epoch)?;
        let mut surbs = Vec::with_capacity(message.surbs);
        for _ in 0..message.surbs {
            // The return path avoids the forward exit and the destination, as the reference's.
            let exclude = [*self.local.peer_id(), exit, message.dest_peer];
            surbs.push(plan_surb(
                &*self.pool,
                &mut *self.selector,
                &mut self.rng,
                &self.local,
                path_len,
                &exclude,
                (delay, self.delay_semantics),
                epoch,
            )?);
        }
        let seqno = self.rng.random_range(0..NOT_A_SEQNO);
        let mut proof = Vec::new();
        if message.exit_proof > 0 {
            let seed = self.rng.random();
            let spam = self.spam.as_mut().expect("exit placement set");
            proof.resize(message.exit_proof, 0);
            spam.protection
                .generate(message.body, message.unix, seed, &mut proof)
                .map_err(SendError::Proof)?;
        }
        let ephemeral = EphemeralSecret::random(&mut self.rng);
        Ok(build::CopyPlan { first, route, surbs, seqno, proof, ephemeral })
    }

    /// Whether this node may send `copies` packets with `surbs` SURBs each now.
    fn check_may_send(
        &mut self,
        now: Instant,
        copies: usize,
        surbs: usize,
    ) -> Result<(), SendError> {
        if self.stopping {
            return Err(SendError::Stopping);
        }
        if self.config.tit_for_tat && !self.serving {
            return Err(SendError::NotMixing);
        }
        self.check_room(copies)?;
        if let Some(budget) = self.config.cover.rate_budget {
            let share = budget / (1.0 + self.config.path_len as f64);
            if self.own_rate.rate(now) + copies as f64 > share {
                return Err(SendError::RateLimited(share));
            }
        }
        let held = self.surbs.held() + self.builds.surbs;
        if surbs > 0 && held + copies * surbs > self.config.max_pending_surbs {
            return Err(SendError::TooManySurbs(held));
        }
        Ok(())
    }

    /// Asks for own messages as [`BuildJob`]s (see [`Self::next_build_job`]) instead of
    /// building them in place, so that a driver with worker threads builds them there.
    pub fn set_build_jobs(&mut self, as_jobs: bool) {
        self.builds.as_jobs = as_jobs;
    }

    /// The next own message to build: run it on any thread and hand the result to
    /// [`Self::finish_build`]. Only with [`Self::set_build_jobs`]; call after every send or
    /// request.
    pub fn next_build_job(&mut self) -> Option<BuildJob> {
        self.builds.next_job()
    }

    /// Own packets handed out as jobs and not built yet.
    pub fn packets_being_built(&self) -> usize {
        self.builds.packets
    }

    /// Takes a built message back: schedules its packets and registers its request, as a
    /// send or request would have in place. Packets that find no room now are counted as
    /// dropped; a request none of whose packets leaves (or that could not be built) ends with
    /// [`Output::RequestTimedOut`] at once, so that no caller waits for a reply that cannot
    /// come.
    pub fn finish_build(&mut self, now: Instant, done: BuildDone) {
        let (ticket, built) = done.into_parts();
        let Some(pending) = self.builds.take(ticket) else {
            // Abandoned at a stop, or lost: counted then.
            return;
        };
        match built {
            Ok(built) => {
                let request = pending.request.map(|(r, _)| r);
                if self.schedule_built(now, pending, built)
                    && let Some(request) = request
                {
                    self.end_request(request);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "an own message could not be built");
                self.drop_build(pending, DropReason::Internal);
            }
        }
    }

    /// A build job that never finished (the thread that ran it panicked): its packets are
    /// counted as dropped, its request ends.
    pub fn build_lost(&mut self, ticket: BuildTicket) {
        if let Some(pending) = self.builds.take(ticket) {
            self.drop_build(pending, DropReason::Internal);
        }
    }

    /// Every build handed out is lost (the threads that ran them are gone): their packets are
    /// counted as dropped, their requests end, and own messages are built in place from now
    /// on.
    pub fn lose_builds(&mut self) {
        self.builds.as_jobs = false;
        for pending in self.builds.take_all() {
            self.drop_build(pending, DropReason::Internal);
        }
    }

    fn drop_build(&mut self, pending: build::PendingBuild, reason: DropReason) {
        for _ in 0..pending.packets {
            self.stats.count_dropped(reason);
        }
        if let Some((request, _)) = pending.request {
            self.end_request(request);
        }
    }

    /// A request that was accepted but whose packets never left.
    fn end_request(&mut self, request: RequestId) {
        self.stats.count(|s| &mut s.requests_timed_out);
        self.outputs.push_back(Output::RequestTimedOut(request));
    }

    /// Schedules a built message's copies and registers its request if any copy left; counts
    /// the copies that found no room as dropped. Returns whether none found room.
    fn schedule_built(
        &mut self,
        now: Instant,
        pending: build::PendingBuild,
        built: Vec<build::BuiltCopy>,
    ) -> bool {
        let copies = built.len();
        let mut secrets = Vec::new();
        let mut refused = 0;
        for copy in built {
            secrets.extend(copy.secrets);
            let (peer, addr) = copy.first;
            let (kind, at, jitter) = (SentKind::Own, pending.at, pending.jitter);
            if let Err(reason) = self.send_own(at, now, peer, addr, copy.packet, kind, jitter) {
                self.stats.count_dropped(reason);
                refused += 1;
            }
        }
        // Registered once a packet is scheduled: no reply can come before this returns.
        if let Some((request, deadline)) = pending.request
            && refused < copies
        {
            self.surbs.insert(request, secrets, surbs::Replies::First, pending.at, deadline);
        }
        refused == copies
    }

    /// When the secrets of SURBs built now for `lifetime` must be forgotten: SURBs die with
    /// the keys they were built with, at the end of the next epoch's overlap, when the hops
    /// no longer hold them.
    fn surb_deadline(&mut self, now: Instant, epoch: Option<u64>, lifetime: Duration) -> Instant {
        let mut deadline = now + lifetime;
        if let (Some(epoch), Some(rotation)) = (epoch, self.keys.rotation().copied()) {
            let keys_gone = rotation.start_of(epoch + 1) + rotation.overlap;
            deadline = deadline.min(self.instant_at(keys_gone, now));
        }
        deadline
    }

    /// Builds `count` SURBs back to this node, each on a random return path that avoids the
    /// peers in `avoid` (typically the destination that will use them), for the application
    /// to carry in its own messages. Each reply through one of them comes out as an
    /// [`Output::Reply`] naming the bundle; `options` sets the hops and delays of the return
    /// paths (`copies` and `jitter` do not apply).
    pub fn surb_bundle(
        &mut self,
        now: Instant,
        count: usize,
        avoid: &[PeerId],
        options: SendOptions,
    ) -> Result<SurbBundle, SendError> {
        if count == 0 {
            return Err(SendError::NoSurbs);
        }
        let held = self.surbs.held() + self.builds.surbs;
        if held + count > self.config.max_pending_surbs {
            return Err(SendError::TooManySurbs(held));
        }
        let epoch = self.epoch(now);
        let path_len = options.path_len.unwrap_or(self.config.path_len);
        let override_delay = options.hop_delay.map(|v| FixedDelayValue::new(v, &*self.delay));
        let delay: &dyn DelayStrategy = match &override_delay {
            Some(fixed) => fixed,
            None => &*self.delay,
        };
        let mut exclude = vec![*self.local.peer_id()];
        exclude.extend_from_slice(avoid);
        let mut surbs = Vec::with_capacity(count);
        let mut secrets = Vec::with_capacity(count);
        for _ in 0..count {
            let (surb, kept) = plan_surb(
                &*self.pool,
                &mut *self.selector,
                &mut self.rng,
                &self.local,
                path_len,
                &exclude,
                (delay, self.delay_semantics),
                epoch,
            )?
            .build(&self.format)?;
            surbs.push(surb);
            secrets.push(kept);
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let expires = self.surb_deadline(now, epoch, self.config.surb_lifetime);
        self.surbs.insert(id, secrets, surbs::Replies::Each, now, expires);
        Ok(SurbBundle { id, surbs, expires })
    }

    /// The largest reply body one SURB carries.
    pub fn max_reply_size(&self) -> usize {
        message::max_reply_size(self.format.padding())
    }

    /// The longest an own packet may wait for a cover slot.
    fn max_queue_delay(&self) -> Duration {
        let mut max = self.config.cover.max_queue_delay;
        if let Some(rotation) = self.keys.rotation() {
            max = max.min(rotation.overlap / 2);
        }
        max
    }

    /// Whether `n` more own packets fit where they will wait.
    fn check_room(&self, n: usize) -> Result<(), SendError> {
        // Packets still being built will wait where these will.
        let n = n + self.builds.packets;
        if self.config.cover.mode.queues_own() {
            let queued = self.own_queue.len() + n;
            let wait = queued as f64 / self.config.cover.rate.max(1e-9);
            if queued > self.config.cover.max_queued_own
                || wait > self.max_queue_delay().as_secs_f64()
            {
                return Err(SendError::QueueFull(self.own_queue.len()));
            }
        } else if self.scheduled.len() + n > self.config.max_delayed_packets {
            return Err(SendError::QueueFull(self.scheduled.len()));
        }
        Ok(())
    }

    /// Sends an own packet taken in at `sent_at` (before `now` when it was built elsewhere):
    /// into the next free cover slot, or after its pre-send delay.
    #[allow(clippy::too_many_arguments, reason = "a packet, where it goes and when")]
    fn send_own(
        &mut self,
        sent_at: Instant,
        now: Instant,
        peer: PeerId,
        addr: Multiaddr,
        packet: Packet,
        kind: SentKind,
        jitter: Duration,
    ) -> Result<(), DropReason> {
        if self.config.cover.mode.queues_own() {
            // Room counted for packets still being built is theirs.
            if self.own_queue.len() + self.builds.packets >= self.config.cover.max_queued_own {
                return Err(DropReason::DelayQueueFull);
            }
            let number = self.next_number();
            let queued_at = sent_at;
            self.own_queue.push_back(Queued { peer, addr, packet, kind, number, queued_at });
            return Ok(());
        }
        let due = self.own_departure(sent_at, now, jitter);
        self.schedule(due, peer, addr, packet, kind)
    }

    /// Builds a drop: a cover packet through `path_len` random nodes to a random exit, which
    /// discards it, and sends it now. On the wire it is any packet to any exit.
    fn send_drop(&mut self, now: Instant) {
        if let Some(cover) = self.cover_packet(now, false) {
            let number = self.next_number();
            let (peer, addr) = cover.first;
            self.release(now, peer, addr, cover.packet, SentKind::Cover, number);
        }
    }

    /// A cover packet with a fresh id: back to this node through `path_len - 1` random nodes
    /// (a loop), or through `path_len` random nodes ending at a random exit (a drop).
    fn cover_packet(&mut self, now: Instant, loop_back: bool) -> Option<CoverPacket> {
        let epoch = self.epoch(now);
        let exclude = [*self.local.peer_id()];
        let last = if loop_back { LastHop::Given(&self.local) } else { LastHop::AnyExit };
        let path = self
            .selector
            .select(&*self.pool, &mut self.rng, self.config.path_len, &exclude, last)
            .ok()?;
        let route =
            build_route(&path, &*self.delay, self.delay_semantics, &mut self.rng, epoch).ok()?;
        let first = (*path[0].peer_id(), path[0].addr().clone());
        let through = path[..path.len() - 1].iter().map(|n| *n.peer_id()).collect();
        let id: [u8; 16] = self.rng.random();
        let mut m = [0u8; MESSAGE_SIZE];
        let seqno = self.rng.random_range(0..NOT_A_SEQNO);
        message::encode_cover(self.format.padding(), seqno, &id, &mut m).ok()?;
        let packet =
            route.forward_packet(&self.format, &AddressBlock::ZERO, &m, &mut self.rng).ok()?;
        Some(CoverPacket { first, through, id, packet })
    }

    /// Builds a loop through `path_len - 1` random nodes back to this node and sends it now.
    fn send_loop(&mut self, now: Instant) {
        let Some(CoverPacket { first, through, id, packet }) = self.cover_packet(now, true) else {
            return;
        };
        let rate = match self.config.cover.mode {
            CoverMode::Loopix => self.config.cover.loop_rate,
            _ => self.config.cover.rate,
        };
        let cap = (rate * self.config.cover.loop_timeout.as_secs_f64() * 2.0)
            .clamp(64.0, 1_000_000.0) as usize;
        self.loops.sent(id, through, now, cap);
        let number = self.next_number();
        self.release(now, first.0, first.1, packet, SentKind::Cover, number);
    }

    /// A cover slot (or loop time) came: fill it and draw the next.
    fn on_slot(&mut self, now: Instant) {
        let cover = self.config.cover.clone();
        // A packet that waited past the overlap was built with keys the hops no longer hold.
        if let Some(rotation) = self.keys.rotation().copied() {
            while self
                .own_queue
                .front()
                .is_some_and(|q| now.saturating_duration_since(q.queued_at) > rotation.overlap)
            {
                self.own_queue.pop_front();
                self.stats.count_dropped(DropReason::KeyExpired);
            }
        }
        if let Some(queued) = cover.mode.queues_own().then(|| self.own_queue.pop_front()).flatten()
        {
            self.release(now, queued.peer, queued.addr, queued.packet, queued.kind, queued.number);
        } else if cover.rate_budget.is_some_and(|b| self.outbound_rate.rate(now) + 1.0 > b) {
            self.stats.count(|s| &mut s.cover_skipped);
        } else if cover.mode == CoverMode::Loopix {
            self.send_drop(now);
        } else {
            self.send_loop(now);
        }
        let previous = self.next_slot.unwrap_or(now);
        self.next_slot = Some(next_poisson(previous, now, cover.rate, &mut self.rng));
    }

    /// Sends a packet built elsewhere to `peer` now, as it is (with a per-hop proof if the
    /// network uses them): no pre-send delay, no cover slot, no checks.
    pub fn send_prebuilt(&mut self, now: Instant, peer: PeerId, addr: Multiaddr, packet: Packet) {
        let number = self.next_number();
        self.release(now, peer, addr, packet, SentKind::Own, number);
    }

    /// Hands a packet to the driver now, with its per-hop proof if the network uses them.
    fn release(
        &mut self,
        now: Instant,
        peer: PeerId,
        addr: Multiaddr,
        packet: Packet,
        kind: SentKind,
        number: u64,
    ) {
        let mut proof = Vec::new();
        let unix = self.unix(now).as_secs();
        if let Some(spam) = self.spam.as_mut().filter(|s| s.placement == Placement::PerHop) {
            proof.resize(spam.protection.proof_len(), 0);
            if let Err(e) =
                spam.protection.generate(packet.as_bytes(), unix, self.rng.random(), &mut proof)
            {
                self.stats.count_dropped(DropReason::Proof(e));
                return;
            }
        }
        self.stats.count_sent(kind);
        self.outbound_rate.record(now);
        let trace = Trace { number, kind: kind.into() };
        self.outputs.push_back(Output::Transmit { peer, addr, packet, proof, trace });
    }

    /// When the next own packet, taken in at `sent_at`, may leave: after its pre-send delay
    /// (or now, if that is past: a packet built late must not leave in a burst with the ones
    /// before it), and a random gap of at most `jitter` after the previous one.
    fn own_departure(&mut self, sent_at: Instant, now: Instant, jitter: Duration) -> Instant {
        let mut due = (sent_at + self.pre_send_delay()).max(now);
        if let Some(previous) = self.last_own_due
            && !jitter.is_zero()
        {
            let gap = jitter.mul_f64(self.rng.random::<f64>());
            due = due.max(previous + gap);
        }
        self.last_own_due = Some(due);
        due
    }

    /// As the exit, sends `body` back through every SURB the sender supplied (the reference
    /// does the same; the sender keeps the first copy to arrive). Returns how many were sent.
    pub fn reply(
        &mut self,
        now: Instant,
        surbs: &[Surb],
        body: &[u8],
    ) -> Result<usize, MessageError> {
        let mut m = [0u8; MESSAGE_SIZE];
        let seqno = self.rng.random_range(0..NOT_A_SEQNO);
        message::encode_reply(self.format.padding(), seqno, body, &mut m)?;
        let mut sent = 0;
        for surb in surbs {
            let Ok((addr, peer)) = surb.first_hop().decode() else {
                self.stats.count_dropped(DropReason::BadNextHop);
                continue;
            };
            let packet = surb.reply_packet(&self.format, &m);
            let jitter = self.config.send_jitter;
            match self.send_own(now, now, peer, addr, packet, SentKind::Reply, jitter) {
                Ok(()) => sent += 1,
                Err(reason) => self.stats.count_dropped(reason),
            }
        }
        Ok(sent)
    }

    /// As the exit, answers delivery `id` ([`Output::Deliver`]) through the SURBs its sender
    /// supplied, one reply packet each. `Ok(0)` if the delivery expects no answer, was
    /// answered already, or waited longer than [`Config::answer_timeout`].
    pub fn answer(
        &mut self,
        now: Instant,
        id: DeliveryId,
        body: &[u8],
    ) -> Result<usize, MessageError> {
        let surbs = self.answers.take(id, now);
        self.stats.set_awaited_answers(self.answers.len());
        match surbs {
            Some(surbs) => self.reply(now, &surbs, body),
            None => Ok(0),
        }
    }

    /// No answer comes for delivery `id` (its destination was unreachable, or returned
    /// nothing): its SURBs are discarded now.
    pub fn forget(&mut self, id: DeliveryId) {
        if self.answers.forget(id) {
            self.stats.set_awaited_answers(self.answers.len());
        }
    }

    /// Processes a packet received from a peer. Packets that fail are counted and dropped.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), DropReason> {
        self.handle_packet_with_proof(now, packet, &[])
    }

    /// [`Self::handle_packet`] for a frame that carried a per-hop proof after the packet.
    pub fn handle_packet_with_proof(
        &mut self,
        now: Instant,
        packet: Packet,
        proof: &[u8],
    ) -> Result<(), DropReason> {
        let job = self.prepare_packet(now, packet, proof)?;
        self.finish_packet(now, job.run())
    }

    /// The first half of [`Self::handle_packet_with_proof`]: counts the packet, checks its
    /// per-hop proof and returns the costly rest as a job, to run on any thread and hand back
    /// to [`Self::finish_packet`]. Jobs may finish in any order; the replay check is made
    /// when they do.
    pub fn prepare_packet(
        &mut self,
        now: Instant,
        packet: Packet,
        proof: &[u8],
    ) -> Result<HopJob, DropReason> {
        self.stats.count(|s| &mut s.packets_received);
        if self.stopping {
            return Err(self.count_drop(DropReason::Stopping));
        }
        #[cfg(any(test, feature = "testing"))]
        if self.config.drop_rate > 0.0 && self.rng.random::<f64>() < self.config.drop_rate {
            self.stats.count_dropped(DropReason::Injected);
            return Err(DropReason::Injected);
        }
        let unix = self.unix(now);
        // The per-hop proof is checked first: junk then costs a hash, not a Diffie-Hellman.
        if let Some(spam) = self.spam.as_mut().filter(|s| s.placement == Placement::PerHop)
            && let Err(e) = spam.protection.verify(packet.as_bytes(), proof, unix.as_secs())
        {
            return Err(self.count_drop(DropReason::Proof(e)));
        }
        Ok(HopJob::new(packet, self.keys.opening_keys(unix), self.format))
    }

    /// Decides on a packet opened by [`HopJob::run`]: the replay check, then forwarding,
    /// delivery or a reply. Packets that fail are counted and dropped.
    pub fn finish_packet(&mut self, now: Instant, done: HopDone) -> Result<(), DropReason> {
        self.process(now, done).map_err(|reason| self.count_drop(reason))
    }

    fn count_drop(&mut self, reason: DropReason) -> DropReason {
        tracing::debug!(reason = reason.label(), "dropped packet");
        self.stats.count_dropped(reason);
        reason
    }

    fn process(&mut self, now: Instant, done: HopDone) -> Result<(), DropReason> {
        if self.abandoned {
            return Err(DropReason::Stopping);
        }
        let HopDone { mut packet, outcome } = done;
        let opened = outcome.map_err(DropReason::Sphinx)?;
        self.check_fresh(&opened)?;
        let Some(action) = opened.action else { return Err(DropReason::Replay) };
        let action = action.map_err(|e| {
            if e == ProcessError::PayloadIntegrity {
                self.suspect_mismatch(Mismatch::Payload, now);
            }
            DropReason::Sphinx(e)
        })?;
        match action {
            Action::Forward { next_hop, delay_ms } => {
                let (addr, peer) = next_hop.decode().map_err(|_| DropReason::BadNextHop)?;
                let delay = self.delay_semantics.hold(&*self.delay, delay_ms, &mut self.rng);
                self.observations.hop_delay(delay);
                self.schedule(now + delay, peer, addr, packet, SentKind::Forward)
            }
            Action::Deliver { destination } => self.deliver(now, &destination, &packet),
            Action::Reply { id } => self.take_reply(now, &id, &mut packet),
        }
    }

    /// Whether an opened packet is new: its key still held and its tag not seen before.
    fn check_fresh(&mut self, opened: &hop::Opened) -> Result<(), DropReason> {
        // A key that rotated out while the job ran opens nothing: the packet's tag went into a
        // filter that is gone with the key.
        if !self.keys.holds(&opened.key) {
            return Err(DropReason::Sphinx(ProcessError::MacMismatch));
        }
        if opened.which == keys::KeyUse::Current {
            let (fill, stages) = self.keys.replay_fill();
            self.stats.set_replay_fill(fill, stages);
        }
        match opened.seen {
            Ok(false) => Ok(()),
            Ok(true) => Err(DropReason::Replay),
            Err(full) => {
                if !self.replay_full_logged {
                    self.replay_full_logged = true;
                    tracing::error!(
                        %full,
                        "refusing packets: the replay filter of a mix key is full, and more \
                         tags would raise its false-positive rate; rotate mix keys (or raise \
                         replay.packets_per_second)"
                    );
                }
                Err(DropReason::ReplayFilterFull)
            }
        }
    }

    /// This node is the exit of `packet`: a cover packet ends here, a message is delivered
    /// (to `destination`, or here when it is zero) with its SURBs held for the answer.
    fn deliver(
        &mut self,
        now: Instant,
        destination: &AddressBlock,
        packet: &Packet,
    ) -> Result<(), DropReason> {
        // The integrity prefix held, so the sender built this payload for our cipher; a
        // padding length that cannot fit is then its padding's.
        let msg = match message::decode_forward(self.format.padding(), packet.message()) {
            Ok(msg) => msg,
            Err(e) => {
                if matches!(e, MessageError::PaddingLength { .. }) {
                    self.suspect_mismatch(Mismatch::Padding, now);
                }
                return Err(DropReason::MalformedMessage);
            }
        };
        if msg.seqno == Some(NOT_A_SEQNO) {
            self.suspect_mismatch(Mismatch::Padding, now);
        }
        if msg.is_cover() {
            self.stats.count(|s| &mut s.cover_received);
            let returned = msg.body.first_chunk::<16>().and_then(|id| self.loops.returned(id, now));
            if let Some(back) = returned {
                self.stats.count(|s| &mut s.loops_returned);
                if let Some(rtt) = back.rtt {
                    self.observations.loop_rtt(rtt);
                }
                self.pool.report_loop(&back.path, true, now);
            }
            return Ok(());
        }
        let mut body = msg.body;
        let unix = self.unix(now).as_secs();
        if let Some(spam) = self.spam.as_mut().filter(|s| s.placement == Placement::Exit) {
            let split = body
                .len()
                .checked_sub(spam.protection.proof_len())
                .ok_or(DropReason::Proof(ProofError::Malformed))?;
            let (binding, proof) = body.split_at(split);
            spam.protection.verify(binding, proof, unix).map_err(DropReason::Proof)?;
            body = binding;
        }
        let (codec, body) = if msg.codec == REDUNDANT_CODEC {
            let (id, codec, body) = unwrap_redundant(body).ok_or(DropReason::MalformedMessage)?;
            if !self.seen.insert(id) {
                return Err(DropReason::DuplicateMessage);
            }
            (codec, body)
        } else {
            (msg.codec, body)
        };
        let destination = if destination.is_zero() {
            None
        } else {
            let (addr, peer) = destination.decode().map_err(|_| DropReason::BadDestination)?;
            Some((peer, addr))
        };
        self.stats.count(|s| &mut s.deliveries);
        let id = self.answers.next_id();
        let mut replies = msg.surbs.len();
        if replies > 0 {
            let expires = now + self.config.answer_timeout;
            let (kind, max) = match destination {
                Some(_) => (answers::Kind::Exit, self.config.max_awaited_exit_answers),
                None => (answers::Kind::Local, self.config.max_awaited_local_answers),
            };
            match self.answers.hold(id, kind, msg.surbs, expires, max) {
                Held::Yes { evicted } => self.stats.answers_evicted(evicted),
                Held::Refused => {
                    replies = 0;
                    self.stats.count(|s| &mut s.answers_refused);
                }
            }
            self.stats.set_awaited_answers(self.answers.len());
        }
        self.outputs.push_back(Output::Deliver(Delivery {
            id,
            destination,
            codec: codec.to_owned(),
            body: body.to_vec(),
            replies,
        }));
        Ok(())
    }

    /// `packet` is a reply through one of this node's SURBs: it answers the request. Only a
    /// reply that opens and decodes takes the SURB (and, for a request, its siblings): one
    /// that does not is dropped and leaves the request to another SURB's reply or its
    /// timeout.
    fn take_reply(
        &mut self,
        now: Instant,
        id: &SurbId,
        packet: &mut Packet,
    ) -> Result<(), DropReason> {
        let Some(secrets) = self.surbs.peek(id) else {
            return match self.surbs.take(id) {
                surbs::Lookup::Duplicate => Err(DropReason::DuplicateReply),
                _ => Err(DropReason::UnknownSurb),
            };
        };
        let Ok(m) = secrets.recover(&self.format, packet) else {
            self.suspect_mismatch(Mismatch::Reply, now);
            return Err(DropReason::ReplyIntegrity);
        };
        let (body, _) = match message::decode_reply(self.format.padding(), m) {
            Ok(reply) => reply,
            Err(e) => {
                if matches!(e, MessageError::PaddingLength { .. }) {
                    self.suspect_mismatch(Mismatch::Padding, now);
                }
                return Err(DropReason::MalformedMessage);
            }
        };
        let surbs::Lookup::Matched(matched) = self.surbs.take(id) else {
            return Err(DropReason::UnknownSurb);
        };
        self.stats.count(|s| &mut s.replies_received);
        self.outputs.push_back(Output::Reply {
            request: matched.request,
            body: body.to_vec(),
            rtt: now.saturating_duration_since(matched.sent_at),
        });
        Ok(())
    }

    /// Counts a packet that may have been built for another wire format, and explains a steady
    /// rate of them in the log.
    fn suspect_mismatch(&mut self, kind: Mismatch, now: Instant) {
        self.stats.count_mismatch(kind);
        if let Some(seen) = self.mismatches.record(kind, now) {
            wire::warn(kind, seen, &self.wire_description);
        }
    }

    /// Starts a graceful stop: from now on received packets are dropped (counted as
    /// [`DropReason::Stopping`]) and no own message is accepted. Packets already held for
    /// their mixing delay still leave when due, own packets waiting for a cover slot still get
    /// theirs, and cover traffic goes on as before: a node that stopped sending cover would
    /// show a global observer that everything it still sends is real.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Whether [`Self::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Drops every packet still held for its mixing delay or a cover slot, and every own packet
    /// still being built (counted as [`DropReason::Stopping`]; their requests end with
    /// [`Output::RequestTimedOut`]): the end of a graceful stop that ran out of time. Returns
    /// how many.
    pub fn abandon_held(&mut self) -> usize {
        self.abandoned = true;
        let mut dropped = self.scheduled.len() + self.own_queue.len();
        self.scheduled.clear();
        self.own_queue.clear();
        for _ in 0..dropped {
            self.stats.count_dropped(DropReason::Stopping);
        }
        self.stats.set_delay_queue(0);
        // Builds out are given up too; their jobs, if they still come back, are ignored.
        for pending in self.builds.take_all() {
            dropped += pending.packets;
            self.drop_build(pending, DropReason::Stopping);
        }
        dropped
    }

    /// Releases every packet whose time has come and expires overdue requests and records.
    ///
    /// The first call also starts key rotation and cover traffic, if configured.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.pool.expire(now);
        self.rotate_keys(now);
        // Slots go on while the node stops: own packets still queued leave in theirs, and
        // cover keeps what the node still sends indistinguishable from it.
        if self.config.cover.mode != CoverMode::Off && self.config.cover.rate > 0.0 {
            if self.next_slot.is_none() {
                self.next_slot = Some(now + exponential_gap(self.config.cover.rate, &mut self.rng));
            }
            while self.next_slot.is_some_and(|t| t <= now) {
                self.on_slot(now);
            }
        }
        if self.config.cover.mode == CoverMode::Loopix && self.config.cover.loop_rate > 0.0 {
            let rate = self.config.cover.loop_rate;
            let next =
                *self.next_loop.get_or_insert_with(|| now + exponential_gap(rate, &mut self.rng));
            if next <= now {
                if self
                    .config
                    .cover
                    .rate_budget
                    .is_some_and(|b| self.outbound_rate.rate(now) + 1.0 > b)
                {
                    self.stats.count(|s| &mut s.cover_skipped);
                } else {
                    self.send_loop(now);
                }
                self.next_loop = Some(next_poisson(next, now, rate, &mut self.rng));
            }
        }
        for lost in self.loops.expire(now, self.config.cover.loop_timeout) {
            self.stats.count(|s| &mut s.loops_lost);
            self.pool.report_loop(&lost.path, false, now);
        }
        while self.scheduled.peek().is_some_and(|s| s.due <= now) {
            let Some(s) = self.scheduled.pop() else { break };
            self.release(now, s.peer, s.addr, s.packet, s.kind, s.seq);
        }
        self.stats.set_delay_queue(self.scheduled.len());
        let expired = self.answers.expire(now);
        if expired > 0 {
            self.stats.answers_expired(expired);
            self.stats.set_awaited_answers(self.answers.len());
        }
        for (request, replies) in self.surbs.expire(now) {
            if replies == surbs::Replies::First {
                self.stats.count(|s| &mut s.requests_timed_out);
                self.outputs.push_back(Output::RequestTimedOut(request));
            } else {
                self.outputs.push_back(Output::SurbsExpired(request));
            }
        }
    }

    fn rotate_keys(&mut self, now: Instant) {
        let before = self.keys.epoch_keys().map(|k| k.epoch);
        let unix = self.unix(now);
        if !self.keys.advance(unix, &mut self.rng) {
            return;
        }
        let Some(keys) = self.keys.epoch_keys() else { return };
        if before.is_some_and(|e| e != keys.epoch) {
            self.stats.count(|s| &mut s.key_rotations);
            tracing::debug!(epoch = keys.epoch, "mix key rotated");
        }
        self.local = self.local.clone().with_epoch_keys(keys);
        self.outputs.push_back(Output::KeysRotated(keys));
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let key_change = match (self.keys.next_change(), self.wall_clock) {
            (Some(unix), Some((at, at_unix))) => Some(at + unix.saturating_sub(at_unix)),
            _ => None,
        };
        [
            self.scheduled.peek().map(|s| s.due),
            self.surbs.next_deadline(),
            self.next_slot,
            self.next_loop,
            self.loops.next_deadline(self.config.cover.loop_timeout),
            self.answers.next_deadline(),
            key_change,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn pre_send_delay(&mut self) -> Duration {
        let mean_ms = self.config.pre_send_delay.as_secs_f64() * 1000.0;
        delay::truncated_exponential(mean_ms, &mut self.rng)
    }

    /// Holds `packet` until `due`. A full queue refuses it (the caller counts the drop).
    fn next_number(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn schedule(
        &mut self,
        due: Instant,
        peer: PeerId,
        addr: Multiaddr,
        packet: Packet,
        kind: SentKind,
    ) -> Result<(), DropReason> {
        // Room counted for own packets still being built is theirs (they wait here unless
        // cover slots take them).
        let reserved = if self.config.cover.mode.queues_own() { 0 } else { self.builds.packets };
        if self.scheduled.len() + reserved >= self.config.max_delayed_packets {
            return Err(DropReason::DelayQueueFull);
        }
        let seq = self.next_number();
        self.scheduled.push(Scheduled { due, seq, peer, addr, packet, kind });
        self.stats.set_delay_queue(self.scheduled.len());
        Ok(())
    }
}

fn wrap_redundant(id: &[u8; 16], codec: &str, body: &[u8]) -> Result<Vec<u8>, MessageError> {
    let len = u8::try_from(codec.len())
        .map_err(|_| MessageError::CodecTooLong { len: codec.len(), max: usize::from(u8::MAX) })?;
    let mut out = Vec::with_capacity(17 + codec.len() + body.len());
    out.extend_from_slice(id);
    out.push(len);
    out.extend_from_slice(codec.as_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

fn unwrap_redundant(body: &[u8]) -> Option<([u8; 16], &str, &[u8])> {
    let (id, rest) = body.split_first_chunk::<16>()?;
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let (codec, body) = rest.split_at(len);
    Some((*id, core::str::from_utf8(codec).ok()?, body))
}

/// A path for one copy: avoiding every node of the earlier copies if the pool allows, else at
/// least their first hops and exits, else any path.
#[allow(clippy::too_many_arguments, reason = "the disjoint borrows of MixCore's fields")]
fn disjoint_path<'a>(
    pool: &'a dyn NodePool,
    selector: &mut dyn PathSelector,
    rng: &mut dyn rand::Rng,
    local: &PeerId,
    len: usize,
    destination: &Destination,
    dest_peer: PeerId,
    used: &[PeerId],
) -> Result<Vec<&'a MixNode>, SendError> {
    let last = match destination {
        Destination::Peer { .. } => LastHop::AnyExit,
        Destination::MixNode(peer) => {
            LastHop::Given(pool.get(peer).ok_or(SendError::UnknownMixNode(*peer))?)
        }
    };
    let base = [*local, dest_peer];
    let ends: Vec<PeerId> =
        used.chunks(len).flat_map(|p| [p[0], p[p.len() - 1]]).filter(|p| *p != dest_peer).collect();
    let everything: Vec<PeerId> = used.iter().copied().filter(|p| *p != dest_peer).collect();
    let mut last_error = PathError::NoExit;
    for avoid in [&everything, &ends, &Vec::new()] {
        let exclude: Vec<PeerId> = base.iter().chain(avoid.iter()).copied().collect();
        match selector.select(pool, rng, len, &exclude, last) {
            Ok(path) => return Ok(path),
            Err(e) => last_error = e,
        }
        if used.is_empty() {
            break;
        }
    }
    Err(SendError::Path(last_error))
}

/// The Sphinx route along `path` with the nodes' keys for `epoch`, and a written delay for
/// each intermediate hop.
fn build_route(
    path: &[&MixNode],
    delay: &dyn DelayStrategy,
    semantics: DelaySemantics,
    rng: &mut dyn rand::Rng,
    epoch: Option<u64>,
) -> Result<Route, SendError> {
    let hops = path
        .iter()
        .map(|n| {
            let key = n.key_for(epoch).ok_or(SendError::StaleKey(*n.peer_id()))?;
            Ok(Hop { public_key: *key, address: *n.address() })
        })
        .collect::<Result<_, SendError>>()?;
    let delays = (1..path.len()).map(|_| semantics.write(delay, rng).get()).collect();
    Ok(Route::new(hops, delays)?)
}

/// A SURB back to `local` on a fresh return path of `len` hops avoiding `exclude`, with its
/// randomness drawn (in [`Route::surb`]'s order) and its Diffie-Hellmans still to do.
#[allow(clippy::too_many_arguments, reason = "the disjoint borrows of MixCore's fields")]
fn plan_surb<R: CryptoRng>(
    pool: &dyn NodePool,
    selector: &mut dyn PathSelector,
    rng: &mut R,
    local: &MixNode,
    len: usize,
    exclude: &[PeerId],
    (delay, semantics): (&dyn DelayStrategy, DelaySemantics),
    epoch: Option<u64>,
) -> Result<build::SurbPlan, SendError> {
    let back = selector.select(pool, rng, len, exclude, LastHop::Given(local))?;
    let route = build_route(&back, delay, semantics, rng, epoch)?;
    let id = SurbId::random(rng);
    let key = SurbKey::random(rng);
    Ok(build::SurbPlan { route, id, key, ephemeral: EphemeralSecret::random(rng) })
}

/// The node's delay strategy with the parameter a message picked ([`SendOptions::hop_delay`]):
/// under [`DelaySemantics::Mean`] the parameter is written for every hop, under
/// [`DelaySemantics::Exact`] each hop's delay is drawn from the strategy with it.
#[derive(Debug, Clone, Copy)]
struct FixedDelayValue<'a> {
    parameter: std::num::NonZeroU16,
    strategy: &'a dyn DelayStrategy,
}

impl<'a> FixedDelayValue<'a> {
    fn new(value: Duration, strategy: &'a dyn DelayStrategy) -> Self {
        let ms = value.as_millis().clamp(1, u128::from(u16::MAX)) as u16;
        let parameter = std::num::NonZeroU16::new(ms).unwrap_or(std::num::NonZeroU16::MIN);
        Self { parameter, strategy }
    }
}

impl DelayStrategy for FixedDelayValue<'_> {
    fn encode(&self, _: &mut dyn rand::Rng) -> std::num::NonZeroU16 {
        self.parameter
    }

    fn sample(&self, parameter_ms: u16, rng: &mut dyn rand::Rng) -> Duration {
        self.strategy.sample(parameter_ms, rng)
    }
}

/// The event after `previous` of a Poisson process at `rate`: it follows the previous event,
/// not the moment the timer fired; after a long stall (a suspended process) it restarts from
/// `now`, not in a burst.
fn next_poisson(previous: Instant, now: Instant, rate: f64, rng: &mut dyn rand::Rng) -> Instant {
    let base = if now.saturating_duration_since(previous) > Duration::from_secs(1) {
        now
    } else {
        previous
    };
    base + exponential_gap(rate, rng)
}

/// An exponentially distributed gap between events of a Poisson process at `rate` per second.
fn exponential_gap(rate: f64, rng: &mut dyn rand::Rng) -> Duration {
    if rate <= 0.0 || !rate.is_finite() {
        return Duration::from_secs(3600);
    }
    // 1 - U is in (0, 1], so the logarithm is finite.
    let u: f64 = 1.0 - rng.random::<f64>();
    Duration::from_secs_f64((-u.ln() / rate).min(3600.0))
}

#[cfg(test)]
mod tests;
