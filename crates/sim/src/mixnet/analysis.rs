//! From a run's record to the adversary's figures: every step through an [`Observer`], once
//! forward for senders and once in reverse time for receivers, and the beliefs about each
//! delivered message summarised.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::observer::{Belief, Observer, PacketId, Rates, Step, reversed};

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
    let n = run.participants;
    let everyone: Vec<Option<usize>> = (0..n).map(Some).collect();
    let cpf = run.copies_per_flow;
    let real = |packet: PacketId| (packet < run.cover_base).then(|| (packet / cpf) as usize);
    let is_sent = |f: &Flow| f.kind != FlowKind::Reply;
    let active = run.flows.iter().filter(|f| is_sent(f)).map(|f| f.sender).collect::<HashSet<_>>();
    let senders = active.len();

    // Senders: forward in time.
    let mut observer = Observer::new(everyone.clone(), n, run.corrupt.to_vec());
    let mut normalised = Vec::new();
    let (mut bits, mut top1) = (0.0, 0.0);
    let mut groups: BTreeMap<u64, Group> = BTreeMap::new();
    let mut request_beliefs: HashMap<usize, Belief> = HashMap::new();
    let mut ended: HashSet<PacketId> = HashSet::new();
    for &step in run.steps {
        let belief = observer.step(step).expect("the simulator places every packet");
        let (Some(belief), Step::Deliver { packet, .. } | Step::End { packet, .. }) =
            (belief, step)
        else {
            continue;
        };
        ended.insert(packet);
        let Some(flow) = real(packet) else { continue };
        let f = &run.flows[flow];
        if !is_sent(f) {
            continue;
        }
        // Nobody sends to itself: the destination is not the sender.
        let belief = belief.restricted(|p| p != f.receiver);
        let candidates = senders - usize::from(active.contains(&f.receiver));
        if f.delivered.map(|d| d.0) == Some(packet) {
            if f.kind == FlowKind::Request {
                request_beliefs.insert(flow, belief.clone());
            }
            bits += belief.entropy_bits();
            normalised.push(belief.normalised_entropy(candidates));
            top1 += belief.top1_credit(f.sender);
        }
        // The receiver links a group's members and every copy of a message.
        let key = f.group.or((run.copies > 1).then_some(1 << 48 | flow as u64));
        if let Some(key) = key {
            groups
                .entry(key)
                .or_insert_with(|| Group { log: vec![0.0; n], truth: f.sender })
                .add(&belief);
        }
    }
    let count = normalised.len().max(1) as f64;
    normalised.sort_by(f64::total_cmp);
    // The same figures for a stronger-informed adversary, whose observer is `observer`.
    let score = |mut observer: Observer| {
        let (mut entropy, mut top1, mut count) = (0.0, 0.0, 0usize);
        for &step in run.steps {
            let belief = observer.step(step).expect("the simulator places every packet");
            let (Some(belief), Step::Deliver { packet, .. } | Step::End { packet, .. }) =
                (belief, step)
            else {
                continue;
            };
            let Some(f) = real(packet).map(|flow| &run.flows[flow]) else { continue };
            if is_sent(f) && f.delivered.map(|d| d.0) == Some(packet) {
                let belief = belief.restricted(|p| p != f.receiver);
                let candidates = senders - usize::from(active.contains(&f.receiver));
                entropy += belief.normalised_entropy(candidates);
                top1 += belief.top1_credit(f.sender);
                count += 1;
            }
        }
        (entropy / count.max(1) as f64, top1 / count.max(1) as f64)
    };
    let plain = || Observer::new(everyone.clone(), n, run.corrupt.to_vec());
    let (path_aware_entropy, path_aware_top1) = match &run.hop_likelihood {
        Some(likelihood) => score(plain().with_hop_likelihood(likelihood.clone())),
        None => (normalised.iter().sum::<f64>() / count, top1 / count),
    };
    let (rate_aware_entropy, rate_aware_top1) = match &run.rates {
        Some(rates) => score(plain().with_rates(rates.clone())),
        None => (normalised.iter().sum::<f64>() / count, top1 / count),
    };

    // A group of one message is no group: report linking only where something links.
    let linkable = run.copies > 1 || run.flows.iter().any(|f| f.group.is_some());
    let linked = linkable.then(|| {
        let (mut entropy, mut top1, mut count) = (0.0, 0.0, 0usize);
        for group in groups.values() {
            if let Some(b) = group.combined() {
                entropy += b.normalised_entropy(senders);
                top1 += b.top1_credit(group.truth);
                count += 1;
            }
        }
        let c = count.max(1) as f64;
        LinkedFigures {
            groups: count,
            entropy_normalised_mean: entropy / c,
            top1_linkage: top1 / c,
        }
    });

    // Receivers: the same history in reverse time, for packets whose whole path is known.
    let complete: Vec<Step> =
        run.steps.iter().copied().filter(|s| ended.contains(&packet_of(s))).collect();
    let mut observer = Observer::new(everyone, n, run.corrupt.to_vec());
    let (mut receivers, mut receiver_top1, mut receiver_count) = (0.0, 0.0, 0usize);
    let (mut reply_entropy, mut reply_top1, mut reply_count) = (0.0, 0.0, 0usize);
    let (mut reply_linked_entropy, mut reply_linked_top1, mut reply_linked_count) =
        (0.0, 0.0, 0usize);
    for step in reversed(&complete) {
        let belief = observer.step(step).expect("the simulator places every packet");
        // An own packet ends here; one that left in a Loopix slot (a source) ends as it
        // arrives.
        let (Some(belief), Step::End { packet, .. } | Step::Deliver { packet, .. }) =
            (belief, step)
        else {
            continue;
        };
        let Some(flow) = real(packet) else { continue };
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
            receivers += e;
            receiver_top1 += t;
            receiver_count += 1;
        } else {
            reply_entropy += e;
            reply_top1 += t;
            reply_count += 1;
            if let Some(request) = f.answers.and_then(|r| request_beliefs.get(&r)) {
                let mut both = Group { log: vec![0.0; n], truth: f.receiver };
                both.add(request);
                both.add(&belief);
                if let Some(b) = both.combined() {
                    reply_linked_entropy += b.normalised_entropy(senders);
                    reply_linked_top1 += b.top1_credit(f.receiver);
                    reply_linked_count += 1;
                }
            }
        }
    }

    let mut latencies = Vec::new();
    let mut round_trips = Vec::new();
    let mut delivered = 0;
    for f in run.flows {
        let Some((_, at)) = f.delivered else { continue };
        match f.kind {
            FlowKind::Reply => {
                if let Some(request) = f.answers.and_then(|r| run.flows.get(r)) {
                    round_trips.push(at.duration_since(request.sent).as_secs_f64() * 1000.0);
                }
            }
            _ => {
                delivered += 1;
                latencies.push(at.duration_since(f.sent).as_secs_f64() * 1000.0);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    round_trips.sort_by(f64::total_cmp);
    // Nearest rank.
    let quantile = |v: &[f64], q: f64| {
        let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1));
        v.get(rank - 1).copied().unwrap_or(0.0)
    };
    let replies_sent = run.flows.iter().filter(|f| f.kind == FlowKind::Reply).count();
    let requests = run.flows.iter().any(|f| f.kind == FlowKind::Request);
    let entropy = normalised.iter().sum::<f64>() / count;
    let adversaries = [
        ("pool", top1 / count, entropy),
        ("path_aware", path_aware_top1, path_aware_entropy),
        ("rate_aware", rate_aware_top1, rate_aware_entropy),
    ];
    // Ties go to the first: the pool adversary needs the least knowledge.
    let strongest = adversaries[1..]
        .iter()
        .fold(adversaries[0], |best, a| if a.1 > best.1 { *a } else { best });
    let lowest_entropy = adversaries.iter().map(|a| a.2).fold(f64::INFINITY, f64::min);
    MixSimReport {
        nodes: run.nodes,
        clients: n - run.nodes,
        senders,
        messages: run.flows.iter().filter(|f| is_sent(f)).count(),
        delivered,
        refused: 0,
        corrupt: run.corrupt.iter().filter(|&&c| c).count(),
        mode: "random",
        packets: 0,
        cover_packets: 0,
        virtual_seconds: 0.0,
        entropy_bits_mean: bits / count,
        entropy_normalised_mean: entropy,
        entropy_normalised_p5: quantile(&normalised, 0.05),
        top1_linkage: top1 / count,
        path_aware_entropy_normalised_mean: path_aware_entropy,
        path_aware_top1_linkage: path_aware_top1,
        rate_aware_entropy_normalised_mean: rate_aware_entropy,
        rate_aware_top1_linkage: rate_aware_top1,
        strongest_adversary: strongest.0,
        strongest_top1_linkage: strongest.1,
        lowest_entropy_normalised_mean: lowest_entropy,
        receiver_entropy_normalised_mean: receivers / receiver_count.max(1) as f64,
        receiver_top1_linkage: receiver_top1 / receiver_count.max(1) as f64,
        latency_ms_p50: quantile(&latencies, 0.5),
        latency_ms_p95: quantile(&latencies, 0.95),
        linked,
        replies: requests.then(|| ReplyFigures {
            sent: replies_sent,
            delivered: run
                .flows
                .iter()
                .filter(|f| f.kind == FlowKind::Reply && f.delivered.is_some())
                .count(),
            receiver_entropy_normalised_mean: reply_entropy / reply_count.max(1) as f64,
            receiver_top1_linkage: reply_top1 / reply_count.max(1) as f64,
            linked_entropy_normalised_mean: reply_linked_entropy / reply_linked_count.max(1) as f64,
            linked_top1_linkage: reply_linked_top1 / reply_linked_count.max(1) as f64,
            round_trip_ms_p50: quantile(&round_trips, 0.5),
        }),
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
