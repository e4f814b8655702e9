//! The rust-libp2p driver: a [`NetworkBehaviour`] that runs the Mix Protocol and, on top of
//! it, anonymous streams and messages.
//!
//! It wraps a [`libp2p_mix::Mixnet`] (the mix behaviour with discovery and RTTs wired in). The
//! mix behaviour carries the opener's frames as one-way mix messages to the acceptor (through
//! a random exit each time), builds the SURBs the opener sends ahead, and sends the acceptor's frames back through them. Exits deliver
//! frames to the acceptor over `/mix/stream/1.0.0`, like any origin protocol, so the acceptor
//! only ever talks to exits and to the first hops of SURBs. Mix events that are not the
//! streams' own pass through as [`Event::Mix`]; [`Behaviour::mix_mut`] reaches the mix
//! behaviour for everything else it does.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use either::Either;
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};
use futures_timer::Delay;
use libp2p_core::transport::PortUse;
use libp2p_core::{Endpoint, Multiaddr};
use libp2p_identity::PeerId;
use libp2p_mix::{Destination, RequestId, SendError, SendOptions};
use libp2p_swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerSelect, ConnectionId, FromSwarm,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use mix_sphinx::Surb;
use rand::SeedableRng;
use rand::rngs::StdRng;
use zeroize::Zeroizing;

use super::control::{Command, Control, OpenStreamError, StreamPeer, Target, TransferError};
use super::handler::{FrameHandler, FromHandler};
use super::metrics::Metrics;
use super::stream::{MixStream, Shared, lock};
use crate::labels::{Label, LabelUpdate};
use crate::{
    AcceptError, Connection, ConnectionError, ConnectionStats, FrameDrop, FrameLimits, Mode,
    NetworkLoss, ReceiverKey, Role, StreamConfig, SurbBytes, SurbSource, frame,
};

/// The origin protocol id of stream frames (what exits dial the acceptor with).
pub const CODEC: &str = "/mix/stream/1.0.0";

/// Settings of the stream layer.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings of the streams this node opens (unless given per stream) and of its side of
    /// the streams it accepts.
    pub stream: StreamConfig,
    /// Streams accepted and open at once; frames opening more are dropped.
    pub max_accepted: usize,
    /// Streams opened by this node and open at once.
    pub max_opened: usize,
    /// Accepted streams waiting for [`Control::accept_stream`]; more are reset.
    pub accept_backlog: usize,
    /// Received messages waiting for [`Control::next_message`]; more are reset.
    pub message_backlog: usize,
    /// The largest message accepted; a longer one is reset when it crosses the limit.
    pub max_message_len: usize,
    /// Bytes all accepted streams and messages may hold together (messages being received,
    /// and what streams received that the application has not read). Past it, new openings
    /// are refused and messages that grow are reset; each stream's own receive window bounds
    /// the rest.
    pub max_accepted_bytes: usize,
    /// An accepted stream or message that received no data this long after its opening is
    /// reset: it held a slot for nothing.
    pub opening_deadline: Duration,
    /// Frames read per second from one peer (an exit delivering them), with bursts of as
    /// many; more are dropped. `None`: no limit.
    pub peer_frame_rate: Option<f64>,
    /// New streams accepted per second from one peer's deliveries (each costs a
    /// Diffie-Hellman), with bursts of as many; on top of [`Self::accept_rate`] for all.
    pub peer_accept_rate: f64,
    /// Accepted streams and messages open at once whose opening a peer outside the mix pool
    /// delivered, all such peers together. Honest openings come through exits, which are mix
    /// nodes of the pool; strangers that deliver their own openings (and feed them just
    /// enough data to keep them) share these slots and cannot take the others.
    pub max_accepted_from_strangers: usize,
    /// Of those, at most this many from any one stranger.
    pub max_accepted_per_stranger: usize,
    /// How long a stream that ended (either side) is kept, to acknowledge late
    /// retransmissions.
    pub linger: Duration,
    /// New streams accepted per second at most (each costs a Diffie-Hellman).
    pub accept_rate: f64,
    /// Inbound frame streams read at once per connection.
    pub max_inbound_reads: usize,
    /// How long an exit may take to deliver one frame.
    pub frame_timeout: Duration,
    /// Own mix packets waiting in the mix node's delay queue above which streams wait.
    pub max_queued_packets: usize,
    /// How far the time in an opening may lie from this node's clock, either way; older
    /// openings are refused, and openings are remembered this long to refuse replays.
    pub opening_freshness: Duration,
    /// Openings remembered at most (see [`Self::opening_freshness`]); when the window holds
    /// more, new openings are refused until old ones age out. About 48 bytes each.
    pub max_recent_openings: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream: StreamConfig::default(),
            max_accepted: 256,
            max_opened: 1024,
            accept_backlog: 64,
            message_backlog: 256,
            max_message_len: 16 << 20,
            max_accepted_bytes: 256 << 20,
            opening_deadline: Duration::from_secs(10),
            peer_frame_rate: Some(4000.0),
            peer_accept_rate: 200.0,
            max_accepted_from_strangers: 32,
            max_accepted_per_stranger: 4,
            linger: Duration::from_secs(30),
            accept_rate: 2000.0,
            max_inbound_reads: 256,
            frame_timeout: Duration::from_secs(10),
            max_queued_packets: 512,
            opening_freshness: Duration::from_secs(120),
            max_recent_openings: 1 << 18,
        }
    }
}

/// What the behaviour reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// An event of the mix behaviour that is not the streams' own.
    Mix(libp2p_mix::Event),
}

/// Frames one stream builds before the mix node gets to send them: building a frame's packet
/// takes a Sphinx packet's worth of work, and a window's worth at once would leave the network
/// idle, then flood it.
const FRAMES_PER_DRIVE: usize = 8;

/// Reset code: the acceptor's backlog was full.
pub const RESET_REFUSED: u8 = 1;
/// Reset code: a message exceeded the size limit.
pub const RESET_TOO_LARGE: u8 = 2;
/// Reset code: the application dropped the stream while data was still coming.
pub const RESET_ABANDONED: u8 = 3;

struct Entry {
    shared: Arc<Mutex<Shared>>,
    role: Role,
    /// Opener: where frames go.
    dest: Option<Destination>,
    options: SendOptions,
    /// Opener: a frame the mix node could not take yet.
    unsent: Option<Vec<u8>>,
    /// Opener: whether a frame ever left (a path exists).
    sent_any: bool,
    /// Opener of a message: the bytes still to write and who waits for the outcome.
    outgoing: Option<(Vec<u8>, usize, Outcome)>,
    /// Acceptor of a message: the bytes so far.
    inbox: Option<Vec<u8>>,
    /// When the stream ended (it lingers, see [`Config::linger`]).
    ended: Option<Instant>,
    stats: ConnectionStats,
    /// Acceptor: when it was accepted, until data arrived.
    awaiting_data: Option<Instant>,
    /// Acceptor: the peer that delivered its opening, and whether it was outside the pool.
    via: Option<PeerId>,
    via_stranger: bool,
    /// Acceptor: the bytes it holds, as last counted in [`Behaviour::accepted_bytes`].
    charged: usize,
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self { tokens: burst, at: now }
    }

    /// Takes a token if one is there, after refilling at `rate` up to `burst`.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// Whether it is full again (nothing to remember about its peer).
    fn is_full(&self, rate: f64, burst: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate >= burst
    }
}

/// What one peer may still deliver.
#[derive(Debug, Clone, Copy)]
struct PeerBudget {
    frames: Bucket,
    openings: Bucket,
}

/// Peers whose budgets are remembered at most; past it, full ones are forgotten.
const MAX_TRACKED_PEERS: usize = 4096;

type Outcome = oneshot::Sender<Result<(), TransferError>>;

/// The streams opened within the freshness window, to refuse a replayed opening: an opening
/// older than the window is refused for its time, a younger one for being here.
#[derive(Debug, Default)]
struct RecentOpenings {
    set: HashSet<[u8; 16]>,
    /// (Unix second of the opening, stream) in the order they came.
    order: VecDeque<(u64, [u8; 16])>,
}

impl RecentOpenings {
    fn forget_older_than(&mut self, unix_secs: u64) {
        while let Some(&(at, id)) = self.order.front() {
            if at >= unix_secs {
                break;
            }
            self.order.pop_front();
            self.set.remove(&id);
        }
    }
}

fn unix_now() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

/// Anonymous streams and messages over the Mix Protocol, on a swarm.
pub struct Behaviour {
    net: libp2p_mix::Mixnet,
    config: Config,
    /// The keys streams are accepted under: the receiver key given at construction until the
    /// mix node's keys rotate, then the keys of the epochs the node holds (openers use the
    /// key its record advertises). A key leaves (and is zeroized) with its epoch.
    keys: Vec<ReceiverKey>,
    /// The receiver key given at construction, until rotation starts.
    receiver: Option<ReceiverKey>,
    rng: StdRng,
    streams: HashMap<[u8; 32], Entry>,
    /// The labels accepted streams expect, to the stream.
    labels: HashMap<Label, [u8; 32]>,
    openings: RecentOpenings,
    bundles: HashMap<RequestId, [u8; 32]>,
    commands: mpsc::Receiver<Command>,
    control: Control,
    kicks: mpsc::UnboundedReceiver<[u8; 32]>,
    kick: mpsc::UnboundedSender<[u8; 32]>,
    incoming: mpsc::Sender<MixStream>,
    messages: mpsc::Sender<Vec<u8>>,
    /// Streams to drive on the next poll.
    dirty: Vec<[u8; 32]>,
    /// Streams that used their frame budget and go on after the mix node had its turn.
    again: Vec<[u8; 32]>,
    deadlines: BTreeSet<(Instant, [u8; 32])>,
    deadline_of: HashMap<[u8; 32], Instant>,
    timer: Delay,
    timer_at: Option<Instant>,
    /// Streams waiting for room in the mix node's queue.
    waiting: bool,
    metrics: Metrics,
    /// Frame loss on the mixnet, learned from the streams so far: new streams start from it.
    loss: NetworkLoss,
    accept_tokens: f64,
    accept_refill: Instant,
    waker: Option<Waker>,
    observer: Option<FrameObserver>,
    peers: HashMap<PeerId, PeerBudget>,
    /// Bytes accepted streams and messages hold (see [`Config::max_accepted_bytes`]).
    accepted_bytes: usize,
}

/// Sees every frame exits deliver to this node, as they saw it (see
/// [`Behaviour::set_frame_observer`]).
pub type FrameObserver = Box<dyn FnMut(&[u8]) + Send>;

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("streams", &self.streams.len())
            .field("accepting", &!self.keys.is_empty())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// Streams on top of the mixnet `net`. With `receiver` (this node's X25519 secret, usually its mix
    /// key), the node also accepts streams; openers need the public half.
    pub fn new(mut net: libp2p_mix::Mixnet, receiver: Option<[u8; 32]>, config: Config) -> Self {
        // As an exit, deliver stream frames on one pooled stream per acceptor connection.
        net.mix_mut().register_exit_protocol(
            CODEC,
            libp2p_mix::ExitProtocol { read: None, retry_on_reset: false, pooled: true },
        );
        let (commands_tx, commands) = mpsc::channel(64);
        let (kick, kicks) = mpsc::unbounded();
        let (incoming, incoming_rx) = mpsc::channel(config.accept_backlog.max(1));
        let (messages, messages_rx) = mpsc::channel(config.message_backlog.max(1));
        let control = Control::new(commands_tx, incoming_rx, messages_rx);
        let receiver = receiver.map(ReceiverKey::from_bytes);
        let keys = receiver.clone().into_iter().collect();
        let mut behaviour = Self {
            receiver,
            net,
            loss: NetworkLoss::new(config.stream.initial_loss),
            accept_tokens: config.accept_rate.max(1.0),
            accept_refill: Instant::now(),
            config,
            keys,
            rng: StdRng::from_rng(&mut rand::rng()),
            streams: HashMap::new(),
            labels: HashMap::new(),
            openings: RecentOpenings::default(),
            bundles: HashMap::new(),
            commands,
            control,
            kicks,
            kick,
            incoming,
            messages,
            dirty: Vec::new(),
            again: Vec::new(),
            deadlines: BTreeSet::new(),
            deadline_of: HashMap::new(),
            timer: Delay::new(Duration::ZERO),
            timer_at: None,
            waiting: false,
            metrics: Metrics::default(),
            waker: None,
            observer: None,
            peers: HashMap::new(),
            accepted_bytes: 0,
        };
        behaviour.refresh_keys();
        behaviour
    }

    /// Accepts streams under the mix keys of the epochs the node holds now (current, previous
    /// in its overlap, next), or under the receiver key while the node does not rotate.
    fn refresh_keys(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let epochs = self.net.mix().core().epoch_secrets();
        if epochs.is_empty() {
            return;
        }
        // Dropping a key zeroizes it: the construction-time key and every retired epoch key.
        self.receiver = None;
        self.keys = epochs.iter().map(|s| ReceiverKey::from_bytes(**s)).collect();
    }

    /// A handle to open, accept and send; clones share the behaviour.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The mix behaviour underneath.
    pub fn mix(&self) -> &libp2p_mix::Behaviour {
        self.net.mix()
    }

    /// The mix behaviour underneath, for everything else it does.
    pub fn mix_mut(&mut self) -> &mut libp2p_mix::Behaviour {
        self.net.mix_mut()
    }

    /// The mix behaviour with what is wired around it (discovery, RTTs, its address).
    pub fn mixnet(&self) -> &libp2p_mix::Mixnet {
        &self.net
    }

    /// The same, to change it.
    pub fn mixnet_mut(&mut self) -> &mut libp2p_mix::Mixnet {
        &mut self.net
    }

    /// The stream layer's metrics (register them with [`Metrics::register`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The public key openers need, if this node accepts streams.
    pub fn receiver_key(&self) -> Option<[u8; 32]> {
        self.keys.first().map(ReceiverKey::public)
    }

    /// Streams open now (opened and accepted).
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    fn limits(&self) -> FrameLimits {
        let proof = self.net.mix().core().exit_proof_len();
        FrameLimits {
            forward: self.net.mix().max_message_size(CODEC, 0).unwrap_or(0).saturating_sub(proof),
            reverse: self.net.mix().max_reply_size(),
        }
    }

    fn resolve(&self, target: Target) -> Result<StreamPeer, OpenStreamError> {
        match target {
            Target::Peer(peer) => Ok(peer),
            Target::MixNode(peer_id) => {
                let core = self.net.mix().core();
                let node =
                    core.pool().get(&peer_id).ok_or(OpenStreamError::UnknownPeer(peer_id))?;
                // A rotating node accepts streams under the key of the epoch, as its record says.
                let key = node
                    .key_for(core.epoch_now(Instant::now()))
                    .ok_or(OpenStreamError::StaleKeys(peer_id))?;
                Ok(StreamPeer { peer_id, addr: node.addr().clone(), key: key.to_bytes() })
            }
        }
    }

    fn open(
        &mut self,
        target: Target,
        mode: Mode,
        config: Option<StreamConfig>,
    ) -> Result<[u8; 32], OpenStreamError> {
        let peer = self.resolve(target)?;
        let opened = self.streams.values().filter(|e| e.role == Role::Opener).count();
        if opened >= self.config.max_opened {
            return Err(OpenStreamError::TooManyStreams(opened));
        }
        let mut config = config.unwrap_or_else(|| self.config.stream.clone());
        config.initial_loss = self.loss.estimate();
        let now = Instant::now();
        let mut conn =
            Connection::open(&peer.key, mode, config.clone(), self.limits(), now, &mut self.rng)
                .map_err(OpenStreamError::Open)?;
        conn.set_wall_clock(now, unix_now());
        let id = *conn.id();
        let options = SendOptions {
            path_len: Some(config.hops),
            hop_delay: config.hop_delay,
            jitter: Some(Duration::ZERO),
            ..SendOptions::default()
        };
        self.streams.insert(
            id,
            Entry {
                shared: Shared::new(conn),
                role: Role::Opener,
                dest: Some(Destination::Peer { peer_id: peer.peer_id, addr: peer.addr }),
                options,
                unsent: None,
                sent_any: false,
                outgoing: None,
                inbox: None,
                ended: None,
                stats: ConnectionStats::default(),
                awaiting_data: None,
                via: None,
                via_stranger: false,
                charged: 0,
            },
        );
        self.metrics.opened(mode_label(mode));
        self.metrics.active("opener", 1);
        self.dirty.push(id);
        Ok(id)
    }

    fn handle(&self, id: [u8; 32]) -> Option<MixStream> {
        let entry = self.streams.get(&id)?;
        Some(MixStream { shared: entry.shared.clone(), kick: self.kick.clone(), id })
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Open { target, config, reply } => {
                let result = self
                    .open(target, Mode::Stream, config)
                    .map(|id| self.handle(id).expect("just inserted"));
                let _ = reply.send(result);
            }
            Command::Send { target, data, config, reply } => {
                match self.open(target, Mode::Message, config) {
                    Ok(id) => {
                        if let Some(entry) = self.streams.get_mut(&id) {
                            entry.outgoing = Some((data, 0, reply));
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(TransferError::Open(e)));
                    }
                }
            }
        }
    }

    /// A frame an exit delivered: to its stream (by its label), or opening a new one.
    fn on_forward_frame(&mut self, peer: PeerId, frame: Vec<u8>) {
        let now = Instant::now();
        if let Some(observe) = self.observer.as_mut() {
            observe(&frame);
        }
        if let Some(rate) = self.config.peer_frame_rate
            && !self.peer_budget(peer, now).frames.take(rate, rate.max(1.0), now)
        {
            self.metrics.dropped("peer_frame_rate");
            return;
        }
        let Ok((label, _)) = frame::split(&frame) else {
            self.metrics.dropped("malformed");
            return;
        };
        if let Some(&id) = self.labels.get(&label) {
            self.feed(id, |c| c.handle_frame(now, &frame));
            return;
        }
        if self.keys.is_empty() {
            self.metrics.dropped("not_accepting");
            return;
        }
        let accepted = self.streams.values().filter(|e| e.role == Role::Acceptor).count();
        if accepted >= self.config.max_accepted {
            self.metrics.dropped("too_many_streams");
            return;
        }
        if self.accepted_bytes >= self.config.max_accepted_bytes {
            self.metrics.dropped("memory_budget");
            return;
        }
        let stranger = self.net.mix().core().pool().get(&peer).is_none();
        if stranger {
            let from_strangers = self.streams.values().filter(|e| e.via_stranger).count();
            let from_this = self.streams.values().filter(|e| e.via == Some(peer)).count();
            if from_this >= self.config.max_accepted_per_stranger {
                self.metrics.dropped("peer_streams");
                return;
            }
            if from_strangers >= self.config.max_accepted_from_strangers {
                self.metrics.dropped("stranger_streams");
                return;
            }
        }
        // Each unknown label costs a Diffie-Hellman per key: budget them, per peer (so that
        // one peer's junk does not use up everybody's) and in all.
        let rate = self.config.peer_accept_rate.max(1.0);
        if !self.peer_budget(peer, now).openings.take(rate, rate, now) {
            self.metrics.dropped("peer_accept_rate");
            return;
        }
        let elapsed = now.saturating_duration_since(self.accept_refill).as_secs_f64();
        self.accept_refill = now;
        let cap = self.config.accept_rate.max(1.0);
        self.accept_tokens = (self.accept_tokens + elapsed * cap).min(cap);
        if self.accept_tokens < 1.0 {
            self.metrics.dropped("accept_rate");
            return;
        }
        self.accept_tokens -= 1.0;
        let config =
            StreamConfig { initial_loss: self.loss.estimate(), ..self.config.stream.clone() };
        let mut conn =
            match Connection::accept(&self.keys, &frame, config, self.limits(), now, &mut self.rng)
            {
                Ok(conn) => conn,
                Err(AcceptError::NotAnOpening) => {
                    self.metrics.dropped("unknown_stream");
                    return;
                }
                Err(AcceptError::Frame(_)) => {
                    // Junk, a frame of a stream that ended, or one under a retired key.
                    self.metrics.dropped("unknown_label");
                    return;
                }
            };
        let id = *conn.id();
        if self.streams.contains_key(&id) {
            // An opening of a stream this node holds, which overtook more frames than the
            // stream's label window covers.
            self.feed(id, |c| c.handle_opening(now, conn.opening_seq(), &frame));
            return;
        }
        let unix = unix_now().as_secs();
        let fresh = self.config.opening_freshness.as_secs();
        let opened = conn.opened_unix().unwrap_or(0);
        if opened.abs_diff(unix) > fresh {
            self.metrics.dropped("stale_opening");
            return;
        }
        self.openings.forget_older_than(unix.saturating_sub(fresh));
        let short: [u8; 16] = id[..16].try_into().expect("16 bytes");
        if self.openings.set.contains(&short) {
            self.metrics.dropped("replayed_opening");
            return;
        }
        if self.openings.set.len() >= self.config.max_recent_openings {
            self.metrics.dropped("openings_full");
            return;
        }
        self.openings.set.insert(short);
        self.openings.order.push_back((opened.max(unix), short));
        conn.record_label_updates();
        for label in conn.expected_labels() {
            self.labels.insert(*label, id);
        }
        let mode = conn.mode();
        self.metrics.accepted(mode_label(mode));
        self.metrics.active("acceptor", 1);
        self.streams.insert(
            id,
            Entry {
                shared: Shared::new(conn),
                role: Role::Acceptor,
                dest: None,
                options: SendOptions::default(),
                unsent: None,
                sent_any: false,
                outgoing: None,
                inbox: (mode == Mode::Message).then(Vec::new),
                ended: None,
                stats: ConnectionStats::default(),
                awaiting_data: Some(now),
                via: Some(peer),
                via_stranger: stranger,
                charged: 0,
            },
        );
        if mode == Mode::Stream {
            let handle = self.handle(id).expect("just inserted");
            if let Err(e) = self.incoming.try_send(handle) {
                // Nobody takes streams fast enough: refuse this one.
                let handle = e.into_inner();
                lock(&handle.shared).conn.reset(RESET_REFUSED);
                drop(handle);
                self.metrics.dropped("backlog_full");
            }
        }
        self.dirty.push(id);
    }

    /// `peer`'s budget, remembered while it is not full (and for at most
    /// [`MAX_TRACKED_PEERS`] peers: past that, full budgets are forgotten first).
    fn peer_budget(&mut self, peer: PeerId, now: Instant) -> &mut PeerBudget {
        let frame_rate = self.config.peer_frame_rate.unwrap_or(f64::MAX).max(1.0);
        let accept_rate = self.config.peer_accept_rate.max(1.0);
        if self.peers.len() >= MAX_TRACKED_PEERS && !self.peers.contains_key(&peer) {
            self.peers.retain(|_, b| {
                !(b.frames.is_full(frame_rate, frame_rate, now)
                    && b.openings.is_full(accept_rate, accept_rate, now))
            });
            if self.peers.len() >= MAX_TRACKED_PEERS {
                // Every tracked peer is busy: the newcomer shares the emptiest budget.
                let busiest = self
                    .peers
                    .iter()
                    .min_by(|a, b| a.1.openings.tokens.total_cmp(&b.1.openings.tokens))
                    .map(|(p, _)| *p)
                    .expect("not empty");
                return self.peers.get_mut(&busiest).expect("just found");
            }
        }
        self.peers.entry(peer).or_insert_with(|| PeerBudget {
            frames: Bucket::full(frame_rate, now),
            openings: Bucket::full(accept_rate, now),
        })
    }

    /// Hands a frame to stream `id`'s connection, keeps the node's label index in step with
    /// the stream's window, and counts a refusal.
    fn feed(
        &mut self,
        id: [u8; 32],
        handle: impl FnOnce(&mut Connection) -> Result<(), FrameDrop>,
    ) {
        let Some(entry) = self.streams.get(&id) else { return };
        let mut shared = lock(&entry.shared);
        let result = handle(&mut shared.conn);
        let updates = shared.conn.drain_label_updates();
        drop(shared);
        self.apply_label_updates(id, updates);
        if let Err(e) = result {
            self.metrics.dropped(drop_label(&e));
        }
        self.dirty.push(id);
    }

    fn apply_label_updates(&mut self, id: [u8; 32], updates: Vec<LabelUpdate>) {
        for update in updates {
            match update {
                LabelUpdate::Added(label) => {
                    self.labels.insert(label, id);
                }
                LabelUpdate::Removed(label) => {
                    if self.labels.get(&label) == Some(&id) {
                        self.labels.remove(&label);
                    }
                }
            }
        }
    }

    /// Hands `observer` every frame an exit delivers to this node, before anything is done with
    /// it: exactly the bytes that exit read. For audits of what exits learn.
    pub fn set_frame_observer(&mut self, observer: Option<FrameObserver>) {
        self.observer = observer;
    }

    /// Labels in the index over accepted streams (a measure of its memory).
    pub fn indexed_labels(&self) -> usize {
        self.labels.len()
    }

    /// A SURB reply: a frame back from an acceptor.
    fn on_reverse_frame(&mut self, id: [u8; 32], body: &[u8]) {
        let Some(entry) = self.streams.get(&id) else {
            self.metrics.dropped("stream_ended");
            return;
        };
        let result = lock(&entry.shared).conn.handle_frame(Instant::now(), body);
        if let Err(e) = result {
            self.metrics.dropped(drop_label(&e));
        }
        self.dirty.push(id);
    }

    fn on_mix_event(&mut self, event: libp2p_mix::Event) -> Option<Event> {
        match event {
            libp2p_mix::Event::Reply { request, body, .. }
                if self.bundles.contains_key(&request) =>
            {
                let id = self.bundles[&request];
                self.on_reverse_frame(id, &body);
                None
            }
            libp2p_mix::Event::SurbsExpired { bundle }
                if self.bundles.remove(&bundle).is_some() =>
            {
                None
            }
            libp2p_mix::Event::KeysRotated(keys) => {
                self.refresh_keys();
                Some(Event::Mix(libp2p_mix::Event::KeysRotated(keys)))
            }
            other => Some(Event::Mix(other)),
        }
    }

    /// Moves one stream along: timers, the application's message bytes, frames out, and the
    /// end of the stream.
    fn drive(&mut self, id: [u8; 32], now: Instant) {
        let queue_full = self.net.mix().core().delayed_packets() >= self.config.max_queued_packets;
        let limits_forward = self.limits().forward;
        let Self { net, streams, bundles, metrics, config, accepted_bytes, .. } = self;
        let mix = net.mix_mut();
        let Some(entry) = streams.get_mut(&id) else { return };
        let mut shared = lock(&entry.shared);
        let s = &mut *shared;
        s.conn.handle_timeout(now);

        // A message being sent: feed it as room allows.
        if let Some((data, offset, _)) = entry.outgoing.as_mut() {
            if let Ok(n) = s.conn.write(now, &data[*offset..]) {
                *offset += n;
            }
            if *offset == data.len() {
                s.conn.finish();
            }
        }
        // A dropped handle, or a message being received: read what arrived.
        let mut buf = [0u8; 16 * 1024];
        if s.dropped || entry.inbox.is_some() {
            loop {
                match s.conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(inbox) = entry.inbox.as_mut() {
                            if inbox.len() + n > config.max_message_len {
                                s.conn.reset(RESET_TOO_LARGE);
                                entry.inbox = None;
                                metrics.dropped("message_too_large");
                                break;
                            }
                            if *accepted_bytes + n > config.max_accepted_bytes {
                                // All accepted messages together hold as much as they may.
                                s.conn.reset(RESET_TOO_LARGE);
                                entry.inbox = None;
                                metrics.dropped("memory_budget");
                                break;
                            }
                            *accepted_bytes += n;
                            entry.charged += n;
                            inbox.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            }
        }

        let mut waiting = false;
        let mut more = false;
        let mut budget = FRAMES_PER_DRIVE;
        match entry.role {
            Role::Opener => loop {
                if budget == 0 {
                    // Let the mix node put these on the wire before building more.
                    more = true;
                    break;
                }
                budget -= 1;
                let frame = match entry.unsent.take() {
                    Some(frame) => frame,
                    None => {
                        if queue_full {
                            waiting = true;
                            break;
                        }
                        let dest_peer = match &entry.dest {
                            Some(Destination::Peer { peer_id, .. }) => *peer_id,
                            _ => break,
                        };
                        let mut source =
                            Bundles { mix, bundles, id, avoid: dest_peer, options: entry.options };
                        match s.conn.poll_transmit(now, &mut source) {
                            Some(frame) => frame,
                            None => break,
                        }
                    }
                };
                debug_assert!(frame.len() <= limits_forward);
                let Some(dest) = entry.dest.as_ref() else { break };
                match mix.send_with(dest, CODEC, &frame, entry.options) {
                    Ok(_) => entry.sent_any = true,
                    Err(
                        SendError::QueueFull(_)
                        | SendError::RateLimited(_)
                        | SendError::TooManySurbs(_)
                        | SendError::TooManyPendingRequests(_),
                    ) => {
                        entry.unsent = Some(frame);
                        waiting = true;
                        break;
                    }
                    Err(SendError::NotMixing) => {
                        s.conn.fail(ConnectionError::Transport(SendError::NotMixing.to_string()));
                        break;
                    }
                    Err(e) if !entry.sent_any => {
                        // No path at all: say so now rather than after every retry.
                        s.conn.fail(ConnectionError::Transport(e.to_string()));
                        break;
                    }
                    Err(e) => {
                        // A path may come back; the stream resends what this frame carried.
                        tracing::debug!(%e, "stream frame not sent");
                        metrics.dropped("no_path");
                    }
                }
            },
            Role::Acceptor => {
                while budget > 0
                    && let Some((surb, frame)) = s.conn.poll_transmit_reply(now)
                {
                    budget -= 1;
                    let Ok(surb) = Surb::from_slice(&surb) else {
                        metrics.dropped("bad_surb");
                        continue;
                    };
                    let Ok((_, first_hop)) = surb.first_hop().decode() else {
                        metrics.dropped("bad_surb");
                        continue;
                    };
                    if mix.core().pool().is_suspended(&first_hop) {
                        // Its first hop is down here: the frame would be lost (the stream
                        // sends it again through another SURB).
                        metrics.dropped("surb_hop_down");
                        continue;
                    }
                    if let Err(e) = mix.reply_with(&[surb], &frame) {
                        tracing::debug!(%e, "reply frame not sent");
                        metrics.dropped("reply_failed");
                    }
                }
                more = budget == 0;
            }
        }

        // What the application waits for may have happened.
        s.wake();
        let stats = s.conn.stats();
        metrics.progress(&entry.stats, &stats, entry.role == Role::Opener);
        entry.stats = stats;
        if let Some(at) = entry.awaiting_data {
            if stats.recv.shards > 0 {
                entry.awaiting_data = None;
            } else if now >= at + config.opening_deadline {
                // An opening that brought nothing loses its slot.
                s.conn.reset(RESET_REFUSED);
                entry.awaiting_data = None;
                metrics.dropped("opening_idle");
            }
        }
        // What the stream holds now: its message so far and what it received unread.
        let held = entry.inbox.as_ref().map_or(0, Vec::len) + s.conn.received_buffered();
        if entry.role == Role::Acceptor {
            *accepted_bytes = (*accepted_bytes + held).saturating_sub(entry.charged);
            entry.charged = held;
        }
        let data_deadline = entry.awaiting_data.map(|at| at + config.opening_deadline);
        let error = s.conn.error().cloned();
        let finished = s.conn.is_finished();
        let closed = s.conn.is_closed();
        let eof = s.conn.is_eof();
        let mode = s.conn.mode();
        let timeout = match (s.conn.poll_timeout(now), data_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        drop(shared);

        if (finished || error.is_some())
            && let Some((_, _, reply)) = entry.outgoing.take()
        {
            let _ = reply.send(match &error {
                Some(e) => Err(TransferError::Connection(e.clone())),
                None => Ok(()),
            });
        }
        if entry.role == Role::Acceptor
            && mode == Mode::Message
            && eof
            && let Some(inbox) = entry.inbox.take()
            && self.messages.try_send(inbox).is_err()
        {
            self.metrics.dropped("message_backlog_full");
        }
        let Some(entry) = self.streams.get_mut(&id) else { return };
        let over = closed || error.is_some();
        if over && entry.ended.is_none() {
            let outcome = match &error {
                None => "closed",
                Some(ConnectionError::Reset(_) | ConnectionError::LocallyReset(_)) => "reset",
                Some(ConnectionError::Unacknowledged(_) | ConnectionError::IdleTimeout(_)) => {
                    "timed_out"
                }
                Some(_) => "failed",
            };
            self.metrics.ended(outcome, &entry.stats);
            self.metrics.active(role_label(entry.role), -1);
            if error.is_none() && entry.role == Role::Opener {
                // Streams teach the node what the network loses; new streams start from it.
                self.loss.learn(&entry.stats);
                self.metrics.set_loss(self.loss.estimate());
            }
            entry.ended = Some(now);
        }
        // A stream that ended well stays a while to acknowledge late retransmissions: the
        // acknowledgement of the peer's last block may be lost, and the peer, still sending
        // it again, would otherwise wait in vain until its idle timeout.
        let linger = if error.is_none() { self.config.linger } else { Duration::ZERO };
        let next = match entry.ended {
            Some(t) if now >= t + linger => {
                if let Some(gone) = self.streams.remove(&id) {
                    self.accepted_bytes = self.accepted_bytes.saturating_sub(gone.charged);
                    let shared = lock(&gone.shared);
                    for label in shared.conn.expected_labels() {
                        if self.labels.get(label) == Some(&id) {
                            self.labels.remove(label);
                        }
                    }
                }
                self.set_deadline(id, None);
                self.bundles.retain(|_, s| *s != id);
                return;
            }
            // Still answering retransmissions while lingering.
            Some(t) => timeout.map_or(t + linger, |at| at.min(t + linger)),
            None => timeout.unwrap_or(now + Duration::from_secs(60)),
        };
        if waiting {
            self.waiting = true;
        }
        if more {
            self.again.push(id);
        }
        self.set_deadline(id, Some(next));
    }

    fn set_deadline(&mut self, id: [u8; 32], at: Option<Instant>) {
        if let Some(old) = self.deadline_of.remove(&id) {
            self.deadlines.remove(&(old, id));
        }
        if let Some(at) = at {
            self.deadlines.insert((at, id));
            self.deadline_of.insert(id, at);
        }
    }

    /// Drives everything that is due; `true` if anything was.
    fn run(&mut self, cx: &mut Context<'_>) -> bool {
        let mut worked = false;
        while let Poll::Ready(Some(command)) = self.commands.poll_next_unpin(cx) {
            self.on_command(command);
            worked = true;
        }
        while let Poll::Ready(Some(id)) = self.kicks.poll_next_unpin(cx) {
            self.dirty.push(id);
        }
        let now = Instant::now();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.deadline_of.remove(&id);
            self.dirty.push(id);
        }
        if std::mem::take(&mut self.waiting) {
            // Room may have come free in the mix node's queue.
            self.dirty.extend(
                self.streams.iter().filter(|(_, e)| e.role == Role::Opener).map(|(id, _)| *id),
            );
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.append(&mut self.again);
        dirty.sort_unstable();
        dirty.dedup();
        for id in dirty {
            self.drive(id, now);
            worked = true;
        }
        worked
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) {
        let mut next = self.deadlines.first().map(|(t, _)| *t);
        if self.waiting {
            let soon = Instant::now() + Duration::from_millis(2);
            next = Some(next.map_or(soon, |t| t.min(soon)));
        }
        let Some(at) = next else {
            self.timer_at = None;
            return;
        };
        // Re-arming registers with the timer thread: only when the deadline moves earlier. A
        // timer that fires early is re-armed for what is due then.
        if self.timer_at.is_none_or(|armed| at < armed) {
            self.timer_at = Some(at);
            self.timer.reset(at.saturating_duration_since(Instant::now()));
        }
        if self.timer.poll_unpin(cx).is_ready() {
            self.timer_at = None;
            cx.waker().wake_by_ref();
        }
    }
}

fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Stream => "stream",
        Mode::Message => "message",
    }
}

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Opener => "opener",
        Role::Acceptor => "acceptor",
    }
}

fn drop_label(e: &FrameDrop) -> &'static str {
    match e {
        FrameDrop::Frame(crate::FrameError::Authentication) => "authentication",
        FrameDrop::Frame(_) => "malformed",
        FrameDrop::Replay => "replay",
        FrameDrop::UnknownLabel => "unknown_label",
        FrameDrop::TooOld => "too_old",
        FrameDrop::Protocol(_) => "protocol",
        FrameDrop::Shard(_) => "shard",
    }
}

/// SURBs for one opener's frames, from the mix node, remembered by bundle.
struct Bundles<'a> {
    mix: &'a mut libp2p_mix::Behaviour,
    bundles: &'a mut HashMap<RequestId, [u8; 32]>,
    id: [u8; 32],
    avoid: PeerId,
    options: SendOptions,
}

impl SurbSource for Bundles<'_> {
    fn make_surbs(&mut self, count: usize) -> Option<(Vec<SurbBytes>, Duration)> {
        let bundle = self.mix.surb_bundle(count, &[self.avoid], self.options).ok()?;
        self.bundles.insert(bundle.id, self.id);
        let lifetime = bundle.expires.saturating_duration_since(Instant::now());
        let surbs = bundle.surbs.iter().map(|s| Zeroizing::new(s.to_bytes().to_vec())).collect();
        Some((surbs, lifetime))
    }
}

type Handler = ConnectionHandlerSelect<THandler<libp2p_mix::Mixnet>, FrameHandler>;

impl Behaviour {
    fn frame_handler(&self) -> FrameHandler {
        FrameHandler::new(
            !self.keys.is_empty(),
            self.config.max_inbound_reads,
            self.config.frame_timeout,
        )
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.net.handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let mix = self.net.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        Ok(mix.select(self.frame_handler()))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.net.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let mix = self.net.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        Ok(mix.select(self.frame_handler()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.net.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(mix) => self.net.on_connection_handler_event(peer, connection, mix),
            Either::Right(FromHandler::Frame(frame)) => self.on_forward_frame(peer, frame),
            Either::Right(FromHandler::Dropped(reason)) => self.metrics.dropped(reason),
        }
        self.wake();
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        // Bounded, so that a stream that always has work cannot starve the rest of the swarm.
        for _ in 0..64 {
            // What the mix node has to send goes first; streams build more frames only when
            // it has nothing left to hand the swarm.
            match self.net.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    if let Some(event) = self.on_mix_event(event) {
                        return Poll::Ready(ToSwarm::GenerateEvent(event));
                    }
                    continue;
                }
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(Event::Mix).map_in(Either::Left));
                }
                Poll::Pending => {}
            }
            let worked = self.run(cx);
            if !worked && self.dirty.is_empty() {
                self.poll_timer(cx);
                self.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Behaviour {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}
