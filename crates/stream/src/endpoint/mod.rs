//! The stream layer's sans-IO endpoint (see [`Endpoint`]).

mod accept;
mod budget;
mod config;
mod drive;
mod shared;
mod stats;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use libp2p_mix::{Destination, SendError, SendOptions};
use mix_sphinx::{MessageError, Surb};
use multiaddr::Multiaddr;
use rand::rngs::StdRng;
use zeroize::{Zeroize, Zeroizing};

use crate::labels::Label;
use crate::{
    Connection, ConnectionError, ConnectionStats, FrameLimits, Mode, NetworkLoss, OpenError,
    ReceiverKey, Role, StreamConfig,
};
use budget::{Bucket, PeerBudgets, RecentOpenings};
pub use config::Config;
pub(crate) use shared::{Shared, lock};
pub use stats::{EndpointStats, Outcome};
use stats::{mode_index, role_index};

pub use crate::keys::StreamId;

/// Reset code: the acceptor's backlog was full.
pub const RESET_REFUSED: u8 = 1;
/// Reset code: a message exceeded the size limit.
pub const RESET_TOO_LARGE: u8 = 2;
/// Reset code: the application dropped the stream while data was still coming.
pub const RESET_ABANDONED: u8 = 3;

/// Frames one stream builds before the mix node gets to send them: building a frame's packet
/// takes a Sphinx packet's worth of work, and a window's worth at once would leave the network
/// idle, then flood it.
const FRAMES_PER_DRIVE: usize = 8;

/// How soon streams that found the mix node's queue full try again.
const QUEUE_RETRY: Duration = Duration::from_millis(2);

/// A stream with nothing scheduled is looked at again this late at most.
const IDLE_CHECK: Duration = Duration::from_secs(60);

/// A peer that accepts streams, reached through exits that dial `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPeer {
    /// The acceptor.
    pub peer_id: PeerId,
    /// Where exits dial it (IPv4 TCP or QUIC, to fit a Sphinx address block).
    pub addr: Multiaddr,
    /// Its X25519 key for streams.
    pub key: [u8; 32],
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// The peer is not in the mix pool (give its address and key with a [`StreamPeer`]).
    #[error("{0} is not in the mix pool")]
    UnknownPeer(PeerId),
    /// This node has as many streams open as it may.
    #[error("{0} streams are open already")]
    TooManyStreams(usize),
    /// The peer's record holds no key for the current epoch (it has not been refreshed).
    #[error("the record of {0} has no key for the current epoch")]
    StaleKeys(PeerId),
    /// The settings or the key are unusable.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The behaviour is gone (the swarm stopped).
    #[error("the stream behaviour stopped")]
    Stopped,
}

/// What the endpoint needs of the mix node under it. The driver implements it over
/// `libp2p_mix::Behaviour`; tests and simulations over a network of their own.
pub trait MixTransport {
    /// Own packets the mix node holds for their mixing delay now (streams wait while there are
    /// [`Config::max_queued_packets`]).
    fn queued_packets(&self) -> usize;
    /// Sends one frame of an opened stream to `to` as a one-way mix message.
    fn send(
        &mut self,
        now: Instant,
        to: &Destination,
        frame: &[u8],
        options: SendOptions,
    ) -> Result<(), SendError>;
    /// `count` SURBs whose paths avoid `avoid`, for the acceptor's frames back on `stream`,
    /// and when the mix node forgets them. A reply through one of them is the endpoint's
    /// ([`Endpoint::handle_reply`] with `stream`).
    fn surb_bundle(
        &mut self,
        now: Instant,
        stream: &StreamId,
        count: usize,
        avoid: &PeerId,
        options: SendOptions,
    ) -> Result<(Vec<Surb>, Instant), SendError>;
    /// Sends `frame` back to an opener through `surb`.
    fn reply(&mut self, now: Instant, surb: Surb, frame: &[u8]) -> Result<(), MessageError>;
    /// Whether the mix node holds `peer` for down (a reply through it would be lost).
    fn is_suspended(&self, peer: &PeerId) -> bool;
}

/// What the endpoint tells its driver.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// A peer opened a stream to this node: hand it to the application
    /// ([`Endpoint::with_connection`]), or [`Endpoint::refuse`] it.
    Incoming(StreamId),
    /// A message arrived whole.
    Message {
        /// The stream that carried it (gone once it lingered).
        id: StreamId,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A message this node sent was acknowledged in full, or failed.
    Sent {
        /// The stream that carries it.
        id: StreamId,
        /// The outcome.
        result: Result<(), ConnectionError>,
    },
}

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
    /// Opener of a message: the bytes, and how many were written to the connection.
    outgoing: Option<(Vec<u8>, usize)>,
    /// Acceptor of a message: the bytes so far.
    inbox: Option<Vec<u8>>,
    /// When the stream ended (it lingers, see [`Config::linger`]).
    ended: Option<Instant>,
    /// Its figures when last counted into the endpoint's.
    stats: ConnectionStats,
    /// Acceptor: when it was accepted, until data arrived.
    awaiting_data: Option<Instant>,
    /// Acceptor: the peer that delivered its opening, and whether it was outside the pool.
    via: Option<PeerId>,
    via_stranger: bool,
    /// Acceptor: the bytes it holds, as last counted in [`Endpoint::accepted_bytes`].
    charged: usize,
    /// Acceptor: when it was accepted or last completed or formed a block.
    progressed: Option<Instant>,
    /// Acceptor: its slot went to a new stream (see `Endpoint::evict`); it no longer counts
    /// as held, and goes once its reset is sent.
    evicted: bool,
}

impl Entry {
    fn new(conn: Connection, role: Role) -> Self {
        Self {
            shared: Shared::new(conn),
            role,
            dest: None,
            options: SendOptions::default(),
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
            progressed: None,
            evicted: false,
        }
    }
}

/// The stream layer's sans-IO endpoint: every stream of one node, in both roles, with no
/// sockets, no clock and no task of its own.
///
/// ```text
///  application ── open / send_message / with_connection ─┐
///  exits ───────── handle_frame (a frame they delivered) ──┤
///  mix node ────── handle_reply (through a stream's SURB) ─┼─> Endpoint ─> drive(now, transport)
///  clock ───────── handle_timeout(now), poll_timeout() ────┘     │          └─> MixTransport:
///                                                                │              send, SURBs, replies
///                                                                └─> poll_event: Incoming, Message, Sent
/// ```
///
/// It demultiplexes delivered frames to streams by their labels and opens new streams from
/// openings, within the accept budgets (per peer and in all, strangers apart, bytes held,
/// replayed and stale openings refused). It keeps streams that ended for a while to
/// acknowledge late retransmissions, drops SURB replies whose first hop is down here, and
/// learns the network's loss from the streams that ended well. The driver
/// ([`crate::Behaviour`]) feeds it from the swarm; tests and simulations feed it directly.
pub struct Endpoint {
    config: Config,
    limits: FrameLimits,
    /// The keys streams are accepted under: the receiver key given at construction until the
    /// mix node's keys rotate, then the keys of the epochs the node holds. A key leaves (and
    /// is zeroized) with its epoch.
    keys: Vec<ReceiverKey>,
    rng: StdRng,
    /// An instant and the Unix time then.
    wall_clock: (Instant, Duration),
    /// The Unix second this endpoint started: openings sealed before it are refused, since
    /// the openings seen before a restart are not remembered.
    started_unix: u64,
    streams: HashMap<StreamId, Entry>,
    /// The labels accepted streams expect, to the stream.
    labels: HashMap<Label, StreamId>,
    openings: RecentOpenings,
    /// Streams to drive next.
    dirty: Vec<StreamId>,
    /// Streams that used their frame budget and go on after the mix node had its turn.
    again: Vec<StreamId>,
    deadlines: BTreeSet<(Instant, StreamId)>,
    deadline_of: HashMap<StreamId, Instant>,
    /// Frame loss on the mixnet, learned from the streams so far: new streams start from it.
    loss: NetworkLoss,
    /// New streams accepted, all peers together.
    accept: Bucket,
    /// The DH budget of openings that strangers deliver (see
    /// [`Config::stranger_accept_rate`]).
    stranger_accept: Bucket,
    peers: PeerBudgets,
    /// Bytes accepted streams and messages hold (see [`Config::max_accepted_bytes`]).
    accepted_bytes: usize,
    /// Streams held, lingering ones included: opened (0) and accepted (1).
    held: [usize; 2],
    stats: EndpointStats,
    events: VecDeque<EndpointEvent>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("streams", &self.streams.len())
            .field("accepting", &!self.keys.is_empty())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint whose frames fit `limits`. With `receiver` (this node's X25519 secret,
    /// usually its mix key) it also accepts streams. `unix` is the Unix time at `now`.
    pub fn new(
        config: Config,
        receiver: Option<[u8; 32]>,
        limits: FrameLimits,
        now: Instant,
        unix: Duration,
        rng: StdRng,
    ) -> Self {
        let keys = receiver
            .map(|mut secret| {
                let key = ReceiverKey::from_bytes(secret);
                secret.zeroize();
                key
            })
            .into_iter()
            .collect();
        let loss = NetworkLoss::new(config.stream.initial_loss);
        let mut stats = EndpointStats::default();
        stats.loss = loss.estimate();
        Self {
            loss,
            accept: Bucket::full(config.accept_rate.max(1.0), now),
            stranger_accept: Bucket::full(config.stranger_accept_rate.max(1.0), now),
            peers: PeerBudgets::new(config.peer_frame_rate, config.peer_accept_rate),
            config,
            limits,
            keys,
            rng,
            wall_clock: (now, unix),
            started_unix: unix.as_secs(),
            streams: HashMap::new(),
            labels: HashMap::new(),
            openings: RecentOpenings::default(),
            dirty: Vec::new(),
            again: Vec::new(),
            deadlines: BTreeSet::new(),
            deadline_of: HashMap::new(),
            accepted_bytes: 0,
            held: [0; 2],
            stats,
            events: VecDeque::new(),
        }
    }

    /// Accepts streams under these epoch keys from now on (the mix node's keys rotated),
    /// instead of the receiver key or the epochs before. Nothing changes for an endpoint that
    /// does not accept streams, or when `secrets` is empty.
    pub fn set_epoch_keys(&mut self, secrets: &[Zeroizing<[u8; 32]>]) {
        if self.keys.is_empty() || secrets.is_empty() {
            return;
        }
        self.keys = secrets.iter().map(|s| ReceiverKey::from_bytes(**s)).collect();
    }

    /// The largest frames the mix node carries now (they shrink when spam protection adds a
    /// proof). New streams use them.
    pub fn set_limits(&mut self, limits: FrameLimits) {
        self.limits = limits;
    }

    /// Sets the Unix time at `now` (openings carry it; acceptors refuse stale ones).
    pub fn set_wall_clock(&mut self, now: Instant, unix: Duration) {
        self.wall_clock = (now, unix);
    }

    fn unix(&self, now: Instant) -> Duration {
        let (at, unix) = self.wall_clock;
        match now.checked_duration_since(at) {
            Some(later) => unix + later,
            None => unix.saturating_sub(at - now),
        }
    }

    /// The public key openers need, if this endpoint accepts streams.
    pub fn receiver_key(&self) -> Option<[u8; 32]> {
        self.keys.first().map(ReceiverKey::public)
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters so far.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// Takes the round-trip times of the streams that ended since the last call (for a
    /// histogram; at most a few thousand are kept between calls).
    pub fn take_rtts(&mut self) -> Vec<Duration> {
        self.stats.take_rtts()
    }

    /// Streams held now (opened and accepted, lingering ones included).
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Labels in the index over accepted streams (a measure of its memory).
    pub fn indexed_labels(&self) -> usize {
        self.labels.len()
    }

    /// Whether the endpoint holds stream `id`.
    pub fn contains(&self, id: &StreamId) -> bool {
        self.streams.contains_key(id)
    }

    /// Opens a stream (or a message, by `mode`) to `peer`, with the endpoint's stream
    /// settings unless `config` is given. Its first frame leaves on the next
    /// [`Self::drive`].
    pub fn open(
        &mut self,
        peer: StreamPeer,
        mode: Mode,
        config: Option<StreamConfig>,
        now: Instant,
    ) -> Result<StreamId, OpenStreamError> {
        let opened = self.held[role_index(Role::Opener)];
        if opened >= self.config.max_opened {
            return Err(OpenStreamError::TooManyStreams(opened));
        }
        let mut config = config.unwrap_or_else(|| self.config.stream.clone());
        config.initial_loss = self.loss.estimate();
        let mut conn =
            Connection::open(&peer.key, mode, config.clone(), self.limits, now, &mut self.rng)
                .map_err(OpenStreamError::Open)?;
        conn.set_wall_clock(now, self.unix(now));
        let id = *conn.id();
        let mut entry = Entry::new(conn, Role::Opener);
        entry.dest = Some(Destination::Peer { peer_id: peer.peer_id, addr: peer.addr });
        entry.options = SendOptions {
            path_len: Some(config.hops),
            hop_delay: config.hop_delay,
            jitter: Some(Duration::ZERO),
            ..SendOptions::default()
        };
        self.streams.insert(id, entry);
        self.held[role_index(Role::Opener)] += 1;
        self.stats.opened[mode_index(mode)] += 1;
        self.stats.active[role_index(Role::Opener)] += 1;
        self.stats.touch();
        self.dirty.push(id);
        Ok(id)
    }

    /// Sends `data` as one message to `peer`; [`EndpointEvent::Sent`] tells how it went.
    pub fn send_message(
        &mut self,
        peer: StreamPeer,
        data: Vec<u8>,
        config: Option<StreamConfig>,
        now: Instant,
    ) -> Result<StreamId, OpenStreamError> {
        let id = self.open(peer, Mode::Message, config, now)?;
        if let Some(entry) = self.streams.get_mut(&id) {
            entry.outgoing = Some((data, 0));
        }
        Ok(id)
    }

    /// Runs `f` on stream `id`'s connection (the application's reads and writes) and drives
    /// the stream next: what `f` did may let it send.
    pub fn with_connection<R>(
        &mut self,
        id: &StreamId,
        f: impl FnOnce(&mut Connection) -> R,
    ) -> Option<R> {
        let entry = self.streams.get(id)?;
        let result = f(&mut lock(&entry.shared).conn);
        self.dirty.push(*id);
        Some(result)
    }

    /// The application let go of stream `id`: its direction ends gracefully and what still
    /// arrives is discarded.
    pub fn release(&mut self, id: &StreamId) {
        let Some(entry) = self.streams.get(id) else { return };
        let mut shared = lock(&entry.shared);
        shared.dropped = true;
        shared.conn.finish();
        drop(shared);
        self.dirty.push(*id);
    }

    /// Stream `id` was touched by its handle (read, written, closed): drive it next.
    pub fn touch(&mut self, id: &StreamId) {
        self.dirty.push(*id);
    }

    /// Refuses the incoming stream `id` (nobody takes streams fast enough).
    pub fn refuse(&mut self, id: &StreamId) {
        let Some(entry) = self.streams.get(id) else { return };
        lock(&entry.shared).conn.reset(RESET_REFUSED);
        self.stats.drop("backlog_full");
        self.dirty.push(*id);
    }

    /// The shared state of stream `id`, for the driver's handle on it.
    #[cfg(feature = "net")]
    pub(crate) fn shared(&self, id: &StreamId) -> Option<Arc<Mutex<Shared>>> {
        self.streams.get(id).map(|e| e.shared.clone())
    }

    /// The next event, if any. Call it after every call that takes frames or drives: a
    /// message waiting here no longer counts against [`Config::max_accepted_bytes`].
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Marks the streams whose timers are due at `now` to be driven.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.deadline_of.remove(&id);
            self.dirty.push(id);
        }
    }

    /// Whether streams wait to be driven (call [`Self::drive`] again once the mix node has
    /// sent what it was given).
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty() || !self.again.is_empty()
    }

    /// Drives every stream that has something to do: the application's bytes, frames out
    /// through `transport`, the ends of streams. `true` if any stream was driven.
    pub fn drive(&mut self, now: Instant, transport: &mut impl MixTransport) -> bool {
        let mut due = std::mem::take(&mut self.dirty);
        due.append(&mut self.again);
        due.sort_unstable();
        due.dedup();
        let worked = !due.is_empty();
        for id in due {
            // Each stream's frames fill the queue the next one sees.
            let queue_full = transport.queued_packets() >= self.config.max_queued_packets;
            self.drive_one(id, now, queue_full, transport);
        }
        worked
    }
}
