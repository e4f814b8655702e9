//! Spam protection, cover traffic and tit-for-tat over real swarms on loopback.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{ECHO, NodeEvent, Options, lp, network};
use libp2p_mix::DropReason;
use libp2p_mix::core::{CoverConfig, CoverMode};
use libp2p_mix::spam::{Placement, PowConfig, ProofOfWork, SpamConfig};
use mix_sphinx::Packet;

fn per_hop_pow() -> SpamConfig {
    SpamConfig {
        placement: Placement::PerHop,
        protection: Box::new(ProofOfWork::new(PowConfig { difficulty: 8, ..PowConfig::default() })),
    }
}

/// Every frame carries a proof after the packet; messages and SURB replies get through, and
/// bare packets (no proof) are refused by the framing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_hop_proofs_travel_with_every_frame() {
    common::init_tracing();
    let mut net =
        network(Options { nodes: 6, spam: Some(per_hop_pow), ..Options::default() }).await;
    let dest = net.dest.destination();
    for i in 0..50u32 {
        net.mix[i as usize % 6].send(&dest, ECHO, lp(&i.to_be_bytes())).await.unwrap();
    }
    let request = net.mix[0].request(&dest, ECHO, lp(b"paid"), 2).await.unwrap();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 51 && Instant::now() < deadline {
        if let Some(NodeEvent::Echo(body)) = net.dest.next_event(Duration::from_secs(5)).await {
            seen.insert(body);
        }
    }
    assert_eq!(seen.len(), 51);
    let reply = loop {
        match net.mix[0].next_event(Duration::from_secs(30)).await.expect("a reply") {
            NodeEvent::Mix(libp2p_mix::Event::Reply { request: r, body, .. }) if r == request => {
                break body;
            }
            _ => {}
        }
    };
    assert_eq!(reply, lp(b"echo:paid"));

    // A packet without its proof is a frame of the wrong length: refused and counted.
    let (attacker, target) = (&net.mix[0], &net.mix[1]);
    attacker.send_packet(target.peer_id, target.addr.clone(), Packet::zeroed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target.metrics.as_ref().unwrap().packets_dropped(DropReason::BadLength), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_come_back_over_real_connections() {
    common::init_tracing();
    let mut options = Options { nodes: 6, ..Options::default() };
    options.config.core.cover = CoverConfig {
        mode: CoverMode::Loops,
        rate: 20.0,
        loop_timeout: Duration::from_secs(5),
        ..CoverConfig::default()
    };
    let mut net = network(options).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &net.mix {
        let m = node.metrics.as_ref().unwrap();
        assert!(m.loops(true) >= 20, "loops back: {}", m.loops(true));
        assert_eq!(m.loops(false), 0);
    }
    // Cover is never handed to the application.
    assert!(net.mix[0].next_event(Duration::from_millis(100)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_mix_may_not_send() {
    common::init_tracing();
    let mut options = Options { nodes: 5, ..Options::default() };
    options.config.serve = false;
    let net = network(options).await;
    let err = net.mix[0].send(&net.dest.destination(), ECHO, lp(b"x")).await.unwrap_err();
    assert!(err.contains("does not serve"), "{err}");
}

/// A packet through `path` (held `delay_ms` at its first hop, 1 ms at the second) to the exit
/// at its third hop, which is its destination.
fn held_packet(path: [&common::Node; 3], delay_ms: u16, seq: u64) -> Packet {
    use mix_sphinx::{AddressBlock, Hop, MESSAGE_SIZE, Route, WireFormat, message};
    let hop = |n: &common::Node| Hop {
        public_key: n.mix_key.unwrap(),
        address: *libp2p_mix::MixNode::new(n.peer_id, n.addr.clone(), n.mix_key.unwrap(), true)
            .unwrap()
            .address(),
    };
    let route = Route::new(path.map(hop).to_vec(), vec![delay_ms, 1]).unwrap();
    let format = WireFormat::default();
    let mut m = [0u8; MESSAGE_SIZE];
    message::encode_forward(format.padding(), 0, "/stop/test", &[], &seq.to_be_bytes(), &mut m)
        .unwrap();
    route.forward_packet(&format, &AddressBlock::ZERO, &m, &mut rand::rng()).unwrap()
}

/// Four nodes whose hops wait exactly what the sender wrote (the test picks which packets
/// are due), with no probes.
async fn exact_delay_network() -> common::Network {
    let mut options = Options { nodes: 4, ..Options::default() };
    options.config.core.pre_send_delay = Duration::ZERO;
    options.config.core.delay_semantics_override = Some(libp2p_mix::DelaySemantics::Exact);
    options.config.probe_interval = None;
    network(options).await
}

/// Waits (at most 10 s) until `done`.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node's stop report (at most 10 s away).
async fn stop_report(node: &mut common::Node) -> libp2p_mix::StopReport {
    loop {
        match node.next_event(Duration::from_secs(10)).await {
            Some(NodeEvent::Mix(libp2p_mix::Event::Stopped(report))) => return report,
            Some(_) => {}
            None => panic!("no stop report within 10 s"),
        }
    }
}

/// `stop_within`: packets due within the drain leave and reach their exit, the rest are
/// dropped and counted, a packet arriving meanwhile is refused, and the stop is reported
/// once, after the node closed its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_sends_on_what_is_due_and_reports() {
    common::init_tracing();
    let mut net = exact_delay_network().await;
    let (a, b, c, d) = (&net.mix[0], &net.mix[1], &net.mix[2], &net.mix[3]);
    for seq in 0..5 {
        a.send_packet(b.peer_id, b.addr.clone(), held_packet([b, c, d], 300, seq));
        a.send_packet(b.peer_id, b.addr.clone(), held_packet([b, c, d], 60_000, 100 + seq));
    }
    let b_metrics = b.metrics.clone().unwrap();
    wait_until("10 packets held at b", || b_metrics.delay_queue() >= 10).await;
    let started = Instant::now();
    b.stop_within(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.send_packet(b.peer_id, b.addr.clone(), held_packet([b, c, d], 300, 200));
    let report = stop_report(&mut net.mix[1]).await;
    assert_eq!(report.held, 10, "{report:?}");
    assert_eq!(report.sent_on, 5, "the packets due within the drain left: {report:?}");
    assert_eq!(report.dropped, 5, "the rest were dropped: {report:?}");
    assert_eq!(report.refused, 1, "the packet that came during the stop: {report:?}");
    assert!(report.took >= Duration::from_millis(1900), "it waited for the drain: {report:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{report:?}");
    assert_eq!(b_metrics.packets_dropped(DropReason::Stopping), 6);
    let d_metrics = net.mix[3].metrics.clone().unwrap();
    wait_until("5 deliveries at d", || d_metrics.deliveries() >= 5).await;
}

/// A stop ends soon after the last held packet left, and that packet still reaches its exit:
/// the peer it was written to gets a moment to read it before the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_soon_after_the_last_packet_left_and_that_packet_arrives() {
    common::init_tracing();
    let mut net = exact_delay_network().await;
    let (a, b, c, d) = (&net.mix[0], &net.mix[1], &net.mix[2], &net.mix[3]);
    for seq in 0..10 {
        a.send_packet(b.peer_id, b.addr.clone(), held_packet([b, c, d], 200, seq));
    }
    let b_metrics = b.metrics.clone().unwrap();
    wait_until("10 packets held at b", || b_metrics.delay_queue() >= 10).await;
    b.stop_within(Duration::from_secs(30));
    let report = stop_report(&mut net.mix[1]).await;
    assert_eq!((report.held, report.sent_on, report.dropped), (10, 10, 0), "{report:?}");
    assert!(report.took < Duration::from_secs(3), "{report:?}");
    let d_metrics = net.mix[3].metrics.clone().unwrap();
    wait_until("10 deliveries at d", || d_metrics.deliveries() >= 10).await;
}

/// With Loopix cover on, a stop goes on sending cover and own packets in their slots, and
/// still ends: the slots' schedule keeps moving while the node stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_cover_on_ends_and_reports() {
    common::init_tracing();
    let mut options = Options { nodes: 5, ..Options::default() };
    options.config.core.cover = CoverConfig {
        mode: CoverMode::Loopix,
        rate: 20.0,
        loop_rate: 2.0,
        ..CoverConfig::default()
    };
    let mut net = network(options).await;
    let dest = net.dest.destination();
    for i in 0..5u32 {
        net.mix[1].send(&dest, ECHO, lp(&i.to_be_bytes())).await.unwrap();
    }
    let metrics = net.mix[1].metrics.clone().unwrap();
    let originated = metrics.packets_originated();
    net.mix[1].stop_within(Duration::from_secs(3));
    let started = Instant::now();
    let report = stop_report(&mut net.mix[1]).await;
    assert!(started.elapsed() < Duration::from_secs(6), "{report:?}");
    assert!(metrics.packets_originated() > originated, "slots went on: {report:?}");
}
