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
