//! Cover traffic, key rotation, spam protection and tit-for-tat in virtual time.

use super::*;
use crate::spam::{Placement, PowConfig, ProofError, ProofOfWork, SpamConfig};

/// The two-sample Kolmogorov-Smirnov statistic.
fn ks_statistic(a: &mut [f64], b: &mut [f64]) -> f64 {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// The critical value of the two-sample KS statistic at α = 0.01.
fn ks_critical(n: usize, m: usize) -> f64 {
    let (n, m) = (n as f64, m as f64);
    1.628 * ((n + m) / (n * m)).sqrt()
}

fn cover(mode: CoverMode, rate: f64) -> Config {
    Config {
        cover: CoverConfig {
            mode,
            rate,
            loop_rate: rate,
            loop_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        ..Config::default()
    }
}

/// What a global passive observer records of one node's links over `secs` seconds, while its
/// application sends at the times in `real`: departure and arrival times of every packet on
/// every link of the node.
struct Links {
    departures: Vec<f64>,
    arrivals: Vec<f64>,
    secs: u64,
}

impl Links {
    fn gaps(times: &[f64]) -> Vec<f64> {
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Packets in each second.
    fn counts(times: &[f64], secs: u64) -> Vec<f64> {
        let mut counts = vec![0.0; secs as usize];
        for t in times {
            if let Some(c) = counts.get_mut(*t as usize) {
                *c += 1.0;
            }
        }
        counts
    }
}

fn watch_links(config: Config, seed: u64, secs: u64, real: &[Duration]) -> (Links, u64) {
    let mut net = Net::new(8, seed, exponential(20), config);
    let watched = net.peers()[0];
    let t0 = net.now;
    let dest = external_destination();
    let mut sent = 0;
    for at in real {
        net.run((t0 + *at).saturating_duration_since(net.now));
        let now = net.now;
        if net.node(&watched).send(now, &dest, "/app/1", b"real").is_ok() {
            sent += 1;
        }
    }
    net.run((t0 + Duration::from_secs(secs)).saturating_duration_since(net.now));
    let since = |t: &Instant| (*t - t0).as_secs_f64();
    let departures = net.transmits.iter().filter(|(_, f, _)| *f == watched).map(|(t, ..)| since(t));
    let arrivals = net.transmits.iter().filter(|(_, _, to)| *to == watched).map(|(t, ..)| since(t));
    (Links { departures: departures.collect(), arrivals: arrivals.collect(), secs }, sent)
}

/// The two-sample z statistic of the means of per-second counts (Welch).
fn rate_z(a: &[f64], b: &[f64]) -> f64 {
    let stats = |x: &[f64]| {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var / n)
    };
    let ((ma, va), (mb, vb)) = (stats(a), stats(b));
    (ma - mb) / (va + vb).sqrt()
}

/// The two-sided critical value of the standard normal at α = 0.01.
const Z_CRITICAL: f64 = 2.576;

/// Whether an observer of `busy`'s and `idle`'s links tells them apart at α = 0.01 in either
/// direction, by the timing (two-sample KS of the gaps) or the volume (per-second counts).
/// Returns the statistics for the report and whether any test rejected.
fn told_apart(idle: &Links, busy: &Links) -> (String, bool) {
    let mut report = String::new();
    let mut rejected = false;
    for (name, a, b) in [
        ("outbound", &idle.departures, &busy.departures),
        ("inbound", &idle.arrivals, &busy.arrivals),
    ] {
        let (mut ga, mut gb) = (Links::gaps(a), Links::gaps(b));
        let (n, m) = (ga.len(), gb.len());
        let d = ks_statistic(&mut ga, &mut gb);
        let critical = ks_critical(n, m);
        let z = rate_z(&Links::counts(a, idle.secs), &Links::counts(b, busy.secs));
        rejected |= d >= critical || z.abs() >= Z_CRITICAL;
        report += &format!(
            "{name}: {:.1} vs {:.1} pkt/s, z = {z:.2} (critical {Z_CRITICAL}); KS D = {d:.4} \
             (critical {critical:.4}, {n} vs {m} gaps)\n",
            a.len() as f64 / idle.secs as f64,
            b.len() as f64 / busy.secs as f64,
        );
    }
    (report, rejected)
}

/// A global passive observer watches every link of one node, idle and then busy (Poisson real
/// traffic at 8 packets/s) at the same cover settings (Loopix: 20 slots/s carrying drops or
/// real packets, and 20 loops/s). Inter-departure and inter-arrival times pass a two-sample KS
/// test and per-second counts pass a rate test in both directions, at α = 0.01. The control:
/// the scheme before (slots carry real packets or else loops) fails the same test, because a
/// busy node gets fewer loops back.
#[test]
fn a_global_observer_sees_the_same_links_busy_or_idle() {
    const SECS: u64 = 120;
    let real = poisson_times(8.0, SECS, 5);
    let loopix = cover(CoverMode::Loopix, 20.0);
    let (idle, _) = watch_links(loopix.clone(), 31, SECS, &[]);
    let (busy, sent) = watch_links(loopix, 32, SECS, &real);
    assert!(sent > 800, "{sent} real messages sent");
    let (report, rejected) = told_apart(&idle, &busy);
    eprintln!("Loopix with drop cover, idle vs busy:\n{report}");
    assert!(!rejected, "the observer tells a busy node from an idle one:\n{report}");

    let old = cover(CoverMode::LoopFill, 20.0);
    let (idle, _) = watch_links(old.clone(), 31, SECS, &[]);
    let (busy, _) = watch_links(old, 32, SECS, &real);
    let (report, rejected) = told_apart(&idle, &busy);
    eprintln!("control, slots filled with loops, idle vs busy:\n{report}");
    assert!(rejected, "the test cannot see the old scheme's leak:\n{report}");
}

/// What an observer of one node's outbound links records: the gaps between its departures
/// over `secs` seconds, while the node's application sends `real` at the given times.
fn observe(config: Config, seed: u64, secs: u64, real: &[Duration]) -> (Vec<f64>, u64) {
    let (links, sent) = watch_links(config, seed, secs, real);
    (Links::gaps(&links.departures), sent)
}

fn poisson_times(rate: f64, secs: u64, seed: u64) -> Vec<Duration> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut t = Duration::ZERO;
    let mut times = Vec::new();
    loop {
        t += exponential_gap(rate, &mut rng);
        if t >= Duration::from_secs(secs) {
            return times;
        }
        times.push(t);
    }
}

/// Loopix cover: an observer of a node's links sees the same departure process whether the
/// node sends real traffic or none, so the inter-departure times pass a two-sample KS test;
/// every frame is a 4608-byte packet with the same (empty) trailer. Without cover, the same
/// real traffic sent in bursts is told apart at once: the test has the power to see it.
#[test]
fn cover_traffic_hides_real_traffic_from_a_link_observer() {
    const SECS: u64 = 60;
    let loopix = cover(CoverMode::Loopix, 20.0);
    let (mut idle, _) = observe(loopix.clone(), 21, SECS, &[]);
    let real = poisson_times(8.0, SECS, 5);
    let (mut busy, sent) = observe(loopix.clone(), 22, SECS, &real);
    assert!(sent > 400, "{sent} real messages sent");
    let (n, m) = (idle.len(), busy.len());
    let rate_ratio = n as f64 / m as f64;
    assert!((0.93..1.07).contains(&rate_ratio), "{n} vs {m} departures");
    let d = ks_statistic(&mut idle, &mut busy);
    let critical = ks_critical(n, m);
    assert!(d < critical, "KS D = {d:.4} ≥ {critical:.4} ({n} vs {m} gaps)");

    // No cover, real traffic in bursts of four every half second.
    let bursts: Vec<Duration> =
        (0..SECS * 2).flat_map(|i| [Duration::from_millis(500 * i); 4]).collect();
    let (mut bare, _) = observe(Config::default(), 23, SECS, &bursts);
    let (mut idle2, _) = observe(loopix, 24, SECS, &[]);
    let d_bare = ks_statistic(&mut bare, &mut idle2);
    assert!(d_bare > 3.0 * ks_critical(bare.len(), idle2.len()), "KS D = {d_bare:.4}");
    eprintln!(
        "link observer: cover only vs cover + real: KS D = {d:.4} (critical {critical:.4} at \
         α = 0.01, {n} vs {m} gaps); bursts without cover: D = {d_bare:.4}"
    );

    // Every frame on the wire has the same size, cover or not.
    let mut net = Net::new(6, 25, exponential(5), cover(CoverMode::Loopix, 50.0));
    net.wire = Some(Vec::new());
    let peers = net.peers();
    let now = net.now;
    net.node(&peers[0]).send(now, &external_destination(), "/app/1", b"x").unwrap();
    net.run(Duration::from_secs(5));
    let wire = net.wire.take().unwrap();
    assert!(wire.len() > 500);
    assert!(wire.iter().all(|(.., p, proof)| p.as_bytes().len() == 4608 && proof.is_empty()));
    let loops: u64 = net.nodes.values().map(|c| c.stats().loops(true)).sum();
    assert!(loops > 100, "{loops} loops came back");
    assert_eq!(net.deliveries.len(), 1, "loops are not delivered to the application");
}

#[test]
fn lost_loops_suspend_the_dead_node() {
    let mut net = Net::new(8, 26, exponential(5), cover(CoverMode::Loops, 10.0));
    let peers = net.peers();
    let dead = peers[3];
    net.dead = vec![dead];
    net.run(Duration::from_secs(30));
    let watcher = net.node(&peers[0]);
    assert!(watcher.stats().loops(false) > 0);
    assert!(watcher.stats().loops(true) > watcher.stats().loops(false));
    for (peer, core) in &net.nodes {
        if *peer == dead {
            continue;
        }
        assert!(core.pool().get(&dead).is_none(), "{peer} still uses the dead node");
        let healthy = peers.iter().filter(|p| **p != dead && core.pool().get(p).is_some()).count();
        assert!(healthy >= 6, "{peer} kept only {healthy} of 7 healthy nodes");
    }
}

#[test]
fn the_rate_budget_limits_own_traffic_and_skips_cover_first() {
    let mut config = cover(CoverMode::Loops, 50.0);
    // 8 packets/s in all: own traffic may use 8 / (1 + 3) = 2 per second.
    config.cover.rate_budget = Some(8.0);
    let mut net = Net::new(6, 27, exponential(5), config);
    let peers = net.peers();
    let now = net.now;
    let node = net.node(&peers[0]);
    node.send(now, &external_destination(), "/p", b"1").unwrap();
    node.send(now, &external_destination(), "/p", b"2").unwrap();
    let err = node.send(now, &external_destination(), "/p", b"3").unwrap_err();
    assert!(matches!(err, SendError::RateLimited(r) if r == 2.0), "{err}");
    net.run(Duration::from_secs(10));
    // 50 loops/s wanted; the budget lets fewer than 10 per second out.
    let core = net.node(&peers[0]);
    assert!(core.stats().loops_sent() < 100, "{}", core.stats().loops_sent());
    let skipped = core.stats().cover_skipped;
    assert!(skipped > 300, "{skipped} slots skipped");
}

#[test]
fn loopix_queues_own_packets_for_slots_and_bounds_the_queue() {
    let mut config = cover(CoverMode::Loopix, 10.0);
    config.cover.max_queued_own = 5;
    let mut net = Net::new(6, 28, exponential(5), config);
    let peers = net.peers();
    let now = net.now;
    for i in 0..5u8 {
        net.node(&peers[0]).send(now, &external_destination(), "/p", &[i]).unwrap();
    }
    let err = net.node(&peers[0]).send(now, &external_destination(), "/p", b"x").unwrap_err();
    assert!(matches!(err, SendError::QueueFull(5)), "{err}");
    assert_eq!(net.node(&peers[0]).queued_own(), 5);
    net.run(Duration::from_secs(5));
    assert_eq!(net.node(&peers[0]).queued_own(), 0);
    assert_eq!(net.deliveries.len(), 5);

    // One slot a second and at most two seconds of waiting: the third send is refused.
    let mut config = cover(CoverMode::Loopix, 1.0);
    config.cover.max_queue_delay = Duration::from_secs(2);
    let mut net = Net::new(6, 28, exponential(5), config);
    let peers = net.peers();
    let now = net.now;
    let node = net.node(&peers[0]);
    node.send(now, &external_destination(), "/p", b"1").unwrap();
    node.send(now, &external_destination(), "/p", b"2").unwrap();
    let err = node.send(now, &external_destination(), "/p", b"3").unwrap_err();
    assert!(matches!(err, SendError::QueueFull(2)), "{err}");
}

#[test]
fn tit_for_tat_refuses_to_send_from_a_node_that_does_not_mix() {
    let mut net = Net::new(6, 29, exponential(5), Config::default());
    let peers = net.peers();
    let now = net.now;
    net.node(&peers[0]).set_serving(false);
    let err = net.node(&peers[0]).send(now, &external_destination(), "/p", b"x").unwrap_err();
    assert!(matches!(err, SendError::NotMixing), "{err}");
    let config = Config { tit_for_tat: false, ..Config::default() };
    let mut net = Net::new(6, 29, exponential(5), config);
    let peers = net.peers();
    net.node(&peers[0]).set_serving(false);
    net.node(&peers[0]).send(now, &external_destination(), "/p", b"x").unwrap();
}

/// Keys rotate every 10 s with a 3 s overlap while messages flow (50 ms mean delay per hop,
/// so many packets are in flight at each boundary): none is lost.
#[test]
fn keys_rotate_under_load_without_loss_and_replays_stay_caught() {
    let config = Config {
        rotation: Some(RotationConfig {
            epoch: Duration::from_secs(10),
            overlap: Duration::from_secs(3),
        }),
        ..Config::default()
    };
    let mut net = Net::new(8, 30, exponential(50), config);
    net.wire = Some(Vec::new());
    let peers = net.peers();
    let t0 = net.now;
    let mut sent = 0u32;
    for i in 0..700u32 {
        net.run((t0 + Duration::from_millis(50 * u64::from(i))).saturating_duration_since(net.now));
        let now = net.now;
        let sender = peers[i as usize % peers.len()];
        net.node(&sender).send(now, &external_destination(), "/app/1", &i.to_be_bytes()).unwrap();
        sent += 1;
    }
    net.run(Duration::from_secs(5));
    assert_eq!(net.deliveries.len() as u32, sent, "messages lost across rotations");
    for core in net.nodes.values() {
        assert_eq!(core.stats().key_rotations, 3);
        assert_eq!(core.epoch_keys().unwrap().epoch, 180_000_003);
        for reason in [
            DropReason::Sphinx(ProcessError::MacMismatch),
            DropReason::Replay,
            DropReason::UnknownSurb,
        ] {
            assert_eq!(core.stats().packets_dropped(reason), 0, "{reason:?}");
        }
    }

    // A frame from just before the rotation at 30 s, replayed after that rotation's overlap:
    // the key that opened it is gone, and with it the need to remember its tag.
    let wire = net.wire.take().unwrap();
    let (_, _, to, packet, _) =
        wire.iter().rev().find(|(t, ..)| *t < t0 + Duration::from_millis(29_900)).cloned().unwrap();
    let now = net.now;
    assert!(now > t0 + Duration::from_secs(33));
    assert_eq!(
        net.node(&to).handle_packet(now, packet),
        Err(DropReason::Sphinx(ProcessError::MacMismatch))
    );
}

#[test]
fn a_replay_across_a_rotation_is_refused_within_the_overlap() {
    let config = Config {
        rotation: Some(RotationConfig {
            epoch: Duration::from_secs(10),
            overlap: Duration::from_secs(3),
        }),
        ..Config::default()
    };
    let mut net = Net::new(6, 31, exponential(5), config);
    net.wire = Some(Vec::new());
    let peers = net.peers();
    let t0 = net.now;
    net.run(Duration::from_millis(9_800));
    let now = net.now;
    net.node(&peers[0]).send(now, &external_destination(), "/p", b"x").unwrap();
    net.run(Duration::from_millis(150));
    assert!(net.now < t0 + Duration::from_secs(10));
    let (_, _, to, packet, _) = net.wire.as_ref().unwrap()[0].clone();
    net.run(Duration::from_secs(2));
    assert_eq!(net.deliveries.len(), 1);
    // Epoch 1 began at 10 s; the overlap keeps epoch 0's key (and its filter) until 13 s.
    assert!(net.now > t0 + Duration::from_secs(10));
    let now = net.now;
    assert_eq!(net.node(&to).handle_packet(now, packet.clone()), Err(DropReason::Replay));
    let later = t0 + Duration::from_secs(14);
    net.node(&to).handle_timeout(later);
    assert_eq!(
        net.node(&to).handle_packet(later, packet),
        Err(DropReason::Sphinx(ProcessError::MacMismatch))
    );
}

fn pow(difficulty: u32, placement: Placement) -> SpamConfig {
    SpamConfig {
        placement,
        protection: Box::new(ProofOfWork::new(PowConfig { difficulty, ..PowConfig::default() })),
    }
}

#[test]
fn per_hop_proofs_are_checked_before_sphinx_work_and_renewed_at_each_hop() {
    let mut net = Net::new(6, 32, exponential(5), Config::default());
    for core in net.nodes.values_mut() {
        core.set_spam_protection(pow(8, Placement::PerHop));
    }
    net.wire = Some(Vec::new());
    let peers = net.peers();
    let now = net.now;
    for i in 0..20u32 {
        net.node(&peers[0]).send(now, &external_destination(), "/p", &i.to_be_bytes()).unwrap();
    }
    net.run(Duration::from_secs(10));
    assert_eq!(net.deliveries.len(), 20);
    let wire = net.wire.take().unwrap();
    assert_eq!(wire.len(), 60);
    assert!(wire.iter().all(|(.., proof)| proof.len() == crate::spam::POW_PROOF_LEN));

    let (_, _, to, packet, proof) = wire[0].clone();
    let now = net.now;
    let hop = net.node(&to);
    // The frame again: its proof is refused before the packet is looked at.
    assert_eq!(
        hop.handle_packet_with_proof(now, packet.clone(), &proof),
        Err(DropReason::Proof(ProofError::Replayed))
    );
    // The proof binds the packet: another packet under it is refused. A flipped byte keeps a
    // difficulty-8 proof valid with probability 1/256, so a few flips are tried.
    let refused = (100..108).any(|i| {
        let mut other = packet.clone();
        other.as_bytes_mut()[i] ^= 1;
        hop.handle_packet_with_proof(now, other, &proof)
            == Err(DropReason::Proof(ProofError::Insufficient))
    });
    assert!(refused, "a proof made for one packet passed for eight others");
    assert!(hop.handle_packet(now, packet).is_err(), "no proof, no service");
    assert_eq!(hop.stats().packets_dropped(DropReason::Replay), 0, "no Sphinx work done");
}

#[test]
fn exit_proofs_travel_in_the_payload_and_are_stripped_on_delivery() {
    let mut net = Net::new(6, 33, exponential(5), Config::default());
    let peers = net.peers();
    for core in net.nodes.values_mut() {
        core.set_spam_protection(pow(8, Placement::Exit));
    }
    let now = net.now;
    let node = net.node(&peers[0]);
    let max = node.max_message_size("/p", 0).unwrap();
    let err = node.send(now, &external_destination(), "/p", &vec![0; max - 11]).unwrap_err();
    assert!(matches!(err, SendError::Message(MessageError::TooLarge { .. })), "room for the proof");
    node.send(now, &external_destination(), "/p", b"paid for").unwrap();
    net.run(Duration::from_secs(5));
    assert_eq!(net.deliveries.len(), 1);
    assert_eq!(net.deliveries[0].1.body, b"paid for");

    // A sender that pays nothing is refused at the exit.
    let mut net = Net::new(6, 34, exponential(5), Config::default());
    let peers = net.peers();
    for peer in &peers[1..] {
        net.node(peer).set_spam_protection(pow(8, Placement::Exit));
    }
    let now = net.now;
    for _ in 0..5 {
        net.node(&peers[0]).send(now, &external_destination(), "/p", b"free ride").unwrap();
    }
    net.run(Duration::from_secs(5));
    assert!(net.deliveries.is_empty());
    let refused: u64 = net
        .nodes
        .values()
        .map(|c| {
            c.stats().packets_dropped(DropReason::Proof(ProofError::Malformed))
                + c.stats().packets_dropped(DropReason::Proof(ProofError::Insufficient))
                + c.stats().packets_dropped(DropReason::Proof(ProofError::Stale))
                + c.stats().packets_dropped(DropReason::Proof(ProofError::Future))
        })
        .sum();
    assert_eq!(refused, 5);
}

#[test]
fn requests_expire_with_the_keys_of_their_surbs() {
    let config = Config {
        rotation: Some(RotationConfig {
            epoch: Duration::from_secs(10),
            overlap: Duration::from_secs(3),
        }),
        request_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    let mut net = Net::new(6, 35, exponential(5), config);
    let peers = net.peers();
    net.dead = peers[1..].to_vec();
    let t0 = net.now;
    net.run(Duration::from_secs(9));
    let now = net.now;
    let request = net.node(&peers[0]).request(now, &external_destination(), "/p", b"?", 1).unwrap();
    // Built in epoch 0: the hops drop epoch 0's keys at 10 s + 3 s, and so does the request.
    net.run((t0 + Duration::from_millis(12_900)).saturating_duration_since(net.now));
    assert!(net.timeouts.is_empty());
    net.run(Duration::from_millis(200));
    assert_eq!(net.timeouts, vec![(peers[0], request)]);
}
