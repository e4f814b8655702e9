//! Peers that misbehave on `/mix/1.0.0`: replays, garbage, oversized and truncated frames. A raw
//! libp2p-stream client plays the attacker.

#![allow(clippy::unwrap_used, reason = "test helpers")]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{ECHO, Network, NodeEvent, Options, lp, network};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Stream, identity, noise, tcp, yamux};
use libp2p_mix::{DropReason, Metrics, PROTOCOL};
use mix_sphinx::{AddressBlock, Hop, MESSAGE_SIZE, ProcessError, Route, WireFormat, message};
use rand::RngExt;

/// Connects a raw client to `net.mix[0]` and returns a control to open streams.
async fn attacker(net: &Network) -> libp2p_stream::Control {
    let mut swarm =
        libp2p::SwarmBuilder::with_existing_identity(identity::Keypair::generate_secp256k1())
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
    let control = swarm.behaviour().new_control();
    swarm.dial(net.mix[0].addr.clone()).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
            break;
        }
    }
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    control
}

async fn open(control: &mut libp2p_stream::Control, net: &Network) -> Stream {
    control.open_stream(net.mix[0].peer_id, PROTOCOL).await.unwrap()
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    lp(bytes)
}

/// Whether the victim closed (or reset) `stream` within `within`.
async fn closed_by_peer(stream: &mut Stream, within: Duration) -> bool {
    let mut buf = [0u8; 16];
    matches!(tokio::time::timeout(within, stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

fn sphinx_drops(m: &Metrics) -> u64 {
    [ProcessError::MacMismatch, ProcessError::NonCanonicalAlpha, ProcessError::LowOrderAlpha]
        .into_iter()
        .map(|e| m.packets_dropped(DropReason::Sphinx(e)))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_packet_is_dropped_at_its_first_hop() {
    common::init_tracing();
    let mut net = network(Options::default()).await;
    let mut control = attacker(&net).await;

    // A valid packet along mix[0] -> mix[1] -> mix[2] to the destination.
    let format = WireFormat::default();
    let hops = net.mix[..3]
        .iter()
        .map(|n| Hop { public_key: n.mix_key.unwrap(), address: *n.entry().address() })
        .collect();
    let route = Route::new(hops, vec![1, 1]).unwrap();
    let mut m = [0u8; MESSAGE_SIZE];
    message::encode_forward(format.padding(), 0, ECHO, &[], &lp(b"once"), &mut m).unwrap();
    let dest = AddressBlock::encode(&net.dest.addr, &net.dest.peer_id).unwrap();
    let packet = route.forward_packet(&format, &dest, &m, &mut rand::rng()).unwrap();

    let mut stream = open(&mut control, &net).await;
    stream.write_all(&frame(packet.as_bytes())).await.unwrap();
    stream.write_all(&frame(packet.as_bytes())).await.unwrap();
    stream.flush().await.unwrap();

    assert!(
        matches!(net.dest.next_event(Duration::from_secs(20)).await, Some(NodeEvent::Echo(b)) if b == b"once")
    );
    assert!(net.dest.next_event(Duration::from_secs(2)).await.is_none(), "delivered twice");
    let victim = net.mix[0].metrics.as_ref().unwrap();
    assert_eq!(victim.packets_dropped(DropReason::Replay), 1);
    assert_eq!(victim.packets_forwarded(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_peers_are_cut_off_while_honest_traffic_flows() {
    common::init_tracing();
    let mut options = Options::default();
    options.config.frame_timeout = Duration::from_secs(1);
    let mut net = network(options).await;
    let mut control = attacker(&net).await;
    let victim = net.mix[0].metrics.clone().unwrap();

    // Honest traffic from the other nodes; with 5 nodes the victim is on most paths.
    let dest = net.dest.destination();
    for i in 0..200u32 {
        net.mix[1 + i as usize % 4].send(&dest, ECHO, lp(&i.to_be_bytes())).await.unwrap();
    }

    // 1. Packet-sized garbage: each frame is dropped and counted at the MAC check.
    let mut garbage_stream = open(&mut control, &net).await;
    for _ in 0..50 {
        let mut junk = vec![0u8; 4608];
        rand::rng().fill(&mut junk[..]);
        garbage_stream.write_all(&frame(&junk)).await.unwrap();
    }
    garbage_stream.flush().await.unwrap();

    // 2. A frame announcing 100 000 bytes: the stream is closed at once.
    let mut oversized = open(&mut control, &net).await;
    // Only the announcement is sent: the 3-byte prefix of a 100 000-byte frame.
    oversized.write_all(&frame(&vec![0u8; 100_000])[..3]).await.unwrap();
    oversized.flush().await.unwrap();

    // 3. A 100-byte frame: not a packet, the stream is closed.
    let mut short = open(&mut control, &net).await;
    short.write_all(&frame(&[7u8; 100])).await.unwrap();
    short.flush().await.unwrap();

    // 4. Random bytes that are not frames at all.
    let mut noise_stream = open(&mut control, &net).await;
    let mut noise = vec![0u8; 6000];
    rand::rng().fill(&mut noise[..]);
    noise[0] = 0xff; // a length prefix far beyond a packet
    noise[1] = 0xff;
    noise[2] = 0x7f;
    let _ = noise_stream.write_all(&noise).await;
    let _ = noise_stream.flush().await;

    // 5. Half a frame, then silence: timed out after frame_timeout.
    let mut stalled = open(&mut control, &net).await;
    let half = frame(&[1u8; 4608]);
    stalled.write_all(&half[..2000]).await.unwrap();
    stalled.flush().await.unwrap();
    let started = Instant::now();

    assert!(
        closed_by_peer(&mut oversized, Duration::from_secs(5)).await,
        "oversized frame not cut off"
    );
    assert!(closed_by_peer(&mut short, Duration::from_secs(5)).await, "short frame not cut off");
    assert!(closed_by_peer(&mut noise_stream, Duration::from_secs(5)).await, "noise not cut off");
    assert!(
        closed_by_peer(&mut stalled, Duration::from_secs(5)).await,
        "stalled frame not timed out"
    );
    assert!(started.elapsed() >= Duration::from_millis(900), "timed out too early");

    // All honest messages still arrive, exactly once.
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 200 && Instant::now() < deadline {
        if let Some(NodeEvent::Echo(body)) = net.dest.next_event(Duration::from_secs(5)).await {
            assert!(seen.insert(body), "duplicate");
        }
    }
    assert_eq!(seen.len(), 200);
    assert!(victim.packets_forwarded() > 0, "the victim kept forwarding");

    assert_eq!(sphinx_drops(&victim), 50);
    assert_eq!(victim.packets_dropped(DropReason::OversizedFrame), 2, "oversized + noise");
    assert_eq!(victim.packets_dropped(DropReason::BadLength), 1);
    assert_eq!(victim.packets_dropped(DropReason::FrameTimeout), 1);
    // The garbage stream itself stays usable: a valid-length frame is not a framing error.
    assert!(!closed_by_peer(&mut garbage_stream, Duration::from_millis(200)).await);
}
