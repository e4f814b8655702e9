//! Mix nodes in virtual time: the node's own core (`libp2p_mix::core::MixCore`) with the
//! node's settings, real Sphinx packets, a seeded RNG, and a network whose latency follows
//! the nodes' places on a map. Every link event goes to the record the adversary analyses
//! ([`super::analysis`]); the trace of what it saw can be written out ([`MixTrace`]).
//!
//! Traffic: every node forwards; a share of them send messages, requests (answered at once
//! through their SURBs), bursts or streams' shards to random other nodes, which deliver them
//! as the last hop. Cover traffic is the core's own (loops, or Loopix's slots and drops).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p_identity::{Keypair, PeerId, secp256k1};
use libp2p_mix::core::{
    Config, CoverConfig, CoverMode, DelayStrategy, Destination, DynamicPool, ExponentialDelay,
    MixCore, MixNode, NoDelay, Output, PacketKind, PathSelection, ReplayConfig, SendOptions,
};
use mix_sphinx::{NodeSecretKey, Packet};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::analysis::{self, Flow, FlowKind, MixSimReport};
use super::observer::{Layers, PacketId, Rates, Step};
use super::scenario::{CoverKind, MixScenario, PathMode, TrafficKind};
use super::trace::{LinkRow, MixTrace, PacketTruth};

/// Packet ids: a flow's copies (or a request's replies, one per SURB) are `flow * 8 + i`;
/// cover packets count up from here.
const COVER_BASE: PacketId = 1 << 62;
const COPIES_PER_FLOW: u64 = 8;
/// The longest a run goes on in virtual time.
const MAX_VIRTUAL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The node's core has a timer due.
    Timer(usize),
    /// A transmission arrives (index into the packets in flight).
    Arrive(u64),
    /// The node sends its next message, request, burst or stream.
    Send(usize),
}

/// The nodes' places: one-way latency grows with the distance between two places.
struct Map {
    places: Vec<(f64, f64)>,
    min: f64,
    span: f64,
}

impl Map {
    fn new(rng: &mut ChaCha20Rng, n: usize, min_ms: f64, max_ms: f64) -> Self {
        let places = (0..n).map(|_| (rng.random::<f64>(), rng.random::<f64>())).collect();
        Self { places, min: min_ms, span: max_ms - min_ms }
    }

    /// The typical one-way latency from `a` to `b`.
    fn base(&self, a: usize, b: usize) -> Duration {
        let (x, y) = (self.places[a].0 - self.places[b].0, self.places[a].1 - self.places[b].1);
        let distance = (x * x + y * y).sqrt() / std::f64::consts::SQRT_2;
        Duration::from_secs_f64((self.min + self.span * distance) / 1000.0)
    }

    /// One transmission's latency: the typical one, up to 10 % more.
    fn draw(&self, a: usize, b: usize, rng: &mut ChaCha20Rng) -> Duration {
        self.base(a, b).mul_f64(1.0 + 0.1 * rng.random::<f64>())
    }
}

/// Runs the scenario (which [`MixScenario::validate`] accepted).
pub fn run(scenario: &MixScenario) -> MixSimReport {
    run_traced(scenario, false).0
}

/// Runs the scenario and, with `keep_trace`, keeps what the observer saw and the ground truth.
///
/// # Panics
/// On a simulator bug (a packet the observer cannot place), never on a valid scenario.
pub fn run_traced(scenario: &MixScenario, keep_trace: bool) -> (MixSimReport, Option<MixTrace>) {
    let mut sim = Sim::new(scenario, keep_trace);
    while let Some(Reverse((now, _, event))) = sim.queue.pop() {
        if sim.attempts >= scenario.messages
            && (sim.outstanding <= 0 || now > sim.last_send + sim.patience)
        {
            break;
        }
        if now > sim.start + MAX_VIRTUAL {
            // A scenario too slow to finish (a tiny rate) stops with what it sent.
            break;
        }
        let (touched, arrived) = match event {
            Event::Send(i) => match sim.on_send(now, i) {
                Some(i) => (i, None),
                None => continue,
            },
            Event::Timer(i) => {
                if sim.timer_at[i] != Some(now) {
                    continue;
                }
                sim.timer_at[i] = None;
                sim.cores[i].handle_timeout(now);
                (i, None)
            }
            Event::Arrive(flight) => sim.on_arrive(now, flight),
        };
        sim.on_outputs(now, touched, arrived);
        if let Some(due) = sim.cores[touched].poll_timeout()
            && sim.timer_at[touched].is_none_or(|t| due < t)
        {
            sim.timer_at[touched] = Some(due.max(now));
            sim.push(due.max(now), Event::Timer(touched));
        }
    }
    sim.finish()
}

/// One run: the cores, the network between them, the event queue, and what the adversary's
/// record and the ground truth gather.
struct Sim<'a> {
    s: &'a MixScenario,
    rng: ChaCha20Rng,
    /// Mix nodes (`..n`) first, then the clients (which send but do not forward).
    n: usize,
    start: Instant,
    entries: Vec<MixNode>,
    index: HashMap<PeerId, usize>,
    map: Map,
    cores: Vec<MixCore<ChaCha20Rng>>,
    corrupt: Vec<bool>,
    queue: BinaryHeap<Reverse<(Instant, u64, Event)>>,
    order: u64,
    /// When each core's timer event is queued for.
    timer_at: Vec<Option<Instant>>,
    steps: Vec<Step>,
    flows: Vec<Flow>,
    trace: Option<MixTrace>,
    /// Each node's numbers for the packets it holds, to their ground-truth identity.
    numbers: Vec<HashMap<u64, PacketId>>,
    /// Under Loopix cover, a node's own packets wait for a slot, and every slot sends a packet
    /// (own, or a drop): the observer sees a packet start at each slot, never at the
    /// application's call. Their start is recorded when they leave (numbers listed here).
    slotted: Vec<Option<HashSet<u64>>>,
    in_flight: HashMap<u64, (usize, PacketId, Packet, usize)>,
    next_flight: u64,
    next_cover: PacketId,
    attempts: usize,
    refused: usize,
    packets: u64,
    cover_packets: u64,
    /// Real packets (copies, replies) started and not yet ended: the run ends when none is
    /// left, or (some were dropped on the way) `patience` after the last send.
    outstanding: i64,
    last_send: Instant,
    patience: Duration,
    options: SendOptions,
    groups: u64,
}

impl<'a> Sim<'a> {
    fn new(s: &'a MixScenario, keep_trace: bool) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(s.seed);
        let n = s.nodes;
        let total = n + s.clients;
        let start = Instant::now();
        let (entries, secrets): (Vec<MixNode>, Vec<NodeSecretKey>) =
            (0..total).map(|i| node_entry(&mut rng, i)).unzip();
        let map = Map::new(&mut rng, total, s.latency_min_ms, s.latency_max_ms);
        let index = entries.iter().enumerate().map(|(i, e)| (*e.peer_id(), i)).collect();
        let cores = cores(s, &entries, secrets, &map, start);
        let mut corrupt = pick(&mut rng, n, s.corrupt);
        let mut sending = pick(&mut rng, n, s.senders);
        corrupt.resize(total, false);
        sending.resize(total, true);
        let slots = s.cover == CoverKind::Loopix;
        let mut sim = Self {
            s,
            rng,
            n,
            start,
            entries,
            index,
            map,
            cores,
            corrupt,
            queue: BinaryHeap::new(),
            order: 0,
            timer_at: Vec::new(),
            steps: Vec::new(),
            flows: Vec::new(),
            trace: keep_trace.then(MixTrace::default),
            numbers: vec![HashMap::new(); total],
            slotted: (0..total)
                .map(|i| (slots && (i >= n || s.node_cover)).then(HashSet::new))
                .collect(),
            in_flight: HashMap::new(),
            next_flight: 0,
            next_cover: COVER_BASE,
            attempts: 0,
            refused: 0,
            packets: 0,
            cover_packets: 0,
            outstanding: 0,
            last_send: start,
            patience: Duration::from_secs(30)
                + Duration::from_secs_f64(s.hop_delay_ms * (s.path_len as f64) * 20.0 / 1000.0),
            options: SendOptions {
                copies: s.copies,
                jitter: (s.traffic == TrafficKind::Stream)
                    .then(|| Duration::from_secs_f64(s.stream_jitter_ms / 1000.0)),
                ..SendOptions::default()
            },
            groups: 0,
        };
        let warmup = Duration::from_secs_f64(s.warmup_s);
        for (i, sends) in sending.into_iter().enumerate() {
            if sends {
                let at = start + warmup + sim.gap();
                sim.push(at, Event::Send(i));
            }
            sim.cores[i].handle_timeout(start);
            if let Some(due) = sim.cores[i].poll_timeout() {
                sim.push(due.max(start), Event::Timer(i));
            }
        }
        sim.timer_at =
            sim.cores.iter_mut().map(|c| c.poll_timeout().map(|d| d.max(start))).collect();
        sim
    }

    fn push(&mut self, at: Instant, event: Event) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, event)));
    }

    /// The time to a sender's next message: exponential at the scenario's rate.
    fn gap(&mut self) -> Duration {
        Duration::from_secs_f64(-(1.0 - self.rng.random::<f64>()).ln() / self.s.rate)
    }

    /// Node `i` sends its next message, request, burst or stream; `None` once every message
    /// was sent.
    fn on_send(&mut self, now: Instant, i: usize) -> Option<usize> {
        let (s, n) = (self.s, self.n);
        if self.attempts >= s.messages {
            return None;
        }
        let mut to = self.rng.random_range(0..if i < n { n - 1 } else { n });
        if i < n && to >= i {
            to += 1;
        }
        let dest = Destination::MixNode(*self.entries[to].peer_id());
        let group_size = s.group_size();
        let group = (group_size > 1).then(|| {
            self.groups += 1;
            self.groups - 1
        });
        for _ in 0..group_size.min(s.messages - self.attempts) {
            self.attempts += 1;
            let flow = self.flows.len() as u64;
            let body = flow.to_be_bytes();
            let before = self.cores[i].last_packet_number();
            let (kind, sent) = if s.traffic == TrafficKind::RequestReply {
                let r =
                    self.cores[i].request_with(now, &dest, "/sim/1", &body, s.surbs, self.options);
                (FlowKind::Request, r.is_ok())
            } else {
                let r = self.cores[i].send_with(now, &dest, "/sim/1", &body, self.options);
                (FlowKind::Message, r.is_ok())
            };
            if !sent {
                self.refused += 1;
                continue;
            }
            self.flows.push(Flow {
                sender: i,
                receiver: to,
                sent: now,
                kind,
                group,
                delivered: None,
                answers: None,
            });
            self.started(i, flow, before);
        }
        self.last_send = now;
        let at = now + self.gap();
        self.push(at, Event::Send(i));
        Some(i)
    }

    /// Records the packets node `i` started for `flow` (numbered after `before`).
    fn started(&mut self, i: usize, flow: u64, before: u64) {
        let after = self.cores[i].last_packet_number();
        for (copy, number) in (before + 1..=after).enumerate() {
            let id = flow * COPIES_PER_FLOW + copy as u64;
            self.numbers[i].insert(number, id);
            originate(&mut self.steps, &mut self.slotted[i], i, number, id);
            self.outstanding += 1;
        }
    }

    /// A transmission arrives: the node it reached, and the packet if it ended there.
    fn on_arrive(&mut self, now: Instant, flight: u64) -> (usize, Option<PacketId>) {
        let (to, id, packet, row) = self.in_flight.remove(&flight).expect("in flight");
        if let Some(t) = self.trace.as_mut() {
            t.links[row].arrived = now.duration_since(self.start);
        }
        let before = self.cores[to].last_packet_number();
        let handled = self.cores[to].handle_packet(now, packet).is_ok();
        let after = self.cores[to].last_packet_number();
        if handled && after > before {
            self.steps.push(Step::Arrive { node: to as u32, packet: id });
            for number in before + 1..=after {
                self.numbers[to].insert(number, id);
            }
            return (to, None);
        }
        // Delivered or consumed here at once, or dropped: the adversary links the end to the
        // arrival.
        self.steps.push(Step::Deliver { node: to as u32, packet: id });
        if id < COVER_BASE {
            self.outstanding -= 1;
        }
        if let Some(t) = self.trace.as_mut() {
            t.ended(id, to);
        }
        (to, Some(id))
    }

    /// What the call on node `touched` produced; `arrived` is the packet that ended there.
    fn on_outputs(&mut self, now: Instant, touched: usize, arrived: Option<PacketId>) {
        while let Some(output) = self.cores[touched].poll_output() {
            match output {
                Output::Transmit { peer, packet, trace: origin, .. } => {
                    let Some(&to) = self.index.get(&peer) else { continue };
                    self.on_transmit(now, touched, to, packet, origin.number, origin.kind);
                }
                Output::Deliver(delivery) => {
                    let Some(flow) = flow_of(&delivery.body, self.flows.len()) else { continue };
                    if self.flows[flow].delivered.is_none() {
                        self.flows[flow].delivered = arrived.map(|id| (id, now));
                    }
                    if delivery.replies > 0 {
                        self.answer(now, touched, flow, delivery.id);
                    }
                }
                Output::Reply { body, .. } => {
                    if let Some(flow) = flow_of(&body, self.flows.len())
                        && self.flows[flow].delivered.is_none()
                    {
                        self.flows[flow].delivered = arrived.map(|id| (id, now));
                    }
                }
                _ => {}
            }
        }
    }

    /// Node `from` sends a packet (its `number`) to `to`: the observer sees it leave.
    fn on_transmit(
        &mut self,
        now: Instant,
        from: usize,
        to: usize,
        packet: Packet,
        number: u64,
        kind: PacketKind,
    ) {
        let node = from as u32;
        let step = match self.numbers[from].remove(&number) {
            // An own packet that waited for a Loopix slot: the slot's packet.
            Some(packet) if self.slotted[from].as_mut().is_some_and(|w| w.remove(&number)) => {
                Step::Source { node, packet }
            }
            Some(packet) => Step::Depart { node, packet },
            None if kind == PacketKind::Cover => {
                let packet = self.next_cover;
                self.next_cover += 1;
                self.cover_packets += 1;
                if let Some(t) = self.trace.as_mut() {
                    t.packets.insert(packet, PacketTruth::cover(from));
                }
                Step::Source { node, packet }
            }
            // Not one the simulator started: the observer would have no vector.
            None => return,
        };
        let (Step::Depart { packet: id, .. } | Step::Source { packet: id, .. }) = step else {
            unreachable!("a departure")
        };
        self.steps.push(step);
        self.packets += 1;
        let row = self.trace.as_mut().map_or(0, |t| {
            t.links.push(LinkRow {
                sent: now.duration_since(self.start),
                arrived: Duration::ZERO,
                from,
                to,
                packet: id,
            });
            t.links.len() - 1
        });
        self.next_flight += 1;
        self.in_flight.insert(self.next_flight, (to, id, packet, row));
        let at = now + self.map.draw(from, to, &mut self.rng);
        self.push(at, Event::Arrive(self.next_flight));
    }

    /// The destination `node` answers request `flow` at once, through every SURB.
    fn answer(&mut self, now: Instant, node: usize, flow: usize, id: libp2p_mix::core::DeliveryId) {
        let reply = self.flows.len() as u64;
        let before = self.cores[node].last_packet_number();
        if self.cores[node].answer(now, id, &reply.to_be_bytes()).is_ok() {
            let requester = self.flows[flow].sender;
            self.flows.push(Flow {
                sender: node,
                receiver: requester,
                sent: now,
                kind: FlowKind::Reply,
                group: None,
                delivered: None,
                answers: Some(flow),
            });
            self.started(node, reply, before);
        }
    }

    /// The adversary's analysis of the run, and the trace.
    fn finish(mut self) -> (MixSimReport, Option<MixTrace>) {
        let (s, n, total) = (self.s, self.n, self.cores.len());
        if let Some(t) = self.trace.as_mut() {
            t.finish(&self.flows, &self.corrupt, n, COPIES_PER_FLOW);
        }
        let virtual_seconds = self.last_send.duration_since(self.start).as_secs_f64();
        let mut report = analysis::analyse(&analysis::Run {
            nodes: n,
            participants: total,
            corrupt: &self.corrupt,
            flows: &self.flows,
            steps: &self.steps,
            copies: s.copies,
            copies_per_flow: COPIES_PER_FLOW,
            cover_base: COVER_BASE,
            hop_likelihood: Some(hop_likelihood(s, &self.map, n, total)),
            layers: layers(s, &self.entries, n, total),
            rates: Some(rates(s, n, total)),
        });
        report.mode = s.paths.name();
        report.refused = self.refused;
        report.packets = self.packets;
        report.cover_packets = self.cover_packets;
        report.virtual_seconds = virtual_seconds;
        (report, self.trace)
    }
}

/// `share` of the `n` mix nodes, drawn uniformly.
fn pick(rng: &mut ChaCha20Rng, n: usize, share: f64) -> Vec<bool> {
    let count = ((share * n as f64).round() as usize).min(n);
    let mut marked = vec![false; n];
    for i in rand::seq::index::sample(rng, n, count) {
        marked[i] = true;
    }
    marked
}

/// Every participant's core with the scenario's settings: mix nodes serve, clients only send.
fn cores(
    s: &MixScenario,
    entries: &[MixNode],
    secrets: Vec<NodeSecretKey>,
    map: &Map,
    start: Instant,
) -> Vec<MixCore<ChaCha20Rng>> {
    let n = s.nodes;
    let mut pool = DynamicPool::new();
    for entry in &entries[..n] {
        pool.insert_static(entry.clone());
    }
    let config = core_config(s);
    entries
        .iter()
        .zip(secrets)
        .enumerate()
        .map(|(i, (entry, secret))| {
            let mut config = config.clone();
            if i >= n {
                config.tit_for_tat = false;
            } else if !s.node_cover {
                config.cover.mode = CoverMode::Off;
            }
            let mut core = MixCore::new(
                config,
                entry.clone(),
                secret,
                Box::new(pool.clone()),
                delay(s.hop_delay_ms),
                ChaCha20Rng::seed_from_u64(s.seed.wrapping_mul(1_000_003).wrapping_add(i as u64)),
            );
            core.set_wall_clock(start, Duration::from_secs(1_800_000_000));
            core.set_serving(i < n);
            if matches!(s.paths, PathMode::Rtt | PathMode::Hybrid) {
                // What the node's pings would have measured.
                for (j, other) in entries[..n].iter().enumerate() {
                    if j != i {
                        core.pool_mut().report_rtt(other.peer_id(), map.base(i, j) * 2);
                    }
                }
            }
            core
        })
        .collect()
}

/// Every node's layer (public: a hash of its peer id), with stratified paths.
fn layers(s: &MixScenario, entries: &[MixNode], n: usize, total: usize) -> Option<Layers> {
    let PathSelection::Layered { layers } = core_config(s).path_selection else { return None };
    let of = (0..total).map(|i| (i < n).then(|| entries[i].layer(layers))).collect();
    Some(Layers { of, count: layers })
}

/// How fast each participant lets packets go, as its settings say (see [`Rates`]).
fn rates(s: &MixScenario, n: usize, total: usize) -> Vec<Rates> {
    // A delay of 0 lets packets go at once: far faster than anything they wait with.
    let per_second = |mean_ms: f64| if mean_ms < 1.0 { 1e9 } else { 1000.0 / mean_ms };
    (0..total)
        .map(|i| {
            let cover = i >= n || s.node_cover;
            Rates {
                forward: per_second(s.hop_delay_ms),
                own: per_second(s.pre_send_delay_ms),
                source: match s.cover {
                    _ if !cover => 0.0,
                    CoverKind::Off => 0.0,
                    CoverKind::Loops => s.cover_rate,
                    CoverKind::Loopix => s.cover_rate + s.loop_rate,
                },
            }
        })
        .collect()
}

/// How likely each participant is to put each node on a path of its own, as an adversary
/// who knows the latency map and the selection rule computes it: `[node][participant]`.
/// The hops before the last are drawn by the selector (uniform, 1/RTT, or the hybrid's mix of
/// the two, its candidate draw averaged out); the last is the destination, uniform.
fn hop_likelihood(s: &MixScenario, map: &Map, n: usize, total: usize) -> Vec<Vec<f64>> {
    let uniform_share = match s.paths {
        // Layers are drawn uniformly too, whoever the sender.
        PathMode::Random | PathMode::Layered => 1.0,
        PathMode::Rtt => 0.0,
        PathMode::Hybrid => s.hybrid_randomness,
    };
    let mut rows = vec![vec![1.0; total]; total];
    let intermediate = (s.path_len - 1) as f64;
    for sender in 0..total {
        let others = if sender < n { n - 1 } else { n } as f64;
        let inverse = |x: usize| 1.0 / (map.base(sender, x).as_secs_f64() * 2_000.0).max(0.01);
        let sum: f64 = (0..n).filter(|&x| x != sender).map(inverse).sum();
        for (x, row) in rows.iter_mut().enumerate().take(n) {
            row[sender] = if x == sender {
                // Only as the end of its own loop.
                1.0 / others
            } else {
                let chosen = (1.0 - uniform_share) * inverse(x) / sum + uniform_share / others;
                intermediate * chosen + 1.0 / others
            };
        }
    }
    rows
}

/// Records that node `node` started packet `id` (its number `number`): now, or when it
/// leaves in a Loopix slot.
fn originate(
    steps: &mut Vec<Step>,
    slotted: &mut Option<HashSet<u64>>,
    node: usize,
    number: u64,
    id: PacketId,
) {
    match slotted {
        Some(waiting) => {
            waiting.insert(number);
        }
        None => steps.push(Step::Originate { node: node as u32, packet: id }),
    }
}

/// The flow a delivered body names, if it is one the simulator sent.
fn flow_of(body: &[u8], flows: usize) -> Option<usize> {
    let id = u64::from_be_bytes(*body.first_chunk::<8>()?) as usize;
    (id < flows).then_some(id)
}

/// The node's configuration for this scenario.
fn core_config(s: &MixScenario) -> Config {
    let ms = |x: f64| Duration::from_secs_f64(x / 1000.0);
    Config {
        path_len: s.path_len,
        pre_send_delay: ms(s.pre_send_delay_ms),
        send_jitter: ms(s.send_jitter_ms),
        path_selection: match s.paths {
            PathMode::Random => PathSelection::Random,
            PathMode::Rtt => PathSelection::Rtt,
            PathMode::Hybrid => PathSelection::Hybrid {
                candidates: s.hybrid_candidates,
                randomness: s.hybrid_randomness,
            },
            PathMode::Layered => PathSelection::Layered {
                layers: u8::try_from(s.path_len.saturating_sub(1).max(1)).unwrap_or(u8::MAX),
            },
        },
        cover: CoverConfig {
            mode: match s.cover {
                CoverKind::Off => CoverMode::Off,
                CoverKind::Loops => CoverMode::Loops,
                CoverKind::Loopix => CoverMode::Loopix,
            },
            rate: s.cover_rate,
            loop_rate: s.loop_rate,
            // The node's own queue limits: a send they refuse is counted (`refused`).
            ..CoverConfig::default()
        },
        // One key for the run; a filter sized for what a simulated node sees.
        rotation: None,
        replay: ReplayConfig {
            packets_per_second: 100,
            key_lifetime: Duration::from_secs(1_000),
            ..ReplayConfig::default()
        },
        max_pending_requests: 100_000,
        max_pending_surbs: 1_000_000,
        request_timeout: Duration::from_secs(3_600),
        max_delayed_packets: 1_000_000,
        ..Config::default()
    }
}

fn delay(mean_ms: f64) -> Box<dyn DelayStrategy> {
    if mean_ms < 1.0 {
        Box::new(NoDelay)
    } else {
        Box::new(ExponentialDelay::new(Duration::from_secs_f64(mean_ms / 1000.0)))
    }
}

/// A node with keys drawn from `rng` (secp256k1 identity, X25519 mix key) and an address
/// that fits an address block.
fn node_entry(rng: &mut ChaCha20Rng, i: usize) -> (MixNode, NodeSecretKey) {
    let identity = loop {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        if let Ok(secret) = secp256k1::SecretKey::try_from_bytes(bytes) {
            break Keypair::from(secp256k1::Keypair::from(secret));
        }
    };
    let secret = NodeSecretKey::generate(rng);
    let addr = format!("/ip4/10.{}.{}.{}/tcp/4000", (i >> 16) & 255, (i >> 8) & 255, i & 255)
        .parse()
        .expect("a valid address");
    let node = MixNode::new(identity.public().to_peer_id(), addr, secret.public_key(), true)
        .expect("a secp256k1 identity on IPv4 TCP fits an address block");
    (node, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(changes: &[&str]) -> MixScenario {
        let mut s = MixScenario {
            nodes: 10,
            messages: 200,
            rate: 2.0,
            warmup_s: 0.0,
            ..MixScenario::default()
        };
        for c in changes {
            s = s.with_assignment(c).expect("a valid change");
        }
        s
    }

    #[test]
    fn anonymity_grows_with_traffic_and_corrupt_nodes_reveal_everything() {
        // Loopix's rule of thumb: a mix hides well once it holds a few packets on average
        // (arrival rate over departure rate of two or more).
        let quiet = run(&small(&[]));
        assert_eq!((quiet.messages, quiet.delivered), (200, 200), "{quiet:?}");
        let busy = run(&small(&["messages=300", "rate=50", "hop_delay_ms=100"]));
        assert_eq!((busy.messages, busy.delivered), (300, 300), "{busy:?}");
        assert!(busy.entropy_normalised_mean > 0.6, "{busy:?}");
        assert!(busy.entropy_normalised_mean <= 1.0, "{busy:?}");
        assert!(busy.top1_linkage < 0.5, "{busy:?}");
        assert!(busy.receiver_entropy_normalised_mean > 0.6, "{busy:?}");
        assert!(quiet.entropy_normalised_mean < busy.entropy_normalised_mean, "{quiet:?}");
        assert!(busy.latency_ms_p50 > quiet.latency_ms_p50, "{busy:?} {quiet:?}");
        let all = run(&small(&["messages=100", "corrupt=1.0"]));
        assert_eq!(all.corrupt, 10);
        assert_eq!(all.entropy_bits_mean, 0.0, "every node corrupt: nothing hidden, {all:?}");
        assert!((all.top1_linkage - 1.0).abs() < 1e-9, "{all:?}");
    }

    #[test]
    fn cover_traffic_hides_a_quiet_network() {
        let quiet = run(&small(&["messages=100", "rate=0.5"]));
        let covered = run(&small(&[
            "messages=100",
            "rate=0.5",
            "cover=\"loopix\"",
            "cover_rate=20",
            "loop_rate=5",
        ]));
        assert_eq!(covered.delivered, 100, "{covered:?}");
        assert!(covered.cover_packets > 1_000, "{covered:?}");
        assert!(
            covered.entropy_normalised_mean > quiet.entropy_normalised_mean + 0.2,
            "{quiet:?} {covered:?}"
        );
    }

    #[test]
    fn replies_come_back_and_their_receivers_are_measured() {
        let r = run(&small(&["traffic=\"request-reply\"", "messages=80", "rate=20"]));
        assert_eq!(r.delivered, 80, "{r:?}");
        let replies = r.replies.clone().expect("replies measured");
        assert_eq!(replies.delivered, 80, "{r:?}");
        assert!(replies.receiver_entropy_normalised_mean > 0.0, "{r:?}");
    }

    #[test]
    fn a_destination_that_links_a_streams_shards_learns_more() {
        let r = run(&small(&[
            "traffic=\"stream\"",
            "stream_bytes=30000",
            "messages=300",
            "rate=1",
            "hop_delay_ms=50",
        ]));
        assert_eq!(r.delivered, 300, "{r:?}");
        let linked = r.linked.clone().expect("streams are linked groups");
        assert!(linked.groups >= 25, "{r:?}");
        assert!(linked.entropy_normalised_mean <= r.entropy_normalised_mean, "{r:?}");
        assert!(linked.top1_linkage >= r.top1_linkage, "{r:?}");
    }

    #[test]
    fn clients_send_through_the_nodes_and_their_traffic_hides_everyone() {
        let nodes_only = run(&small(&["messages=100", "rate=0.5"]));
        let r = run(&small(&["messages=100", "rate=0.5", "clients=30", "senders=0"]));
        assert_eq!((r.nodes, r.clients), (10, 30), "{r:?}");
        assert!((20..=30).contains(&r.senders), "only clients send: {r:?}");
        assert_eq!(r.delivered, 100, "{r:?}");
        // A client forwards nothing: its first hop alone starts hiding it.
        assert!(r.top1_linkage > 0.0, "{r:?}");
        let busy = run(&small(&[
            "messages=200",
            "rate=0.5",
            "clients=30",
            "senders=0",
            "cover=\"loopix\"",
            "cover_rate=20",
            "loop_rate=2",
        ]));
        assert!(busy.entropy_normalised_mean > nodes_only.entropy_normalised_mean, "{busy:?}");
    }

    #[test]
    fn an_adversary_who_knows_the_latency_map_gains_from_rtt_paths() {
        // Averaged over seeds: one seed's difference is a few hundredths, about its noise.
        let base = ["nodes=30", "messages=600", "rate=10", "hop_delay_ms=50", "latency_max_ms=150"];
        let seeds = ["seed=1", "seed=2", "seed=3"];
        let mean = |paths: &[&str]| {
            let runs: Vec<MixSimReport> = seeds
                .iter()
                .map(|seed| run(&small(&[&base[..], paths, &[seed]].concat())))
                .collect();
            let n = runs.len() as f64;
            let avg = |f: fn(&MixSimReport) -> f64| runs.iter().map(f).sum::<f64>() / n;
            (avg(|r| r.entropy_normalised_mean), avg(|r| r.path_aware_entropy_normalised_mean))
        };
        let random = mean(&[]);
        let rtt = mean(&["paths=\"rtt\""]);
        // Uniform paths: knowing the rule adds little (a node never routes through itself).
        assert!((random.1 - random.0).abs() < 0.05, "{random:?}");
        assert!(rtt.1 < random.1 - 0.01, "{random:?} {rtt:?}");
        // Its most likely sender is not more often the true one at this scale: over these
        // seeds, path-aware top-1 linkage moves within its noise (0.175 with RTT paths, 0.182
        // without), so the test claims the entropy loss only.
    }

    #[test]
    fn layered_paths_hide_clients_better_than_free_routes_at_the_same_load() {
        // With free routes a node at a path's last delaying hop also holds packets fresh from
        // their clients, each a point belief on one client; in layers only the first layer
        // holds those, and every later pool is made of packets already mixed.
        let base = [
            "nodes=30",
            "clients=60",
            "senders=0",
            "messages=150",
            "rate=0.5",
            "path_len=4",
            "hop_delay_ms=20",
            "cover=\"loopix\"",
            "cover_rate=20",
            "loop_rate=2",
        ];
        let random = run(&small(&base));
        let layered = run(&small(&[&base[..], &["paths=\"layered\""]].concat()));
        assert_eq!((random.delivered, layered.delivered), (150, 150));
        assert_eq!(layered.mode, "layered");
        assert!(
            layered.entropy_normalised_mean > random.entropy_normalised_mean + 0.03,
            "random {} layered {}",
            random.entropy_normalised_mean,
            layered.entropy_normalised_mean
        );
    }

    #[test]
    fn an_observer_who_knows_the_layers_finds_what_nodes_send_themselves() {
        // Nodes that send and forward: their own packets go first to layer 0, relays never.
        let r = run(&small(&[
            "nodes=30",
            "messages=400",
            "rate=10",
            "hop_delay_ms=50",
            "paths=\"layered\"",
        ]));
        assert_eq!(r.delivered, 400, "{r:?}");
        assert!(
            r.path_aware_entropy_normalised_mean < r.entropy_normalised_mean - 0.03,
            "pool {} layer-aware {}",
            r.entropy_normalised_mean,
            r.path_aware_entropy_normalised_mean
        );
        assert_eq!(r.strongest_adversary, "path_aware", "{r:?}");
    }

    #[test]
    fn runs_are_reproducible_from_the_seed() {
        let config = small(&["nodes=8", "messages=60", "seed=7", "copies=2", "paths=\"rtt\""]);
        assert_eq!(run(&config), run(&config));
    }
}
