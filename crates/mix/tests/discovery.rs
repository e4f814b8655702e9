//! Discovery over real swarms: signed records in Kademlia, random walks, identify.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ECHO, NodeEvent, Options, lp, network};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity, kad, noise, tcp, yamux};
use libp2p_mix::Destination;
use libp2p_mix::discovery::record::{MixRecord, record_key};
use mix_sphinx::NodeSecretKey;

/// 30 nodes, each told only the bootstrap node's address: within 30 s every node's pool holds
/// at least 28 of the 29 others (with itself, ≥ 95 % of the 30), and messages flow through
/// the discovered pools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_nodes_find_each_other_from_one_bootstrap_address() {
    common::init_tracing();
    let mut net = network(Options { nodes: 30, discovery: true, ..Options::default() }).await;
    let started = Instant::now();
    let mut sizes;
    loop {
        sizes = futures::future::join_all(net.mix.iter().map(|n| n.pool_size())).await;
        let min = *sizes.iter().min().unwrap();
        if min >= 28 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "pools after 30 s: {sizes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let min = *sizes.iter().min().unwrap();
    let full = sizes.iter().filter(|s| **s == 29).count();
    eprintln!(
        "discovery: every node knew >= {min} of 29 others after {:?} ({full} of 30 knew all)",
        started.elapsed()
    );

    let dest = net.dest.destination();
    for i in 0..60u32 {
        net.mix[(i as usize * 7) % 30].send(&dest, ECHO, lp(&i.to_be_bytes())).await.unwrap();
    }
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 60 && Instant::now() < deadline {
        if let Some(NodeEvent::Echo(body)) = net.dest.next_event(Duration::from_secs(5)).await {
            seen.insert(body);
        }
    }
    assert_eq!(seen.len(), 60, "messages through discovered pools");
}

#[derive(NetworkBehaviour)]
struct Attacker {
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn record_for(valid_from: u64, valid_until: u64) -> MixRecord {
    MixRecord {
        addrs: vec!["/ip4/127.0.0.1/tcp/9".parse().unwrap()],
        mix_key: NodeSecretKey::generate(&mut rand::rng()).public_key(),
        next_mix_key: None,
        epoch: None,
        exit: true,
        valid_from,
        valid_until,
        seq: 1,
    }
}

/// A peer that PUTs records straight into a node's DHT store: forged (signed by someone other
/// than the peer they name), with a broken signature, expired, valid for ever, or under a key
/// that is not a mix record key. Each is refused and counted by reason; a valid one is
/// taken up, and its node checked at the address it claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_wrongly_signed_records_are_rejected_and_counted() {
    common::init_tracing();
    let net = network(Options { nodes: 3, discovery: true, ..Options::default() }).await;
    let target = &net.mix[0];
    let victim_peer = net.mix[1].peer_id;

    let key = identity::Keypair::generate_secp256k1();
    let me = key.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|k| Attacker {
            kad: kad::Behaviour::with_config(
                me,
                kad::store::MemoryStore::new(me),
                kad::Config::new(libp2p::StreamProtocol::new("/mix/kad/1.0.0")),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                "/mix/id/1.0.0".into(),
                k.public(),
            )),
        })
        .unwrap()
        .build();
    swarm.behaviour_mut().kad.add_address(&target.peer_id, target.addr.clone());
    swarm.dial(target.addr.clone()).unwrap();

    // Identify tells connected peers that a mix node speaks /mix/1.0.0.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event =
            tokio::time::timeout_at(deadline.into(), swarm.select_next_some()).await.unwrap();
        if let SwarmEvent::Behaviour(AttackerEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) = event
            && peer_id == target.peer_id
        {
            assert!(
                info.protocols.iter().any(|p| p.as_ref() == "/mix/1.0.0"),
                "{:?}",
                info.protocols
            );
            break;
        }
    }

    let now = unix_now();
    let kad_record =
        |key: Vec<u8>, value: Vec<u8>| kad::Record::new(kad::RecordKey::new(&key), value);
    let forged = kad_record(record_key(&victim_peer), record_for(now - 10, now + 600).sign(&key));
    let mut tampered_bytes = record_for(now - 10, now + 600).sign(&key);
    let at = tampered_bytes.len() - 10;
    tampered_bytes[at] ^= 0x20;
    let tampered = kad_record(record_key(&me), tampered_bytes);
    let expired = kad_record(record_key(&me), record_for(now - 7200, now - 3600).sign(&key));
    let forever = kad_record(record_key(&me), record_for(now - 10, u64::MAX).sign(&key));
    let wrong_key =
        kad_record(b"/not/a/mix/record".to_vec(), record_for(now - 10, now + 600).sign(&key));
    let valid = kad_record(record_key(&me), record_for(now - 10, now + 600).sign(&key));

    // Let the honest nodes find each other first.
    let deadline = Instant::now() + Duration::from_secs(15);
    while target.pool_size().await < 2 && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), swarm.select_next_some()).await;
    }
    let pool_before = target.pool_size().await;
    assert_eq!(pool_before, 2);
    for record in [forged, tampered, expired, forever, wrong_key, valid] {
        swarm.behaviour_mut().kad.put_record_to(
            record,
            std::iter::once(target.peer_id),
            kad::Quorum::One,
        );
    }
    let metrics = target.discovery.clone().unwrap();
    let rejected = |m: &libp2p_mix::discovery::Metrics| {
        ["wrong_signer", "signature", "envelope", "expired", "malformed", "too_long"]
            .map(|r| m.records_rejected(r))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), swarm.select_next_some()).await;
        let [wrong_signer, signature, envelope, expired, malformed, too_long] = rejected(&metrics);
        if wrong_signer >= 1
            && signature + envelope >= 1
            && expired >= 1
            && malformed >= 1
            && too_long >= 1
        {
            break;
        }
    }
    let [wrong_signer, signature, envelope, expired, malformed, too_long] = rejected(&metrics);
    eprintln!(
        "rejected: wrong_signer {wrong_signer}, signature {signature}, envelope {envelope}, expired {expired}, malformed {malformed}, too_long {too_long}"
    );
    assert_eq!(wrong_signer, 1, "forged record");
    assert_eq!(signature + envelope, 1, "tampered record");
    assert_eq!(expired, 1, "expired record");
    assert_eq!(malformed, 1, "record under a non-mix key");
    assert_eq!(too_long, 1, "record valid for ever");
    // Only the valid record was taken up (the attacker itself, as a would-be mix node). It
    // claims an address where nobody listens, so the check there fails and the node is never
    // offered for paths.
    let mix_metrics = target.metrics.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mix_metrics.reach_checks("failed") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mix_metrics.reach_checks("failed"), 1);
    assert_eq!(target.pool_size().await, pool_before);
}

/// Killing nodes: connections to them break, the survivors probe and suspend them, and
/// redundant messages between survivors all arrive through the remaining nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_are_suspended_and_redundant_copies_get_through() {
    common::init_tracing();
    let mut options = Options { nodes: 10, discovery: true, ..Options::default() };
    options.config.probe_interval = Some(Duration::from_millis(500));
    options.config.probes_per_interval = 8;
    let mut net = network(options).await;
    let started = Instant::now();
    while futures::future::join_all(net.mix.iter().map(|n| n.pool_size()))
        .await
        .iter()
        .any(|s| *s < 9)
    {
        assert!(started.elapsed() < Duration::from_secs(30), "discovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Warm up connections so that the kills are noticed through broken connections too.
    for i in 0..20u32 {
        let _ = net.mix[i as usize % 10].send(&net.dest.destination(), ECHO, lp(b"warm")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for victim in [3, 5, 8] {
        net.mix[victim].kill();
    }
    let killed_at = Instant::now();
    let survivors = [0usize, 1, 2, 4, 6, 7, 9];
    loop {
        let sizes =
            futures::future::join_all(survivors.iter().map(|&i| net.mix[i].pool_size())).await;
        if sizes.iter().all(|s| *s == 6) {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "survivor pools after 15 s: {sizes:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!(
        "liveness: every survivor suspended the 3 killed nodes after {:?}",
        killed_at.elapsed()
    );

    let target = Destination::MixNode(net.mix[9].peer_id);
    for i in 0..50u32 {
        net.mix[survivors[i as usize % 6]]
            .send_copies(&target, "/app/1", i.to_be_bytes().to_vec(), 2)
            .await
            .unwrap();
    }
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 50 && Instant::now() < deadline {
        if let Some(NodeEvent::Mix(libp2p_mix::Event::Received { body, .. })) =
            net.mix[9].next_event(Duration::from_secs(5)).await
        {
            seen.insert(body);
        }
    }
    assert_eq!(seen.len(), 50);
}
