//! Mix nodes in virtual time: the node's own core (`libp2p_mix::core::MixCore`), real Sphinx
//! packets, a seeded RNG, and a network that delays every transmission by a latency drawn per
//! packet. Every link event goes to an [`Observer`]; every delivered message gets the
//! adversary's belief about its sender and, on the reversed history, about its receiver.
//!
//! So far: Poisson senders (every node sends and forwards), messages to random mix nodes that
//! deliver them themselves, no cover traffic. Cover, replies, streams, path modes and the CLI
//! come next (see `crates/sim/MIXNET.md`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use libp2p_identity::{Keypair, PeerId, secp256k1};
use libp2p_mix::core::{
    Config, Destination, DynamicPool, ExponentialDelay, MixCore, MixNode, Output, PacketKind,
};
use mix_sphinx::{NodeSecretKey, Packet};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::observer::{Belief, Node, Observer, PacketId, Step, reversed};

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct MixSimConfig {
    /// Mix nodes; each also sends and receives.
    pub nodes: usize,
    /// Messages sent in all.
    pub messages: usize,
    /// Messages per second per node (Poisson).
    pub rate: f64,
    /// Mean of the exponential delay at each hop.
    pub hop_delay: Duration,
    /// One-way latency of a transmission, drawn uniformly per packet.
    pub latency: (Duration, Duration),
    /// Share of the nodes that are corrupt.
    pub corrupt: f64,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for MixSimConfig {
    fn default() -> Self {
        Self {
            nodes: 20,
            messages: 500,
            rate: 2.0,
            hop_delay: Duration::from_millis(20),
            latency: (Duration::from_millis(5), Duration::from_millis(30)),
            corrupt: 0.0,
            seed: 1,
        }
    }
}

/// What the adversary learned.
#[derive(Debug, Clone, PartialEq)]
pub struct MixSimReport {
    /// Mix nodes.
    pub nodes: usize,
    /// Nodes that sent at least one message.
    pub senders: usize,
    /// Messages sent.
    pub messages: usize,
    /// Messages delivered.
    pub delivered: usize,
    /// Corrupt nodes.
    pub corrupt: usize,
    /// Mean entropy of the sender distributions, in bits.
    pub entropy_bits_mean: f64,
    /// Mean of the entropy over log₂ of the senders.
    pub entropy_normalised_mean: f64,
    /// 5th percentile of the same.
    pub entropy_normalised_p5: f64,
    /// Share of messages whose most likely sender is the true one (ties shared).
    pub top1_linkage: f64,
    /// Mean normalised entropy of the receiver distributions.
    pub receiver_entropy_normalised_mean: f64,
    /// Median time from send to delivery.
    pub latency_ms_p50: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The node's core has a timer due.
    Timer(usize),
    /// A transmission arrives (index into the packets in flight).
    Arrive(u64),
    /// The node sends its next message.
    Send(usize),
}

struct Message {
    sender: usize,
    sent: Instant,
}

/// Runs the simulation.
///
/// # Panics
/// On a simulator bug (a packet the observer cannot place), never on a setting.
pub fn run(config: &MixSimConfig) -> MixSimReport {
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
    let n = config.nodes.max(2);
    let start = Instant::now();
    let (entries, secrets): (Vec<MixNode>, Vec<NodeSecretKey>) =
        (0..n).map(|i| node_entry(&mut rng, i)).unzip();
    let mut pool = DynamicPool::new();
    for entry in &entries {
        pool.insert_static(entry.clone());
    }
    let index: HashMap<PeerId, usize> =
        entries.iter().enumerate().map(|(i, e)| (*e.peer_id(), i)).collect();
    let mut cores: Vec<MixCore<ChaCha20Rng>> = entries
        .iter()
        .zip(secrets)
        .enumerate()
        .map(|(i, (entry, secret))| {
            let mut core = MixCore::new(
                Config::default(),
                entry.clone(),
                secret,
                Box::new(pool.clone()),
                Box::new(ExponentialDelay::new(config.hop_delay)),
                ChaCha20Rng::seed_from_u64(config.seed.wrapping_mul(1_000_003) + i as u64),
            );
            core.set_wall_clock(start, Duration::from_secs(1_800_000_000));
            core
        })
        .collect();
    let corrupt_count = ((config.corrupt.clamp(0.0, 1.0) * n as f64).round() as usize).min(n);
    let mut corrupt = vec![false; n];
    for i in rand::seq::index::sample(&mut rng, n, corrupt_count) {
        corrupt[i] = true;
    }

    let mut queue: BinaryHeap<Reverse<(Instant, u64, Event)>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut push = |queue: &mut BinaryHeap<_>, at: Instant, event: Event| {
        order += 1;
        queue.push(Reverse((at, order, event)));
    };
    let gap = |rng: &mut ChaCha20Rng| {
        Duration::from_secs_f64(-(1.0 - rng.random::<f64>()).ln() / config.rate.max(1e-9))
    };
    for (i, core) in cores.iter_mut().enumerate() {
        let at = start + gap(&mut rng);
        push(&mut queue, at, Event::Send(i));
        core.handle_timeout(start);
    }

    let mut steps: Vec<Step> = Vec::new();
    // Each node's numbers for the packets it holds, to their ground-truth identity.
    let mut numbers: Vec<HashMap<u64, PacketId>> = vec![HashMap::new(); n];
    let mut in_flight: HashMap<u64, (usize, PacketId, Packet)> = HashMap::new();
    let mut next_flight = 0u64;
    let mut messages: Vec<Message> = Vec::new();
    // Cover and other packets of the nodes' own get identities above the messages'.
    let mut next_other: PacketId = 1 << 40;
    let mut deliveries: Vec<(PacketId, usize, Instant)> = Vec::new();
    let mut timer_at: Vec<Option<Instant>> = vec![None; n];

    // Nothing is left once every message was sent and nothing is in flight or held; the
    // cores' own timers (key rotation) would run forever.
    let held =
        |cores: &[MixCore<ChaCha20Rng>]| cores.iter().map(|c| c.delayed_packets()).sum::<usize>();
    while let Some(Reverse((now, _, event))) = queue.pop() {
        if messages.len() >= config.messages
            && in_flight.is_empty()
            && held(&cores) == 0
            && !matches!(event, Event::Arrive(_))
        {
            break;
        }
        let touched = match event {
            Event::Send(i) => {
                if messages.len() >= config.messages {
                    continue;
                }
                let id = messages.len() as PacketId;
                let mut to = rng.random_range(0..n - 1);
                if to >= i {
                    to += 1;
                }
                let dest = Destination::MixNode(*entries[to].peer_id());
                let before = cores[i].last_packet_number();
                if cores[i].send(now, &dest, "/sim/1", &id.to_be_bytes()).is_ok() {
                    messages.push(Message { sender: i, sent: now });
                    for number in before + 1..=cores[i].last_packet_number() {
                        numbers[i].insert(number, id);
                    }
                    steps.push(Step::Originate { node: i as Node, packet: id });
                }
                let next = now + gap(&mut rng);
                push(&mut queue, next, Event::Send(i));
                i
            }
            Event::Timer(i) => {
                if timer_at[i] != Some(now) {
                    continue;
                }
                timer_at[i] = None;
                cores[i].handle_timeout(now);
                i
            }
            Event::Arrive(flight) => {
                let (to, id, packet) = in_flight.remove(&flight).expect("in flight");
                let before = cores[to].last_packet_number();
                let handled = cores[to].handle_packet(now, packet).is_ok();
                let after = cores[to].last_packet_number();
                if handled && after > before {
                    steps.push(Step::Arrive { node: to as Node, packet: id });
                    for number in before + 1..=after {
                        numbers[to].insert(number, id);
                    }
                } else {
                    // Delivered or consumed here at once, or dropped: the adversary links
                    // the end to the arrival.
                    steps.push(Step::Deliver { node: to as Node, packet: id });
                }
                to
            }
        };
        // What the call produced.
        while let Some(output) = cores[touched].poll_output() {
            match output {
                Output::Transmit { peer, packet, trace, .. } => {
                    let Some(&to) = index.get(&peer) else { continue };
                    let id = match numbers[touched].remove(&trace.number) {
                        Some(id) => id,
                        None => {
                            let id = next_other;
                            next_other += 1;
                            if trace.kind == PacketKind::Forward {
                                // Not one we know: the observer would have no vector for it.
                                continue;
                            }
                            steps.push(Step::Originate { node: touched as Node, packet: id });
                            id
                        }
                    };
                    steps.push(Step::Depart { node: touched as Node, packet: id });
                    let (low, high) = config.latency;
                    let latency = low + (high.saturating_sub(low)).mul_f64(rng.random::<f64>());
                    next_flight += 1;
                    in_flight.insert(next_flight, (to, id, packet));
                    push(&mut queue, now + latency, Event::Arrive(next_flight));
                }
                Output::Deliver(delivery) => {
                    if let Some(id) = delivery
                        .body
                        .first_chunk::<8>()
                        .map(|b| u64::from_be_bytes(*b))
                        .filter(|&id| (id as usize) < messages.len())
                    {
                        deliveries.push((id, touched, now));
                    }
                }
                _ => {}
            }
        }
        if let Some(due) = cores[touched].poll_timeout()
            && timer_at[touched].is_none_or(|t| due < t)
        {
            timer_at[touched] = Some(due.max(now));
            push(&mut queue, due.max(now), Event::Timer(touched));
        }
    }

    report(n, &corrupt, &messages, &deliveries, &steps)
}

fn report(
    n: usize,
    corrupt: &[bool],
    messages: &[Message],
    deliveries: &[(PacketId, usize, Instant)],
    steps: &[Step],
) -> MixSimReport {
    let everyone: Vec<Option<usize>> = (0..n).map(Some).collect();
    let mut senders_seen = vec![false; n];
    for m in messages {
        senders_seen[m.sender] = true;
    }
    let senders = senders_seen.iter().filter(|&&s| s).count();

    let sender_beliefs = beliefs(n, corrupt, &everyone, steps);
    let receiver_beliefs = beliefs(n, corrupt, &everyone, &reversed(steps));

    let mut normalised = Vec::new();
    let (mut bits, mut top1, mut receivers) = (0.0, 0.0, Vec::new());
    let mut latencies = Vec::new();
    let mut delivered = vec![false; messages.len()];
    for &(id, _, at) in deliveries {
        if std::mem::replace(&mut delivered[id as usize], true) {
            continue;
        }
        let message = &messages[id as usize];
        if let Some(b) = sender_beliefs.get(&id) {
            bits += b.entropy_bits();
            normalised.push(b.normalised_entropy(senders));
            top1 += b.top1_credit(message.sender);
        }
        if let Some(b) = receiver_beliefs.get(&id) {
            receivers.push(b.normalised_entropy(n));
        }
        latencies.push(at.duration_since(message.sent).as_secs_f64() * 1000.0);
    }
    let count = normalised.len().max(1) as f64;
    normalised.sort_by(f64::total_cmp);
    latencies.sort_by(f64::total_cmp);
    MixSimReport {
        nodes: n,
        senders,
        messages: messages.len(),
        delivered: delivered.iter().filter(|&&d| d).count(),
        corrupt: corrupt.iter().filter(|&&c| c).count(),
        entropy_bits_mean: bits / count,
        entropy_normalised_mean: normalised.iter().sum::<f64>() / count,
        entropy_normalised_p5: normalised.get(normalised.len() / 20).copied().unwrap_or(0.0),
        top1_linkage: top1 / count,
        receiver_entropy_normalised_mean: receivers.iter().sum::<f64>()
            / receivers.len().max(1) as f64,
        latency_ms_p50: latencies.get(latencies.len() / 2).copied().unwrap_or(0.0),
    }
}

/// Runs `steps` through an observer and keeps the belief about each packet where it ends.
fn beliefs(
    n: usize,
    corrupt: &[bool],
    party_of: &[Option<usize>],
    steps: &[Step],
) -> HashMap<PacketId, Belief> {
    let mut observer = Observer::new(party_of.to_vec(), n, corrupt.to_vec());
    let mut out = HashMap::new();
    for &step in steps {
        let belief = observer.step(step).expect("the simulator places every packet");
        if let (Some(belief), Step::Deliver { packet, .. } | Step::End { packet, .. }) =
            (belief, step)
        {
            out.insert(packet, belief);
        }
    }
    out
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

    #[test]
    fn anonymity_grows_with_traffic_and_corrupt_nodes_reveal_everything() {
        // Loopix's rule of thumb: a mix hides well once it holds a few packets on average
        // (arrival rate over departure rate of two or more).
        let quiet = run(&MixSimConfig { nodes: 10, messages: 200, ..MixSimConfig::default() });
        assert_eq!((quiet.messages, quiet.delivered), (200, 200), "{quiet:?}");
        let busy = run(&MixSimConfig {
            nodes: 10,
            messages: 300,
            rate: 50.0,
            hop_delay: Duration::from_millis(100),
            ..MixSimConfig::default()
        });
        assert_eq!((busy.messages, busy.delivered), (300, 300), "{busy:?}");
        assert!(busy.entropy_normalised_mean > 0.6, "{busy:?}");
        assert!(busy.entropy_normalised_mean <= 1.0, "{busy:?}");
        assert!(busy.top1_linkage < 0.5, "{busy:?}");
        assert!(busy.receiver_entropy_normalised_mean > 0.6, "{busy:?}");
        assert!(quiet.entropy_normalised_mean < busy.entropy_normalised_mean, "{quiet:?}");
        assert!(busy.latency_ms_p50 > quiet.latency_ms_p50, "{busy:?} {quiet:?}");
        let all = run(&MixSimConfig {
            nodes: 10,
            messages: 100,
            corrupt: 1.0,
            ..MixSimConfig::default()
        });
        assert_eq!(all.corrupt, 10);
        assert_eq!(all.entropy_bits_mean, 0.0, "every node corrupt: nothing hidden, {all:?}");
        assert!((all.top1_linkage - 1.0).abs() < 1e-9, "{all:?}");
    }

    #[test]
    fn runs_are_reproducible_from_the_seed() {
        let config = MixSimConfig { nodes: 8, messages: 60, seed: 7, ..MixSimConfig::default() };
        assert_eq!(run(&config), run(&config));
    }
}
