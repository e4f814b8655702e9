//! The rust-libp2p driver: a [`NetworkBehaviour`] that runs a [`MixCore`] on a swarm.
//!
//! It moves packets between the core and the connection handlers, dials next hops and
//! destinations (passing their address with the dial), drives the core's timer, and turns the
//! core's outputs into [`Event`]s. All protocol decisions stay in the core.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use futures_timer::Delay;
use libp2p_core::transport::PortUse;
use libp2p_core::{Endpoint, Multiaddr};
use libp2p_identity::PeerId;
use libp2p_swarm::behaviour::{ConnectionClosed, ConnectionEstablished, DialFailure, FromSwarm};
use libp2p_swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p_swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, DialError, NetworkBehaviour, NotifyHandler,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use mix_sphinx::{MessageError, NodeSecretKey, PACKET_SIZE, Packet, Surb};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::core::DropReason;
use crate::core::{
    self, DelayStrategy, Delivery, DeliveryId, Destination, MessageId, MixCore, MixNode, NodePool,
    Output, RequestId, SendError, SendOptions,
};
use crate::handle::{Handle, PoolView, Routed, RoutedReceiver};
use crate::handler::{ExitError, ExitId, Handler, HandlerConfig, InEvent, OutEvent, TokenBucket};
use crate::metrics::Metrics;
use crate::protocol::{ExitProtocol, ReadRule};
use crate::stopping::{Step, StopReport, Stopping};
use crate::workers::{Done, HopWorkers, default_hop_workers};

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
    /// How often a few pool nodes this node is not connected to are dialed to check they are
    /// alive (a node that cannot be reached is suspended from paths). `None` disables it.
    pub probe_interval: Option<Duration>,
    /// Nodes probed per interval.
    pub probes_per_interval: usize,
    /// Nodes found through discovery dialed at once at their records' addresses, to check
    /// they are there before paths use them (see [`core::NodePool::to_reach`]).
    pub reach_dials: usize,
    /// How long such a dial may take before the node counts as not there.
    pub reach_timeout: Duration,
    /// Which addresses that are not public ([`core::is_public`]: loopback, private,
    /// link-local...) the node dials when a packet names them for a next hop or, as the exit,
    /// a destination that is not a pool member; others are dropped (`local_address`). All, by
    /// default, for local use. A node on a public network takes
    /// [`core::LocalAddresses::None`], or any sender has it dial into its own machine and
    /// networks. Pool members are dialed at their records' addresses, which the pool checks
    /// ([`core::SubnetLimits::local_addresses`]).
    pub local_addresses: core::LocalAddresses,
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
    /// As the exit: deliveries to destinations queued or in flight at once. When all are
    /// taken, a new delivery takes the slot of the oldest delivery of the destination holding
    /// the most, if that destination holds more than the new one's (counted as
    /// `exit_evicted`); otherwise it is refused (`exit_queue_full`). So destinations that stop
    /// reading or answering cannot keep the others out.
    pub max_exit_jobs: usize,
    /// As the exit: deliveries to one destination queued or in flight at once. More are
    /// refused (`exit_destination_full`), so one slow destination cannot take every slot.
    pub max_exit_jobs_per_destination: usize,
    /// As the exit: new connections to destinations per second, with bursts of
    /// [`Self::exit_dial_burst`]. A delivery that would need a dial past it is refused
    /// (`exit_dial_rate`): a sender cannot turn an exit into a dialer of arbitrary addresses.
    /// Destinations the exit reached in the last ten minutes do not count against it.
    pub exit_dial_rate: f64,
    /// Dials to destinations an exit may make at once above [`Self::exit_dial_rate`].
    pub exit_dial_burst: u32,
    /// Frames per second read from a peer outside the pool that sends mostly frames that fail
    /// (Sphinx failures, replays, wrong lengths, bad per-hop proofs): once at least 16 of its
    /// last 32 frames were such and they outnumber the good ones, its budget drops to this for
    /// [`Self::penalty`], across reconnections, so a flood of junk from many identities costs
    /// each of them its budget within a few dozen frames. Pool members are never judged: a
    /// sender can route junk for this node through an honest mix node, which cannot tell, or
    /// make an honest hop forward a replay (by sending the inner packet here first).
    /// `None`: no penalty.
    pub penalty_frame_rate: Option<f64>,
    /// How long a penalty lasts.
    pub penalty: Duration,
    /// Where the node keeps state across restarts (the replay filter of its mix key). `None`:
    /// nothing survives a restart, so a node that keeps its mix key (no rotation) would accept
    /// every packet captured before the restart again. Set with
    /// [`Behaviour::with_state_dir`], which loads what is there.
    pub state_dir: Option<std::path::PathBuf>,
    /// How often the replay state is written to [`Self::state_dir`] (it is also written when
    /// the behaviour is dropped).
    pub state_save_interval: Duration,
    /// Threads that open received packets (the Diffie-Hellman, MAC check and decryption) and
    /// build own messages (the Diffie-Hellmans of their paths and SURBs), so that a node
    /// forwards and sends on every core; everything else stays on the swarm's task. `0` does
    /// it all on the swarm's task. Default: one per core, none on a single core
    /// ([`default_hop_workers`]); at most [`crate::MAX_HOP_WORKERS`] are started.
    pub hop_workers: usize,
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
            probe_interval: Some(Duration::from_secs(30)),
            probes_per_interval: 4,
            reach_dials: 8,
            reach_timeout: Duration::from_secs(10),
            local_addresses: core::LocalAddresses::All,
            serve: true,
            inbound_frame_rate: Some(4000.0),
            inbound_burst: 1000,
            max_connections_per_peer: 4,
            max_pending_peers: 1024,
            penalty_frame_rate: Some(20.0),
            penalty: Duration::from_secs(60),
            max_exit_jobs: 4096,
            max_exit_jobs_per_destination: 512,
            exit_dial_rate: 20.0,
            exit_dial_burst: 40,
            state_dir: None,
            state_save_interval: Duration::from_secs(10),
            hop_workers: default_hop_workers(),
        }
    }
}

impl Config {
    /// This configuration speaking `wire` (see [`core::Config::wire`]): the one setting every
    /// node of a network must share.
    pub fn with_wire(mut self, wire: core::Wire) -> Self {
        self.core = self.core.with_wire(wire);
        self
    }
}

/// Identifies a message delivered to this node (as exit and destination) that may be answered
/// with [`Behaviour::reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyId(DeliveryId);

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply arrived within the request timeout (a hop, the exit or the destination failed,
    /// or a packet was dropped on the way), or the request's packets never left (they could
    /// not be built, or a stop gave them up).
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
        /// Set if the sender attached SURBs: answer with [`Behaviour::reply`] within
        /// [`core::Config::answer_timeout`], or say no answer comes with
        /// [`Behaviour::forget`] (the SURBs are held until then, within
        /// [`core::Config::max_awaited_local_answers`], the oldest pushed out first).
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
    /// What discovery did (only from a [`crate::Mixnet`] with discovery on); found nodes are
    /// already in the pool.
    Discovery(Box<crate::discovery::Event>),
    /// A graceful stop ([`Behaviour::stop_within`]) is over: connections were closed (or
    /// given a second to close) and the replay state is saved. Drop the swarm.
    Stopped(StopReport),
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
    /// `addr` is the address of the peer's own record in the pool, so failing to reach it
    /// says something about the peer. An address read from a packet says nothing: any sender
    /// can write a dead one.
    at_record: bool,
    /// Our dial: only its failure says anything (other behaviours dial the same peer at
    /// addresses of their own, which may come from anyone).
    dial_id: ConnectionId,
    /// Our dial was not made because another dial to the peer was under way: the next
    /// failure of that one makes us dial ourselves.
    deferred: bool,
}

/// Frames from one peer that processed (`good`) or failed as forgeries (`bad`), since the
/// last verdict; and its penalty, if any.
#[derive(Debug, Default, Clone, Copy)]
struct Conduct {
    good: u32,
    bad: u32,
    penalized_until: Option<Instant>,
}

/// Peers whose conduct is remembered; past this, the record of a peer with no penalty is
/// forgotten first.
const MAX_CONDUCT: usize = 4096;
/// How long a destination the exit reached skips the dial rate, and how many are remembered.
const REACHED_FOR: Duration = Duration::from_secs(600);
const MAX_REACHED: usize = 4096;

/// Frames per verdict: a peer is penalized when at least half of them were forged and they
/// outnumber the good ones. Small, so that a fresh identity costs its owner a new connection
/// every few dozen junk frames.
const JUDGED_FRAMES: u32 = 32;

/// The Mix Protocol on a swarm.
pub struct Behaviour {
    core: MixCore<StdRng>,
    config: Config,
    metrics: Metrics,
    timer: Delay,
    timer_deadline: Option<Instant>,
    connected: HashMap<PeerId, Vec<ConnectionId>>,
    pending: HashMap<PeerId, Pending>,
    /// Exit deliveries in progress: the destination, the codec and the core's name for it.
    exit_jobs_by_id: HashMap<ExitId, (PeerId, String, DeliveryId)>,
    next_exit: u64,
    exit_protocols: HashMap<String, ExitProtocol>,
    events: VecDeque<ToSwarm<Event, InEvent>>,
    waker: Option<Waker>,
    /// Peers being dialed only to see whether they are alive.
    probing: HashMap<PeerId, ConnectionId>,
    probe_timer: Option<Delay>,
    probe_rng: StdRng,
    /// Dials nodes found through discovery at their records' addresses.
    reacher: crate::reach::Reacher,
    /// Nodes the pool dropped when they were reached (their subnets filled up meanwhile),
    /// for discovery to forget.
    dropped_nodes: Vec<PeerId>,
    /// The pool's refusals as last exported to [`Self::metrics`].
    exported_refusals: [u64; core::REFUSALS.len()],
    /// Length of the per-hop proof after each packet.
    proof_len: usize,
    listen_addrs: usize,
    /// Each connected peer's inbound frame budget, shared by its connections.
    buckets: HashMap<PeerId, Arc<Mutex<TokenBucket>>>,
    /// How each recent peer's frames fared, and penalties.
    conduct: HashMap<PeerId, Conduct>,
    conduct_swept: Option<Instant>,
    /// Exit deliveries queued or in flight, per destination (ids grow: oldest first).
    exit_jobs: HashMap<PeerId, BTreeSet<ExitId>>,
    /// Destinations this exit reached lately: dials to them skip the dial rate, so that a flood
    /// of deliveries to fresh destinations does not keep it from the ones that answer.
    reached: HashMap<PeerId, Instant>,
    /// The connection each exit delivery was handed to: if it closes first, the delivery
    /// failed (a handler that goes away reports nothing).
    exit_connection: HashMap<ExitId, ConnectionId>,
    /// Dials to destinations.
    exit_dials: TokenBucket,
    state: Option<crate::state::StateFile>,
    state_timer: Option<Delay>,
    /// A periodic save is running.
    saving: Arc<std::sync::atomic::AtomicBool>,
    /// The state directory held the state of an earlier run.
    resumed: bool,
    /// Threads opening received packets, when configured.
    workers: Option<HopWorkers>,
    /// Frames handed to each connection and not yet settled (written or dropped): what a
    /// stopping node waits for. A connection that closes takes its count with it.
    unsent: HashMap<ConnectionId, usize>,
    /// Messages queued by [`Handle`]s: the sender half is kept for new handles.
    handle_tx: Option<mpsc::Sender<crate::handle::Command>>,
    handle_rx: Option<mpsc::Receiver<crate::handle::Command>>,
    /// The pool as handles see it, refreshed while any handle exists.
    pool_view: Arc<PoolView>,
    pool_view_timer: Option<Delay>,
    /// Origin protocols whose messages go to a channel instead of [`Event::Received`].
    routes: HashMap<String, mpsc::Sender<Routed>>,
    /// The core's stats as last exported to [`Self::metrics`].
    exported: core::CoreStats,
    /// A graceful stop under way ([`Self::stop_within`]).
    stopping: Option<Stopping>,
}

/// How often handles' view of the pool is refreshed (besides at once on pool changes made
/// through the behaviour).
const POOL_VIEW_INTERVAL: Duration = Duration::from_secs(1);

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
        if config.core.answer_timeout < config.exit_timeout {
            tracing::warn!(
                answer_timeout = ?config.core.answer_timeout,
                exit_timeout = ?config.exit_timeout,
                "answer_timeout is below exit_timeout: destinations that answer late will find \
                 their SURBs gone"
            );
        }
        let rng = StdRng::from_rng(&mut rand::rng());
        let mut core = MixCore::new(config.core.clone(), local, secret, pool, delay, rng);
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
        let workers = match config.hop_workers {
            0 => None,
            n => HopWorkers::start(n)
                .inspect_err(|e| {
                    tracing::warn!(
                        error = %e,
                        "could not start hop workers; opening packets and building messages on the swarm's task"
                    );
                })
                .ok(),
        };
        // Own messages are built where received packets are opened.
        core.set_build_jobs(workers.is_some());
        let reacher = crate::reach::Reacher::new(config.reach_dials, config.reach_timeout);
        Self {
            workers,
            unsent: HashMap::new(),
            handle_tx: None,
            handle_rx: None,
            pool_view: Arc::default(),
            pool_view_timer: None,
            routes: HashMap::new(),
            exported: core::CoreStats::default(),
            proof_len: 0,
            listen_addrs: 0,
            buckets: HashMap::new(),
            exit_jobs: HashMap::new(),
            exit_connection: HashMap::new(),
            reached: HashMap::new(),
            conduct: HashMap::new(),
            conduct_swept: None,
            exit_dials: TokenBucket::new(config.exit_dial_rate, config.exit_dial_burst),
            state: None,
            state_timer: None,
            saving: Arc::default(),
            resumed: false,
            core,
            config,
            metrics,
            timer: Delay::new(Duration::ZERO),
            timer_deadline: None,
            connected: HashMap::new(),
            pending: HashMap::new(),
            exit_jobs_by_id: HashMap::new(),
            next_exit: 0,
            exit_protocols: HashMap::new(),
            events: VecDeque::new(),
            waker: None,
            probing: HashMap::new(),
            probe_timer,
            probe_rng: StdRng::from_rng(&mut rand::rng()),
            reacher,
            dropped_nodes: Vec::new(),
            exported_refusals: [0; core::REFUSALS.len()],
            stopping: None,
        }
    }

    /// Keeps the node's replay state in `dir` (created if missing): loads what a previous run
    /// left there, and saves it every [`Config::state_save_interval`] and when the behaviour
    /// is dropped. Without it, a node that keeps its mix key across restarts accepts replays
    /// of every packet it processed before the restart.
    ///
    /// A file that is present but damaged is an error: the node cannot know which packets it
    /// has seen, and refuses to start rather than accept them again. Delete the file to
    /// accept that risk (or rotate the mix key). See [`crate::state`].
    pub fn with_state_dir(
        mut self,
        dir: impl Into<std::path::PathBuf>,
    ) -> Result<Self, crate::state::StateError> {
        let dir = dir.into();
        let file = crate::state::StateFile::open(&dir)?;
        let age = file.age();
        if let Some(saved) = file.load()? {
            self.resumed = true;
            let restored = self.core.restore_replay_state(&saved);
            tracing::info!(
                path = %file.path().display(),
                restored,
                clean = saved.clean,
                "replay state loaded"
            );
            if !saved.clean {
                // The file's age, not the save interval: saves that failed or fell behind
                // before the stop left an older file.
                tracing::warn!(
                    path = %file.path().display(),
                    saved_ago = ?age,
                    interval = ?self.config.state_save_interval,
                    "the previous run did not stop cleanly: packets it processed after this \
                     file was saved (its age) are not in the loaded replay state"
                );
            }
        } else {
            tracing::info!(
                path = %file.path().display(),
                "no replay state yet: a first start. If this mix key was used before, the \
                 packets it processed can be replayed to it"
            );
        }
        // Written now, marked unclean until the behaviour is dropped.
        file.save(&self.core.replay_state(false))?;
        self.metrics.state_saved("ok");
        self.state_timer = Some(Delay::new(self.config.state_save_interval));
        self.config.state_dir = Some(dir);
        self.state = Some(file);
        Ok(self)
    }

    /// Whether [`Self::with_state_dir`] found the state of an earlier run: this node is a
    /// restart. Layers above that keep their own replay windows in memory (the stream
    /// layer's openings) use it to refuse what the earlier run may have accepted.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Saves the replay state: at a clean stop here and now, otherwise on a thread of its
    /// own (encoding, hashing and syncing megabytes would stall the swarm), one at a time.
    fn save_state(&mut self, clean: bool) {
        let Some(file) = &self.state else { return };
        if !clean && self.saving.load(std::sync::atomic::Ordering::Acquire) {
            self.metrics.state_saved("skipped");
            return;
        }
        let generation = file.generation();
        let state = self.core.replay_state(clean);
        let metrics = self.metrics.clone();
        let save = move |file: &crate::state::StateFile, state| match file
            .save_generation(&state, generation)
        {
            Ok(()) => metrics.state_saved("ok"),
            Err(error) => {
                metrics.state_saved("failed");
                tracing::error!(path = %file.path().display(), %error, "could not save the replay state");
            }
        };
        if clean {
            save(file, state);
            return;
        }
        if self.saving.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let (file, saving) = (file.clone(), self.saving.clone());
        std::thread::spawn(move || {
            save(&file, state);
            saving.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Starts a graceful stop: frames read from now on are dropped (counted as
    /// [`DropReason::Stopping`]), no own message is accepted, and packets held for their
    /// mixing delay (or a cover slot) still leave when due; cover traffic goes on. Poll the
    /// swarm until [`Self::held_packets`] is 0 or the time allowed is over, then call
    /// [`Self::abandon_held`]. [`Self::stop_within`] does all of it.
    pub fn stop(&mut self) {
        self.core.stop();
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Stops gracefully within `drain`: as [`Self::stop`], then, once nothing is held or
    /// `drain` is over (what is still held is then dropped and counted), gives peers half a
    /// second to read what was written to them, closes every connection (allowing a second
    /// for that), saves the replay state (with [`Self::with_state_dir`]) and reports
    /// [`Event::Stopped`]. Keep polling the swarm until then. A second call while a stop is
    /// under way changes nothing.
    pub fn stop_within(&mut self, drain: Duration) {
        if self.stopping.is_some() {
            return;
        }
        let held = self.held_packets();
        self.sync_metrics();
        let forwarded = self.metrics.packets_forwarded();
        let refused = self.metrics.packets_dropped(DropReason::Stopping);
        self.stopping = Some(Stopping::new(Instant::now(), drain, held, forwarded, refused));
        tracing::info!(held, ?drain, "stopping: sending on the packets held for mixing");
        self.stop();
    }

    /// Whether a stop ([`Self::stop`] or [`Self::stop_within`]) has begun.
    pub fn is_stopping(&self) -> bool {
        self.core.is_stopping()
    }

    /// Carries a graceful stop one step further, if one is under way.
    fn poll_stopping(&mut self, cx: &mut Context<'_>) {
        if self.stopping.is_none() {
            return;
        }
        let (held, connected) = (self.held_packets(), !self.connected.is_empty());
        let now = Instant::now();
        let Some(stopping) = self.stopping.as_mut() else { return };
        match stopping.poll(cx, now, held, connected) {
            Step::Wait => {}
            Step::Abandon => {
                // Packets being opened now are dropped when their job comes back (the core gives
                // up the ones being built at once).
                let opening = self.workers.as_ref().map_or(0, HopWorkers::opening);
                let dropped = self.abandon_held() + opening;
                if let Some(stopping) = self.stopping.as_mut() {
                    stopping.abandoned(dropped);
                }
            }
            Step::Close => {
                for peer in self.connected.keys() {
                    self.events.push_back(ToSwarm::CloseConnection {
                        peer_id: *peer,
                        connection: CloseConnection::All,
                    });
                }
            }
            Step::Report => {
                self.sync_metrics();
                let forwarded = self.metrics.packets_forwarded();
                let stopping_drops = self.metrics.packets_dropped(DropReason::Stopping);
                let Some(report) =
                    self.stopping.as_ref().map(|s| s.report(now, forwarded, stopping_drops))
                else {
                    return;
                };
                // Saved before the report, so that a caller who exits on it finds it written.
                self.save_state(true);
                tracing::debug!(?report, "stopped");
                self.events.push_back(ToSwarm::GenerateEvent(Event::Stopped(report)));
            }
        }
    }

    /// Packets this node still holds: being opened or built, waiting for their mixing delay,
    /// waiting for a connection, or queued on a connection.
    pub fn held_packets(&self) -> usize {
        let pending: usize = self.pending.values().map(|p| p.packets.len()).sum();
        let queued: usize = self.unsent.values().sum();
        let opening = self.workers.as_ref().map_or(0, HopWorkers::opening);
        let building = self.core.packets_being_built();
        self.core.delayed_packets() + self.core.queued_own() + pending + queued + opening + building
    }

    /// Drops every packet still held for mixing or waiting for a connection, counted as
    /// [`DropReason::Stopping`]; returns how many. Packets already queued on a connection are
    /// left to it.
    pub fn abandon_held(&mut self) -> usize {
        let mut dropped = self.core.abandon_held();
        for pending in self.pending.values_mut() {
            for _ in pending.packets.drain(..) {
                self.metrics.dropped(DropReason::Stopping);
                dropped += 1;
            }
        }
        dropped
    }

    /// Exit deliveries queued or in flight now.
    pub fn exit_jobs(&self) -> usize {
        self.exit_jobs_by_id.len()
    }

    /// Protects packets with `spam`; every node of the network must do the same. Set it
    /// before the swarm makes connections (per-hop proofs change the frame length).
    pub fn with_spam_protection(mut self, spam: crate::spam::SpamConfig) -> Self {
        self.set_spam_protection(spam);
        self
    }

    /// Replaces the spam protection (see [`Self::with_spam_protection`]).
    pub fn set_spam_protection(&mut self, spam: crate::spam::SpamConfig) {
        self.core.set_spam_protection(spam);
        self.proof_len = self.core.frame_proof_len();
    }

    /// Picks each hop's mixing delay for own packets by `delay`.
    pub fn with_delay(mut self, delay: Box<dyn DelayStrategy>) -> Self {
        self.set_delay(delay);
        self
    }

    /// Draws paths from `pool` (discovery, if the application runs it, offers nodes to it).
    pub fn with_pool(mut self, pool: Box<dyn NodePool>) -> Self {
        self.set_pool(pool);
        self
    }

    /// Chooses paths by `selector` instead of [`core::Config::path_selection`].
    pub fn with_path_selector(mut self, selector: Box<dyn core::PathSelector>) -> Self {
        self.set_path_selector(selector);
        self
    }

    /// Replaces the path selector.
    pub fn set_path_selector(&mut self, selector: Box<dyn core::PathSelector>) {
        self.core.set_path_selector(selector);
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
    ///
    /// A node new to the pool, or back from a suspension or at a new address, is usable only
    /// once this node has dialed it there: the behaviour does that by itself.
    pub fn offer_node(&mut self, node: MixNode, seq: u64, expires: Instant) -> bool {
        let peer = *node.peer_id();
        let changed = self.core.pool_mut().offer(node, seq, expires, Instant::now());
        if changed {
            self.publish_pool();
        }
        if self.core.pool().to_reach(&peer).is_some() {
            self.reacher.enqueue(peer, self.core.pool());
            self.reach_some();
        }
        changed
    }

    /// Nodes the pool dropped since the last call because their subnets filled up while they
    /// waited to be reached: discovery should stop fetching them.
    pub(crate) fn take_dropped_nodes(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.dropped_nodes)
    }

    /// Dials the next nodes waiting to be reached, as many as there is room for.
    fn reach_some(&mut self) {
        if self.core.is_stopping() {
            return;
        }
        for step in self.reacher.next(self.core.pool(), Instant::now()) {
            match step {
                crate::reach::Step::Reached(peer, addr) => self.on_reached(peer, &addr),
                crate::reach::Step::Dial(opts) => {
                    self.events.push_back(ToSwarm::Dial { opts });
                    if let Some(waker) = self.waker.take() {
                        waker.wake();
                    }
                }
            }
        }
    }

    /// A connection this node dialed reached `peer` at `addr`.
    fn on_reached(&mut self, peer: PeerId, addr: &Multiaddr) {
        if self.core.pool().to_reach(&peer).is_none() {
            return;
        }
        if self.core.pool_mut().report_reached(&peer, addr) {
            self.metrics.reach_check("reached");
            self.publish_pool();
        } else if !self.core.pool().holds(&peer) {
            self.metrics.reach_check("refused");
            self.dropped_nodes.push(peer);
        } else if self.core.pool().to_reach(&peer).is_some() {
            // Reached elsewhere than its record says (it may have moved meanwhile).
            self.reacher.enqueue(peer, self.core.pool());
        }
    }

    /// `peer` was not reached at `addr`.
    fn on_not_reached(&mut self, peer: PeerId, addr: &Multiaddr) {
        let Some(node) = self.core.pool().to_reach(&peer) else { return };
        if !core::same_address(node.addr(), addr) {
            // A newer record moved it while we dialed the old address: try the new one.
            self.reacher.enqueue(peer, self.core.pool());
            return;
        }
        tracing::debug!(%peer, %addr, "not reached at its record's address; suspending it");
        self.metrics.reach_check("failed");
        self.core.peer_unreachable(&peer, Instant::now());
    }

    /// Whether the pool keeps an entry for `peer` (usable or suspended); see
    /// [`crate::core::NodePool::holds`].
    pub fn holds_node(&self, peer: &PeerId) -> bool {
        self.core.pool().holds(peer)
    }

    /// A round-trip time measured to `peer` (e.g. by libp2p ping), for RTT-aware paths.
    pub fn report_rtt(&mut self, peer: &PeerId, rtt: Duration) {
        self.core.pool_mut().report_rtt(peer, rtt);
    }

    /// Replaces the strategy that picks each hop's mixing delay.
    pub fn set_delay(&mut self, delay: Box<dyn DelayStrategy>) {
        self.core.set_delay(delay);
    }

    /// Replaces the pool paths are drawn from.
    pub fn set_pool(&mut self, pool: Box<dyn NodePool>) {
        self.core.set_pool(pool);
        self.publish_pool();
    }

    /// A handle that sends through this behaviour from elsewhere: another behaviour of the
    /// swarm, or a task. See [`crate::handle`].
    pub fn handle(&mut self) -> Handle {
        let commands = match &self.handle_tx {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::channel(crate::handle::HANDLE_QUEUE);
                self.handle_tx = Some(tx.clone());
                self.handle_rx = Some(rx);
                self.pool_view_timer = Some(Delay::new(POOL_VIEW_INTERVAL));
                tx
            }
        };
        self.publish_pool();
        // The pool view's timer starts on the next poll.
        self.wake();
        Handle::new(commands, self.pool_view.clone())
    }

    /// Messages of origin protocol `codec` that reach this node (as exit and destination) go
    /// to the returned channel, which holds up to `capacity` of them, instead of
    /// [`Event::Received`]. Past that they are dropped (counted as
    /// [`DropReason::RouteFull`]); once the receiver is dropped they are events again.
    pub fn route_protocol(&mut self, codec: impl Into<String>, capacity: usize) -> RoutedReceiver {
        let (tx, rx) = mpsc::channel(capacity.max(1) - 1);
        self.routes.insert(codec.into(), tx);
        rx
    }

    /// Shows handles the pool as it is now.
    fn publish_pool(&self) {
        if self.handle_tx.is_some() {
            let nodes = self.core.pool().nodes();
            self.pool_view.update(nodes.iter().map(|n| (*n.peer_id(), n.addr().clone())).collect());
        }
    }

    /// Brings [`Self::metrics`] up to date with what the core counted (the behaviour does it
    /// on every poll; call it before reading the metrics between polls).
    pub fn sync_metrics(&mut self) {
        self.export_stats();
    }

    /// Adds what the core counted since the last export to the metrics.
    fn export_stats(&mut self) {
        for (i, reason) in core::REFUSALS.into_iter().enumerate() {
            let refused = self.core.pool().refused(reason);
            if refused > self.exported_refusals[i] {
                self.metrics.pool_refused_by(reason, refused - self.exported_refusals[i]);
                self.exported_refusals[i] = refused;
            }
        }
        let observations = self.core.take_observations();
        let stats = self.core.stats();
        let moved = stats.changes != self.exported.changes;
        if moved || !observations.hop_delays.is_empty() || !observations.loop_rtts.is_empty() {
            self.metrics.export(&self.exported, stats, observations);
            if moved {
                self.exported = stats.clone();
            }
        }
    }

    /// Takes what handles queued, a bounded number per poll.
    fn poll_handles(&mut self, cx: &mut Context<'_>) {
        if let Some(timer) = self.pool_view_timer.as_mut()
            && timer.poll_unpin(cx).is_ready()
        {
            timer.reset(POOL_VIEW_INTERVAL);
            // A timer that fired forgets its waker; polled again, it wakes the swarm next time.
            let _ = timer.poll_unpin(cx);
            self.publish_pool();
        }
        for _ in 0..crate::handle::HANDLE_QUEUE {
            let Some(rx) = self.handle_rx.as_mut() else { return };
            let Poll::Ready(Some(command)) = rx.poll_next_unpin(cx) else { return };
            match command {
                crate::handle::Command::Send { destination, codec, body, options, done } => {
                    let _ = done.send(self.send_with(&destination, &codec, &body, options));
                }
                crate::handle::Command::Reply { id, body } => {
                    if let Err(error) = self.reply(id, &body) {
                        tracing::debug!(%error, "reply from a handle not sent");
                    }
                }
                crate::handle::Command::Forget { id } => self.forget(id),
            }
        }
        // More may be queued: come back after the rest of the swarm had its turn.
        cx.waker().wake_by_ref();
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

    /// Sends `body` anonymously to `destination` with origin protocol `codec`. With hop workers
    /// `Ok` means accepted: the packets are built on a worker (see [`MixCore::send`]).
    pub fn send(
        &mut self,
        destination: &Destination,
        codec: &str,
        body: &[u8],
    ) -> Result<MessageId, SendError> {
        let id = self.core.send(Instant::now(), destination, codec, body)?;
        self.dispatch_builds();
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
        self.dispatch_builds();
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
        self.dispatch_builds();
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
        self.dispatch_builds();
        self.wake();
        Ok(id)
    }

    /// Sends a Sphinx packet built elsewhere (by a tool, a benchmark, or an application with
    /// its own path selection) to its first hop, as is: no pre-send delay, no checks, and no
    /// per-hop proof (see [`Self::send_prebuilt`]).
    pub fn send_packet(&mut self, peer: PeerId, addr: Multiaddr, packet: Packet) {
        self.transmit_frame(peer, addr, packet.into_vec());
        self.wake();
    }

    /// [`Self::send_packet`], with a per-hop proof of work made for it if the network uses
    /// them.
    pub fn send_prebuilt(&mut self, peer: PeerId, addr: Multiaddr, packet: Packet) {
        self.core.send_prebuilt(Instant::now(), peer, addr, packet);
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
    /// (one per SURB), or `Ok(0)` if the id is unknown, was answered, or its SURBs expired
    /// ([`core::Config::answer_timeout`]) or were pushed out by newer ones
    /// ([`core::Config::max_awaited_local_answers`]).
    pub fn reply(&mut self, id: ReplyId, body: &[u8]) -> Result<usize, MessageError> {
        let sent = self.core.answer(Instant::now(), id.0, body)?;
        self.wake();
        Ok(sent)
    }

    /// Says that a message received with [`Event::Received`] gets no answer: its SURBs are
    /// discarded now rather than held until [`core::Config::answer_timeout`].
    pub fn forget(&mut self, id: ReplyId) {
        self.core.forget(id.0);
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// A handler for a new connection to `peer`, unless the peer has too many.
    fn handler(&mut self, peer: PeerId) -> Result<Handler, ConnectionDenied> {
        if self.stopping.as_ref().is_some_and(Stopping::closing) {
            return Err(ConnectionDenied::new(Closing));
        }
        let existing = self.connected.get(&peer).map_or(0, Vec::len);
        if existing >= self.config.max_connections_per_peer {
            self.metrics.dropped(DropReason::TooManyPeers);
            return Err(ConnectionDenied::new(TooManyConnections(existing)));
        }
        let penalty = self.penalized(&peer).then_some(self.config.penalty_frame_rate).flatten();
        let bucket = self.config.inbound_frame_rate.map(|rate| {
            let burst = self.config.inbound_burst;
            self.buckets
                .entry(peer)
                .or_insert_with(|| {
                    let mut bucket = TokenBucket::new(rate, burst);
                    if let Some(rate) = penalty {
                        bucket.throttle(rate, rate.ceil() as u32);
                    }
                    Arc::new(Mutex::new(bucket))
                })
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

    fn penalized(&self, peer: &PeerId) -> bool {
        self.conduct
            .get(peer)
            .and_then(|c| c.penalized_until)
            .is_some_and(|until| until > Instant::now())
    }

    /// Counts a frame from `peer`; `forged` if it failed in a way no honest sender causes.
    fn judge(&mut self, peer: PeerId, forged: bool) {
        let Some(rate) = self.config.penalty_frame_rate else { return };
        let now = Instant::now();
        if self.conduct.len() >= MAX_CONDUCT && !self.conduct.contains_key(&peer) {
            // Full: forget finished records, at most once a second; until then, new peers
            // are not judged (they still have the per-peer read limit).
            if self.conduct_swept.is_some_and(|t| now < t + Duration::from_secs(1)) {
                return;
            }
            self.conduct_swept = Some(now);
            self.conduct.retain(|_, c| c.penalized_until.is_some_and(|t| t > now));
            if self.conduct.len() >= MAX_CONDUCT {
                return;
            }
        }
        let conduct = self.conduct.entry(peer).or_default();
        if conduct.penalized_until.is_some_and(|t| t <= now) {
            // Served its time: full budget again.
            conduct.penalized_until = None;
            if let (Some(bucket), Some(full)) =
                (self.buckets.get(&peer), self.config.inbound_frame_rate)
                && let Ok(mut b) = bucket.lock()
            {
                b.throttle(full, self.config.inbound_burst);
            }
        }
        if forged {
            conduct.bad += 1;
        } else {
            conduct.good += 1;
        }
        if conduct.good + conduct.bad < JUDGED_FRAMES {
            return;
        }
        let guilty = conduct.bad >= JUDGED_FRAMES / 2 && conduct.bad > conduct.good;
        conduct.good = 0;
        conduct.bad = 0;
        if !guilty || conduct.penalized_until.is_some() {
            return;
        }
        // A penalty too long for `Instant` (a setting of years) lasts a year, not a panic.
        let year = Duration::from_secs(365 * 86_400);
        conduct.penalized_until =
            Some(now.checked_add(self.config.penalty).unwrap_or_else(|| now + year));
        self.metrics.penalized();
        tracing::debug!(%peer, rate, "peer sends mostly forged frames; penalizing it");
        if let Some(bucket) = self.buckets.get(&peer)
            && let Ok(mut b) = bucket.lock()
        {
            b.throttle(rate, rate.ceil() as u32);
        }
    }

    fn on_output(&mut self, output: Output) {
        match output {
            Output::Transmit { peer, addr, packet, proof, .. } => {
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

    /// Where to dial `peer`: at its record's address if it is a pool member, usable or
    /// waiting to be reached (`true`), else at `addr`, the address a packet (or the
    /// application) gave. `None` if that address is one this node does not dial for others.
    fn dial_address(&self, peer: &PeerId, addr: Multiaddr) -> Option<(Multiaddr, bool)> {
        let pool = self.core.pool();
        match pool.get(peer).or_else(|| pool.to_reach(peer)) {
            Some(node) => Some((node.addr().clone(), true)),
            None if !self.config.local_addresses.allows(&addr) => None,
            None => Some((addr, false)),
        }
    }

    fn transmit_frame(&mut self, peer: PeerId, addr: Multiaddr, frame: Vec<u8>) {
        if let Some(connection) = self.connected.get(&peer).and_then(|c| c.first()).copied() {
            self.handed_over(connection, 1);
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
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
        let Some((addr, at_record)) = self.dial_address(&peer, addr) else {
            self.metrics.dropped(DropReason::LocalAddress);
            return;
        };
        let pending = self.pending_for(peer, addr, at_record);
        if pending.packets.len() >= max {
            self.metrics.dropped(DropReason::PeerQueueFull);
            return;
        }
        pending.packets.push_back(frame);
    }

    /// Gives up an exit delivery before it started: the core forgets its replies, the drop
    /// and the refused exit request are counted, and the application hears why.
    fn refuse_delivery(
        &mut self,
        delivery: DeliveryId,
        peer: PeerId,
        codec: String,
        (reason, error): (DropReason, ExitError),
    ) {
        self.core.forget(delivery);
        self.metrics.dropped(reason);
        self.metrics.exit_request("refused");
        let result = Err(error);
        self.events.push_back(ToSwarm::GenerateEvent(Event::Delivered { peer, codec, result }));
    }

    fn deliver(&mut self, delivery: Delivery) {
        let Delivery { id: delivery, destination, codec, body, replies } = delivery;
        let Some((peer, addr)) = destination else {
            let reply = (replies > 0).then_some(ReplyId(delivery));
            let routed = Routed { codec, body, reply };
            let routed = match self.routes.get_mut(routed.codec.as_str()) {
                None => routed,
                Some(route) => match route.try_send(routed) {
                    Ok(()) => return,
                    Err(e) if e.is_full() => {
                        self.metrics.dropped(DropReason::RouteFull);
                        if let Some(id) = e.into_inner().reply {
                            self.core.forget(id.0);
                        }
                        return;
                    }
                    Err(e) => {
                        let routed = e.into_inner();
                        self.routes.remove(routed.codec.as_str());
                        routed
                    }
                },
            };
            let Routed { codec, body, reply } = routed;
            self.events.push_back(ToSwarm::GenerateEvent(Event::Received { codec, body, reply }));
            return;
        };
        /// How the delivery reaches its destination.
        enum Via {
            Connection(ConnectionId),
            Dial(Multiaddr, bool),
        }
        let via = match self.connected.get(&peer).and_then(|c| c.first()).copied() {
            Some(connection) => Via::Connection(connection),
            None => match self.dial_address(&peer, addr) {
                Some((addr, at_record)) => Via::Dial(addr, at_record),
                None => {
                    let refused = (DropReason::LocalAddress, ExitError::Unreachable);
                    return self.refuse_delivery(delivery, peer, codec, refused);
                }
            },
        };
        let connected = matches!(via, Via::Connection(_));
        if let Err(reason) = self.admit_exit_job(&peer, connected) {
            return self.refuse_delivery(delivery, peer, codec, (reason, ExitError::Busy));
        }
        let id = ExitId(self.next_exit);
        self.next_exit += 1;
        self.exit_jobs.entry(peer).or_default().insert(id);
        let protocol = self.exit_protocols.get(&codec).copied().unwrap_or_default();
        let read = if replies == 0 { None } else { protocol.read };
        let retry = protocol.retry_on_reset;
        let pooled = protocol.pooled && read.is_none();
        self.exit_jobs_by_id.insert(id, (peer, codec.clone(), delivery));
        let job = ExitJob { id, codec, body, read, retry, pooled };
        self.metrics.set_exit_jobs(self.exit_jobs_by_id.len());
        match via {
            Via::Connection(connection) => {
                self.exit_connection.insert(job.id, connection);
                self.events.push_back(exit_event(peer, connection, job));
            }
            Via::Dial(addr, at_record) => self.pending_for(peer, addr, at_record).exits.push(job),
        }
    }

    /// Whether the exit takes one more delivery to `peer`: within the per-destination cap,
    /// within the total (making room if it can, see [`Self::exit_victim`]), and, if it needs
    /// a new dial, within the dial rate.
    fn admit_exit_job(&mut self, peer: &PeerId, connected: bool) -> Result<(), DropReason> {
        let held = self.exit_jobs.get(peer).map_or(0, BTreeSet::len);
        if held >= self.config.max_exit_jobs_per_destination {
            return Err(DropReason::ExitDestinationFull);
        }
        let victim = if self.exit_jobs_by_id.len() >= self.config.max_exit_jobs {
            Some(self.exit_victim(held).ok_or(DropReason::ExitQueueFull)?)
        } else {
            None
        };
        if !connected && !self.pending.contains_key(peer) {
            // Exit dials may hold at most half the pending slots: the rest stay for next hops.
            let exit_only = self.pending.values().filter(|p| p.packets.is_empty()).count();
            if self.pending.len() >= self.config.max_pending_peers
                || exit_only >= self.config.max_pending_peers / 2
            {
                return Err(DropReason::TooManyPeers);
            }
            let known = self.reached.get(peer).is_some_and(|t| t.elapsed() < REACHED_FOR);
            if !known && self.exit_dials.take().is_err() {
                return Err(DropReason::ExitDialRate);
            }
        }
        if let Some(victim) = victim {
            self.evict_exit_job(victim);
        }
        Ok(())
    }

    /// The delivery to give up when the exit is full and a destination holding `held`
    /// deliveries needs a slot: the oldest of the destination holding the most, if that is
    /// more than `held` (so the largest share never grows). A destination that stops reading,
    /// or is flooded, holds the most and the oldest deliveries, so its go first, and every
    /// destination keeps at least a fair share of the slots: refusing instead let a few
    /// stalled destinations keep every other one out.
    fn exit_victim(&self, held: usize) -> Option<ExitId> {
        self.exit_jobs
            .values()
            .filter(|jobs| jobs.len() > held)
            .filter_map(|jobs| Some((jobs.len(), *jobs.first()?)))
            .min_by(|(a_len, a_id), (b_len, b_id)| b_len.cmp(a_len).then(a_id.cmp(b_id)))
            .map(|(_, id)| id)
    }

    /// Gives up delivery `id` to make room: its connection forgets it (or its dial does),
    /// and it ends as [`ExitError::Evicted`], counted as `exit_evicted`.
    fn evict_exit_job(&mut self, id: ExitId) {
        let Some(&(peer, _, _)) = self.exit_jobs_by_id.get(&id) else { return };
        if let Some(&connection) = self.exit_connection.get(&id) {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: InEvent::CancelExit(id),
            });
        } else if let Some(pending) = self.pending.get_mut(&peer) {
            pending.exits.retain(|job| job.id != id);
        }
        self.metrics.dropped(DropReason::ExitEvicted);
        self.on_exit_done(id, Err(ExitError::Evicted));
    }

    /// The pending entry for `peer`, dialing it at `addr` if this is the first work for it.
    fn pending_for(&mut self, peer: PeerId, addr: Multiaddr, at_record: bool) -> &mut Pending {
        let events = &mut self.events;
        self.pending.entry(peer).or_insert_with(|| {
            let (event, dial_id) = dial(peer, addr.clone());
            events.push_back(event);
            Pending {
                addr,
                packets: VecDeque::new(),
                exits: Vec::new(),
                dials: 1,
                at_record,
                dial_id,
                deferred: false,
            }
        })
    }

    fn on_exit_done(&mut self, id: ExitId, result: Result<Option<Vec<u8>>, ExitError>) {
        let Some((peer, codec, delivery)) = self.exit_jobs_by_id.remove(&id) else { return };
        self.exit_connection.remove(&id);
        if let Some(jobs) = self.exit_jobs.get_mut(&peer) {
            jobs.remove(&id);
            if jobs.is_empty() {
                self.exit_jobs.remove(&peer);
            }
        }
        self.metrics.set_exit_jobs(self.exit_jobs_by_id.len());
        let result = match result {
            Ok(Some(reply)) => match self.core.answer(Instant::now(), delivery, &reply) {
                Ok(0) => Err(ExitError::AnswerExpired),
                Ok(_) => Ok(true),
                Err(e) => Err(ExitError::Stream(format!("reply does not fit a SURB: {e}"))),
            },
            Ok(None) => {
                self.core.forget(delivery);
                Ok(false)
            }
            Err(e) => {
                self.core.forget(delivery);
                Err(e)
            }
        };
        self.metrics.exit_request(match &result {
            Ok(_) => "ok",
            Err(ExitError::Evicted) => "evicted",
            Err(_) => "error",
        });
        self.events.push_back(ToSwarm::GenerateEvent(Event::Delivered { peer, codec, result }));
    }

    fn on_connection_established(&mut self, peer: PeerId, connection: ConnectionId) {
        self.probing.remove(&peer);
        self.connected.entry(peer).or_default().push(connection);
        let Some(pending) = self.pending.remove(&peer) else { return };
        self.handed_over(connection, pending.packets.len());
        for frame in pending.packets {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: InEvent::Send(frame),
            });
        }
        if !pending.exits.is_empty() {
            if self.reached.len() >= MAX_REACHED {
                self.reached.retain(|_, t| t.elapsed() < REACHED_FOR);
            }
            if self.reached.len() < MAX_REACHED {
                self.reached.insert(peer, Instant::now());
            }
        }
        for job in pending.exits {
            self.exit_connection.insert(job.id, connection);
            self.events.push_back(exit_event(peer, connection, job));
        }
    }

    fn on_dial_failure(&mut self, peer: PeerId, id: ConnectionId, error: &DialError) {
        let not_made = matches!(error, DialError::DialPeerConditionFalse(_));
        // A dial not made, or stopped by this node, says nothing about the peer. It is tried
        // again at the next occasion, not now: now would fail alike.
        let stopped_here =
            not_made || matches!(error, DialError::Aborted | DialError::Denied { .. });
        let reach = self.reacher.on_dial_failure(peer, id, stopped_here, self.core.pool());
        if let Some(crate::reach::Failed::Unreached(addr)) = reach {
            tracing::debug!(%peer, %error, "dial at the record's address failed");
            self.on_not_reached(peer, &addr);
            self.reach_some();
        }
        let probe = self.probing.get(&peer) == Some(&id);
        if probe {
            self.probing.remove(&peer);
        }
        let Some(pending) = self.pending.get_mut(&peer) else {
            if probe && !not_made {
                tracing::debug!(%peer, %error, "probe failed; suspending the node");
                self.core.peer_unreachable(&peer, Instant::now());
            }
            return;
        };
        // Our dial, or the probe ours waited for (both at the record's address, if any).
        let ours = pending.dial_id == id || (probe && pending.deferred);
        if !ours {
            // Another behaviour's dial: it says nothing about the peer. If ours waited for
            // it, dial now.
            if pending.deferred {
                pending.deferred = false;
                let (event, id) = dial(peer, pending.addr.clone());
                pending.dial_id = id;
                self.events.push_back(event);
            }
            return;
        }
        if not_made {
            pending.deferred = true;
            return;
        }
        pending.deferred = false;
        if pending.dials < 2 {
            tracing::debug!(%peer, %error, "dial failed; redialing once");
            pending.dials += 1;
            let (event, id) = dial(peer, pending.addr.clone());
            pending.dial_id = id;
            self.events.push_back(event);
            return;
        }
        let Some(pending) = self.pending.remove(&peer) else { return };
        // Only a failure at the peer's own advertised address, for mix traffic, says that the
        // peer is down. Exit deliveries never touch the pool, and an address written in a
        // packet is the sender's claim: counting it would let any sender suspend any node.
        let counted = pending.at_record && !pending.packets.is_empty();
        self.metrics.dial_failed(counted);
        if counted {
            tracing::debug!(%peer, %error, "dial at the record's address failed twice; suspending");
            self.core.peer_unreachable(&peer, Instant::now());
        } else {
            tracing::debug!(%peer, %error, "dial failed twice; dropping queued work");
        }
        for _ in &pending.packets {
            self.metrics.dropped(DropReason::Unreachable);
        }
        for job in pending.exits {
            self.on_exit_done(job.id, Err(ExitError::Unreachable));
        }
    }

    /// Dials `peer` to check it is alive, if it is a pool node we are not connected to.
    fn probe(&mut self, peer: PeerId) {
        if self.core.is_stopping()
            || self.connected.contains_key(&peer)
            || self.probing.contains_key(&peer)
        {
            return;
        }
        let Some(addr) = self.core.pool().get(&peer).map(|n| n.addr().clone()) else { return };
        let (event, id) = dial(peer, addr);
        self.probing.insert(peer, id);
        self.events.push_back(event);
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

    /// Counts `frames` handed to `connection` until it settles them.
    fn handed_over(&mut self, connection: ConnectionId, frames: usize) {
        *self.unsent.entry(connection).or_default() += frames;
        self.metrics.add_unsent(frames as i64);
    }

    /// A packet read from `peer`: opened on a hop worker if there is one with room, else
    /// here.
    fn on_packet(&mut self, peer: PeerId, packet: Packet, proof: &[u8]) {
        let now = Instant::now();
        let job = match self.core.prepare_packet(now, packet, proof) {
            Ok(job) => job,
            Err(reason) => return self.on_opened(peer, Err(reason)),
        };
        let job = match self.workers.as_mut() {
            Some(workers) => match workers.submit(peer, job) {
                Ok(()) => {
                    self.metrics.set_hop_jobs_in_flight(workers.in_flight());
                    return;
                }
                Err(job) => {
                    self.metrics.hop_job_inline();
                    job
                }
            },
            None => job,
        };
        let result = self.core.finish_packet(now, job.run());
        self.on_opened(peer, result);
    }

    /// Hands the own messages the core planned to the hop workers, or builds them here
    /// when the workers hold as many jobs as they may.
    fn dispatch_builds(&mut self) {
        while let Some(job) = self.core.next_build_job() {
            let job = match self.workers.as_mut() {
                Some(workers) => match workers.submit_build(job) {
                    Ok(()) => continue,
                    Err(job) => job,
                },
                None => job,
            };
            self.metrics.build_job_inline();
            self.core.finish_build(Instant::now(), job.run());
        }
        if let Some(workers) = self.workers.as_ref() {
            self.metrics.set_hop_jobs_in_flight(workers.in_flight());
        }
    }

    /// Hands the packets the hop workers opened and the messages they built back to the
    /// core.
    fn poll_workers(&mut self, cx: &mut Context<'_>) {
        self.dispatch_builds();
        let Some(workers) = self.workers.as_mut() else { return };
        let mut finished = Vec::new();
        let mut gone = false;
        while let Poll::Ready(done) = workers.poll_done(cx) {
            match done {
                Some(done) => finished.push(done),
                None => {
                    gone = true;
                    break;
                }
            }
        }
        if gone {
            // Not expected (workers catch their jobs' panics): everything runs here from now.
            let opening = workers.opening();
            tracing::error!("the hop workers are gone; opening and building on the swarm's task");
            for _ in 0..opening {
                self.metrics.dropped(DropReason::Internal);
            }
            self.workers = None;
            self.core.lose_builds();
        }
        if finished.is_empty() {
            return;
        }
        self.metrics.set_hop_jobs_in_flight(self.workers.as_ref().map_or(0, HopWorkers::in_flight));
        let now = Instant::now();
        for done in finished {
            match done {
                Done::Hop(peer, Some(done)) => {
                    let result = self.core.finish_packet(now, done);
                    self.on_opened(peer, result);
                }
                Done::Hop(peer, None) => {
                    self.metrics.dropped(DropReason::Internal);
                    self.on_opened(peer, Err(DropReason::Internal));
                }
                Done::Build(_, Some(done)) => self.core.finish_build(now, done),
                Done::Build(ticket, None) => self.core.build_lost(ticket),
            }
        }
    }

    /// How a packet from `peer` fared. Only peers outside the pool are judged: a sender can
    /// route a packet whose header is junk for this node through an honest mix node, which
    /// cannot tell; or send a packet's inner layer here first so that the honest hop's copy
    /// arrives as a replay.
    fn on_opened(&mut self, peer: PeerId, result: Result<(), DropReason>) {
        if self.core.pool().get(&peer).is_none() {
            let forged = matches!(
                result,
                Err(DropReason::Sphinx(_) | DropReason::Replay | DropReason::Proof(_))
            );
            self.judge(peer, forged);
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

impl Drop for Behaviour {
    fn drop(&mut self) {
        // A clean stop: the saved state holds every packet this run processed.
        self.save_state(true);
    }
}

/// A connection refused because the node is stopping and has closed its connections.
#[derive(Debug, thiserror::Error)]
#[error("the node is stopping and has closed its connections")]
struct Closing;

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

/// A dial of `peer` at `addr` alone, and its connection id.
fn dial(peer: PeerId, addr: Multiaddr) -> (ToSwarm<Event, InEvent>, ConnectionId) {
    let opts = DialOpts::peer_id(peer)
        .addresses(vec![addr])
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .build();
    let id = opts.connection_id();
    (ToSwarm::Dial { opts }, id)
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
                endpoint,
                ..
            }) => {
                self.on_connection_established(peer_id, connection_id);
                if let Some(addr) = self.reacher.on_established(peer_id, connection_id, endpoint) {
                    self.on_reached(peer_id, &addr);
                    self.reach_some();
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                remaining_established,
                ..
            }) => {
                self.reacher.on_closed(peer_id, connection_id);
                if let Some(unsent) = self.unsent.remove(&connection_id) {
                    self.metrics.add_unsent(-(unsent as i64));
                }
                let lost: Vec<ExitId> = self
                    .exit_connection
                    .iter()
                    .filter(|(_, c)| **c == connection_id)
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    self.on_exit_done(id, Err(ExitError::Unreachable));
                }
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
            FromSwarm::DialFailure(DialFailure { peer_id: Some(peer), error, connection_id }) => {
                self.on_dial_failure(peer, connection_id, error);
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
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            OutEvent::Packet(mut frame) => {
                if frame.len() != PACKET_SIZE + self.proof_len {
                    self.metrics.dropped(DropReason::BadLength);
                    if self.core.pool().get(&peer).is_none() {
                        self.judge(peer, true);
                    }
                    return;
                }
                let proof = frame.split_off(PACKET_SIZE);
                match Packet::try_from(frame) {
                    Ok(packet) => self.on_packet(peer, packet, &proof),
                    Err(_) => self.metrics.dropped(DropReason::BadLength),
                }
            }
            OutEvent::Exit { id, result } => self.on_exit_done(id, result),
            OutEvent::Unreachable => self.core.peer_unreachable(&peer, Instant::now()),
            OutEvent::Settled(n) => {
                if let Some(unsent) = self.unsent.get_mut(&connection) {
                    *unsent = unsent.saturating_sub(n);
                    if *unsent == 0 {
                        self.unsent.remove(&connection);
                    }
                }
                self.metrics.add_unsent(-(n as i64));
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(timer) = self.state_timer.as_mut()
            && timer.poll_unpin(cx).is_ready()
        {
            timer.reset(self.config.state_save_interval);
            self.save_state(false);
        }
        if let (Some(timer), Some(interval)) =
            (self.probe_timer.as_mut(), self.config.probe_interval)
            && timer.poll_unpin(cx).is_ready()
        {
            timer.reset(interval);
            self.probe_some();
            self.reach_some();
        }
        for (peer, addr) in self.reacher.poll_expired(cx, Instant::now()) {
            self.on_not_reached(peer, &addr);
            self.reach_some();
        }
        self.poll_handles(cx);
        self.poll_stopping(cx);
        loop {
            self.poll_workers(cx);
            while let Some(output) = self.core.poll_output() {
                self.on_output(output);
            }
            if let Some(event) = self.events.pop_front() {
                self.export_stats();
                return Poll::Ready(event);
            }
            if !self.poll_timer(cx) {
                break;
            }
        }
        self.export_stats();
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
