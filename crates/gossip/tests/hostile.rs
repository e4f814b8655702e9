//! A raw libp2p stream client writes garbage on `/mix-gossip/1.1.0` to a gossip node: each bad
//! frame is a typed error, counted, and ends only that stream; the node keeps gossiping with
//! its honest neighbour.

#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use common::{listen, swarm};

use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm, identity, noise, tcp, yamux};
use mix_gossip::codec::{self, CONTROL_BUCKETS};
use mix_gossip::proto::{Body, Message};
use mix_gossip::{Behaviour, Config, Event, PROTOCOL, Route, TopicId};
use prometheus_client::registry::Registry;

fn dropped(registry: &Registry, kind: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let prefix = format!("mix_gossip_dropped_total{{kind=\"{kind}\"}}");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Polls both gossip swarms until `until` holds or `within` passes.
async fn drive(
    a: &mut Swarm<Behaviour>,
    b: &mut Swarm<Behaviour>,
    within: Duration,
    mut until: impl FnMut(&Event) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let event = tokio::select! {
            e = a.select_next_some() => e,
            e = b.select_next_some() => e,
            _ = tokio::time::sleep_until(deadline) => return false,
        };
        if let SwarmEvent::Behaviour(e) = event
            && until(&e)
        {
            return true;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_are_counted_and_harm_nothing_else() {
    let config = Config { frame_timeout: Duration::from_millis(300), ..Default::default() };
    let topic = TopicId::from_name("hostile");
    let (mut a, mut b) =
        (swarm(&config, Duration::from_secs(30)), swarm(&config, Duration::from_secs(30)));
    let addr_a = listen(&mut a).await;
    let (peer_a, peer_b) = (*a.local_peer_id(), *b.local_peer_id());
    let mut registry = Registry::default();
    a.behaviour().metrics().register(&mut registry);
    b.behaviour_mut().add_address(peer_a, addr_a.clone());
    a.behaviour_mut().join(topic, vec![]);
    b.behaviour_mut().join(topic, vec![peer_a]);
    let up = drive(
        &mut a,
        &mut b,
        Duration::from_secs(10),
        |e| matches!(e, Event::NeighborUp { peer, .. } if *peer == peer_b),
    )
    .await;
    assert!(up, "b became a's neighbour");

    // The attacker speaks the protocol's stream, not its frames.
    let mut attacker =
        libp2p::SwarmBuilder::with_existing_identity(identity::Keypair::generate_ed25519())
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build();
    let mut control = attacker.behaviour().new_control();
    attacker.dial(addr_a).unwrap();
    tokio::spawn(async move {
        loop {
            attacker.select_next_some().await;
        }
    });
    let valid = codec::encode(&Message::<PeerId> { topic, body: Body::Prune }).unwrap();
    // A valid frame (from a stranger: ignored), then zeros: an empty body.
    let mut trailing_zeros = valid.clone();
    trailing_zeros.resize(512, 0);
    let mut unknown_kind = valid.clone();
    unknown_kind[2] = 0x7f;
    let mut huge_length = valid.clone();
    huge_length[..2].copy_from_slice(&u16::MAX.to_be_bytes());
    // Random bytes behind a plausible length (drawn again in the rare case they parse).
    let random = loop {
        let mut bytes = vec![0u8; CONTROL_BUCKETS[0]];
        rand::RngExt::fill(&mut rand::rng(), &mut bytes[..]);
        bytes[..2].copy_from_slice(&40u16.to_be_bytes());
        if codec::decode(&bytes).is_err() {
            break bytes;
        }
    };
    let truncated = valid[..60].to_vec();
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", unknown_kind),
        ("malformed", huge_length),
        ("malformed", trailing_zeros),
        ("malformed", random),
        ("frame_timeout", truncated),
    ];
    let driver = tokio::spawn(async move {
        drive(&mut a, &mut b, Duration::from_secs(3), |_| false).await;
        (a, b)
    });
    for (_, frame) in &attacks {
        let mut stream = loop {
            match control.open_stream(peer_a, PROTOCOL).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        stream.write_all(frame).await.unwrap();
        stream.flush().await.unwrap();
        // Kept open: the truncated frame must time out, not wait for the stream's end.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
        });
    }
    let (mut a, mut b) = driver.await.unwrap();
    assert_eq!(dropped(&registry, "malformed"), 4, "each bad frame is counted once");
    assert_eq!(dropped(&registry, "frame_timeout"), 1);

    // The honest neighbour is unaffected.
    assert!(a.behaviour().neighbors(&topic).contains(&peer_b));
    b.behaviour_mut().publish(&topic, b"still here".to_vec(), Route::Direct).unwrap();
    let got = drive(
        &mut a,
        &mut b,
        Duration::from_secs(10),
        |e| matches!(e, Event::Message { data, .. } if data == b"still here"),
    )
    .await;
    assert!(got, "a still delivers b's publication");
}
