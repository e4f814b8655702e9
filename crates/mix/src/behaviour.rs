//! The rust-libp2p driver: a [`NetworkBehaviour`] that runs a [`MixCore`] on a swarm.
//!
//! It moves packets between the core and the connection handlers, dials next hops and
//! destinations (passing their address with the dial), drives the core's timer, and turns the
//! core's outputs into [`Event`]s. All protocol decisions stay in the core.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p_core::transport::PortUse;
use libp2p_core::{Endpoint, Multiaddr};
use libp2p_identity::PeerId;
use libp2p_swarm::behaviour::{ConnectionClosed, ConnectionEstablished, DialFailure, FromSwarm};
use libp2p_swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p_swarm::{
    ConnectionDenied, ConnectionId, DialError, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use mix_sphinx::{MessageError, NodeSecretKey, PACKET_SIZE, Packet, Surb};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::core::{
    self, DelayStrategy, Delivery, Destination, MessageId, MixCore, MixNode, NodePool, Output,
    RequestId, SendError, SendOptions,
};
use crate::handler::{ExitError, ExitId, Handler, HandlerConfig, InEvent, OutEvent, TokenBucket};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::{ExitProtocol, ReadRule};

/// Driver settings, with the core's.
#[derive(Debug, Clone)]
pub struct Config {
    /// The sans-IO core's settings.
    pub core: core::Config,
    /// Once a frame has started, how long it may take to arrive in full.
    pub frame_timeout: Duration,
    /// Inbound `/mix/1.0.0` streams accepted per connection.
    pub max_inbound_streams: usize,
    /// Packets queued per connection while its stream is busy; more are dropped.
    pub max_queued_frames: usize,
    /// Packets queued for a peer while it is being dialed; more are dropped.
    pub max_pending_per_peer: usize,
    /// How long the exit waits for a destination to take a message and reply.
    pub exit_timeout: Duration,
    /// Exit deliveries in flight per connection.
    pub max_concurrent_exits: usize,
    /// Locally delivered messages whose reply is still awaited from the application.
    pub max_pending_replies: usize,
    /// How often a few pool nodes this node is not connected to are dialed to check they are
    /// alive (a node that cannot be reached is suspended from paths). `None` disables it.
    pub probe_interval: Option<Duration>,
    /// Nodes probed per interval.
    pub probes_per_interval: usize,
    /// Serve as a mix node: accept `/mix/1.0.0` streams and forward packets. A client-only
    /// node (`false`) accepts none and, with [`core::Config::tit_for_tat`], cannot send.
    pub serve: bool,
    /// Frames read per second from one peer (all its connections together), with bursts of
    /// [`Self::inbound_burst`]. Past it the node stops reading that peer's connections for a
    /// while, so a flooding peer is slowed down by its own transport's flow control instead
    /// of costing this node work. `None`: no limit.
    pub inbound_frame_rate: Option<f64>,
    /// Frames a peer may send at once above [`Self::inbound_frame_rate`].
    pub inbound_burst: u32,
    /// Connections one peer may hold with this node; more are denied (so that the
    /// per-stream and per-connection limits bound a peer too).
    pub max_connections_per_peer: usize,
    /// Peers with packets waiting for a connection (being dialed); packets for more are
    /// dropped.
    pub max_pending_peers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            core: core::Config::default(),
            frame_timeout: Duration::from_secs(10),
            max_inbound_streams: 16,
            max_queued_frames: 4096,
            max_pending_per_peer: 1024,
            exit_timeout: Duration::from_secs(10),
            max_concurrent_exits: 64,
            max_pending_replies: 1024,
            probe_interval: Some(Duration::from_secs(30)),
            probes_per_interval: 4,
            serve: true,
            inbound_frame_rate: Some(4000.0),
            inbound_burst: 1000,
            max_connections_per_peer: 4,
            max_pending_peers: 1024,
        }
    }
}

/// Identifies a message delivered to this node (as exit and destination) that may be answered
/// with [`Behaviour::reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyId(u64);

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply arrived within the request timeout (a hop, the exit or the destination failed,
    /// or a packet was dropped on the way).
    #[error("no reply within the request timeout")]
    Timeout,
}

/// What the behaviour reports to the swarm's owner.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The reply to a request.
    Reply {
        /// The request.
        request: RequestId,
        /// The destination's reply, as read by the exit's read rule.
        body: Vec<u8>,
        /// Time from the request to the reply.
        rtt: Duration,
    },
    /// A request got no reply.
    RequestFailed {
        /// The request.
        request: RequestId,
        /// Why.
        error: RequestError,
    },
    /// An anonymous message for a protocol this node serves itself (it was the exit and the
    /// destination). Its sender is unknown to this node.
    Received {
        /// The origin protocol.
        codec: String,
        /// The message.
        body: Vec<u8>,
        /// Set if the sender attached SURBs: answer with [`Behaviour::reply`].
        reply: Option<ReplyId>,
    },
    /// The node's mix keys rotated: advertise them (the runtime republishes its discovery
    /// record with these keys).
    KeysRotated(core::EpochKeys),
    /// The unused SURBs of a bundle ([`Behaviour::surb_bundle`]) expired.
    SurbsExpired {
        /// The bundle.
        bundle: RequestId,
    },
    /// As the exit, this node handed a message to its destination (or failed to).
    Delivered {
        /// The destination.
        peer: PeerId,
        /// The origin protocol.
        codec: String,
        /// The outcome; `Ok(true)` when a reply was read and sent back.
        result: Result<bool, ExitError>,
    },
}

struct ExitJob {
    id: ExitId,
    codec: String,
    body: Vec<u8>,
    read: Option<ReadRule>,
    retry: bool,
    pooled: bool,
}

/// Work waiting for a connection to a peer.
struct Pending {
    addr: Multiaddr,
    packets: VecDeque<Vec<u8>>,
    exits: Vec<ExitJob>,
    dials: u8,
}

/// The Mix Protocol on a swarm.
pub struct Behaviour {
    core: MixCore<StdRng>,
    config: Config,
    metrics: Metrics,
    timer: Delay,
    timer_deadline: Option<Instant>,
    connected: HashMap<PeerId, Vec<ConnectionId>>,
    pending: HashMap<PeerId, Pending>,
    exit_surbs: HashMap<ExitId, (PeerId, String, Vec<Surb>)>,
    next_exit: u64,
    exit_protocols: HashMap<String, ExitProtocol>,
    local_replies: BTreeMap<ReplyId, Vec<Surb>>,
    next_reply: u64,
    events: VecDeque<ToSwarm<Event, InEvent>>,
    waker: Option<Waker>,
    /// Peers being dialed only to see whether they are alive.
    probing: HashMap<PeerId, Multiaddr>,
    probe_timer: Option<Delay>,
    probe_rng: StdRng,
    /// Length of the per-hop proof after each packet.
    proof_len: usize,
    listen_addrs: usize,
    /// Each connected peer's inbound frame budget, shared by its connections.
    buckets: HashMap<PeerId, Arc<Mutex<TokenBucket>>>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").field("core", &self.core).finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A mix node known to others as `local`, with `secret` the private half of its mix key.
    pub fn new(
        local: MixNode,
        secret: NodeSecretKey,
        pool: Box<dyn NodePool>,
        delay: Box<dyn DelayStrategy>,
        config: Config,
    ) -> Self {
        let metrics = Metrics::default();
        let rng = StdRng::from_rng(&mut rand::rng());
        let mut core = MixCore::new(config.core.clone(), local, secret, pool, delay, rng)
            .with_metrics(metrics.clone());
        let now = Instant::now();
        core.set_wall_clock(
            now,
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default(),
        );
        // Until it listens somewhere, the node is not serving anyone.
        core.set_serving(false);
        // Starts key rotation and cover traffic.
        core.handle_timeout(now);
        let probe_timer = config.probe_interval.map(Delay::new);
        Self {
            proof_len: 0,
            listen_addrs: 0,
            buckets: HashMap::new(),
            core,
            config,
            metrics,
            timer: Delay::new(Duration::ZERO),
            timer_deadline: None,
            connected: HashMap::new(),
            pending: HashMap::new(),
            exit_surbs: HashMap::new(),
            next_exit: 0,
            exit_protocols: HashMap::new(),
            local_replies: BTreeMap::new(),
            next_reply: 0,
            events: VecDeque::new(),
            waker: None,
            probing: HashMap::new(),
            probe_timer,
            probe_rng: StdRng::from_rng(&mut rand::rng()),
        }
    }

    /// Protects packets with `spam`; every node of the network must do the same. Call before
    /// the swarm makes connections (per-hop proofs change the frame length).
    pub fn with_spam_protection(mut self, spam: crate::spam::SpamConfig) -> Self {
        self.core.set_spam_protection(spam);
        self.proof_len = self.core.frame_proof_len();
        self
    }

    /// The node's metrics (register them with [`Metrics::register`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The core, for inspection.
    pub fn core(&self) -> &MixCore<StdRng> {
        &self.core
    }

    /// Changes the address this node advertises in its SURBs.
    pub fn set_local_address(&mut self, addr: Multiaddr) -> Result<(), core::PoolError> {
        self.core.set_local_address(addr)
    }

    /// Offers a node described by a valid record (see [`crate::discovery::Event::NodeFound`])
    /// to the pool. Returns whether the usable nodes changed.
    pub fn offer_node(&mut self, node: MixNode, seq: u64, expires: Instant) -> bool {
        self.core.pool_mut().offer(node, seq, expires, Instant::now())
    }

    /// A round-trip time measured to `peer` (e.g. by libp2p ping), for RTT-aware paths.
    pub fn report_rtt(&mut self, peer: &PeerId, rtt: Duration) {
        self.core.pool_mut().report_rtt(peer, rtt);
    }

    /// Replaces the pool paths are drawn from.
    pub fn set_pool(&mut self, pool: Box<dyn NodePool>) {
        self.core.set_pool(pool);
    }

    /// The largest message body for `codec` with `surbs` SURBs.
    pub fn max_message_size(&self, codec: &str, surbs: usize) -> Result<usize, MessageError> {
        self.core.max_message_size(codec, surbs)
    }

    /// How this node, as an exit, reads replies of `codec` from destinations. Without a rule it
    /// writes the message and reads nothing.
    pub fn register_read_rule(&mut self, codec: impl Into<String>, rule: ReadRule) {
        self.register_exit_protocol(
            codec,
            ExitProtocol { read: Some(rule), retry_on_reset: false, pooled: false },
        );
    }

    /// How this node, as an exit, delivers messages of `codec`: the reply rule, and whether
    /// to deliver once more when the destination resets the stream before replying.
    pub fn register_exit_protocol(&mut self, codec: impl Into<String>, protocol: ExitProtocol) {
        self.exit_protocols.insert(codec.into(), protocol);
    }

    /// Sends `body` anonymously to `destination` with origin protocol `codec`.
    pub fn send(
        &mut self,
        destination: &Destination,
        codec: &str,
        body: &[u8],
    ) -> Result<MessageId, SendError> {
        let id = self.core.send(Instant::now(), destination, codec, body)?;
        self.wake();
        Ok(id)
    }

    /// [`Self::send`] with per-message options (redundant copies).
    pub fn send_with(
        &mut self,
        destination: &Destination,
        codec: &str,
        body: &[u8],
        options: SendOptions,
    ) -> Result<MessageId, SendError> {
        let id = self.core.send_with(Instant::now(), destination, codec, body, options)?;
        self.wake();
        Ok(id)
    }

    /// [`Self::request`] with per-message options (redundant copies).
    pub fn request_with(
        &mut self,
        destination: &Destination,
        codec: &str,
        body: &[u8],
        surbs: usize,
        options: SendOptions,
    ) -> Result<RequestId, SendError> {
        let id =
            self.core.request_with(Instant::now(), destination, codec, body, surbs, options)?;
        self.wake();
        Ok(id)
    }

    /// Sends `body` with `surbs` SURBs; the outcome is [`Event::Reply`] or
    /// [`Event::RequestFailed`].
    pub fn request(
        &mut self,
        destination: &Destination,
        codec: &str,
        body: &[u8],
        surbs: usize,
    ) -> Result<RequestId, SendError> {
        let id = self.core.request(Instant::now(), destination, codec, body, surbs)?;
        self.wake();
        Ok(id)
    }

    /// Sends a Sphinx packet built elsewhere (by a tool, a benchmark, or an application with
    /// its own path selection) to its first hop, as is: no pre-send delay, no checks.
    pub fn send_packet(&mut self, peer: PeerId, addr: Multiaddr, packet: Packet) {
        self.transmit_frame(peer, addr, packet.into_vec());
        self.wake();
    }

    /// Builds SURBs back to this node for the application to carry in its own messages (see
    /// [`core::MixCore::surb_bundle`]); each reply through one of them is an [`Event::Reply`]
    /// naming the bundle.
    pub fn surb_bundle(
        &mut self,
        count: usize,
        avoid: &[PeerId],
        options: SendOptions,
    ) -> Result<core::SurbBundle, SendError> {
        self.core.surb_bundle(Instant::now(), count, avoid, options)
    }

    /// Sends `body` back through SURBs this node holds (received inside some protocol's
    /// messages), one reply packet per SURB. Returns how many were sent.
    pub fn reply_with(&mut self, surbs: &[Surb], body: &[u8]) -> Result<usize, MessageError> {
        let sent = self.core.reply(Instant::now(), surbs, body)?;
        self.wake();
        Ok(sent)
    }

    /// The largest reply body one SURB carries.
    pub fn max_reply_size(&self) -> usize {
        self.core.max_reply_size()
    }

    /// Answers a message received with [`Event::Received`]. Returns how many copies were sent
    /// (one per SURB), or `Ok(0)` if the id is unknown or expired.
    pub fn reply(&mut self, id: ReplyId, body: &[u8]) -> Result<usize, MessageError> {
        let Some(surbs) = self.local_replies.remove(&id) else { return Ok(0) };
        let sent = self.core.reply(Instant::now(), &surbs, body)?;
        self.wake();
        Ok(sent)
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// A handler for a new connection to `peer`, unless the peer has too many.
    fn handler(&mut self, peer: PeerId) -> Result<Handler, ConnectionDenied> {
        let existing = self.connected.get(&peer).map_or(0, Vec::len);
        if existing >= self.config.max_connections_per_peer {
            self.metrics.dropped(DropReason::TooManyPeers);
            return Err(ConnectionDenied::new(TooManyConnections(existing)));
        }
        let bucket = self.config.inbound_frame_rate.map(|rate| {
            let burst = self.config.inbound_burst;
            self.buckets
                .entry(peer)
                .or_insert_with(|| Arc::new(Mutex::new(TokenBucket::new(rate, burst))))
                .clone()
        });
        Ok(Handler::new(
            HandlerConfig {
                frame_timeout: self.config.frame_timeout,
                max_inbound_streams: self.config.max_inbound_streams,
                max_queued_frames: self.config.max_queued_frames,
                exit_timeout: self.config.exit_timeout,
                max_concurrent_exits: self.config.max_concurrent_exits,
                frame_len: PACKET_SIZE + self.proof_len,
                serve: self.config.serve,
            },
            self.metrics.clone(),
            bucket,
        ))
    }

    fn on_output(&mut self, output: Output) {
        match output {
            Output::Transmit { peer, addr, packet, proof } => {
                self.transmit_frame(peer, addr, frame(packet, &proof));
            }
            Output::KeysRotated(keys) => {
                self.events.push_back(ToSwarm::GenerateEvent(Event::KeysRotated(keys)));
            }
            Output::Deliver(delivery) => self.deliver(delivery),
            Output::Reply { request, body, rtt } => {
                self.events.push_back(ToSwarm::GenerateEvent(Event::Reply { request, body, rtt }));
            }
            Output::RequestTimedOut(request) => {
                self.events.push_back(ToSwarm::GenerateEvent(Event::RequestFailed {
                    request,
                    error: RequestError::Timeout,
                }));
            }
            Output::SurbsExpired(bundle) => {
                self.events.push_back(ToSwarm::GenerateEvent(Event::SurbsExpired { bundle }));
            }
        }
    }

    fn transmit_frame(&mut self, peer: PeerId, addr: Multiaddr, frame: Vec<u8>) {
        if let Some(connection) = self.connected.get(&peer).and_then(|c| c.first()) {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(*connection),
                event: InEvent::Send(frame),
            });
            return;
        }
        let max = self.config.max_pending_per_peer;
        if !self.pending.contains_key(&peer) && self.pending.len() >= self.config.max_pending_peers
        {
            self.metrics.dropped(DropReason::TooManyPeers);
            return;
        }
        let pending = self.pending_for(peer, addr);
        if pending.packets.len() >= max {
            self.metrics.dropped(DropReason::PeerQueueFull);
            return;
        }
        pending.packets.push_back(frame);
    }

    fn deliver(&mut self, delivery: Delivery) {
        let Delivery { destination, codec, body, surbs } = delivery;
        let Some((peer, addr)) = destination else {
            let reply = (!surbs.is_empty()).then(|| {
                if self.local_replies.len() >= self.config.max_pending_replies {
                    self.local_replies.pop_first();
                }
                let id = ReplyId(self.next_reply);
                self.next_reply += 1;
                self.local_replies.insert(id, surbs);
                id
            });
            self.events.push_back(ToSwarm::GenerateEvent(Event::Received { codec, body, reply }));
            return;
        };
        let id = ExitId(self.next_exit);
        self.next_exit += 1;
        let protocol = self.exit_protocols.get(&codec).copied().unwrap_or_default();
        let read = if surbs.is_empty() { None } else { protocol.read };
        let retry = protocol.retry_on_reset;
        let pooled = protocol.pooled && read.is_none();
        self.exit_surbs.insert(id, (peer, codec.clone(), surbs));
        let job = ExitJob { id, codec, body, read, retry, pooled };
        if let Some(connection) = self.connected.get(&peer).and_then(|c| c.first()) {
            self.events.push_back(exit_event(peer, *connection, job));
        } else {
            self.pending_for(peer, addr).exits.push(job);
        }
    }

    /// The pending entry for `peer`, dialing it if this is the first work for it.
    fn pending_for(&mut self, peer: PeerId, addr: Multiaddr) -> &mut Pending {
        let events = &mut self.events;
        self.pending.entry(peer).or_insert_with(|| {
            events.push_back(dial(peer, addr.clone()));
            Pending { addr, packets: VecDeque::new(), exits: Vec::new(), dials: 1 }
        })
    }

    fn on_exit_done(&mut self, id: ExitId, result: Result<Option<Vec<u8>>, ExitError>) {
        let Some((peer, codec, surbs)) = self.exit_surbs.remove(&id) else { return };
        let result = match result {
            Ok(Some(reply)) => match self.core.reply(Instant::now(), &surbs, &reply) {
                Ok(_) => Ok(true),
                Err(e) => Err(ExitError::Stream(format!("reply does not fit a SURB: {e}"))),
            },
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        self.metrics.exit_request(if result.is_ok() { "ok" } else { "error" });
        self.events.push_back(ToSwarm::GenerateEvent(Event::Delivered { peer, codec, result }));
    }

    fn on_connection_established(&mut self, peer: PeerId, connection: ConnectionId) {
        self.probing.remove(&peer);
        self.connected.entry(peer).or_default().push(connection);
        let Some(pending) = self.pending.remove(&peer) else { return };
        for frame in pending.packets {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: InEvent::Send(frame),
            });
        }
        for job in pending.exits {
            self.events.push_back(exit_event(peer, connection, job));
        }
    }

    fn on_dial_failure(&mut self, peer: PeerId, error: &DialError) {
        if matches!(error, DialError::DialPeerConditionFalse(_)) {
            return;
        }
        if self.probing.remove(&peer).is_some() && !self.pending.contains_key(&peer) {
            tracing::debug!(%peer, %error, "probe failed; suspending the node");
            self.core.peer_unreachable(&peer, Instant::now());
            return;
        }
        let Some(pending) = self.pending.get_mut(&peer) else { return };
        if pending.dials < 2 {
            tracing::debug!(%peer, %error, "dial failed; redialing once");
            pending.dials += 1;
            self.events.push_back(dial(peer, pending.addr.clone()));
            return;
        }
        tracing::debug!(%peer, %error, "dial failed twice; dropping queued work");
        self.core.peer_unreachable(&peer, Instant::now());
        let Some(pending) = self.pending.remove(&peer) else { return };
        for _ in &pending.packets {
            self.metrics.dropped(DropReason::Unreachable);
        }
        for job in pending.exits {
            self.on_exit_done(job.id, Err(ExitError::Unreachable));
        }
    }

    /// Dials `peer` to check it is alive, if it is a pool node we are not connected to.
    fn probe(&mut self, peer: PeerId) {
        if self.connected.contains_key(&peer) || self.probing.contains_key(&peer) {
            return;
        }
        let Some(addr) = self.core.pool().get(&peer).map(|n| n.addr().clone()) else { return };
        self.probing.insert(peer, addr.clone());
        self.events.push_back(dial(peer, addr));
    }

    /// Probes a few random pool nodes we are not connected to.
    fn probe_some(&mut self) {
        let candidates: Vec<PeerId> = self
            .core
            .pool()
            .nodes()
            .iter()
            .map(|n| *n.peer_id())
            .filter(|p| p != self.core.local().peer_id() && !self.connected.contains_key(p))
            .collect();
        let count = self.config.probes_per_interval.min(candidates.len());
        for i in 0..count {
            let j = self.probe_rng.random_range(i..candidates.len());
            let peer = candidates[j];
            self.probe(peer);
        }
    }

    /// Runs the core's timer; `true` if it fired.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.core.poll_timeout() else {
            self.timer_deadline = None;
            return false;
        };
        let now = Instant::now();
        if deadline <= now {
            self.core.handle_timeout(now);
            return true;
        }
        // Re-arming registers with the global timer thread; do it only when the deadline moves
        // earlier. A timer that fires early just re-arms for the next deadline.
        if self.timer_deadline.is_none_or(|armed| deadline < armed) {
            self.timer_deadline = Some(deadline);
            self.timer.reset(deadline - now);
        }
        if self.timer.poll_unpin(cx).is_ready() {
            self.timer_deadline = None;
            self.core.handle_timeout(Instant::now());
            return true;
        }
        false
    }
}

/// Why a connection was denied.
#[derive(Debug, thiserror::Error)]
#[error("the peer already holds {0} connections")]
struct TooManyConnections(usize);

/// The frame for a packet and its per-hop proof.
fn frame(packet: Packet, proof: &[u8]) -> Vec<u8> {
    let mut frame = packet.into_vec();
    frame.extend_from_slice(proof);
    frame
}

fn dial(peer: PeerId, addr: Multiaddr) -> ToSwarm<Event, InEvent> {
    ToSwarm::Dial {
        opts: DialOpts::peer_id(peer)
            .addresses(vec![addr])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build(),
    }
}

fn exit_event(peer: PeerId, connection: ConnectionId, job: ExitJob) -> ToSwarm<Event, InEvent> {
    ToSwarm::NotifyHandler {
        peer_id: peer,
        handler: NotifyHandler::One(connection),
        event: InEvent::Exit {
            id: job.id,
            protocol: job.codec,
            body: job.body,
            read: job.read,
            retry: job.retry,
            pooled: job.pooled,
        },
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.handler(peer)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.handler(peer)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => {
                self.on_connection_established(peer_id, connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                remaining_established,
                ..
            }) => {
                if let Some(connections) = self.connected.get_mut(&peer_id) {
                    connections.retain(|c| *c != connection_id);
                    if connections.is_empty() {
                        self.connected.remove(&peer_id);
                        self.buckets.remove(&peer_id);
                    }
                }
                // A connection to a mix node that broke (rather than idled out): is it alive?
                if remaining_established == 0 && cause.is_some() {
                    self.probe(peer_id);
                }
            }
            FromSwarm::DialFailure(DialFailure { peer_id: Some(peer), error, .. }) => {
                self.on_dial_failure(peer, error);
            }
            FromSwarm::NewListenAddr(_) => {
                self.listen_addrs += 1;
                self.core.set_serving(self.config.serve);
            }
            FromSwarm::ExpiredListenAddr(_) => {
                self.listen_addrs = self.listen_addrs.saturating_sub(1);
                self.core.set_serving(self.config.serve && self.listen_addrs > 0);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            OutEvent::Packet(mut frame) => {
                if frame.len() != PACKET_SIZE + self.proof_len {
                    self.metrics.dropped(DropReason::BadLength);
                    return;
                }
                let proof = frame.split_off(PACKET_SIZE);
                match Packet::try_from(frame) {
                    Ok(packet) => {
                        let _ = self.core.handle_packet_with_proof(Instant::now(), packet, &proof);
                    }
                    Err(_) => self.metrics.dropped(DropReason::BadLength),
                }
            }
            OutEvent::Exit { id, result } => self.on_exit_done(id, result),
            OutEvent::Unreachable => self.core.peer_unreachable(&peer, Instant::now()),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let (Some(timer), Some(interval)) =
            (self.probe_timer.as_mut(), self.config.probe_interval)
            && timer.poll_unpin(cx).is_ready()
        {
            timer.reset(interval);
            self.probe_some();
        }
        loop {
            while let Some(output) = self.core.poll_output() {
                self.on_output(output);
            }
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            if !self.poll_timer(cx) {
                break;
            }
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
