//! From a run's record to the adversary's figures: every step through an [`Observer`], once
//! forward for senders and once in reverse time for receivers, and the beliefs about each
//! delivered message summarised.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::observer::{Belief, Layers, Observer, PacketId, Rates, Step, reversed};

/// What a flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    /// A one-way message.
    Message,
    /// A request that carries SURBs.
    Request,
    /// The answer to a request, through its SURBs.
    Reply,
}

/// One message, request or reply, whatever its copies.
#[derive(Debug, Clone)]
pub struct Flow {
    /// The node that sent it.
    pub sender: usize,
    /// The node it was for.
    pub receiver: usize,
    /// When the application handed it over.
    pub sent: Instant,
    /// What it is.
    pub kind: FlowKind,
    /// The burst or stream it belongs to, which its receiver can link.
    pub group: Option<u64>,
    /// The packet that delivered it first, and when.
    pub delivered: Option<(PacketId, Instant)>,
    /// For a reply, the request it answers.
    pub answers: Option<usize>,
}

/// A run's record.
#[derive(Debug)]
pub struct Run<'a> {
    /// Mix nodes (the possible receivers), numbered first.
    pub nodes: usize,
    /// Mix nodes and clients (the possible senders).
    pub participants: usize,
    /// Which participants are corrupt.
    pub corrupt: &'a [bool],
    /// Everything sent.
    pub flows: &'a [Flow],
    /// Everything the adversary saw, in time order.
    pub steps: &'a [Step],
    /// Copies of each message.
    pub copies: usize,
    /// Packet ids are `flow * copies_per_flow + copy`.
    pub copies_per_flow: u64,
    /// Ids from here on are cover.
    pub cover_base: PacketId,
    /// How likely each party is to put each node on its paths (`[node][party]`), for the
    /// path-aware adversary (see [`Observer::with_hop_likelihood`]).
    pub hop_likelihood: Option<Vec<Vec<f64>>>,
    /// The nodes' layers, for stratified paths: the path-aware adversary uses them too
    /// (see [`Observer::with_layers`]).
    pub layers: Option<Layers>,
    /// How fast each participant lets each kind of packet go (see [`Rates`]), for the
    /// rate-aware adversary.
    pub rates: Option<Vec<Rates>>,
}

/// What a receiver that links several messages (the shards of one stream, the messages of
/// a burst, the copies of one message) learns by combining the adversary's beliefs about
/// each: the product of the distributions, renormalised (an intersection attack).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkedFigures {
    /// Groups of linked messages.
    pub groups: usize,
    /// Mean normalised entropy of the combined belief.
    pub entropy_normalised_mean: f64,
    /// Share of groups whose most likely sender is the true one.
    pub top1_linkage: f64,
}

/// How well a reply hides who asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplyFigures {
    /// Requests answered.
    pub sent: usize,
    /// Replies that reached the requester.
    pub delivered: usize,
    /// Mean normalised entropy of the belief about the reply's receiver (the requester).
    pub receiver_entropy_normalised_mean: f64,
    /// Share of replies whose most likely receiver is the requester.
    pub receiver_top1_linkage: f64,
    /// The destination links each reply to its request: the product of the belief about
    /// the request's sender and about the reply's receiver (both are the requester),
    /// renormalised; its mean normalised entropy over the senders.
    pub linked_entropy_normalised_mean: f64,
    /// Share of requesters that product names.
    pub linked_top1_linkage: f64,
    /// Median time from the request's send to the reply's arrival.
    pub round_trip_ms_p50: f64,
}

/// What the adversary learned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixSimReport {
    /// Mix nodes.
    pub nodes: usize,
    /// Clients: they send, and do not forward.
    pub clients: usize,
    /// Nodes and clients that sent at least one message or request.
    pub senders: usize,
    /// Messages and requests sent.
    pub messages: usize,
    /// Of those, delivered.
    pub delivered: usize,
    /// Sends the node refused (a full queue).
    pub refused: usize,
    /// Corrupt nodes.
    pub corrupt: usize,
    /// Path selection.
    pub mode: &'static str,
    /// Link transmissions (all packets, every hop).
    pub packets: u64,
    /// Cover packets started.
    pub cover_packets: u64,
    /// Virtual seconds from the start to the last send.
    pub virtual_seconds: f64,
    /// Mean entropy of the sender distributions, in bits.
    pub entropy_bits_mean: f64,
    /// Mean of the entropy over log₂ of the senders.
    pub entropy_normalised_mean: f64,
    /// 5th percentile of the same.
    pub entropy_normalised_p5: f64,
    /// Share of messages whose most likely sender is the true one (ties shared).
    pub top1_linkage: f64,
    /// The same mean for an adversary that also knows how senders choose paths (the
    /// latency map and the selection rule): where RTT-weighted paths cost anonymity.
    pub path_aware_entropy_normalised_mean: f64,
    /// Its top-1 linkage.
    pub path_aware_top1_linkage: f64,
    /// The same mean for an adversary that weighs each held packet by how fast it leaves
    /// (own packets after the short pre-send delay, sources at their rate; see
    /// [`Rates`]). Its expected-share accounting can misattribute, so it is not always the
    /// stronger: read the lowest of the three.
    pub rate_aware_entropy_normalised_mean: f64,
    /// Its top-1 linkage.
    pub rate_aware_top1_linkage: f64,
    /// The strongest of the three sender adversaries (pool, path-aware, rate-aware) by top-1
    /// linkage: the headline figure, whichever that is.
    pub strongest_adversary: &'static str,
    /// Its top-1 linkage (the highest of the three).
    pub strongest_top1_linkage: f64,
    /// The lowest mean normalised entropy of the three (it may come from another one).
    pub lowest_entropy_normalised_mean: f64,
    /// Mean normalised entropy of the receiver distributions.
    pub receiver_entropy_normalised_mean: f64,
    /// Share of messages whose most likely receiver is the true one.
    pub receiver_top1_linkage: f64,
    /// Median time from send to delivery.
    pub latency_ms_p50: f64,
    /// 95th percentile of the same.
    pub latency_ms_p95: f64,
    /// A receiver that links groups of messages (streams, bursts, copies), if any.
    pub linked: Option<LinkedFigures>,
    /// Replies, if requests were sent.
    pub replies: Option<ReplyFigures>,
}

/// Log-probabilities summed over a group's members.
struct Group {
    log: Vec<f64>,
    truth: usize,
}

impl Group {
    fn add(&mut self, belief: &Belief) {
        for (l, p) in self.log.iter_mut().zip(belief.probabilities()) {
            *l += p.ln();
        }
    }

    fn combined(&self) -> Option<Belief> {
        let max = self.log.iter().copied().filter(|l| l.is_finite()).fold(f64::MIN, f64::max);
        if max == f64::MIN {
            return None;
        }
        let p: Vec<f64> = self.log.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = p.iter().sum();
        Some(Belief::from_weights(p.iter().map(|x| x / sum).collect()))
    }
}

/// The adversary's figures for a run.
///
/// # Panics
/// If the steps do not describe packets moving consistently (a simulator bug).
pub fn analyse(run: &Run<'_>) -> MixSimReport {
    let ctx = Ctx::new(run);
    let (n, senders) = (run.participants, ctx.senders);
    let forward = senders_forward(&ctx);
    let count = forward.normalised.len().max(1) as f64;
    let entropy = forward.normalised.iter().sum::<f64>() / count;
    let plain = || Observer::new(ctx.everyone.clone(), n, run.corrupt.to_vec());
    let (path_aware_entropy, path_aware_top1) = match (&run.hop_likelihood, &run.layers) {
        (Some(likelihood), layers) => {
            let observer = plain().with_hop_likelihood(likelihood.clone());
            ctx.score(match layers {
                Some(layers) => observer.with_layers(layers.clone()),
                None => observer,
            })
        }
        (None, Some(layers)) => ctx.score(plain().with_layers(layers.clone())),
        (None, None) => (entropy, forward.top1 / count),
    };
    let (rate_aware_entropy, rate_aware_top1) = match &run.rates {
        Some(rates) => ctx.score(plain().with_rates(rates.clone())),
        None => (entropy, forward.top1 / count),
    };
    // A group of one message is no group: report linking only where something links.
    let linkable = run.copies > 1 || run.flows.iter().any(|f| f.group.is_some());
    let linked = linkable.then(|| linked_figures(&forward.groups, senders));
    let back = receivers_backward(&ctx, &forward);
    let times = Times::of(run.flows);
    let adversaries = [
        ("pool", forward.top1 / count, entropy),
        ("path_aware", path_aware_top1, path_aware_entropy),
        ("rate_aware", rate_aware_top1, rate_aware_entropy),
    ];
    // Ties go to the first: the pool adversary needs the least knowledge.
    let strongest = adversaries[1..]
        .iter()
        .fold(adversaries[0], |best, a| if a.1 > best.1 { *a } else { best });
    let lowest_entropy = adversaries.iter().map(|a| a.2).fold(f64::INFINITY, f64::min);
    let mean = |sum: f64, count: usize| sum / count.max(1) as f64;
    let requests = run.flows.iter().any(|f| f.kind == FlowKind::Request);
    MixSimReport {
        nodes: run.nodes,
        clients: n - run.nodes,
        senders,
        messages: run.flows.iter().filter(|f| is_sent(f)).count(),
        delivered: times.delivered,
        refused: 0,
        corrupt: run.corrupt.iter().filter(|&&c| c).count(),
        mode: "random",
        packets: 0,
        cover_packets: 0,
        virtual_seconds: 0.0,
        entropy_bits_mean: forward.bits / count,
        entropy_normalised_mean: entropy,
        entropy_normalised_p5: quantile(&forward.normalised, 0.05),
        top1_linkage: forward.top1 / count,
        path_aware_entropy_normalised_mean: path_aware_entropy,
        path_aware_top1_linkage: path_aware_top1,
        rate_aware_entropy_normalised_mean: rate_aware_entropy,
        rate_aware_top1_linkage: rate_aware_top1,
        strongest_adversary: strongest.0,
        strongest_top1_linkage: strongest.1,
        lowest_entropy_normalised_mean: lowest_entropy,
        receiver_entropy_normalised_mean: mean(back.receivers.entropy, back.receivers.count),
        receiver_top1_linkage: mean(back.receivers.top1, back.receivers.count),
        latency_ms_p50: quantile(&times.latencies, 0.5),
        latency_ms_p95: quantile(&times.latencies, 0.95),
        linked,
        replies: requests.then(|| ReplyFigures {
            sent: run.flows.iter().filter(|f| f.kind == FlowKind::Reply).count(),
            delivered: run
                .flows
                .iter()
                .filter(|f| f.kind == FlowKind::Reply && f.delivered.is_some())
                .count(),
            receiver_entropy_normalised_mean: mean(back.replies.entropy, back.replies.count),
            receiver_top1_linkage: mean(back.replies.top1, back.replies.count),
            linked_entropy_normalised_mean: mean(back.linked.entropy, back.linked.count),
            linked_top1_linkage: mean(back.linked.top1, back.linked.count),
            round_trip_ms_p50: quantile(&times.round_trips, 0.5),
        }),
    }
}

/// Messages and requests are sent; replies answer them.
fn is_sent(f: &Flow) -> bool {
    f.kind != FlowKind::Reply
}

/// The nearest-rank quantile of sorted `v` (0 when empty).
fn quantile(v: &[f64], q: f64) -> f64 {
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1));
    v.get(rank - 1).copied().unwrap_or(0.0)
}

/// What every pass over the run shares.
struct Ctx<'r, 'a> {
    run: &'r Run<'a>,
    everyone: Vec<Option<usize>>,
    /// Who sent a message or request.
    active: HashSet<usize>,
    senders: usize,
}

impl<'r, 'a> Ctx<'r, 'a> {
    fn new(run: &'r Run<'a>) -> Self {
        let everyone = (0..run.participants).map(Some).collect();
        let active: HashSet<usize> =
            run.flows.iter().filter(|f| is_sent(f)).map(|f| f.sender).collect();
        let senders = active.len();
        Self { run, everyone, active, senders }
    }

    /// The flow a real packet belongs to (`None` for cover).
    fn real(&self, packet: PacketId) -> Option<usize> {
        (packet < self.run.cover_base).then(|| (packet / self.run.copies_per_flow) as usize)
    }

    /// Who could have sent `f`: every sender but its receiver (nobody sends to itself).
    fn candidates(&self, f: &Flow) -> usize {
        self.senders - usize::from(self.active.contains(&f.receiver))
    }

    /// The mean normalised sender entropy and top-1 credit of delivered messages for an
    /// adversary whose observer is `observer`.
    fn score(&self, mut observer: Observer) -> (f64, f64) {
        let run = self.run;
        let (mut entropy, mut top1, mut count) = (0.0, 0.0, 0usize);
        for &step in run.steps {
            let belief = observer.step(step).expect("the simulator places every packet");
            let (Some(belief), Step::Deliver { packet, .. } | Step::End { packet, .. }) =
                (belief, step)
            else {
                continue;
            };
            let Some(f) = self.real(packet).map(|flow| &run.flows[flow]) else { continue };
            if is_sent(f) && f.delivered.map(|d| d.0) == Some(packet) {
                let belief = belief.restricted(|p| p != f.receiver);
                entropy += belief.normalised_entropy(self.candidates(f));
                top1 += belief.top1_credit(f.sender);
                count += 1;
            }
        }
        (entropy / count.max(1) as f64, top1 / count.max(1) as f64)
    }
}

/// The pool adversary's pass over the senders, forward in time.
struct Forward {
    /// Each delivered message's normalised sender entropy, sorted.
    normalised: Vec<f64>,
    bits: f64,
    top1: f64,
    /// Messages the receiver can link (a group, or the copies of one message).
    groups: BTreeMap<u64, Group>,
    /// What the adversary believed of each delivered request's sender.
    request_beliefs: HashMap<usize, Belief>,
    /// Packets whose whole path the record holds.
    ended: HashSet<PacketId>,
}

fn senders_forward(ctx: &Ctx<'_, '_>) -> Forward {
    let run = ctx.run;
    let n = run.participants;
    let mut observer = Observer::new(ctx.everyone.clone(), n, run.corrupt.to_vec());
    let mut pass = Forward {
        normalised: Vec::new(),
        bits: 0.0,
        top1: 0.0,
        groups: BTreeMap::new(),
        request_beliefs: HashMap::new(),
        ended: HashSet::new(),
    };
    for &step in run.steps {
        let belief = observer.step(step).expect("the simulator places every packet");
        let (Some(belief), Step::Deliver { packet, .. } | Step::End { packet, .. }) =
            (belief, step)
        else {
            continue;
        };
        pass.ended.insert(packet);
        let Some(flow) = ctx.real(packet) else { continue };
        let f = &run.flows[flow];
        if !is_sent(f) {
            continue;
        }
        // Nobody sends to itself: the destination is not the sender.
        let belief = belief.restricted(|p| p != f.receiver);
        if f.delivered.map(|d| d.0) == Some(packet) {
            if f.kind == FlowKind::Request {
                pass.request_beliefs.insert(flow, belief.clone());
            }
            pass.bits += belief.entropy_bits();
            pass.normalised.push(belief.normalised_entropy(ctx.candidates(f)));
            pass.top1 += belief.top1_credit(f.sender);
        }
        // The receiver links a group's members and every copy of a message.
        let key = f.group.or((run.copies > 1).then_some(1 << 48 | flow as u64));
        if let Some(key) = key {
            pass.groups
                .entry(key)
                .or_insert_with(|| Group { log: vec![0.0; n], truth: f.sender })
                .add(&belief);
        }
    }
    pass.normalised.sort_by(f64::total_cmp);
    pass
}

fn linked_figures(groups: &BTreeMap<u64, Group>, senders: usize) -> LinkedFigures {
    let (mut entropy, mut top1, mut count) = (0.0, 0.0, 0usize);
    for group in groups.values() {
        if let Some(b) = group.combined() {
            entropy += b.normalised_entropy(senders);
            top1 += b.top1_credit(group.truth);
            count += 1;
        }
    }
    let c = count.max(1) as f64;
    LinkedFigures { groups: count, entropy_normalised_mean: entropy / c, top1_linkage: top1 / c }
}

/// Sums of normalised entropy and top-1 credit over `count` cases.
#[derive(Default)]
struct Sums {
    entropy: f64,
    top1: f64,
    count: usize,
}

impl Sums {
    fn add(&mut self, entropy: f64, top1: f64) {
        self.entropy += entropy;
        self.top1 += top1;
        self.count += 1;
    }
}

/// The receivers' pass, backward in time.
struct Backward {
    /// Who a message or request went to.
    receivers: Sums,
    /// Who a reply went to.
    replies: Sums,
    /// Who a reply went to, with what the request told.
    linked: Sums,
}

/// The same history in reverse time, for packets whose whole path is known.
fn receivers_backward(ctx: &Ctx<'_, '_>, forward: &Forward) -> Backward {
    let run = ctx.run;
    let n = run.participants;
    let complete: Vec<Step> =
        run.steps.iter().copied().filter(|s| forward.ended.contains(&packet_of(s))).collect();
    let mut observer = Observer::new(ctx.everyone.clone(), n, run.corrupt.to_vec());
    let mut back =
        Backward { receivers: Sums::default(), replies: Sums::default(), linked: Sums::default() };
    for step in reversed(&complete) {
        let belief = observer.step(step).expect("the simulator places every packet");
        // An own packet ends here; one that left in a Loopix slot (a source) ends as it
        // arrives.
        let (Some(belief), Step::End { packet, .. } | Step::Deliver { packet, .. }) =
            (belief, step)
        else {
            continue;
        };
        let Some(flow) = ctx.real(packet) else { continue };
        let f = &run.flows[flow];
        if f.delivered.map(|d| d.0) != Some(packet) {
            continue;
        }
        // A message goes to a mix node other than its sender; a reply to anyone but the
        // node that sends it.
        let belief = if is_sent(f) {
            belief.restricted(|p| p < run.nodes && p != f.sender)
        } else {
            belief.restricted(|p| p != f.sender)
        };
        let possible =
            if is_sent(f) { run.nodes - usize::from(f.sender < run.nodes) } else { n - 1 };
        let (e, t) = (belief.normalised_entropy(possible), belief.top1_credit(f.receiver));
        if is_sent(f) {
            back.receivers.add(e, t);
            continue;
        }
        back.replies.add(e, t);
        if let Some(request) = f.answers.and_then(|r| forward.request_beliefs.get(&r)) {
            let mut both = Group { log: vec![0.0; n], truth: f.receiver };
            both.add(request);
            both.add(&belief);
            if let Some(b) = both.combined() {
                back.linked.add(b.normalised_entropy(ctx.senders), b.top1_credit(f.receiver));
            }
        }
    }
    back
}

/// Latencies of delivered messages and round trips of answered requests, sorted, in ms.
struct Times {
    latencies: Vec<f64>,
    round_trips: Vec<f64>,
    delivered: usize,
}

impl Times {
    fn of(flows: &[Flow]) -> Self {
        let mut times = Self { latencies: Vec::new(), round_trips: Vec::new(), delivered: 0 };
        for f in flows {
            let Some((_, at)) = f.delivered else { continue };
            match f.kind {
                FlowKind::Reply => {
                    if let Some(request) = f.answers.and_then(|r| flows.get(r)) {
                        let ms = at.duration_since(request.sent).as_secs_f64() * 1000.0;
                        times.round_trips.push(ms);
                    }
                }
                _ => {
                    times.delivered += 1;
                    times.latencies.push(at.duration_since(f.sent).as_secs_f64() * 1000.0);
                }
            }
        }
        times.latencies.sort_by(f64::total_cmp);
        times.round_trips.sort_by(f64::total_cmp);
        times
    }
}

fn packet_of(step: &Step) -> PacketId {
    match *step {
        Step::Originate { packet, .. }
        | Step::Depart { packet, .. }
        | Step::Arrive { packet, .. }
        | Step::End { packet, .. }
        | Step::Deliver { packet, .. }
        | Step::Emit { packet, .. }
        | Step::Source { packet, .. } => packet,
    }
}
