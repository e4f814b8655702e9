//! The Mix Protocol over real rust-libp2p swarms on loopback.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{ECHO, NodeEvent, Options, PING, Transport, lp, network, pool_of};
use libp2p_mix::core::Mismatch;
use libp2p_mix::{Destination, DropReason, Event, RequestError, Wire};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_deliver_a_thousand_messages_exactly_once() {
    common::init_tracing();
    let mut net = network(Options { nodes: 10, ..Options::default() }).await;
    let dest = net.dest.destination();
    for i in 0..1000u32 {
        let sender = &net.mix[i as usize % net.mix.len()];
        sender.send(&dest, ECHO, lp(&i.to_be_bytes())).await.unwrap();
    }
    let mut seen: HashMap<u32, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 1000 && Instant::now() < deadline {
        if let Some(NodeEvent::Echo(body)) = net.dest.next_event(Duration::from_secs(5)).await {
            *seen.entry(u32::from_be_bytes(body.try_into().unwrap())).or_default() += 1;
        }
    }
    // Give stragglers (duplicates) a moment to show up.
    while let Some(NodeEvent::Echo(body)) = net.dest.next_event(Duration::from_secs(1)).await {
        *seen.entry(u32::from_be_bytes(body.try_into().unwrap())).or_default() += 1;
    }
    assert_eq!(seen.len(), 1000, "delivered {} of 1000", seen.len());
    assert!(
        seen.values().all(|&n| n == 1),
        "duplicates: {:?}",
        seen.iter().filter(|(_, n)| **n > 1).count()
    );
    let forwarded: u64 =
        net.mix.iter().map(|n| n.metrics.as_ref().unwrap().packets_forwarded()).sum();
    assert_eq!(forwarded, 2000, "two forwarding hops per message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surb_replies_come_back_for_request_response_and_ping() {
    common::init_tracing();
    let mut net = network(Options::default()).await;
    let dest = net.dest.destination();

    let echo = net.mix[0].request(&dest, ECHO, lp(b"hello"), 2).await.unwrap();
    let nonce: Vec<u8> = (0..32).collect();
    let ping = net.mix[0].request(&dest, PING, nonce.clone(), 1).await.unwrap();

    let mut replies = HashMap::new();
    while replies.len() < 2 {
        match net.mix[0].next_event(WAIT).await.expect("a reply") {
            NodeEvent::Mix(Event::Reply { request, body, .. }) => {
                replies.insert(request, body);
            }
            NodeEvent::Mix(Event::RequestFailed { request, error }) => {
                panic!("{request:?} failed: {error}")
            }
            _ => {}
        }
    }
    // The exit read one length-prefixed frame from the echo protocol and 32 bytes from ping.
    assert_eq!(replies[&echo], lp(b"echo:hello"));
    assert_eq!(replies[&ping], nonce, "ping echoes its payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mix_node_can_be_the_destination() {
    common::init_tracing();
    let mut net = network(Options::default()).await;
    let target = Destination::MixNode(net.mix[3].peer_id);
    let request =
        net.mix[0].request(&target, "/app/private/1", b"question".to_vec(), 2).await.unwrap();
    let reply_id = loop {
        match net.mix[3].next_event(WAIT).await.expect("delivery") {
            NodeEvent::Mix(Event::Received { codec, body, reply }) => {
                assert_eq!((codec.as_str(), body.as_slice()), ("/app/private/1", &b"question"[..]));
                break reply.expect("SURBs attached");
            }
            _ => continue,
        }
    };
    net.mix[3].reply(reply_id, b"answer".to_vec());
    loop {
        if let NodeEvent::Mix(Event::Reply { request: r, body, .. }) =
            net.mix[0].next_event(WAIT).await.expect("reply")
        {
            assert_eq!((r, body.as_slice()), (request, &b"answer"[..]));
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_intermediate_makes_requests_time_out() {
    common::init_tracing();
    let mut options = Options { nodes: 4, ..Options::default() };
    options.config.core.request_timeout = Duration::from_secs(3);
    let mut net = network(options).await;
    // With 4 nodes, every forward path of the sender uses all three others.
    net.mix[2].kill();
    let started = Instant::now();
    let request =
        net.mix[0].request(&net.dest.destination(), ECHO, lp(b"anyone?"), 1).await.unwrap();
    loop {
        match net.mix[0].next_event(Duration::from_secs(20)).await.expect("no hang") {
            NodeEvent::Mix(Event::RequestFailed { request: r, error }) => {
                assert_eq!((r, error), (request, RequestError::Timeout));
                break;
            }
            NodeEvent::Mix(Event::Reply { .. }) => panic!("a reply through a dead node"),
            _ => {}
        }
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(3) && waited < Duration::from_secs(10), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_transport_carries_requests() {
    common::init_tracing();
    let mut net = network(Options { transport: Transport::Quic, ..Options::default() }).await;
    assert!(net.mix[0].addr.to_string().contains("quic-v1"));
    let request =
        net.mix[1].request(&net.dest.destination(), ECHO, lp(b"over quic"), 1).await.unwrap();
    loop {
        match net.mix[1].next_event(WAIT).await.expect("reply over QUIC") {
            NodeEvent::Mix(Event::Reply { request: r, body, .. }) => {
                assert_eq!((r, body), (request, lp(b"echo:over quic")));
                break;
            }
            NodeEvent::Mix(Event::RequestFailed { error, .. }) => panic!("{error}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_small_pools_are_refused_before_sending() {
    let net = network(Options { nodes: 3, ..Options::default() }).await;
    let err = net.mix[0].send(&net.dest.destination(), ECHO, vec![0; 4000]).await.unwrap_err();
    assert!(err.contains("exceeds"), "{err}");
    let err = net.mix[0].send(&net.dest.destination(), ECHO, vec![0; 10]).await.unwrap_err();
    assert!(err.contains("needs 3 mix nodes"), "{err}");
    // A two-node pool is refused the same way, and nothing was sent.
    net.mix[0].set_pool(pool_of(&[&net.mix[1], &net.mix[2]]));
    assert!(net.mix[0].send(&net.dest.destination(), ECHO, vec![0; 10]).await.is_err());
    assert_eq!(net.mix[0].metrics.as_ref().unwrap().packets_originated(), 0);
    assert_eq!(net.mix[0].metrics.as_ref().unwrap().packets_dropped(DropReason::Unreachable), 0);
}

/// Two wire generations on one network. Three `lip-183` nodes route only through the three
/// `v1` nodes and the other way round, so every message of one generation exits at a node of
/// the other: nothing arrives, every exit that received traffic counts it, and the warning of
/// each side names the setting it runs and the one to change.
///
/// A current-thread runtime, so that the swarms' log lines reach this test's subscriber.
#[tokio::test]
async fn nodes_of_different_wires_diagnose_each_other() {
    const EACH: u64 = 15;
    let log = common::Captured::default();
    let _guard = log.install();
    let net = network(Options {
        nodes: 6,
        configure: Some(|i, config| {
            if i >= 3 {
                *config = config.clone().with_wire(Wire::V1);
            }
        }),
        ..Options::default()
    })
    .await;
    let (lip, v1) = net.mix.split_at(3);
    for node in lip {
        node.set_pool(pool_of(&v1.iter().chain([node]).collect::<Vec<_>>()));
    }
    for node in v1 {
        node.set_pool(pool_of(&lip.iter().chain([node]).collect::<Vec<_>>()));
    }
    let dest = net.dest.destination();
    for i in 0..EACH as u32 {
        lip[0].send(&dest, ECHO, lp(&i.to_be_bytes())).await.unwrap();
        v1[0].send(&dest, ECHO, lp(&i.to_be_bytes())).await.unwrap();
    }
    let counted = |nodes: &[common::Node]| -> u64 {
        nodes.iter().map(|n| n.metrics.as_ref().unwrap().wire_mismatches(Mismatch::Payload)).sum()
    };
    let deadline = Instant::now() + WAIT;
    while (counted(lip), counted(v1)) != (EACH, EACH) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((counted(lip), counted(v1)), (EACH, EACH), "each exit counts the other's packets");
    let mut dest_events = net.dest;
    assert!(dest_events.next_event(Duration::from_millis(500)).await.is_none(), "nothing arrives");

    // 15 messages over three exits: at least one exit saw 5 within a minute, on each side.
    let text = log.text();
    for running in ["wire = \"lip-183\"", "wire = \"v1\""] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("this node runs {running}")))
            .unwrap_or_else(|| panic!("no warning from a node running {running}:\n{text}"));
        assert!(line.contains("WARN") && line.contains("libp2p_mix::wire"), "{line}");
        assert!(line.contains("set `wire` under [mix] in node.toml"), "{line}");
        assert!(
            line.contains("\"v1\" (AES-CTR") && line.contains("\"lip-183\" (LIONESS"),
            "{line}"
        );
    }
}
