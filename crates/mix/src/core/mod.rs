//! The mix node as a plain state machine: no sockets, no clock, no global randomness.
//!
//! Time comes in as `now` arguments and the RNG is owned and injected, so the same code runs
//! in the libp2p driver, in deterministic tests and in the simulator. The driver feeds it
//! received packets and timeouts and carries out its [`Output`]s:
//!
//! ```text
//!   send / request / reply ─┐            ┌─> Output::Transmit (packet to a peer, when due)
//!   handle_packet ──────────┼─> MixCore ─┼─> Output::Deliver  (we are the exit)
//!   handle_timeout(now) ────┘            ├─> Output::Reply    (answer to our request)
//!                                        └─> Output::RequestTimedOut
//!   poll_timeout() -> when to call handle_timeout next
//! ```

mod delay;
mod pool;
mod replay;
mod select;
mod surbs;

use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use mix_sphinx::{
    Action, AddressBlock, BuildError, Hop, MESSAGE_SIZE, MessageError, NodeSecretKey, Packet,
    Route, Surb, WireFormat, message,
};
use multiaddr::Multiaddr;
use rand::{CryptoRng, RngExt};

pub use delay::{
    DelayStrategy, ExponentialDelay, NoDelay, UniformDelay, truncated_exponential_cdf,
};
pub use pool::{DynamicPool, MixNode, NodePool, PoolError, StaticPool};
pub use replay::{ReplayConfig, ReplayFilter};
pub use select::{
    HybridPaths, LastHop, PathError, PathSelection, PathSelector, RandomPaths, RttPaths,
};

use crate::metrics::{DropReason, Metrics, SentKind};
use surbs::SurbStore;

/// Identifies a request until its reply or timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies a one-way message this node sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

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
    /// Payload cipher, padding and the longest path accepted.
    pub format: WireFormat,
    /// Hops per path. 3 is the only length reference nodes accept.
    pub path_len: usize,
    /// Mean of the random (exponential) delay before a packet this node originates leaves it,
    /// so that the time of a send does not reveal the time of the application's call.
    pub pre_send_delay: Duration,
    /// How long a request waits for a reply.
    pub request_timeout: Duration,
    /// Requests awaiting a reply at once.
    pub max_pending_requests: usize,
    /// Packets held for their mixing delay at once. When full, newly arriving packets are
    /// dropped (tail drop): the packets already accepted keep their place and their delay.
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            format: WireFormat::default(),
            path_len: mix_sphinx::DEFAULT_PATH_LEN,
            pre_send_delay: Duration::from_millis(5),
            request_timeout: Duration::from_secs(30),
            max_pending_requests: 1024,
            max_delayed_packets: 20_000,
            replay: ReplayConfig::default(),
            path_selection: PathSelection::Random,
            send_jitter: Duration::from_millis(10),
            dedupe_capacity: 65_536,
        }
    }
}

/// The origin codec that wraps a message sent over several paths: its body is a 16-byte
/// message id, the real codec (u8 length, then the bytes) and the real body. The receiving mix
/// node delivers the first copy and drops the others.
pub const REDUNDANT_CODEC: &str = "/mix/redundant/1.0.0";

/// Per-message choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// Copies sent over independent paths (distinct first hops and exits, and no shared node
    /// where the pool allows). More than one needs a [`Destination::MixNode`], which delivers
    /// the first copy to arrive; other destinations would see every copy.
    pub copies: usize,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self { copies: 1 }
    }
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
}

/// A message this node delivers as the exit.
#[derive(Debug)]
pub struct Delivery {
    /// The peer to deliver to, or `None` when this node is the destination.
    pub destination: Option<(PeerId, Multiaddr)>,
    /// The origin protocol.
    pub codec: String,
    /// The application bytes, to be written as they are.
    pub body: Vec<u8>,
    /// SURBs for the reply, if the sender expects one.
    pub surbs: Vec<Surb>,
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
    },
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
    /// A request got no reply in time.
    RequestTimedOut(RequestId),
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
    local: MixNode,
    secret: NodeSecretKey,
    pool: Box<dyn NodePool>,
    delay: Box<dyn DelayStrategy>,
    selector: Box<dyn PathSelector>,
    rng: R,
    replay: ReplayFilter,
    surbs: SurbStore,
    scheduled: BinaryHeap<Scheduled>,
    seq: u64,
    next_request: u64,
    next_message: u64,
    outputs: VecDeque<Output>,
    metrics: Metrics,
    /// When this node's last own packet is due, for send jitter.
    last_own_due: Option<Instant>,
    seen: SeenIds,
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

impl<R: CryptoRng> MixCore<R> {
    /// A node known to others as `local` (its public entry), holding `secret` (the private half
    /// of `local`'s mix key).
    pub fn new(
        config: Config,
        local: MixNode,
        secret: NodeSecretKey,
        pool: Box<dyn NodePool>,
        delay: Box<dyn DelayStrategy>,
        rng: R,
    ) -> Self {
        debug_assert_eq!(&secret.public_key(), local.mix_key());
        Self {
            replay: ReplayFilter::new(&config.replay),
            selector: config.path_selection.selector(),
            seen: SeenIds::new(config.dedupe_capacity),
            last_own_due: None,
            config,
            local,
            secret,
            pool,
            delay,
            rng,
            surbs: SurbStore::default(),
            scheduled: BinaryHeap::new(),
            seq: 0,
            next_request: 0,
            next_message: 0,
            outputs: VecDeque::new(),
            metrics: Metrics::default(),
        }
    }

    /// Shares `metrics` with the driver (and a registry).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// This node's public entry.
    pub fn local(&self) -> &MixNode {
        &self.local
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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

    /// Replaces the pool (for example after discovery found new nodes).
    pub fn set_pool(&mut self, pool: Box<dyn NodePool>) {
        self.pool = pool;
    }

    /// Uses a custom path selector instead of [`Config::path_selection`].
    pub fn with_path_selector(mut self, selector: Box<dyn PathSelector>) -> Self {
        self.selector = selector;
        self
    }

    /// The pool, for updates (discovery, liveness, RTT).
    pub fn pool_mut(&mut self) -> &mut dyn NodePool {
        &mut *self.pool
    }

    /// `peer` failed to accept a packet or a probe: stop choosing it (see [`NodePool`]).
    pub fn peer_unreachable(&mut self, peer: &PeerId, now: Instant) {
        self.pool.report_unreachable(peer, now);
    }

    /// Packets held for their delay.
    pub fn delayed_packets(&self) -> usize {
        self.scheduled.len()
    }

    /// Requests awaiting a reply.
    pub fn pending_requests(&self) -> usize {
        self.surbs.pending()
    }

    /// The largest message body for `codec` with `surbs` SURBs.
    pub fn max_message_size(&self, codec: &str, surbs: usize) -> Result<usize, MessageError> {
        message::max_message_size(self.config.format.padding(), codec, surbs)
    }

    /// Sends `body` anonymously to `destination`, to be handled there by protocol `codec`.
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
    /// [`Output::Reply`] / [`Output::RequestTimedOut`].
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
        if self.surbs.pending() >= self.config.max_pending_requests {
            return Err(SendError::TooManyPendingRequests(self.surbs.pending()));
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
        if self.scheduled.len() + copies > self.config.max_delayed_packets {
            return Err(SendError::QueueFull(self.scheduled.len()));
        }
        let padding = self.config.format.padding();
        let wrapped;
        let (codec, body) = if copies > 1 {
            let id: [u8; 16] = self.rng.random();
            wrapped = wrap_redundant(&id, codec, body)?;
            (REDUNDANT_CODEC, wrapped.as_slice())
        } else {
            (codec, body)
        };
        let max = message::max_message_size(padding, codec, surb_count)?;
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

        // Build every copy before scheduling any, so that an error sends nothing.
        let mut packets = Vec::with_capacity(copies);
        let mut secrets = Vec::with_capacity(copies * surb_count);
        let mut used: Vec<PeerId> = Vec::new();
        for _ in 0..copies {
            let path = disjoint_path(
                &*self.pool,
                &mut *self.selector,
                &mut self.rng,
                self.local.peer_id(),
                self.config.path_len,
                destination,
                dest_peer,
                &used,
            )?;
            used.extend(path.iter().map(|n| *n.peer_id()));
            let exit = *path[path.len() - 1].peer_id();
            let first = (*path[0].peer_id(), path[0].addr().clone());
            let route = build_route(&path, &*self.delay, &mut self.rng)?;
            let mut surbs = Vec::with_capacity(surb_count);
            for _ in 0..surb_count {
                // The return path avoids the forward exit and the destination, as the reference's.
                let exclude = [*self.local.peer_id(), exit, dest_peer];
                let back = self.selector.select(
                    &*self.pool,
                    &mut self.rng,
                    self.config.path_len,
                    &exclude,
                    LastHop::Given(&self.local),
                )?;
                let (surb, kept) = build_route(&back, &*self.delay, &mut self.rng)?
                    .surb(&self.config.format, &mut self.rng)?;
                surbs.push(surb);
                secrets.push(kept);
            }
            let mut m = [0u8; MESSAGE_SIZE];
            let seqno = self.rng.random();
            message::encode_forward(padding, seqno, codec, &surbs, body, &mut m)?;
            let packet =
                route.forward_packet(&self.config.format, &dest_block, &m, &mut self.rng)?;
            packets.push((first, packet));
        }
        if let Some(request) = request {
            self.surbs.insert(request, secrets, now, now + self.config.request_timeout);
        }
        for ((peer, addr), packet) in packets {
            let due = self.own_departure(now);
            self.schedule(due, peer, addr, packet, SentKind::Own)
                .map_err(|_| SendError::QueueFull(self.scheduled.len()))?;
        }
        Ok(())
    }

    /// When the next own packet may leave: after its pre-send delay, and a random gap of at
    /// most [`Config::send_jitter`] after the previous one.
    fn own_departure(&mut self, now: Instant) -> Instant {
        let mut due = now + self.pre_send_delay();
        if let Some(previous) = self.last_own_due
            && !self.config.send_jitter.is_zero()
        {
            let gap = self.config.send_jitter.mul_f64(self.rng.random::<f64>());
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
        let seqno = self.rng.random();
        message::encode_reply(self.config.format.padding(), seqno, body, &mut m)?;
        let mut sent = 0;
        for surb in surbs {
            let Ok((addr, peer)) = surb.first_hop().decode() else {
                self.metrics.dropped(DropReason::BadNextHop);
                continue;
            };
            let packet = surb.reply_packet(&self.config.format, &m);
            let due = now + self.pre_send_delay();
            match self.schedule(due, peer, addr, packet, SentKind::Reply) {
                Ok(()) => sent += 1,
                Err(reason) => self.metrics.dropped(reason),
            }
        }
        Ok(sent)
    }

    /// Processes a packet received from a peer. Packets that fail are counted and dropped.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), DropReason> {
        self.metrics.received();
        let result = self.process(now, packet);
        if let Err(reason) = result {
            tracing::debug!(reason = reason.label(), "dropped packet");
            self.metrics.dropped(reason);
            return Err(reason);
        }
        Ok(())
    }

    fn process(&mut self, now: Instant, mut packet: Packet) -> Result<(), DropReason> {
        let format = self.config.format;
        let opened = self.secret.open(&format, &mut packet).map_err(DropReason::Sphinx)?;
        if self.replay.check_and_insert(opened.replay_tag()) {
            return Err(DropReason::Replay);
        }
        match opened.peel().map_err(DropReason::Sphinx)? {
            Action::Forward { next_hop, delay_ms } => {
                let (addr, peer) = next_hop.decode().map_err(|_| DropReason::BadNextHop)?;
                let delay = self.delay.sample(delay_ms, &mut self.rng);
                self.metrics.hop_delay(delay.as_secs_f64());
                self.schedule(now + delay, peer, addr, packet, SentKind::Forward)?;
            }
            Action::Deliver { destination } => {
                let msg = message::decode_forward(format.padding(), packet.message())
                    .map_err(|_| DropReason::MalformedMessage)?;
                if msg.is_cover() {
                    self.metrics.cover();
                    return Ok(());
                }
                let (codec, body) = if msg.codec == REDUNDANT_CODEC {
                    let (id, codec, body) =
                        unwrap_redundant(msg.body).ok_or(DropReason::MalformedMessage)?;
                    if !self.seen.insert(id) {
                        return Err(DropReason::DuplicateMessage);
                    }
                    (codec, body)
                } else {
                    (msg.codec, msg.body)
                };
                let destination = if destination.is_zero() {
                    None
                } else {
                    let (addr, peer) =
                        destination.decode().map_err(|_| DropReason::BadDestination)?;
                    Some((peer, addr))
                };
                self.metrics.delivered();
                self.outputs.push_back(Output::Deliver(Delivery {
                    destination,
                    codec: codec.to_owned(),
                    body: body.to_vec(),
                    surbs: msg.surbs,
                }));
            }
            Action::Reply { id } => {
                let matched = match self.surbs.take(&id) {
                    surbs::Lookup::Matched(m) => m,
                    surbs::Lookup::Duplicate => return Err(DropReason::DuplicateReply),
                    surbs::Lookup::Unknown => return Err(DropReason::UnknownSurb),
                };
                let m = matched
                    .secrets
                    .recover(&format, &mut packet)
                    .map_err(|_| DropReason::ReplyIntegrity)?;
                let (body, _) = message::decode_reply(format.padding(), m)
                    .map_err(|_| DropReason::MalformedMessage)?;
                self.metrics.reply_received();
                self.outputs.push_back(Output::Reply {
                    request: matched.request,
                    body: body.to_vec(),
                    rtt: now.saturating_duration_since(matched.sent_at),
                });
            }
        }
        Ok(())
    }

    /// Releases every packet whose time has come and expires overdue requests and records.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.pool.expire(now);
        while self.scheduled.peek().is_some_and(|s| s.due <= now) {
            let Some(s) = self.scheduled.pop() else { break };
            self.metrics.sent(s.kind);
            self.outputs.push_back(Output::Transmit {
                peer: s.peer,
                addr: s.addr,
                packet: s.packet,
            });
        }
        self.metrics.set_delay_queue(self.scheduled.len());
        for request in self.surbs.expire(now) {
            self.metrics.request_timed_out();
            self.outputs.push_back(Output::RequestTimedOut(request));
        }
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let packet = self.scheduled.peek().map(|s| s.due);
        match (packet, self.surbs.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
    fn schedule(
        &mut self,
        due: Instant,
        peer: PeerId,
        addr: Multiaddr,
        packet: Packet,
        kind: SentKind,
    ) -> Result<(), DropReason> {
        if self.scheduled.len() >= self.config.max_delayed_packets {
            return Err(DropReason::DelayQueueFull);
        }
        self.seq += 1;
        self.scheduled.push(Scheduled { due, seq: self.seq, peer, addr, packet, kind });
        self.metrics.set_delay_queue(self.scheduled.len());
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

/// The Sphinx route along `path`, with an encoded delay for each intermediate hop.
fn build_route(
    path: &[&MixNode],
    delay: &dyn DelayStrategy,
    rng: &mut dyn rand::Rng,
) -> Result<Route, mix_sphinx::RouteError> {
    let hops =
        path.iter().map(|n| Hop { public_key: *n.mix_key(), address: *n.address() }).collect();
    let delays = (1..path.len()).map(|_| delay.encode(rng).get()).collect();
    Route::new(hops, delays)
}

#[cfg(test)]
mod tests;
