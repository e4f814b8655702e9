//! Finding mix nodes: signed records in Kademlia, random walks and identify.
//!
//! Every mix node publishes a [`MixRecord`] signed with its libp2p identity under
//! [`record::record_key`]`(its PeerId)`, and republishes it on a timer with a new sequence number.
//! Nodes learn of peers from Kademlia (random walks: lookups of random ids) and identify (what
//! connected peers tell about themselves), fetch each new peer's record, and hand the valid ones
//! to the mix pool as [`Event::NodeFound`]. Records are validated wherever they enter: fetched
//! ones before use, and ones other peers PUT before they reach the local store (Kademlia runs
//! with [`StoreInserts::FilterBoth`]); rejections are counted by reason.
//!
//! [`crate::Mixnet`] wires it: found nodes go to the pool, the node's address and key rotations
//! into its record. Used on its own, pass `NodeFound` to [`crate::Behaviour::offer_node`] and
//! call [`Behaviour::forget`] for a node the pool then does not hold
//! ([`crate::Behaviour::holds_node`]: else refused identities keep places in the bounded
//! table of nodes fetched again), call
//! [`Behaviour::set_local_record`] once the node knows the addresses others can dial, and
//! [`Behaviour::set_local_keys`] on every [`crate::Event::KeysRotated`].

pub mod record;

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p_core::transport::PortUse;
use libp2p_core::{Endpoint, Multiaddr};
use libp2p_identify as identify;
use libp2p_identity::{Keypair, PeerId};
use libp2p_kad::store::{MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p_kad::{
    self as kad, GetRecordOk, InboundRequest, Mode, QueryId, QueryResult, Quorum, Record,
    StoreInserts,
};
use libp2p_swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p_swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, StreamProtocol, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use mix_sphinx::NodePublicKey;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::core::MixNode;
use record::{
    CLOCK_SLACK, MAX_RECORD_LIFETIME, MAX_RECORD_SIZE, MixRecord, RecordError, record_key,
};

/// Discovery settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Kademlia protocol of the mixnet's DHT.
    pub kad_protocol: StreamProtocol,
    /// The identify protocol version string.
    pub identify_protocol: String,
    /// Identify's agent version. Set it: the default would name the library version.
    pub agent_version: String,
    /// How long a published record is valid; at most [`MAX_RECORD_LIFETIME`] (others refuse
    /// longer ones), and cut to it if longer.
    pub record_lifetime: Duration,
    /// How often the node publishes a fresh record (a new sequence number re-admits it where
    /// it was suspended).
    pub republish_interval: Duration,
    /// Interval between random walks once started up.
    pub walk_interval: Duration,
    /// Walks at [`Self::initial_walk_interval`] right after start, to fill the pool quickly.
    pub initial_walks: usize,
    /// Interval of those first walks.
    pub initial_walk_interval: Duration,
    /// A known node's record is fetched again after this long, to learn newer ones.
    pub refetch_interval: Duration,
    /// Record fetches in flight at once.
    pub max_concurrent_fetches: usize,
    /// A peer whose record was not found is asked again after this long (it may not have
    /// published yet), until it has gone without one for a whole `record_lifetime`.
    pub retry_missing: Duration,
    /// The most peers each of discovery's tables holds: nodes with a valid record, peers
    /// without one, and fetches waiting their turn. Identities cost nothing, so past this
    /// new peers are left out of the table (a record found is still handed on) and counted as
    /// `mix_discovery_peers_untracked_total`.
    pub max_tracked_peers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kad_protocol: StreamProtocol::new("/mix/kad/1.0.0"),
            identify_protocol: "/mix/id/1.0.0".into(),
            agent_version: "mixnode".into(),
            record_lifetime: Duration::from_secs(3600),
            republish_interval: Duration::from_secs(300),
            walk_interval: Duration::from_secs(30),
            initial_walks: 5,
            initial_walk_interval: Duration::from_secs(1),
            refetch_interval: Duration::from_secs(300),
            max_concurrent_fetches: 16,
            retry_missing: Duration::from_secs(5),
            max_tracked_peers: 4096,
        }
    }
}

/// What discovery reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A valid record: offer the node to the mix pool.
    NodeFound {
        /// The pool entry.
        node: MixNode,
        /// The record's sequence number.
        seq: u64,
        /// When the record stops being valid.
        expires: Instant,
    },
    /// A record was refused.
    RecordRejected {
        /// The peer it was about, if known.
        peer: Option<PeerId>,
        /// Why.
        error: RecordError,
    },
    /// Our record was published (`ok`) or could not be stored anywhere yet.
    Published {
        /// The record's sequence number.
        seq: u64,
        /// Whether at least one peer stored it.
        ok: bool,
    },
}

/// The Kademlia and identify behaviours discovery drives. Public only because the handler type
/// of [`Behaviour`] names it.
mod inner {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

    use libp2p_identify as identify;
    use libp2p_kad::{self as kad, store::MemoryStore};
    use libp2p_swarm::NetworkBehaviour;

    #[derive(NetworkBehaviour)]
    #[behaviour(prelude = "libp2p_swarm::derive_prelude")]
    pub struct Inner {
        pub(super) kad: kad::Behaviour<MemoryStore>,
        pub(super) identify: identify::Behaviour,
    }
}
use inner::{Inner, InnerEvent};

#[derive(Debug, Clone)]
struct LocalRecord {
    addrs: Vec<Multiaddr>,
    mix_key: NodePublicKey,
    next_mix_key: Option<NodePublicKey>,
    epoch: Option<u64>,
    exit: bool,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    seq: u64,
    fetched: Instant,
    /// When its newest record runs out; the entry goes with it.
    expires: Instant,
}

/// A peer whose record was not found.
#[derive(Debug, Clone, Copy)]
struct Missing {
    /// When it was first missed; it is given up a record lifetime later.
    since: Instant,
    /// When it was last asked for.
    asked: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Discovery's metrics. Clones share the same values.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    accepted: Counter,
    rejected: Family<ReasonLabel, Counter>,
    walks: Counter,
    publications: Family<OutcomeLabel, Counter>,
    untracked: Family<TableLabel, Counter>,
    replaced: Counter,
}

impl Metrics {
    /// Registers the metrics under the prefix `mix_discovery`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("mix_discovery");
        r.register("records_accepted", "Valid mix records received", self.accepted.clone());
        r.register("records_rejected", "Mix records refused, by reason", self.rejected.clone());
        r.register("walks", "Random walks started", self.walks.clone());
        r.register(
            "publications",
            "Own record publications, by outcome",
            self.publications.clone(),
        );
        r.register(
            "peers_untracked",
            "Peers left out of a full table (known, missing or queue)",
            self.untracked.clone(),
        );
        r.register(
            "records_replaced",
            "Records a full record store dropped for a newer arrival (an expired one, else one \
             drawn at random)",
            self.replaced.clone(),
        );
    }

    /// Valid records received so far.
    pub fn records_accepted(&self) -> u64 {
        self.accepted.get()
    }

    /// Records refused for `reason` (see [`RecordError::reason`]).
    pub fn records_rejected(&self, reason: &'static str) -> u64 {
        self.rejected.get_or_create(&ReasonLabel { reason }).get()
    }

    /// Records a full store dropped to take a newer arrival.
    pub fn records_replaced(&self) -> u64 {
        self.replaced.get()
    }

    /// Peers left out of `table` (`known`, `missing` or `queue`) because it was full.
    pub fn peers_untracked(&self, table: &'static str) -> u64 {
        self.untracked.get_or_create(&TableLabel { table }).get()
    }
}

/// The discovery behaviour: Kademlia and identify, driven for mix nodes.
pub struct Behaviour {
    inner: Inner,
    identity: Keypair,
    local_peer: PeerId,
    config: Config,
    local: Option<LocalRecord>,
    published_seq: u64,
    publish_timer: Delay,
    walk_timer: Delay,
    walks: usize,
    fetching: HashMap<QueryId, PeerId>,
    queued: VecDeque<PeerId>,
    queued_set: HashSet<PeerId>,
    publishing: HashSet<QueryId>,
    known: HashMap<PeerId, Known>,
    missing: HashMap<PeerId, Missing>,
    events: VecDeque<ToSwarm<Event, THandlerInEvent<Inner>>>,
    metrics: Metrics,
    waker: Option<Waker>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("discovery::Behaviour")
            .field("known", &self.known.len())
            .field("fetching", &self.fetching.len())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The PeerId a record key names, if it is a mix record key.
fn peer_of_key(key: &kad::RecordKey) -> Option<PeerId> {
    let bytes = key.as_ref().strip_prefix(b"/mix/record/".as_slice())?;
    PeerId::from_bytes(bytes).ok()
}

impl Behaviour {
    /// Discovery for the node with libp2p identity `identity` (which signs its records).
    pub fn new(identity: Keypair, mut config: Config) -> Self {
        config.record_lifetime =
            config.record_lifetime.min(Duration::from_secs(MAX_RECORD_LIFETIME));
        let local_peer = identity.public().to_peer_id();
        let mut kad_config = kad::Config::new(config.kad_protocol.clone());
        kad_config
            .set_record_filtering(StoreInserts::FilterBoth)
            .set_record_ttl(Some(config.record_lifetime))
            // We republish our record ourselves, with a new sequence number.
            .set_publication_interval(None)
            .set_query_timeout(Duration::from_secs(10));
        let store = MemoryStore::with_config(
            local_peer,
            MemoryStoreConfig { max_value_bytes: MAX_RECORD_SIZE, ..MemoryStoreConfig::default() },
        );
        let mut kad = kad::Behaviour::with_config(local_peer, store, kad_config);
        // Local networks never confirm an external address; serve the DHT regardless.
        kad.set_mode(Some(Mode::Server));
        let identify = identify::Behaviour::new(
            identify::Config::new(config.identify_protocol.clone(), identity.public())
                .with_agent_version(config.agent_version.clone()),
        );
        Self {
            inner: Inner { kad, identify },
            identity,
            local_peer,
            publish_timer: Delay::new(Duration::ZERO),
            walk_timer: Delay::new(Duration::ZERO),
            walks: 0,
            config,
            local: None,
            published_seq: 0,
            fetching: HashMap::new(),
            queued: VecDeque::new(),
            queued_set: HashSet::new(),
            publishing: HashSet::new(),
            known: HashMap::new(),
            missing: HashMap::new(),
            events: VecDeque::new(),
            metrics: Metrics::default(),
            waker: None,
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Nodes whose record this node fetched itself and still tracks, to fetch again (not
    /// refused by the pool; at most [`Config::max_tracked_peers`]).
    pub fn known_nodes(&self) -> usize {
        self.known.len()
    }

    /// What this node publishes about itself; published now and then on the republish timer.
    pub fn set_local_record(
        &mut self,
        addrs: Vec<Multiaddr>,
        mix_key: NodePublicKey,
        next_mix_key: Option<NodePublicKey>,
        exit: bool,
    ) {
        self.local = Some(LocalRecord { addrs, mix_key, next_mix_key, epoch: None, exit });
        self.publish_timer.reset(Duration::ZERO);
        self.wake();
    }

    /// The node's keys rotated (see [`crate::Event::KeysRotated`]): publish them now. Does
    /// nothing before [`Self::set_local_record`].
    pub fn set_local_keys(&mut self, keys: crate::core::EpochKeys) {
        let Some(local) = self.local.as_mut() else { return };
        local.mix_key = keys.current;
        local.next_mix_key = Some(keys.next);
        local.epoch = Some(keys.epoch);
        self.publish_timer.reset(Duration::ZERO);
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// A peer to join the DHT through: dialed now, then looked up from.
    pub fn add_bootstrap(&mut self, peer: PeerId, addr: Multiaddr) {
        self.inner.kad.add_address(&peer, addr.clone());
        self.events.push_back(ToSwarm::Dial {
            opts: DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
        });
        let _ = self.inner.kad.bootstrap();
        self.wake();
    }

    fn publish(&mut self) {
        let Some(local) = self.local.clone() else { return };
        let now = unix_now();
        // Milliseconds since the epoch: a restarted node's record supersedes its old one.
        let seq = unix_millis().max(self.published_seq + 1);
        let record = MixRecord {
            addrs: local.addrs,
            mix_key: local.mix_key,
            next_mix_key: local.next_mix_key,
            epoch: local.epoch,
            exit: local.exit,
            // Slack for peers whose clocks run slightly behind.
            valid_from: now.saturating_sub(CLOCK_SLACK),
            valid_until: now + self.config.record_lifetime.as_secs(),
            seq,
        };
        let value = record.sign(&self.identity);
        let kad_record = Record {
            key: kad::RecordKey::new(&record_key(&self.local_peer)),
            value,
            publisher: Some(self.local_peer),
            expires: Some(Instant::now() + self.config.record_lifetime),
        };
        let _ = self.inner.kad.store_mut().put(kad_record.clone());
        match self.inner.kad.put_record(kad_record, Quorum::One) {
            Ok(id) => {
                self.publishing.insert(id);
                self.published_seq = seq;
            }
            Err(e) => tracing::debug!(%e, "storing our mix record failed"),
        }
    }

    fn queue_fetch(&mut self, peer: PeerId) {
        if peer == self.local_peer || self.queued_set.contains(&peer) {
            return;
        }
        let fresh = self
            .known
            .get(&peer)
            .is_some_and(|k| k.fetched.elapsed() < self.config.refetch_interval);
        let recently_missing =
            self.missing.get(&peer).is_some_and(|m| m.asked.elapsed() < self.config.retry_missing);
        if fresh || recently_missing || self.fetching.values().any(|p| *p == peer) {
            return;
        }
        self.queued_set.insert(peer);
        if self.known.contains_key(&peer) {
            // A node we hold a record of goes first, past the bound (`known` bounds these):
            // its new keys or its return must not wait behind a flood of new identities.
            self.queued.push_front(peer);
        } else if self.queued.len() >= self.config.max_tracked_peers {
            self.queued_set.remove(&peer);
            self.untracked("queue");
        } else {
            self.queued.push_back(peer);
        }
    }

    /// Stops tracking `peer`: its record is not fetched again unless the peer shows up anew.
    /// [`crate::Mixnet`] calls it for nodes its pool refused, so that the table of known
    /// nodes holds no more identities than the pool's caps let in.
    pub fn forget(&mut self, peer: &PeerId) {
        self.known.remove(peer);
        self.missing.remove(peer);
    }

    fn start_fetches(&mut self) {
        while self.fetching.len() < self.config.max_concurrent_fetches {
            let Some(peer) = self.queued.pop_front() else { break };
            self.queued_set.remove(&peer);
            let id = self.inner.kad.get_record(kad::RecordKey::new(&record_key(&peer)));
            self.fetching.insert(id, peer);
        }
    }

    fn untracked(&self, table: &'static str) {
        self.metrics.untracked.get_or_create(&TableLabel { table }).inc();
    }

    fn walk(&mut self) {
        self.metrics.walks.inc();
        self.inner.kad.get_closest_peers(PeerId::random());
        let now = Instant::now();
        let lifetime = self.config.record_lifetime;
        self.known.retain(|_, k| k.expires > now);
        self.missing.retain(|_, m| now.saturating_duration_since(m.since) < lifetime);
        // Known nodes are fetched again now and then: a newer record re-admits a suspended one.
        let stale: Vec<PeerId> = self
            .known
            .iter()
            .filter(|(_, k)| k.fetched.elapsed() >= self.config.refetch_interval)
            .map(|(p, _)| *p)
            .chain(
                self.missing
                    .iter()
                    .filter(|(_, m)| m.asked.elapsed() >= self.config.retry_missing)
                    .map(|(p, _)| *p),
            )
            .collect();
        for peer in stale {
            self.queue_fetch(peer);
        }
    }

    /// Checks a record about `peer` and counts the outcome; the event to report either way.
    /// Only a record this node `fetched` itself adds the peer to `known` and counts as a
    /// fetch: anyone may PUT any valid record, an honest node's old one included, and that
    /// must neither fill the table nor keep a node from being fetched again.
    fn validate(&mut self, peer: PeerId, value: &[u8], fetched: bool) -> Event {
        match MixRecord::verify(value, &peer, unix_now()) {
            Ok((record, node)) => {
                self.metrics.accepted.inc();
                self.missing.remove(&peer);
                let now = Instant::now();
                // `verify` bounds the remaining validity by MAX_RECORD_LIFETIME.
                let remaining = record.valid_until.saturating_sub(unix_now());
                let expires = now + Duration::from_secs(remaining.min(MAX_RECORD_LIFETIME));
                let full = self.known.len() >= self.config.max_tracked_peers;
                if let Some(known) = self.known.get_mut(&peer) {
                    if fetched {
                        known.fetched = now;
                    }
                    if fetched || record.seq > known.seq {
                        known.seq = known.seq.max(record.seq);
                        known.expires = known.expires.max(expires);
                    }
                } else if fetched && full {
                    self.untracked("known");
                } else if fetched {
                    self.known.insert(peer, Known { seq: record.seq, fetched: now, expires });
                }
                Event::NodeFound { node, seq: record.seq, expires }
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "rejected a mix record");
                self.metrics.rejected.get_or_create(&ReasonLabel { reason: error.reason() }).inc();
                Event::RecordRejected { peer: Some(peer), error }
            }
        }
    }

    fn on_inbound_put(&mut self, record: Record) {
        let Some(peer) = peer_of_key(&record.key) else {
            let error = RecordError::Malformed("record key");
            self.metrics.rejected.get_or_create(&ReasonLabel { reason: error.reason() }).inc();
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::RecordRejected { peer: None, error }));
            return;
        };
        let event = self.validate(peer, &record.value, false);
        if let Event::NodeFound { seq, expires, .. } = &event {
            let mut record = record;
            // Kept no longer than it is valid: an expired record is the first a full store
            // drops.
            record.expires = Some(record.expires.map_or(*expires, |e| e.min(*expires)));
            // Keep the newer of what we hold and what we got; of two copies of one record,
            // the one kept longer (anyone may PUT a copy of anyone's record, with a short
            // lifetime, to have it dropped early).
            let now = Instant::now();
            let stored = self
                .inner
                .kad
                .store_mut()
                .get(&record.key)
                .filter(|r| !r.is_expired(now))
                .and_then(|r| {
                    Some((MixRecord::verify(&r.value, &peer, unix_now()).ok()?, r.expires))
                })
                .map(|((r, _), expires)| (r.seq, expires));
            match stored {
                Some((old, _)) if old > *seq => {}
                Some((old, kept)) if old == *seq => {
                    if kept.is_some_and(|k| record.expires.is_some_and(|e| e > k)) {
                        self.store(peer, record);
                    }
                }
                _ => self.store(peer, record),
            }
        }
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    /// Stores a valid record PUT to this node. A full store drops an expired record for it,
    /// else one drawn at random. First come would let ground identities that filled the store
    /// once keep every later record out until theirs expire; so, keeping honest records out
    /// takes a flood that never stops, and an honest record put again gets back in.
    fn store(&mut self, peer: PeerId, record: Record) {
        let own = kad::RecordKey::new(&record_key(&self.local_peer));
        let store = self.inner.kad.store_mut();
        let record = match store.put(record.clone()) {
            Err(kad::store::Error::MaxRecords) => record,
            Err(error) => {
                tracing::debug!(%peer, %error, "record store refused a record");
                self.metrics.rejected.get_or_create(&ReasonLabel { reason: "store" }).inc();
                return;
            }
            Ok(()) => return,
        };
        let now = Instant::now();
        let others: Vec<(kad::RecordKey, bool)> = store
            .records()
            .filter(|r| r.key != own)
            .map(|r| (r.key.clone(), r.is_expired(now)))
            .collect();
        let victim = match others.iter().find(|(_, expired)| *expired) {
            Some((key, _)) => Some(key.clone()),
            None if others.is_empty() => None,
            None => Some(others[rand::random_range(0..others.len())].0.clone()),
        };
        let Some(victim) = victim else { return };
        store.remove(&victim);
        self.metrics.replaced.inc();
        if let Err(error) = store.put(record) {
            tracing::debug!(%peer, %error, "record store refused a record");
            self.metrics.rejected.get_or_create(&ReasonLabel { reason: "store" }).inc();
        }
    }

    fn on_inner_event(&mut self, event: InnerEvent) {
        match event {
            InnerEvent::Kad(kad::Event::RoutingUpdated { peer, .. }) => self.queue_fetch(peer),
            InnerEvent::Kad(kad::Event::InboundRequest {
                request: InboundRequest::PutRecord { record: Some(record), .. },
            }) => self.on_inbound_put(record),
            InnerEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, step, .. }) => {
                match result {
                    QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => {
                        let Some(peer) = self.fetching.get(&id).copied() else { return };
                        let event = self.validate(peer, &found.record.value, true);
                        if matches!(event, Event::NodeFound { .. })
                            && let Some(mut query) = self.inner.kad.query_mut(&id)
                        {
                            query.finish();
                        }
                        self.events.push_back(ToSwarm::GenerateEvent(event));
                    }
                    QueryResult::PutRecord(result) if self.publishing.remove(&id) => {
                        let ok = result.is_ok();
                        let outcome = if ok { "ok" } else { "no_peer" };
                        self.metrics.publications.get_or_create(&OutcomeLabel { outcome }).inc();
                        if !ok {
                            // Nobody to store it at yet: try again soon.
                            self.publish_timer.reset(Duration::from_secs(2));
                        }
                        self.events.push_back(ToSwarm::GenerateEvent(Event::Published {
                            seq: self.published_seq,
                            ok,
                        }));
                    }
                    QueryResult::Bootstrap(_) | QueryResult::GetClosestPeers(_) => {}
                    _ => {}
                }
                if step.last
                    && let Some(peer) = self.fetching.remove(&id)
                {
                    // Remember the attempt so we do not ask again at once.
                    let now = Instant::now();
                    let full = self.missing.len() >= self.config.max_tracked_peers;
                    match (self.known.get_mut(&peer), self.missing.get_mut(&peer)) {
                        (Some(known), _) => known.fetched = now,
                        (None, Some(missing)) => missing.asked = now,
                        (None, None) if full => self.untracked("missing"),
                        (None, None) => {
                            self.missing.insert(peer, Missing { since: now, asked: now });
                        }
                    }
                }
            }
            InnerEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for addr in info.listen_addrs {
                    self.inner.kad.add_address(&peer_id, addr);
                }
                if info.protocols.contains(&crate::PROTOCOL) {
                    self.queue_fetch(peer_id);
                }
            }
            _ => {}
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<Inner>;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner.handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, connection, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            if self.publish_timer.poll_unpin(cx).is_ready() {
                self.publish_timer.reset(self.config.republish_interval);
                self.publish();
                continue;
            }
            if self.walk_timer.poll_unpin(cx).is_ready() {
                self.walks += 1;
                let next = if self.walks < self.config.initial_walks {
                    self.config.initial_walk_interval
                } else {
                    self.config.walk_interval
                };
                self.walk_timer.reset(next);
                self.walk();
                continue;
            }
            self.start_fetches();
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.on_inner_event(event);
                    continue;
                }
                Poll::Ready(other) => {
                    return Poll::Ready(
                        other.map_out(|_| unreachable!("GenerateEvent handled above")),
                    );
                }
                Poll::Pending => {}
            }
            self.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mix_sphinx::NodeSecretKey;

    fn signed_record(identity: &Keypair, valid_until: u64) -> Vec<u8> {
        MixRecord {
            addrs: vec!["/ip4/127.0.0.1/tcp/9".parse().unwrap()],
            mix_key: NodeSecretKey::generate(&mut rand::rng()).public_key(),
            next_mix_key: None,
            epoch: None,
            exit: false,
            valid_from: unix_now() - 10,
            valid_until,
            seq: 1,
        }
        .sign(identity)
    }

    fn discovery(max_tracked_peers: usize) -> Behaviour {
        // A short refetch interval, so that tests can take it off an `Instant` however
        // recently the machine booted.
        let refetch_interval = Duration::from_secs(1);
        let config = Config { max_tracked_peers, refetch_interval, ..Config::default() };
        Behaviour::new(Keypair::generate_secp256k1(), config)
    }

    /// Ground identities fill the record store (1,024 records) before an honest record
    /// arrives. First come refused the honest one until theirs expired; now it takes the
    /// place of one drawn at random, and the replacement is counted.
    #[test]
    fn a_full_record_store_takes_a_new_record_in_place_of_a_random_one() {
        let mut discovery = discovery(16);
        let until = unix_now() + 600;
        let put = |discovery: &mut Behaviour| {
            let identity = Keypair::generate_secp256k1();
            let peer = identity.public().to_peer_id();
            let key = kad::RecordKey::new(&record_key(&peer));
            discovery.on_inbound_put(Record::new(key.clone(), signed_record(&identity, until)));
            key
        };
        let flood: Vec<kad::RecordKey> = (0..1024).map(|_| put(&mut discovery)).collect();
        assert_eq!(discovery.metrics().records_replaced(), 0);
        let honest = put(&mut discovery);
        let store = discovery.inner.kad.store_mut();
        assert!(store.get(&honest).is_some(), "the honest record was refused");
        assert_eq!(store.records().count(), 1024);
        assert_eq!(flood.iter().filter(|k| store.get(k).is_none()).count(), 1);
        assert_eq!(discovery.metrics().records_replaced(), 1);
    }

    /// Anyone may PUT a copy of anyone's record. A copy with a short lifetime, put first,
    /// must not keep the owner's own copy out, nor, put later, cut the stored one short.
    #[test]
    fn a_short_lived_copy_of_a_record_neither_keeps_out_nor_cuts_short_the_owners() {
        let mut discovery = discovery(16);
        let identity = Keypair::generate_secp256k1();
        let peer = identity.public().to_peer_id();
        let key = kad::RecordKey::new(&record_key(&peer));
        let value = signed_record(&identity, unix_now() + 600);
        let now = Instant::now();
        let copy = |secs: u64| {
            let mut record = Record::new(key.clone(), value.clone());
            record.expires = Some(now + Duration::from_secs(secs));
            record
        };
        let stored = |d: &mut Behaviour| d.inner.kad.store_mut().get(&key).and_then(|r| r.expires);
        discovery.on_inbound_put(copy(1));
        assert_eq!(stored(&mut discovery), Some(now + Duration::from_secs(1)));
        discovery.on_inbound_put(copy(300));
        assert_eq!(stored(&mut discovery), Some(now + Duration::from_secs(300)), "kept out");
        discovery.on_inbound_put(copy(1));
        assert_eq!(stored(&mut discovery), Some(now + Duration::from_secs(300)), "cut short");
        // Never longer than the record is valid.
        discovery.on_inbound_put(copy(86_400));
        let kept = stored(&mut discovery).unwrap();
        assert!(kept <= Instant::now() + Duration::from_secs(600), "{:?}", kept - now);
    }

    /// A peer's own record, signed by itself, claiming to be valid for ever: refused and
    /// counted. (It used to reach `Instant + Duration` unchecked and end the node's task.)
    #[test]
    fn a_record_valid_for_ever_is_refused() {
        let mut discovery = discovery(16);
        let identity = Keypair::generate_secp256k1();
        let peer = identity.public().to_peer_id();
        let event = discovery.validate(peer, &signed_record(&identity, u64::MAX), false);
        assert!(
            matches!(event, Event::RecordRejected { error: RecordError::TooLong { .. }, .. }),
            "{event:?}"
        );
        assert_eq!(discovery.metrics().records_rejected("too_long"), 1);
        assert_eq!(discovery.known_nodes(), 0);
    }

    /// Fresh identities are free: each table stops at `max_tracked_peers`, counts the peers it
    /// leaves out, and found nodes are still handed on. Known nodes are fetched again first,
    /// however full the queue, and a node forgotten (the pool refused it) frees its place.
    #[test]
    fn tables_stop_at_their_bound() {
        let mut discovery = discovery(3);
        let until = unix_now() + 600;
        let mut peers = Vec::new();
        for _ in 0..5 {
            let identity = Keypair::generate_secp256k1();
            let peer = identity.public().to_peer_id();
            let event = discovery.validate(peer, &signed_record(&identity, until), true);
            assert!(matches!(event, Event::NodeFound { .. }), "{event:?}");
            peers.push(peer);
        }
        assert_eq!(discovery.known_nodes(), 3);
        assert_eq!(discovery.metrics().peers_untracked("known"), 2);

        for _ in 0..5 {
            discovery.queue_fetch(PeerId::random());
        }
        assert_eq!(discovery.queued.len(), 3);
        assert_eq!(discovery.metrics().peers_untracked("queue"), 2);
        let known = *discovery.known.keys().next().unwrap();
        discovery.known.get_mut(&known).unwrap().fetched -= discovery.config.refetch_interval;
        discovery.queue_fetch(known);
        assert_eq!(discovery.queued.front(), Some(&known), "a known node goes first");

        discovery.forget(&known);
        assert_eq!(discovery.known_nodes(), 2);
    }

    /// Anyone may PUT any valid record: a PUT adds no node to `known`, and a PUT of a known
    /// node's record (an old one, replayed) does not count as fetching it, so it cannot keep
    /// the node from being fetched again (and its new keys learned).
    #[test]
    fn records_put_by_others_neither_fill_the_table_nor_pass_for_a_fetch() {
        let mut discovery = discovery(16);
        let until = unix_now() + 600;
        let stranger = Keypair::generate_secp256k1();
        let put = discovery.validate(
            stranger.public().to_peer_id(),
            &signed_record(&stranger, until),
            false,
        );
        assert!(matches!(put, Event::NodeFound { .. }), "handed on all the same: {put:?}");
        assert_eq!(discovery.known_nodes(), 0);

        let honest = Keypair::generate_secp256k1();
        let peer = honest.public().to_peer_id();
        let record = signed_record(&honest, until);
        discovery.validate(peer, &record, true);
        let fetched = discovery.known[&peer].fetched - discovery.config.refetch_interval;
        discovery.known.get_mut(&peer).unwrap().fetched = fetched;
        discovery.validate(peer, &record, false);
        assert_eq!(discovery.known[&peer].fetched, fetched);
    }

    /// Entries go when their record runs out (known) or a record lifetime after the peer was
    /// first missed (missing), so the tables do not fill with peers long gone.
    #[test]
    fn walks_forget_expired_and_long_missing_peers() {
        let mut discovery = discovery(16);
        // Short, so that the instants below exist however recently the machine booted.
        discovery.config.record_lifetime = Duration::from_secs(2);
        let now = Instant::now();
        let old = now.checked_sub(Duration::from_secs(3)).unwrap();
        let past = now.checked_sub(Duration::from_secs(1)).unwrap();
        let (a, b, c, d) = (PeerId::random(), PeerId::random(), PeerId::random(), PeerId::random());
        discovery.known.insert(a, Known { seq: 1, fetched: now, expires: past });
        discovery.known.insert(b, Known { seq: 1, fetched: now, expires: now + MINUTE });
        discovery.missing.insert(c, Missing { since: old, asked: now });
        discovery.missing.insert(d, Missing { since: past, asked: now });
        discovery.walk();
        assert_eq!(discovery.known.keys().collect::<Vec<_>>(), [&b]);
        assert_eq!(discovery.missing.keys().collect::<Vec<_>>(), [&d]);
    }

    const MINUTE: Duration = Duration::from_secs(60);
}
