//! The gossip layer at thousands of nodes, in virtual time: the same state machine a node runs
//! (`mix_gossip::State`), peers numbered, messages carried by a discrete-event network.
//!
//! The network delays each message by a latency drawn per message (uniform in a range), and
//! keeps each link's messages in order, as a stream over TCP or QUIC does. It acts as the
//! transport's failure detector, in one of two crash models: [`CrashModel::Reset`] (the
//! process died, its host's kernel resets the connections: every node connected to it hears
//! of it one latency later) and [`CrashModel::Silent`] (the host vanished: what is sent to it
//! is lost until keep-alives time out). A message to a dead node with no connection fails
//! after a dial timeout. Connections exist between nodes that sent each other something and
//! were not released.
//!
//! Measured per broadcast: the share of live nodes that delivered it, the relative message
//! redundancy (RMR: payload messages over deliveries, minus one), the last delivery hop (LDH:
//! hops are counted by the simulator from who delivered to whom; nothing on the wire carries
//! them) and the time to the last delivery. Spies are ordinary nodes that log what reaches
//! them; the first-spy estimator names, for each message, the peer the earliest spy got it
//! from.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mix_gossip::proto::{Body, Config, Event, Message, MessageId, Output, PeerFilter, Timer};
use mix_gossip::{AllowAll, Route, State, TopicId};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::{ChaCha12Rng, ChaCha20Rng};

/// A simulated peer.
pub type Peer = u32;

/// Network timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Least one-way latency.
    pub min: Duration,
    /// Greatest one-way latency.
    pub max: Duration,
    /// How long a message to a dead node takes to fail.
    pub dial_timeout: Duration,
    /// Time through the mixnet (Route::Mix), one way.
    pub mix: Duration,
    /// How long a connection to a silently crashed node takes to be declared dead
    /// ([`CrashModel::Silent`]).
    pub silent_detect: Duration,
}

/// How the survivors of a crash learn of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrashModel {
    /// Connections are reset: each survivor hears one latency later.
    #[default]
    Reset,
    /// Nothing is heard: messages on a connection to a dead node are lost until the
    /// connection times out ([`Latency::silent_detect`]).
    Silent,
}

/// What the gossip driver takes at most, by default, to notice a silent neighbour.
pub(crate) fn silent_detect_default() -> Duration {
    mix_gossip::proto::silent_neighbour_detection(mix_gossip::LIVENESS_TIMEOUT)
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(10),
            max: Duration::from_millis(50),
            dial_timeout: Duration::from_millis(200),
            mix: Duration::from_millis(300),
            silent_detect: silent_detect_default(),
        }
    }
}

#[derive(Debug)]
enum Ev {
    Deliver { to: Peer, from: Peer, message: Message<Peer> },
    Timer { node: Peer, timer: Timer },
    Disconnected { node: Peer, peer: Peer },
    MixArrive { to: Peer, from: Peer, topic: TopicId, data: Vec<u8> },
}

struct Queued {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What was seen of one broadcast.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Its publisher.
    pub publisher: Peer,
    /// When it was published.
    pub started: Option<Instant>,
    /// Who delivered it, at which hop of the broadcast, when.
    pub delivered: HashMap<Peer, (u32, Instant)>,
    /// Payload messages sent.
    pub payloads: u64,
    /// The first spy reception: (when, spy, from).
    pub first_spy: Option<(Instant, Peer, Peer)>,
    /// Live nodes when it was published.
    pub alive: usize,
    /// Grafts sent for it (the tree needed repair).
    pub grafts: u64,
    /// Each spy's first reception of it, in order.
    pub observations: Vec<Observation>,
    /// Members a mix publication was handed to, one per attempt.
    pub rebroadcasters: Vec<Peer>,
}

/// What a spy saw first of a message: when, from whom, and in what.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// When it arrived.
    pub at: Instant,
    /// The spy.
    pub spy: Peer,
    /// The peer that sent it.
    pub from: Peer,
    /// What carried it.
    pub kind: Carried,
}

/// What carried a message to a spy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// A stem relay.
    Stem,
    /// The payload, pushed eagerly.
    Gossip,
    /// Its id, announced lazily.
    IHave,
}

/// How the attacker's nodes behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Like every node: they only log what reaches them.
    #[default]
    Passive,
    /// They make themselves neighbours of as many nodes as the protocol lets them: large
    /// active views that accept everyone, every neighbour request sent with high priority,
    /// never a disconnect to an honest node.
    Placed,
    /// [`Role::Placed`], and they poison views: every contact they hand out in a shuffle, a
    /// shuffle reply or a forwarded join names one of them.
    Sybil,
}

/// The attacker's identities and conduct, fixed when the network is built.
#[derive(Debug, Clone, Default)]
pub struct Attack {
    /// Its nodes (they are also the spies).
    pub nodes: HashSet<Peer>,
    /// How they behave.
    pub role: Role,
    /// The settings they run (for [`Role::Placed`] and [`Role::Sybil`]); `None`: the
    /// network's.
    pub config: Option<Config>,
}

impl Trace {
    /// Share of the nodes alive at publication that delivered it (the publisher included).
    pub fn delivery(&self, alive: &HashSet<Peer>) -> f64 {
        let got = self.delivered.keys().filter(|p| alive.contains(p)).count();
        got as f64 / alive.len().max(1) as f64
    }

    /// Relative message redundancy: payloads over deliveries minus one.
    pub fn rmr(&self) -> f64 {
        let n = self.delivered.len() as f64;
        if n <= 1.0 {
            return 0.0;
        }
        self.payloads as f64 / (n - 1.0) - 1.0
    }

    /// The last delivery hop.
    pub fn ldh(&self) -> u32 {
        self.delivered.values().map(|(h, _)| *h).max().unwrap_or(0)
    }

    /// Time to the last delivery.
    pub fn duration(&self) -> Duration {
        let Some(start) = self.started else { return Duration::ZERO };
        self.delivered
            .values()
            .map(|(_, t)| t.saturating_duration_since(start))
            .max()
            .unwrap_or_default()
    }
}

/// Counters of membership activity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Neighbour changes (up events).
    pub neighbor_ups: u64,
    /// Neighbours rotated out.
    pub rotations: u64,
    /// Peers the filter refused.
    pub refusals: u64,
    /// Messages ignored, for any [`mix_gossip::IgnoreReason`].
    pub ignored: u64,
    /// Nodes that found themselves isolated.
    pub isolated: u64,
    /// Messages sent, all kinds.
    pub messages: u64,
    /// Messages lost on connections to silently crashed nodes.
    pub lost: u64,
}

/// A hook called with a node and its active view whenever the view changes.
pub type ViewCheck = Box<dyn FnMut(Peer, &[Peer])>;

/// The filter each node runs, by node.
pub type FilterOf = Box<dyn Fn(Peer) -> Arc<dyn PeerFilter<Peer>>>;

/// A simulated network.
pub struct Network {
    nodes: Vec<Option<State<Peer, ChaCha12Rng>>>,
    config: Config,
    filter_of: FilterOf,
    seed: u64,
    /// Nodes that log what they receive.
    pub spies: HashSet<Peer>,
    topic: TopicId,
    /// Virtual now.
    pub now: Instant,
    start: Instant,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    rng: ChaCha20Rng,
    latency: Latency,
    conns: HashSet<(Peer, Peer)>,
    /// Connections from a live node to a silently crashed one, not yet timed out.
    dead_links: HashSet<(Peer, Peer)>,
    /// Broadcasts, by id.
    pub traces: HashMap<MessageId, Trace>,
    /// Counters.
    pub counters: Counters,
    /// When each rotation's replacement came: (node, rotated at).
    rotated: HashMap<Peer, Vec<Instant>>,
    /// Times from a neighbour rotated out to a replacement neighbour, per rotation.
    pub repair_times: Vec<Duration>,
    /// Called on every neighbour change with the active views (property tests).
    pub check: Option<ViewCheck>,
    /// The broadcast being waited for, and the live nodes that have not delivered it.
    watch: Option<(MessageId, HashSet<Peer>)>,
    /// When the last message on each directed link arrives: links keep their order, as a
    /// stream over TCP or QUIC does.
    last_arrival: HashMap<(Peer, Peer), Instant>,
    attack: Attack,
    /// Every node gets the whole membership as its rebroadcaster directory.
    directory: bool,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").field("nodes", &self.nodes.len()).finish_non_exhaustive()
    }
}

impl Network {
    /// `n` nodes with `config` and `filter`, each joining the topic through up to `bootstrap`
    /// earlier nodes, a millisecond apart.
    pub fn new(
        n: usize,
        config: &Config,
        filter: Arc<dyn PeerFilter<Peer>>,
        latency: Latency,
        bootstrap: usize,
        seed: u64,
    ) -> Self {
        Self::with_filters(n, config, Box::new(move |_| filter.clone()), latency, bootstrap, seed)
    }

    /// Like [`Network::new`], each node running the filter `filter_of` gives it (nodes added
    /// later too).
    pub fn with_filters(
        n: usize,
        config: &Config,
        filter_of: FilterOf,
        latency: Latency,
        bootstrap: usize,
        seed: u64,
    ) -> Self {
        Self::with_attack(n, config, filter_of, latency, bootstrap, seed, Attack::default(), false)
    }

    /// Like [`Network::with_filters`], with the attacker's nodes in place from the start
    /// (they are the spies), and, if `directory`, every node's rebroadcaster directory set
    /// to the whole membership (what the mixnet's discovery records give a node).
    #[allow(clippy::too_many_arguments, reason = "one constructor for every setting")]
    pub fn with_attack(
        n: usize,
        config: &Config,
        filter_of: FilterOf,
        latency: Latency,
        bootstrap: usize,
        seed: u64,
        attack: Attack,
        directory: bool,
    ) -> Self {
        let now = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let topic = TopicId::from_name("sim");
        let mut net = Self {
            nodes: Vec::with_capacity(n),
            config: config.clone(),
            filter_of,
            seed,
            topic,
            now,
            start: now,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: ChaCha20Rng::seed_from_u64(seed ^ 0x5eed),
            latency,
            conns: HashSet::new(),
            dead_links: HashSet::new(),
            traces: HashMap::new(),
            counters: Counters::default(),
            rotated: HashMap::new(),
            repair_times: Vec::new(),
            check: None,
            watch: None,
            last_arrival: HashMap::new(),
            spies: attack.nodes.clone(),
            attack,
            directory,
        };
        for i in 0..n {
            net.nodes.push(Some(net.state(i as Peer)));
        }
        for i in 0..n {
            let contacts: Vec<Peer> = if i == 0 {
                Vec::new()
            } else {
                let mut c: Vec<Peer> =
                    (0..bootstrap).map(|_| rng.random_range(0..i) as Peer).collect();
                c.sort_unstable();
                c.dedup();
                c
            };
            let at = now + Duration::from_millis(i as u64);
            net.run_until(at);
            // The directory lists the members running so far (the discovery records a node
            // finds when it starts), and all of them once every node runs.
            if directory {
                net.with_node(i as Peer, |s, _, _| s.set_directory(0..=i as Peer));
            }
            net.with_node(i as Peer, |s, now, topic| s.join(now, topic, contacts));
        }
        if directory {
            for i in 0..n {
                net.with_node(i as Peer, |s, _, _| s.set_directory(0..n as Peer));
            }
        }
        net
    }

    fn state(&self, peer: Peer) -> State<Peer, ChaCha12Rng> {
        let rng = ChaCha12Rng::seed_from_u64(self.seed.wrapping_mul(1_000_003) ^ u64::from(peer));
        let config = match &self.attack.config {
            Some(c) if self.attack.nodes.contains(&peer) => c.clone(),
            _ => self.config.clone(),
        };
        State::new(peer, config, rng).with_filter((self.filter_of)(peer))
    }

    /// The attacker's nodes.
    pub fn attackers(&self) -> &HashSet<Peer> {
        &self.attack.nodes
    }

    /// The attacker's nodes if it placed any, else the spies.
    pub fn attackers_or_spies(&self) -> &HashSet<Peer> {
        if self.attack.nodes.is_empty() { &self.spies } else { &self.attack.nodes }
    }

    /// Nodes ever created, dead ones included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the network has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `peer`'s active and passive views together (empty if it is dead).
    pub fn views(&self, peer: Peer) -> Vec<Peer> {
        self.node(peer).map_or_else(Vec::new, |s| {
            let mut v: Vec<Peer> =
                s.neighbors(&self.topic).iter().chain(s.contacts(&self.topic)).copied().collect();
            v.sort_unstable();
            v.dedup();
            v
        })
    }

    /// Whether nodes draw rebroadcasters from the directory.
    pub fn uses_directory(&self) -> bool {
        self.directory
    }

    /// The latency model (what an attacker is assumed to know).
    pub fn latency_model(&self) -> Latency {
        self.latency
    }

    /// What the attacker's node `from` sends instead of `message` to `to`; `None`: nothing.
    fn as_attacker(
        &mut self,
        from: Peer,
        to: Peer,
        mut message: Message<Peer>,
    ) -> Option<Message<Peer>> {
        let role = self.attack.role;
        if role == Role::Passive
            || !self.attack.nodes.contains(&from)
            || self.attack.nodes.contains(&to)
        {
            return Some(message);
        }
        let sybil = role == Role::Sybil;
        let mut ours: Vec<Peer> = Vec::new();
        if sybil {
            ours = self.attack.nodes.iter().copied().collect();
            ours.sort_unstable();
        }
        match &mut message.body {
            Body::Neighbor { high } => *high = true,
            Body::Disconnect { .. } => return None,
            Body::Shuffle { peers, .. } | Body::ShuffleReply { peers, .. } if sybil => {
                for p in peers.iter_mut() {
                    *p = ours[self.rng.random_range(0..ours.len())];
                }
            }
            Body::ForwardJoin { peer, .. } if sybil => {
                *peer = ours[self.rng.random_range(0..ours.len())];
            }
            _ => {}
        }
        Some(message)
    }

    /// A new node joins through `bootstrap` random live nodes; returns it.
    pub fn add_node(&mut self, bootstrap: usize) -> Peer {
        let mut alive: Vec<Peer> = self.alive().into_iter().collect();
        alive.sort_unstable();
        let mut contacts: Vec<Peer> = (0..bootstrap.min(alive.len()))
            .map(|_| alive[self.rng.random_range(0..alive.len())])
            .collect();
        contacts.sort_unstable();
        contacts.dedup();
        let peer = self.nodes.len() as Peer;
        let mut node = self.state(peer);
        if self.directory {
            node.set_directory(0..=peer);
        }
        self.nodes.push(Some(node));
        self.with_node(peer, |s, now, topic| s.join(now, topic, contacts));
        peer
    }

    /// Rotates `count` of `peer`'s neighbours now, out of turn.
    pub fn rotate(&mut self, peer: Peer, count: usize) {
        self.with_node(peer, |s, now, topic| s.rotate_now(now, &topic, count));
    }

    /// Shorthand: admit everyone.
    pub fn allow_all() -> Arc<dyn PeerFilter<Peer>> {
        Arc::new(AllowAll)
    }

    /// Events waiting, by kind (for diagnosis).
    pub fn queued(&self) -> (usize, usize) {
        let timers = self.queue.iter().filter(|q| matches!(q.0.ev, Ev::Timer { .. })).count();
        (self.queue.len(), timers)
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Nodes alive.
    pub fn alive(&self) -> HashSet<Peer> {
        (0..self.nodes.len() as Peer).filter(|i| self.nodes[*i as usize].is_some()).collect()
    }

    /// The node, if alive.
    pub fn node(&self, peer: Peer) -> Option<&State<Peer, ChaCha12Rng>> {
        self.nodes.get(peer as usize).and_then(Option::as_ref)
    }

    /// The topic every node joined.
    pub fn topic(&self) -> TopicId {
        self.topic
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued { at, seq: self.seq, ev }));
    }

    fn latency(&mut self) -> Duration {
        let (min, max) = (self.latency.min.as_secs_f64(), self.latency.max.as_secs_f64());
        Duration::from_secs_f64(if max > min { self.rng.random_range(min..max) } else { min })
    }

    fn with_node(
        &mut self,
        peer: Peer,
        f: impl FnOnce(&mut State<Peer, ChaCha12Rng>, Instant, TopicId),
    ) {
        let now = self.now;
        let topic = self.topic;
        let Some(state) = self.nodes.get_mut(peer as usize).and_then(Option::as_mut) else {
            return;
        };
        f(state, now, topic);
        self.drain(peer);
    }

    /// Carries out what `node` asked for.
    fn drain(&mut self, node: Peer) {
        loop {
            let Some(output) = self.nodes[node as usize].as_mut().and_then(State::poll_output)
            else {
                return;
            };
            match output {
                Output::Send { to, message } => {
                    if let Some(message) = self.as_attacker(node, to, message) {
                        self.send(node, to, message);
                    }
                }
                Output::Timer { at, timer } => self.push(at, Ev::Timer { node, timer }),
                Output::Event(event) => self.on_event(node, event),
                Output::Disconnect(peer) => {
                    self.conns.remove(&pair(node, peer));
                    self.last_arrival.remove(&(node, peer));
                    self.last_arrival.remove(&(peer, node));
                }
                Output::MixPublish { to, topic, data } => {
                    if let Some(t) = self.traces.get_mut(&MessageId::of(&topic, &data)) {
                        t.rebroadcasters.push(to);
                    }
                    let at = self.now + self.latency.mix;
                    self.push(at, Ev::MixArrive { to, from: node, topic, data });
                }
            }
        }
    }

    fn send(&mut self, from: Peer, to: Peer, message: Message<Peer>) {
        self.counters.messages += 1;
        match &message.body {
            Body::Gossip { id, .. } => {
                if let Some(t) = self.traces.get_mut(id) {
                    t.payloads += 1;
                }
            }
            Body::Graft { id: Some(id) } => {
                if let Some(t) = self.traces.get_mut(id) {
                    t.grafts += 1;
                }
            }
            _ => {}
        }
        if self.dead_links.contains(&(from, to)) {
            self.counters.lost += 1;
            return;
        }
        if self.nodes.get(to as usize).is_some_and(Option::is_some) {
            self.conns.insert(pair(from, to));
            let drawn = self.now + self.latency();
            let last = self.last_arrival.entry((from, to)).or_insert(drawn);
            let at = drawn.max(*last);
            *last = at;
            self.push(at, Ev::Deliver { to, from, message });
        } else {
            let at = self.now + self.latency.dial_timeout;
            self.push(at, Ev::Disconnected { node: from, peer: to });
        }
    }

    fn on_event(&mut self, node: Peer, event: Event<Peer>) {
        match event {
            Event::Received { id, from, .. } => {
                let now = self.now;
                let Some(t) = self.traces.get_mut(&id) else { return };
                let hop = t.delivered.get(&from).map_or(1, |(h, _)| h + 1);
                t.delivered.entry(node).or_insert((hop, now));
                if let Some((watched, missing)) = self.watch.as_mut()
                    && *watched == id
                {
                    missing.remove(&node);
                }
            }
            Event::NeighborUp { peer, .. } => {
                self.counters.neighbor_ups += 1;
                if let Some(times) = self.rotated.get_mut(&node)
                    && let Some(at) = times.pop()
                {
                    self.repair_times.push(self.now.saturating_duration_since(at));
                }
                let _ = peer;
                self.run_check(node);
            }
            Event::NeighborDown { reason, .. } => {
                if reason == mix_gossip::DownReason::Rotated {
                    self.counters.rotations += 1;
                    self.rotated.entry(node).or_default().push(self.now);
                }
            }
            Event::Refused { .. } => self.counters.refusals += 1,
            Event::Ignored { .. } => self.counters.ignored += 1,
            Event::Isolated { .. } => self.counters.isolated += 1,
            Event::PublishConfirmed { .. } | Event::PublishFailed { .. } => {}
        }
    }

    fn run_check(&mut self, node: Peer) {
        if let Some(mut check) = self.check.take() {
            let topic = self.topic;
            if let Some(state) = self.node(node) {
                check(node, state.neighbors(&topic));
            }
            self.check = Some(check);
        }
    }

    fn spy_logs(&mut self, to: Peer, from: Peer, message: &Message<Peer>) {
        if !self.spies.contains(&to) {
            return;
        }
        let (ids, kind): (Vec<MessageId>, Carried) = match &message.body {
            Body::Gossip { id, .. } => (vec![*id], Carried::Gossip),
            Body::Stem { id, .. } => (vec![*id], Carried::Stem),
            Body::IHave { ids } => (ids.clone(), Carried::IHave),
            _ => return,
        };
        let now = self.now;
        for id in ids {
            if let Some(t) = self.traces.get_mut(&id) {
                if t.first_spy.is_none() {
                    t.first_spy = Some((now, to, from));
                }
                if !t.observations.iter().any(|o| o.spy == to) {
                    t.observations.push(Observation { at: now, spy: to, from, kind });
                }
            }
        }
    }

    /// Handles the next event; `false` if none is due before `until`.
    fn step(&mut self, until: Instant) -> bool {
        let Some(Reverse(next)) = self.queue.peek() else { return false };
        if next.at > until {
            return false;
        }
        let Some(Reverse(q)) = self.queue.pop() else { return false };
        self.now = self.now.max(q.at);
        match q.ev {
            Ev::Deliver { to, from, message } => {
                self.spy_logs(to, from, &message);
                self.with_node(to, |s, now, _| s.handle_message(now, from, message));
            }
            Ev::Timer { node, timer } => {
                self.with_node(node, |s, now, _| s.handle_timer(now, timer))
            }
            Ev::Disconnected { node, peer } => {
                self.conns.remove(&pair(node, peer));
                self.dead_links.remove(&(node, peer));
                self.with_node(node, |s, now, _| s.handle_disconnected(now, peer));
            }
            Ev::MixArrive { to, from, topic, data } => {
                if self.nodes.get(to as usize).is_some_and(Option::is_some) {
                    self.with_node(to, |s, now, _| {
                        // Every simulated node is in the topic and sends small messages.
                        let _ = s.handle_mix_delivery(now, &topic, data);
                    });
                } else {
                    self.with_node(from, |s, now, _| s.mix_failed(now, &topic, &data));
                }
            }
        }
        true
    }

    /// Runs every event due up to `until`.
    pub fn run_until(&mut self, until: Instant) {
        while self.step(until) {}
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Publishes from `publisher` and runs until every live node has it or `limit` passed;
    /// returns its id.
    pub fn broadcast(
        &mut self,
        publisher: Peer,
        route: Route,
        limit: Duration,
    ) -> Option<MessageId> {
        let data = {
            let mut d = vec![0u8; 64];
            self.rng.fill_bytes(&mut d);
            d
        };
        let topic = self.topic;
        let id = MessageId::of(&topic, &data);
        let alive = self.alive();
        let now = self.now;
        let mut trace =
            Trace { publisher, started: Some(now), alive: alive.len(), ..Trace::default() };
        trace.delivered.insert(publisher, (0, now));
        self.traces.insert(id, trace);
        let mut published = false;
        self.with_node(publisher, |s, now, topic| {
            published = s.publish(now, &topic, data, route).is_ok();
        });
        if !published {
            self.traces.remove(&id);
            return None;
        }
        let mut missing = alive;
        missing.remove(&publisher);
        self.watch = Some((id, missing));
        let end = self.now + limit;
        while self.now < end {
            let done = self.watch.as_ref().is_some_and(|(_, m)| m.is_empty());
            if done || !self.step(end) {
                break;
            }
        }
        self.watch = None;
        Some(id)
    }

    /// A random live node.
    pub fn random_alive(&mut self) -> Option<Peer> {
        let alive: Vec<Peer> = self.alive().into_iter().collect();
        let mut alive = alive;
        alive.sort_unstable();
        (!alive.is_empty()).then(|| alive[self.rng.random_range(0..alive.len())])
    }

    /// Crashes a share of the nodes at once (never `keep`); their connections die.
    pub fn crash(&mut self, share: f64, keep: &[Peer]) -> Vec<Peer> {
        self.crash_with(share, keep, CrashModel::Reset)
    }

    /// Crashes a share of the nodes (never `keep`) at once, the survivors learning of it as
    /// `model` says; returns the dead.
    pub fn crash_with(&mut self, share: f64, keep: &[Peer], model: CrashModel) -> Vec<Peer> {
        let mut alive: Vec<Peer> = self.alive().into_iter().filter(|p| !keep.contains(p)).collect();
        alive.sort_unstable();
        let n = ((self.nodes.len() as f64) * share).round() as usize;
        for i in 0..n.min(alive.len()) {
            let j = self.rng.random_range(i..alive.len());
            alive.swap(i, j);
        }
        alive.truncate(n);
        let dead: HashSet<Peer> = alive.iter().copied().collect();
        for &p in &alive {
            self.nodes[p as usize] = None;
        }
        let mut broken: Vec<(Peer, Peer)> = self
            .conns
            .iter()
            .copied()
            .filter(|(a, b)| dead.contains(a) || dead.contains(b))
            .collect();
        // In a fixed order: each draws a latency, and a set's order changes from run to run.
        broken.sort_unstable();
        for (a, b) in broken {
            self.conns.remove(&(a, b));
            let (live, gone) = if dead.contains(&a) { (b, a) } else { (a, b) };
            if !dead.contains(&live) {
                let at = match model {
                    CrashModel::Reset => self.now + self.latency(),
                    CrashModel::Silent => {
                        self.dead_links.insert((live, gone));
                        self.now + self.latency.silent_detect
                    }
                };
                self.push(at, Ev::Disconnected { node: live, peer: gone });
            }
        }
        alive
    }

    /// Marks a share of the nodes as spies (never `keep`).
    pub fn pick_spies(&mut self, share: f64) {
        let n = ((self.nodes.len() as f64) * share).round() as usize;
        let mut all: Vec<Peer> = (0..self.nodes.len() as Peer).collect();
        for i in 0..n.min(all.len()) {
            let j = self.rng.random_range(i..all.len());
            all.swap(i, j);
        }
        self.spies = all.into_iter().take(n).collect();
    }

    /// Replaces `peer`'s filter (then refilters it).
    pub fn set_node_filter(&mut self, peer: Peer, filter: Arc<dyn PeerFilter<Peer>>) {
        self.with_node(peer, |s, now, topic| {
            s.set_filter(filter);
            s.refilter(now, &topic);
        });
    }

    /// Replaces every node's filter (then refilters).
    pub fn set_filter(&mut self, filter: Arc<dyn PeerFilter<Peer>>) {
        for i in 0..self.nodes.len() as Peer {
            let f = filter.clone();
            self.with_node(i, |s, now, topic| {
                s.set_filter(f);
                s.refilter(now, &topic);
            });
        }
    }

    /// Every forwarding batch size flushed so far, over all nodes; drained.
    pub fn take_batch_sizes(&mut self) -> Vec<usize> {
        self.nodes.iter_mut().flatten().flat_map(State::take_batch_sizes).collect()
    }
}

/// A connection's key, whichever end names it.
fn pair(a: Peer, b: Peer) -> (Peer, Peer) {
    if a < b { (a, b) } else { (b, a) }
}
