//! The core in virtual time: a handful of nodes wired together by a queue of in-flight
//! packets, a seeded RNG, no sleeps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use libp2p_identity::Keypair;
use mix_sphinx::NodeSecretKey;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;

const LATENCY: Duration = Duration::from_millis(2);

struct Net {
    nodes: BTreeMap<PeerId, MixCore<ChaCha20Rng>>,
    now: Instant,
    /// (arrival, seq) -> (to, packet, per-hop proof)
    in_flight: BTreeMap<(Instant, u64), (PeerId, Packet, Vec<u8>)>,
    seq: u64,
    deliveries: Vec<(PeerId, Delivery)>,
    replies: Vec<(PeerId, RequestId, Vec<u8>)>,
    timeouts: Vec<(PeerId, RequestId)>,
    expired_bundles: Vec<(PeerId, RequestId)>,
    transmits: Vec<(Instant, PeerId, PeerId)>,
    /// Packets to these peers vanish.
    dead: Vec<PeerId>,
    /// Every frame sent, when set: (time, from, to, packet, proof).
    wire: Option<Vec<Frame>>,
    /// Sequence numbers for the records of rotated keys.
    record_seq: u64,
    /// The next packet to arrive at this peer has a payload byte flipped on its way.
    tamper_next_to: Option<PeerId>,
}

/// A frame on the wire: (time, from, to, packet, proof).
type Frame = (Instant, PeerId, PeerId, Packet, Vec<u8>);

/// Unix time at the start of the virtual clock: an epoch boundary for any epoch length that
/// divides 10 000 s.
const UNIX_T0: Duration = Duration::from_secs(1_800_000_000);

fn node_entry(rng: &mut ChaCha20Rng, i: usize) -> (MixNode, NodeSecretKey) {
    // Identities from the seeded RNG too: peers sort by id, so random ids would make each run
    // a different network, and the statistical tests flaky.
    let mut bytes: [u8; 32] = rng.random();
    let secret = libp2p_identity::secp256k1::SecretKey::try_from_bytes(&mut bytes)
        .expect("a valid scalar (all but 2^-128 of draws)");
    let keypair: Keypair = libp2p_identity::secp256k1::Keypair::from(secret).into();
    let peer = keypair.public().to_peer_id();
    let secret = NodeSecretKey::generate(rng);
    let addr = format!("/ip4/10.0.0.{}/tcp/4000", i + 1).parse().unwrap();
    (MixNode::new(peer, addr, secret.public_key(), true).unwrap(), secret)
}

impl Net {
    fn new(
        n: usize,
        seed: u64,
        delay: Arc<dyn Fn() -> Box<dyn DelayStrategy>>,
        config: Config,
    ) -> Self {
        Self::with_configs(n, seed, delay, |_| config.clone())
    }

    /// Node `i` (in the order of [`Self::peers`]' construction, not of its sorting) runs
    /// `config_of(i)`.
    fn with_configs(
        n: usize,
        seed: u64,
        delay: Arc<dyn Fn() -> Box<dyn DelayStrategy>>,
        config_of: impl Fn(usize) -> Config,
    ) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let entries: Vec<_> = (0..n).map(|i| node_entry(&mut rng, i)).collect();
        // A dynamic pool, so that rotated keys and lost loops reach it.
        let mut pool = DynamicPool::new();
        for (entry, _) in &entries {
            pool.insert_static(entry.clone());
        }
        let now = Instant::now();
        let nodes = entries
            .into_iter()
            .enumerate()
            .map(|(i, (entry, secret))| {
                let mut core = MixCore::new(
                    config_of(i),
                    entry.clone(),
                    secret,
                    Box::new(pool.clone()),
                    delay(),
                    ChaCha20Rng::seed_from_u64(seed * 1000 + i as u64),
                );
                core.set_wall_clock(now, UNIX_T0);
                (*entry.peer_id(), core)
            })
            .collect();
        let mut net = Self {
            nodes,
            now,
            in_flight: BTreeMap::new(),
            seq: 0,
            deliveries: Vec::new(),
            replies: Vec::new(),
            timeouts: Vec::new(),
            expired_bundles: Vec::new(),
            transmits: Vec::new(),
            dead: Vec::new(),
            wire: None,
            record_seq: 0,
            tamper_next_to: None,
        };
        // Starts rotation (and cover traffic, if configured), as the driver does.
        for core in net.nodes.values_mut() {
            core.handle_timeout(now);
        }
        net.drain_outputs();
        net
    }

    fn peers(&self) -> Vec<PeerId> {
        self.nodes.keys().copied().collect()
    }

    fn node(&mut self, peer: &PeerId) -> &mut MixCore<ChaCha20Rng> {
        self.nodes.get_mut(peer).unwrap()
    }

    fn drain_outputs(&mut self) {
        let mut rotated = Vec::new();
        for (peer, core) in &mut self.nodes {
            while let Some(out) = core.poll_output() {
                match out {
                    Output::Transmit { peer: to, packet, proof, .. } => {
                        self.transmits.push((self.now, *peer, to));
                        if let Some(wire) = self.wire.as_mut() {
                            wire.push((self.now, *peer, to, packet.clone(), proof.clone()));
                        }
                        if !self.dead.contains(&to) {
                            self.seq += 1;
                            self.in_flight
                                .insert((self.now + LATENCY, self.seq), (to, packet, proof));
                        }
                    }
                    Output::KeysRotated(keys) => {
                        rotated.push(core.local().clone().with_epoch_keys(keys));
                    }
                    Output::Deliver(d) => self.deliveries.push((*peer, d)),
                    Output::Reply { request, body, .. } => {
                        self.replies.push((*peer, request, body))
                    }
                    Output::RequestTimedOut(r) => self.timeouts.push((*peer, r)),
                    Output::SurbsExpired(r) => self.expired_bundles.push((*peer, r)),
                }
            }
        }
        // Discovery, instantly: every node learns the new keys.
        for node in rotated {
            self.record_seq += 1;
            for core in self.nodes.values_mut() {
                let expires = self.now + Duration::from_secs(1 << 20);
                core.pool_mut().offer(node.clone(), self.record_seq, expires, self.now);
            }
        }
    }

    /// Runs until nothing is in flight or scheduled, or until `limit` of virtual time.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        loop {
            self.drain_outputs();
            let next_packet = self.in_flight.keys().next().map(|k| k.0);
            let next_timer = self.nodes.values_mut().filter_map(|c| c.poll_timeout()).min();
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else { return };
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            while let Some(entry) = self.in_flight.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (to, mut packet, proof) = entry.remove();
                if self.tamper_next_to == Some(to) {
                    self.tamper_next_to = None;
                    packet.as_bytes_mut()[mix_sphinx::PACKET_SIZE - 1] ^= 1;
                }
                if let Some(core) = self.nodes.get_mut(&to) {
                    let _ = core.handle_packet_with_proof(self.now, packet, &proof);
                }
            }
            let now = self.now;
            for core in self.nodes.values_mut() {
                core.handle_timeout(now);
            }
        }
    }
}

fn exponential(mean_ms: u64) -> Arc<dyn Fn() -> Box<dyn DelayStrategy>> {
    Arc::new(move || Box::new(ExponentialDelay::new(Duration::from_millis(mean_ms))))
}

/// The first node sends one message; its first hop and the packet it goes out as.
fn first_transmit(net: &mut Net) -> (PeerId, Packet) {
    let sender = net.peers()[0];
    let now = net.now;
    net.node(&sender).send(now, &external_destination(), "/p", b"x").unwrap();
    net.node(&sender).handle_timeout(now + Duration::from_secs(1));
    let Some(Output::Transmit { peer, packet, .. }) = net.node(&sender).poll_output() else {
        panic!("expected a transmit");
    };
    (peer, packet)
}

fn external_destination() -> Destination {
    let peer_id = Keypair::generate_secp256k1().public().to_peer_id();
    Destination::Peer { peer_id, addr: "/ip4/192.168.1.1/tcp/9000".parse().unwrap() }
}

#[test]
fn messages_are_delivered_exactly_once_at_an_exit() {
    let mut net = Net::new(8, 1, exponential(20), Config::default());
    let peers = net.peers();
    let dest = external_destination();
    let now = net.now;
    for i in 0..200u32 {
        let sender = peers[i as usize % peers.len()];
        net.node(&sender).send(now, &dest, "/test/1", &i.to_be_bytes()).unwrap();
    }
    net.run(Duration::from_secs(60));
    assert_eq!(net.deliveries.len(), 200);
    let mut bodies: Vec<u32> = net
        .deliveries
        .iter()
        .map(|(_, d)| {
            assert_eq!(d.codec, "/test/1");
            assert_eq!(d.replies, 0);
            let Destination::Peer { peer_id, addr } = &dest else { unreachable!() };
            assert_eq!(d.destination.as_ref(), Some(&(*peer_id, addr.clone())));
            u32::from_be_bytes(d.body[..4].try_into().unwrap())
        })
        .collect();
    bodies.sort_unstable();
    assert_eq!(bodies, (0..200).collect::<Vec<_>>());
    // Each message took 3 hops: 200 originated, 400 forwarded, delivered at 200 exits.
    let forwarded: u64 = net.nodes.values().map(|c| c.stats().packets_forwarded()).sum();
    assert_eq!(forwarded, 400);
    // Nobody is its own exit or a hop of its own path.
    for (from, to) in net.transmits.iter().map(|(_, a, b)| (a, b)) {
        assert_ne!(from, to);
    }
}

#[test]
fn held_answers_expire_and_the_oldest_make_room() {
    let config = Config {
        max_awaited_local_answers: 2,
        max_awaited_exit_answers: 2,
        answer_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut net = Net::new(8, 2, exponential(10), config);
    let peers = net.peers();
    // Three requests to one mix node, which is their exit: it holds two answers at most.
    let exit = peers[5];
    let dest = Destination::MixNode(exit);
    let now = net.now;
    for body in [b"one", b"two", b"tri"] {
        net.node(&peers[0]).request(now, &dest, "/echo/1", body, 1).unwrap();
    }
    net.run(Duration::from_millis(2_000));
    assert_eq!(net.deliveries.len(), 3);
    assert!(net.deliveries.iter().all(|(at, d)| *at == exit && d.replies == 1));
    assert_eq!(net.node(&exit).stats().answers_evicted, 1);
    assert_eq!(net.node(&exit).stats().awaited_answers, 2);
    let mut ids: Vec<DeliveryId> = net.deliveries.iter().map(|(_, d)| d.id).collect();
    ids.sort();
    let now = net.now;
    let answered: Vec<usize> =
        ids.iter().map(|id| net.node(&exit).answer(now, *id, b"ok").unwrap()).collect();
    assert_eq!(answered, vec![0, 1, 1], "the oldest went first");
    let dest = external_destination();
    // An answer after the timeout sends nothing, and the SURBs are gone.
    net.deliveries.clear();
    net.node(&peers[1]).request(now, &dest, "/echo/1", b"late", 1).unwrap();
    net.run(Duration::from_millis(2_000));
    let (exit, late) = net.deliveries.pop().expect("delivered");
    assert_eq!(net.node(&exit).stats().awaited_answers, 1);
    let later = net.now + Duration::from_secs(6);
    net.node(&exit).handle_timeout(later);
    assert_eq!(net.node(&exit).stats().awaited_answers, 0);
    assert_eq!(net.node(&exit).answer(later, late.id, b"too late").unwrap(), 0);
}

#[test]
fn deliveries_to_destinations_keep_their_answers_and_past_the_budget_new_ones_go_unheld() {
    let config = Config { max_awaited_exit_answers: 2, ..Config::default() };
    let mut net = Net::new(8, 2, exponential(10), config);
    let peers = net.peers();
    let dest = external_destination();
    let now = net.now;
    for i in 0..12u32 {
        net.node(&peers[0]).request(now, &dest, "/echo/1", &i.to_be_bytes(), 1).unwrap();
    }
    net.run(Duration::from_millis(2_000));
    assert_eq!(net.deliveries.len(), 12);
    let mut by_exit: HashMap<PeerId, Vec<(DeliveryId, usize)>> = HashMap::new();
    for (exit, d) in &net.deliveries {
        by_exit.entry(*exit).or_default().push((d.id, d.replies));
    }
    let now = net.now;
    for (exit, mut held) in by_exit {
        held.sort();
        let stats = net.node(&exit).stats().clone();
        assert_eq!(stats.answers_refused as usize, held.len().saturating_sub(2));
        assert_eq!(stats.answers_evicted, 0, "exit jobs' answers are never pushed out");
        for (i, (id, replies)) in held.into_iter().enumerate() {
            // The first two are held and answer; the rest came with SURBs that were not kept.
            let kept = i < 2;
            assert_eq!(replies, if kept { 1 } else { 0 });
            let sent = net.node(&exit).answer(now, id, b"ok").unwrap();
            assert_eq!(sent, usize::from(kept));
        }
    }
}

#[test]
fn surb_replies_return_to_the_requester() {
    let mut net = Net::new(8, 2, exponential(10), Config::default());
    let peers = net.peers();
    let dest = external_destination();
    let now = net.now;
    let request = net.node(&peers[0]).request(now, &dest, "/echo/1", b"ping?", 3).unwrap();
    net.run(Duration::from_secs(10));
    let (exit, delivery) = net.deliveries.pop().unwrap();
    assert_eq!(delivery.replies, 3);
    assert_eq!(delivery.body, b"ping?");
    let now = net.now;
    assert_eq!(net.node(&exit).answer(now, delivery.id, b"pong!").unwrap(), 3);
    // The SURBs answer once: a second answer sends nothing.
    assert_eq!(net.node(&exit).answer(now, delivery.id, b"again").unwrap(), 0);
    assert_eq!(net.node(&exit).stats().awaited_answers, 0);
    net.run(Duration::from_secs(10));
    // Three copies came back; the first answers the request, the rest are known duplicates.
    assert_eq!(net.replies, vec![(peers[0], request, b"pong!".to_vec())]);
    let stats = net.node(&peers[0]).stats();
    assert_eq!(stats.packets_dropped(DropReason::DuplicateReply), 2);
    assert_eq!(stats.packets_dropped(DropReason::UnknownSurb), 0);
    assert!(net.timeouts.is_empty());
    assert_eq!(net.node(&peers[0]).pending_requests(), 0);
}

/// A reply tampered with on its way (a hop flipping a payload bit, or an exit answering with
/// junk through one SURB) fails its integrity check at the requester. It must not use up the
/// request: an honest copy through another SURB still answers it. Before, the tampered reply
/// took the request and marked its other SURBs answered, so the request ended with neither
/// a reply nor a timeout.
#[test]
fn a_tampered_reply_leaves_the_request_to_the_honest_copies() {
    let mut net = Net::new(8, 2, exponential(10), Config::default());
    let peers = net.peers();
    let dest = external_destination();
    let now = net.now;
    let request = net.node(&peers[0]).request(now, &dest, "/echo/1", b"ping?", 3).unwrap();
    net.run(Duration::from_secs(10));
    let (exit, delivery) = net.deliveries.pop().unwrap();
    let now = net.now;
    assert_eq!(net.node(&exit).answer(now, delivery.id, b"pong!").unwrap(), 3);
    net.tamper_next_to = Some(peers[0]);
    net.run(Duration::from_secs(10));
    assert_eq!(net.tamper_next_to, None, "no reply reached the requester");
    let stats = net.node(&peers[0]).stats().clone();
    assert_eq!(stats.packets_dropped(DropReason::ReplyIntegrity), 1);
    assert_eq!(net.replies, vec![(peers[0], request, b"pong!".to_vec())]);
    assert_eq!(stats.packets_dropped(DropReason::DuplicateReply), 1);
    assert_eq!(net.node(&peers[0]).pending_requests(), 0);

    // With a single SURB, the tampered reply leaves the request to its timeout, which the
    // caller hears of.
    let now = net.now;
    let lone = net.node(&peers[0]).request(now, &dest, "/echo/1", b"one", 1).unwrap();
    net.run(Duration::from_secs(10));
    let (exit, delivery) = net.deliveries.pop().unwrap();
    let now = net.now;
    assert_eq!(net.node(&exit).answer(now, delivery.id, b"lost").unwrap(), 1);
    net.tamper_next_to = Some(peers[0]);
    net.run(Duration::from_secs(120));
    assert_eq!(net.replies.len(), 1);
    assert_eq!(net.timeouts, vec![(peers[0], lone)]);
}

#[test]
fn each_surb_of_a_bundle_answers_once_on_its_own() {
    let config = Config { surb_lifetime: Duration::from_secs(20), ..Config::default() };
    let mut net = Net::new(8, 21, exponential(10), config);
    let peers = net.peers();
    let now = net.now;
    let user = peers[5];
    let bundle = net.node(&peers[0]).surb_bundle(now, 4, &[user], SendOptions::default()).unwrap();
    assert_eq!(bundle.surbs.len(), 4);
    assert_eq!(bundle.expires, now + Duration::from_secs(20));
    // The bundle is not a request waiting for an answer.
    assert_eq!(net.node(&peers[0]).pending_requests(), 0);
    for (i, surb) in bundle.surbs.iter().enumerate() {
        let first = surb.first_hop().decode().unwrap().1;
        assert_ne!(first, user, "return paths avoid the peer that uses them");
        let body = format!("reply {i}");
        assert_eq!(net.node(&user).reply(now, std::slice::from_ref(surb), body.as_bytes()), Ok(1));
    }
    // A SURB used twice answers only once.
    assert_eq!(net.node(&user).reply(now, &bundle.surbs[..1], b"again"), Ok(1));
    net.run(Duration::from_secs(10));
    let mut got: Vec<Vec<u8>> = net
        .replies
        .iter()
        .map(|(to, id, body)| {
            assert_eq!((to, id), (&peers[0], &bundle.id));
            body.clone()
        })
        .collect();
    got.sort();
    let expected: Vec<Vec<u8>> = (0..4).map(|i| format!("reply {i}").into_bytes()).collect();
    assert_eq!(got, expected);
    // The second use repeats the SURB's header: its first hop drops it as a replay.
    let replays: u64 =
        net.nodes.values().map(|c| c.stats().packets_dropped(DropReason::Replay)).sum();
    assert_eq!(replays, 1);
    // All four used: nothing left to expire.
    net.run(Duration::from_secs(30));
    assert!(net.expired_bundles.is_empty());

    // A bundle whose SURBs are not all used expires quietly, without a request timeout.
    let now = net.now;
    let bundle = net.node(&peers[0]).surb_bundle(now, 2, &[user], SendOptions::default()).unwrap();
    net.node(&user).reply(now, &bundle.surbs[..1], b"one").unwrap();
    net.run(Duration::from_secs(60));
    assert_eq!(net.expired_bundles, vec![(peers[0], bundle.id)]);
    assert!(net.timeouts.is_empty());
    // Replies after the deadline are unknown.
    let now = net.now;
    net.node(&user).reply(now, &bundle.surbs[1..], b"late").unwrap();
    net.run(Duration::from_secs(10));
    assert_eq!(net.node(&peers[0]).stats().packets_dropped(DropReason::UnknownSurb), 1);
}

#[test]
fn surbs_held_are_bounded() {
    let config = Config { max_pending_surbs: 6, ..Config::default() };
    let mut net = Net::new(6, 22, exponential(10), config);
    let peers = net.peers();
    let now = net.now;
    let core = net.node(&peers[0]);
    core.surb_bundle(now, 5, &[], SendOptions::default()).unwrap();
    assert!(matches!(
        core.surb_bundle(now, 2, &[], SendOptions::default()),
        Err(SendError::TooManySurbs(5))
    ));
    assert!(matches!(
        core.request(now, &external_destination(), "/r", b"x", 2),
        Err(SendError::TooManySurbs(5))
    ));
    assert!(matches!(
        core.surb_bundle(now, 0, &[], SendOptions::default()),
        Err(SendError::NoSurbs)
    ));
}

#[test]
fn per_message_options_set_hops_delays_and_jitter() {
    let config = Config {
        pre_send_delay: Duration::ZERO,
        send_jitter: Duration::from_secs(1),
        ..Config::default()
    };
    let mut net = Net::new(8, 23, exponential(5), config);
    let peers = net.peers();
    net.wire = Some(Vec::new());
    let now = net.now;
    let options = SendOptions {
        path_len: Some(5),
        hop_delay: Some(Duration::from_millis(1)),
        jitter: Some(Duration::ZERO),
        ..SendOptions::default()
    };
    for i in 0..20u32 {
        net.node(&peers[0])
            .send_with(now, &external_destination(), "/o", &i.to_be_bytes(), options)
            .unwrap();
    }
    net.run(Duration::from_secs(10));
    assert_eq!(net.deliveries.len(), 20);
    let wire = net.wire.take().unwrap();
    // 5 hops: the sender's packet and 4 forwards per message.
    assert_eq!(wire.len(), 100);
    // Without jitter (the node's 1 s is overridden) all 20 leave at once.
    let own: Vec<_> = wire.iter().filter(|f| f.1 == peers[0]).collect();
    assert!(own.iter().all(|f| f.0 == now), "own packets left without jitter");
    // Drawn with a 1 ms mean per hop, every message is through within a fraction of a second.
    assert!(net.now < now + Duration::from_secs(10));
}

#[test]
fn injected_faults_drop_the_configured_share() {
    let config = Config { drop_rate: 0.25, ..Config::default() };
    let mut net = Net::new(8, 24, exponential(1), config);
    let peers = net.peers();
    let now = net.now;
    for i in 0..2000u32 {
        let sender = peers[i as usize % peers.len()];
        net.node(&sender).send(now, &external_destination(), "/f", &i.to_be_bytes()).unwrap();
    }
    net.run(Duration::from_secs(60));
    // Three receptions per message, each surviving with probability 0.75.
    let share = net.deliveries.len() as f64 / 2000.0;
    assert!((share - 0.421875).abs() < 0.04, "delivered share {share}");
    let injected: u64 =
        net.nodes.values().map(|c| c.stats().packets_dropped(DropReason::Injected)).sum();
    assert!(injected > 0);
}

#[test]
fn exit_is_destination_delivers_locally() {
    let mut net = Net::new(6, 3, exponential(5), Config::default());
    let peers = net.peers();
    let now = net.now;
    net.node(&peers[0]).send(now, &Destination::MixNode(peers[4]), "/local/1", b"hi").unwrap();
    net.run(Duration::from_secs(10));
    assert_eq!(net.deliveries.len(), 1);
    let (exit, d) = &net.deliveries[0];
    assert_eq!((exit, d.destination.as_ref()), (&peers[4], None));
}

#[test]
fn transmits_name_the_packet_each_call_took_in() {
    // What a simulator needs for ground truth: which output carries which input.
    let mut net = Net::new(6, 5, exponential(5), Config::default());
    let peers = net.peers();
    let now = net.now;
    let sender = net.node(&peers[0]);
    let before = sender.last_packet_number();
    sender.send(now, &external_destination(), "/p", b"x").unwrap();
    let own = sender.last_packet_number();
    assert_eq!(own, before + 1);
    sender.handle_timeout(now + Duration::from_secs(1));
    let Some(Output::Transmit { peer: hop, packet, trace, .. }) = sender.poll_output() else {
        panic!("expected a transmit");
    };
    assert_eq!(trace, Trace { number: own, kind: PacketKind::Own });
    let relay = net.node(&hop);
    let before = relay.last_packet_number();
    relay.handle_packet(now, packet).unwrap();
    let forwarded = relay.last_packet_number();
    assert_eq!(forwarded, before + 1, "one packet taken in to forward");
    relay.handle_timeout(now + Duration::from_secs(10));
    let Some(Output::Transmit { trace, .. }) = relay.poll_output() else {
        panic!("expected the forwarded packet");
    };
    assert_eq!(trace, Trace { number: forwarded, kind: PacketKind::Forward });
}

#[test]
fn a_replayed_packet_is_dropped_and_counted() {
    let mut net = Net::new(6, 4, exponential(5), Config::default());
    let now = net.now;
    let (first_hop, packet) = first_transmit(&mut net);
    let copy = packet.clone();
    assert_eq!(net.node(&first_hop).handle_packet(now, packet), Ok(()));
    assert_eq!(net.node(&first_hop).handle_packet(now, copy), Err(DropReason::Replay));
    assert_eq!(net.node(&first_hop).stats().packets_dropped(DropReason::Replay), 1);
}

/// Hop workers open packets side by side and check each tag under its filter's lock: two
/// copies opened at once never both pass, whichever runs or finishes first.
#[test]
fn two_copies_opened_at_once_on_workers_pass_once() {
    for copy_first in [false, true] {
        let mut net = Net::new(6, 4, exponential(5), Config::default());
        let now = net.now;
        let (hop, packet) = first_transmit(&mut net);
        let copy = packet.clone();
        let relay = net.node(&hop);
        let jobs = [
            relay.prepare_packet(now, packet, &[]).unwrap(),
            relay.prepare_packet(now, copy, &[]).unwrap(),
        ];
        let [first, second] = std::thread::scope(|s| {
            let handles = jobs.map(|job| s.spawn(move || job.run()));
            handles.map(|h| h.join().unwrap())
        });
        let (a, b) = if copy_first { (second, first) } else { (first, second) };
        let mut results = [relay.finish_packet(now, a), relay.finish_packet(now, b)];
        results.sort_by_key(|r| r.is_err());
        assert_eq!(results, [Ok(()), Err(DropReason::Replay)]);
        assert_eq!(relay.stats().packets_received, 2);
        assert_eq!(relay.stats().packets_dropped(DropReason::Replay), 1);
        assert_eq!(relay.delayed_packets(), 1, "the fresh copy is held for forwarding");
    }
}

/// A replay costs one Diffie-Hellman: it is refused right after the MAC, before the peel (the
/// second Diffie-Hellman and the payload's decryption).
#[test]
fn a_replay_is_refused_before_the_peel() {
    let mut net = Net::new(6, 6, exponential(5), Config::default());
    let now = net.now;
    let (hop, packet) = first_transmit(&mut net);
    let relay = net.node(&hop);
    let fresh = relay.prepare_packet(now, packet.clone(), &[]).unwrap().run();
    let replay = relay.prepare_packet(now, packet, &[]).unwrap().run();
    assert!(fresh.outcome.as_ref().unwrap().action.is_some());
    let refused = replay.outcome.as_ref().unwrap();
    assert_eq!(refused.seen, Ok(true));
    assert!(refused.action.is_none(), "a replay was peeled");
    assert_eq!(relay.finish_packet(now, fresh), Ok(()));
    assert_eq!(relay.finish_packet(now, replay), Err(DropReason::Replay));
}

/// A job still running when its key rotates out opens nothing: the core no longer holds the
/// key, so it could not keep the packet's replay tag either.
#[test]
fn a_job_whose_key_rotated_out_meanwhile_is_dropped() {
    let rotation =
        RotationConfig { epoch: Duration::from_secs(100), overlap: Duration::from_secs(10) };
    let config = Config { rotation: Some(rotation), ..Config::default() };
    let mut net = Net::new(6, 5, exponential(5), config);
    let now = net.now;
    let (hop, packet) = first_transmit(&mut net);
    let relay = net.node(&hop);
    let copy = relay.prepare_packet(now, packet.clone(), &[]).unwrap();
    let job = relay.prepare_packet(now, packet, &[]).unwrap();
    assert_eq!(relay.finish_packet(now, copy.run()), Ok(()), "the key opens it in its epoch");
    // Two epochs on: the key that built the packet is neither current nor previous.
    let later = now + Duration::from_secs(250);
    relay.handle_timeout(later);
    let done = job.run();
    assert_eq!(
        relay.finish_packet(later, done),
        Err(DropReason::Sphinx(ProcessError::MacMismatch))
    );
}

#[test]
fn requests_time_out_when_a_hop_is_dead() {
    let config = Config { request_timeout: Duration::from_secs(5), ..Config::default() };
    let mut net = Net::new(5, 5, exponential(5), config);
    let peers = net.peers();
    net.dead = peers[1..].to_vec();
    let now = net.now;
    let request = net.node(&peers[0]).request(now, &external_destination(), "/p", b"?", 1).unwrap();
    net.run(Duration::from_secs(4));
    assert!(net.timeouts.is_empty());
    net.run(Duration::from_secs(2));
    assert_eq!(net.timeouts, vec![(peers[0], request)]);
    assert_eq!(net.node(&peers[0]).pending_requests(), 0);
}

#[test]
fn size_and_pool_errors_come_before_anything_is_sent() {
    let mut net = Net::new(3, 6, exponential(5), Config::default());
    let peers = net.peers();
    let now = net.now;
    let node = net.node(&peers[0]);
    let max = node.max_message_size("/p", 1).unwrap();
    let err = node.request(now, &external_destination(), "/p", &vec![0; max + 1], 1).unwrap_err();
    assert!(matches!(err, SendError::Message(MessageError::TooLarge { .. })), "{err}");
    // Three nodes minus the sender leaves two: not enough for three hops.
    let err = node.send(now, &external_destination(), "/p", b"x").unwrap_err();
    assert!(matches!(err, SendError::Path(PathError::NotEnoughNodes { .. })), "{err}");
    let bad = Destination::Peer {
        peer_id: Keypair::generate_ed25519().public().to_peer_id(),
        addr: "/ip4/1.2.3.4/tcp/1".parse().unwrap(),
    };
    assert!(matches!(node.send(now, &bad, "/p", b"x"), Err(SendError::Destination(_))));
    assert_eq!(node.delayed_packets(), 0);
    assert_eq!(node.pending_requests(), 0);
}

#[test]
fn the_delay_queue_is_bounded() {
    let config = Config { max_delayed_packets: 10, ..Config::default() };
    let mut net = Net::new(6, 7, exponential(1000), config);
    let peers = net.peers();
    let now = net.now;

    // Packets from another sender, released to their first hops.
    let sender = peers[1];
    for _ in 0..10 {
        net.node(&sender).send(now, &external_destination(), "/p", b"y").unwrap();
    }
    net.node(&sender).handle_timeout(now + Duration::from_secs(10));
    let mut by_hop: HashMap<PeerId, Vec<Packet>> = HashMap::new();
    while let Some(Output::Transmit { peer, packet, .. }) = net.node(&sender).poll_output() {
        by_hop.entry(peer).or_default().push(packet);
    }
    let (hop, packets) = by_hop.into_iter().max_by_key(|(_, p)| p.len()).unwrap();

    // The hop fills its queue with its own sends; one more is refused, not dropped.
    for _ in 0..10 {
        net.node(&hop).send(now, &external_destination(), "/p", b"x").unwrap();
    }
    let err = net.node(&hop).send(now, &external_destination(), "/p", b"x").unwrap_err();
    assert!(matches!(err, SendError::QueueFull(10)), "{err}");

    // Packets to forward that find the queue full are dropped and counted (tail drop).
    let count = packets.len();
    for p in packets {
        assert_eq!(net.node(&hop).handle_packet(now, p), Err(DropReason::DelayQueueFull));
    }
    assert_eq!(net.node(&hop).delayed_packets(), 10);
    let dropped = net.node(&hop).stats().packets_dropped(DropReason::DelayQueueFull);
    assert_eq!(dropped as usize, count);
}

/// Hop delays follow the configured distribution: packets fed to one hop at the same instant
/// leave at times whose offsets pass a Kolmogorov-Smirnov test against the truncated
/// exponential with the encoded mean. Pre-send delays are independent draws too.
///
/// Under both delay semantics: in a `v1` network the sender draws each hop's delay and the hop
/// waits exactly that long, which must give the hop the same distribution (to the millisecond).
#[test]
fn hop_delays_follow_the_configured_distribution() {
    for &wire in Wire::ALL {
        hop_delays_follow_the_distribution_under(wire);
    }
}

fn hop_delays_follow_the_distribution_under(wire: Wire) {
    const MEAN_MS: u64 = 40;
    const N: usize = 3000;
    // No send jitter here: it spaces departures on purpose (tested on its own).
    let config = Config {
        pre_send_delay: Duration::from_millis(MEAN_MS),
        send_jitter: Duration::ZERO,
        ..Config::default().with_wire(wire)
    };
    let mut net = Net::new(6, 8, exponential(MEAN_MS), config);
    let peers = net.peers();
    let t0 = net.now;
    let sender = peers[0];
    let mut pre_send = Vec::new();
    let mut by_hop: HashMap<PeerId, Vec<Packet>> = HashMap::new();
    for _ in 0..N {
        net.node(&sender).send(t0, &external_destination(), "/p", b"x").unwrap();
    }
    // Release the sender's packets one by one to read their pre-send delays.
    while let Some(due) = net.node(&sender).poll_timeout() {
        net.node(&sender).handle_timeout(due);
        while let Some(Output::Transmit { peer, packet, .. }) = net.node(&sender).poll_output() {
            pre_send.push(due.duration_since(t0).as_secs_f64() * 1000.0);
            by_hop.entry(peer).or_default().push(packet);
        }
    }
    let (hop, packets) = by_hop.into_iter().max_by_key(|(_, p)| p.len()).unwrap();
    let count = packets.len();
    for p in packets {
        net.node(&hop).handle_packet(t0, p).unwrap();
    }
    let mut hop_delays = Vec::new();
    while let Some(due) = net.node(&hop).poll_timeout() {
        net.node(&hop).handle_timeout(due);
        while net.node(&hop).poll_output().is_some() {
            hop_delays.push(due.duration_since(t0).as_secs_f64() * 1000.0);
        }
    }
    assert_eq!(hop_delays.len(), count);
    let cdf = |x: f64| truncated_exponential_cdf(MEAN_MS as f64, x);
    let exact = wire.delay_semantics() == DelaySemantics::Exact;
    for (what, samples) in [("pre-send", &mut pre_send), ("hop", &mut hop_delays)] {
        samples.sort_by(f64::total_cmp);
        let n = samples.len() as f64;
        let d = if exact && what == "hop" {
            // Whole milliseconds, rounded up by the sender: compare P(X ≤ k) at each k taken.
            assert!(samples.iter().all(|x| (x - x.round()).abs() < 1e-6), "{wire}: not exact");
            discrete_ks(samples, cdf)
        } else {
            samples.iter().enumerate().fold(0.0f64, |d, (i, &x)| {
                let f = cdf(x);
                d.max((f - i as f64 / n).abs()).max(((i + 1) as f64 / n - f).abs())
            })
        };
        assert!(d < 1.628 / n.sqrt(), "{wire} {what}: KS D = {d} over {n} samples");
    }
}

/// KS statistic of sorted whole-millisecond samples of ⌈X⌉ against X's CDF.
fn discrete_ks(sorted: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
    let n = sorted.len() as f64;
    let mut d = 0.0f64;
    let mut i = 0;
    while i < sorted.len() {
        let k = sorted[i].round();
        let below = i as f64 / n;
        while i < sorted.len() && sorted[i].round() == k {
            i += 1;
        }
        d = d.max((i as f64 / n - cdf(k)).abs()).max((below - cdf(k - 1.0)).abs());
    }
    d
}

#[test]
fn redundant_copies_take_disjoint_paths_and_are_delivered_once() {
    let mut net = Net::new(10, 9, exponential(5), Config::default());
    let peers = net.peers();
    let now = net.now;
    let target = Destination::MixNode(peers[9]);
    let options = SendOptions { copies: 2, ..SendOptions::default() };
    for i in 0..20u32 {
        net.node(&peers[0]).send_with(now, &target, "/app/1", &i.to_be_bytes(), options).unwrap();
    }
    // Copies to other destinations are refused: they could not be deduplicated.
    let err = net.node(&peers[0]).send_with(now, &external_destination(), "/p", b"x", options);
    assert!(matches!(err, Err(SendError::RedundancyNeedsMixNode)));

    // Both copies of each message leave through distinct first hops.
    net.node(&peers[0]).handle_timeout(now + Duration::from_secs(5));
    let mut first_hops = Vec::new();
    while let Some(out) = net.node(&peers[0]).poll_output() {
        let Output::Transmit { peer, packet, .. } = out else { continue };
        first_hops.push(peer);
        net.in_flight.insert((now + LATENCY, first_hops.len() as u64), (peer, packet, Vec::new()));
    }
    assert_eq!(first_hops.len(), 40);
    assert!(first_hops.chunks(2).all(|pair| pair[0] != pair[1]), "copies share a first hop");
    net.seq = 1000;
    net.run(Duration::from_secs(30));
    let mut bodies: Vec<u32> = net
        .deliveries
        .iter()
        .map(|(at, d)| {
            assert_eq!((at, d.codec.as_str()), (&peers[9], "/app/1"));
            u32::from_be_bytes(d.body[..4].try_into().unwrap())
        })
        .collect();
    bodies.sort_unstable();
    assert_eq!(bodies, (0..20).collect::<Vec<_>>());
    assert_eq!(net.node(&peers[9]).stats().packets_dropped(DropReason::DuplicateMessage), 20);
}

#[test]
fn a_copy_through_a_dead_node_is_covered_by_the_other() {
    // 10 nodes, 2 of the 8 eligible hops dead (the destination is the fixed exit). One path of
    // two hops survives with p = C(6,2)/C(8,2) = 0.536; two disjoint copies deliver with
    // p = 1 - (12/28)(5/15) = 0.857.
    let delivered = |copies: usize| {
        let mut net = Net::new(10, 10, exponential(5), Config::default());
        let peers = net.peers();
        net.dead = vec![peers[3], peers[4]];
        let now = net.now;
        let target = Destination::MixNode(peers[9]);
        for i in 0..400u32 {
            net.node(&peers[0])
                .send_with(
                    now,
                    &target,
                    "/app/1",
                    &i.to_be_bytes(),
                    SendOptions { copies, ..SendOptions::default() },
                )
                .unwrap();
        }
        net.run(Duration::from_secs(30));
        net.deliveries.len() as f64 / 400.0
    };
    let (one, two) = (delivered(1), delivered(2));
    assert!((0.45..0.62).contains(&one), "one copy: {one}");
    assert!((0.80..0.92).contains(&two), "two copies: {two}");
}

#[test]
fn a_burst_of_own_packets_leaves_spread_out() {
    let config = Config {
        pre_send_delay: Duration::ZERO,
        send_jitter: Duration::from_millis(10),
        ..Config::default()
    };
    let mut net = Net::new(6, 11, exponential(5), config);
    let peers = net.peers();
    let now = net.now;
    for _ in 0..50 {
        net.node(&peers[0]).send(now, &external_destination(), "/p", b"x").unwrap();
    }
    let mut departures = Vec::new();
    while let Some(due) = net.node(&peers[0]).poll_timeout() {
        net.node(&peers[0]).handle_timeout(due);
        while net.node(&peers[0]).poll_output().is_some() {
            departures.push(due);
        }
    }
    let gaps: Vec<f64> =
        departures.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0).collect();
    assert_eq!(gaps.len(), 49);
    assert!(gaps.iter().all(|g| *g <= 10.0), "{gaps:?}");
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!((3.5..6.5).contains(&mean), "gaps average {mean:.2} ms, expected about 5");
}

mod hardening;
mod wire;

/// How a test hands own messages to [`MixCore`].
#[derive(Clone, Copy, PartialEq)]
enum Building {
    InPlace,
    /// Each job runs on another thread and comes back before the next send.
    JobByJob,
    /// Every job is out at once; they come back last first.
    AllOutReversed,
}

/// A driver with worker threads takes own messages as jobs. Each one back before the next
/// send, the packets are the ones the core builds in place (same seed: same bytes, same first
/// hops); all out at once and back in any order, they differ only in their random draws
/// (the jitter is drawn when a job comes back) and still arrive, and a request built that way
/// gets its reply.
#[test]
fn own_messages_built_as_jobs_are_the_packets_built_in_place() {
    let transmits = |building: Building| {
        let mut net = Net::new(8, 11, exponential(10), Config::default());
        let peers = net.peers();
        let now = net.now;
        let sender = net.node(&peers[0]);
        sender.set_build_jobs(building != Building::InPlace);
        let copies = SendOptions { copies: 2, ..SendOptions::default() };
        // One destination for every run: its address is in the packets.
        let mut bytes = [7; 32];
        let secret = libp2p_identity::secp256k1::SecretKey::try_from_bytes(&mut bytes).unwrap();
        let keypair: Keypair = libp2p_identity::secp256k1::Keypair::from(secret).into();
        let peer_id = keypair.public().to_peer_id();
        let dest =
            Destination::Peer { peer_id, addr: "/ip4/192.168.1.1/tcp/9000".parse().unwrap() };
        let on_a_thread = |job: BuildJob| std::thread::spawn(move || job.run()).join().unwrap();
        let mut request = None;
        for i in 0..3 {
            match i {
                0 => sender
                    .send_with(now, &Destination::MixNode(peers[7]), "/a", b"1", copies)
                    .map(drop),
                1 => sender.request(now, &dest, "/echo", b"2", 2).map(|r| request = Some(r)),
                _ => sender.send(now, &dest, "/b", b"3").map(drop),
            }
            .unwrap();
            if building == Building::JobByJob {
                let job = sender.next_build_job().unwrap();
                sender.finish_build(now, on_a_thread(job));
            }
        }
        let out = if building == Building::AllOutReversed { 4 } else { 0 };
        assert_eq!(sender.packets_being_built(), out);
        let jobs: Vec<BuildJob> = std::iter::from_fn(|| sender.next_build_job()).collect();
        for job in jobs.into_iter().rev() {
            sender.finish_build(now, on_a_thread(job));
        }
        assert_eq!(sender.packets_being_built(), 0);
        sender.handle_timeout(now + Duration::from_secs(5));
        let mut sent = Vec::new();
        while let Some(out) = sender.poll_output() {
            if let Output::Transmit { peer, packet, .. } = out {
                sent.push((peer, packet.as_bytes().to_vec()));
            }
        }
        for (i, (peer, packet)) in sent.iter().enumerate() {
            let packet = Packet::try_from(packet.clone()).unwrap();
            net.in_flight.insert((now + LATENCY, i as u64), (*peer, packet, Vec::new()));
        }
        net.seq = 1000;
        net.run(Duration::from_secs(10));
        assert_eq!(net.deliveries.len(), 3, "one delivery per message, copies deduplicated");
        let (exit, id) = net
            .deliveries
            .iter()
            .find_map(|(exit, d)| (d.codec == "/echo").then_some((*exit, d.id)))
            .unwrap();
        let now = net.now;
        net.node(&exit).answer(now, id, b"back").unwrap();
        net.run(Duration::from_secs(10));
        assert_eq!(net.replies, vec![(peers[0], request.unwrap(), b"back".to_vec())]);
        sent
    };
    let in_place = transmits(Building::InPlace);
    assert_eq!(in_place.len(), 4);
    assert!(transmits(Building::JobByJob) == in_place, "built as jobs, the packets differ");
    assert_eq!(transmits(Building::AllOutReversed).len(), 4);
}

/// Builds handed out count against the bounds as if held; a build that never comes back, or
/// comes back after the node gave up its packets, is counted as dropped, and its request
/// ends at once instead of waiting for a reply that cannot come.
#[test]
fn builds_out_count_against_the_bounds_and_lost_ones_end_their_requests() {
    let config = Config { max_delayed_packets: 3, ..Config::default() };
    let mut net = Net::new(6, 12, exponential(10), config);
    let peers = net.peers();
    let now = net.now;
    let dest = external_destination();
    let sender = net.node(&peers[0]);
    sender.set_build_jobs(true);
    let lost = sender.request(now, &dest, "/echo", b"a", 1).unwrap();
    let late = sender.request(now, &dest, "/echo", b"b", 1).unwrap();
    sender.send(now, &dest, "/p", b"c").unwrap();
    let err = sender.send(now, &dest, "/p", b"d").unwrap_err();
    assert!(matches!(err, SendError::QueueFull(0)), "{err}");

    let [first, second, third] = [(); 3].map(|_| sender.next_build_job().unwrap());
    sender.build_lost(first.ticket());
    assert_eq!(sender.stats().packets_dropped(DropReason::Internal), 1);
    // The third is built and scheduled; the stop gives up the second's packet with it, and
    // its job, when it comes back, is ignored.
    sender.finish_build(now, third.run());
    assert_eq!(sender.delayed_packets(), 1);
    sender.stop();
    assert_eq!(sender.abandon_held(), 2);
    sender.finish_build(now, second.run());
    assert_eq!(sender.stats().packets_dropped(DropReason::Stopping), 2);
    assert_eq!(sender.stats().requests_timed_out, 2);
    assert_eq!((sender.packets_being_built(), sender.delayed_packets()), (0, 0));
    let mut ended = Vec::new();
    while let Some(out) = sender.poll_output() {
        if let Output::RequestTimedOut(r) = out {
            ended.push(r);
        }
    }
    assert_eq!(ended, vec![lost, late]);
    assert_eq!(sender.pending_requests(), 0);
}

/// Own packets built late (after their pre-send delay) still leave spread out by the send
/// jitter, not in one burst when their jobs come back together.
#[test]
fn packets_built_late_leave_spread_out() {
    let mut net = Net::new(6, 13, exponential(10), Config::default());
    let peers = net.peers();
    let start = net.now;
    let sender = net.node(&peers[0]);
    sender.set_build_jobs(true);
    for _ in 0..5 {
        sender.send(start, &external_destination(), "/p", b"x").unwrap();
    }
    let jobs: Vec<BuildJob> = std::iter::from_fn(|| sender.next_build_job()).collect();
    let late = start + Duration::from_secs(1);
    for job in jobs {
        sender.finish_build(late, job.run());
    }
    let mut left = Vec::new();
    let mut now = late;
    while left.len() < 5 && now < late + Duration::from_secs(1) {
        sender.handle_timeout(now);
        while let Some(out) = sender.poll_output() {
            if matches!(out, Output::Transmit { .. }) {
                left.push(now);
            }
        }
        now += Duration::from_micros(100);
    }
    assert_eq!(left.len(), 5);
    assert!(left[0] >= late);
    assert!(left.windows(2).all(|w| w[0] < w[1]), "a burst: {left:?}");
}

/// Room counted for builds out is theirs: a packet to forward that would take it is dropped
/// (as when the queue is full), and every built packet finds its place.
#[test]
fn room_counted_for_builds_is_kept_for_them() {
    let config = Config { max_delayed_packets: 3, ..Config::default() };
    let mut net = Net::new(6, 14, exponential(10), config);
    let now = net.now;
    // A packet for its first hop to forward.
    let (hop, packet) = first_transmit(&mut net);
    let sender = net.node(&hop);
    sender.set_build_jobs(true);
    for _ in 0..3 {
        sender.send(now, &external_destination(), "/p", b"x").unwrap();
    }
    assert_eq!(sender.handle_packet(now, packet), Err(DropReason::DelayQueueFull));
    let jobs: Vec<BuildJob> = std::iter::from_fn(|| sender.next_build_job()).collect();
    for job in jobs {
        sender.finish_build(now, job.run());
    }
    assert_eq!(sender.delayed_packets(), 3);
    assert_eq!(sender.stats().packets_dropped(DropReason::DelayQueueFull), 1);
}
