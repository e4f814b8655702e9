//! The composed behaviour wires itself: it learns the address it advertises from the swarm.
//! Handles reach the mix layer from outside the swarm's loop.

#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, identity, noise, tcp, yamux};
use libp2p_mix::{Mixnet, MixnetConfig, MixnetError};
use mix_sphinx::NodeSecretKey;

fn swarm(key: identity::Keypair) -> Swarm<Mixnet> {
    let mixnet = Mixnet::new(
        &key,
        NodeSecretKey::generate(&mut rand::rng()),
        MixnetConfig { rtt_interval: None, ..Default::default() },
    )
    .unwrap();
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| mixnet)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(10)))
        .build()
}

fn advertised(swarm: &Swarm<Mixnet>) -> Option<Multiaddr> {
    let local = swarm.behaviour().local_address().cloned();
    // What the core names in SURBs is what the behaviour reports.
    if let Some(addr) = &local {
        assert_eq!(swarm.behaviour().mix().core().local().addr(), addr);
    }
    local
}

#[tokio::test]
async fn the_advertised_address_follows_what_the_swarm_reports() {
    let mut swarm = swarm(identity::Keypair::generate_secp256k1());
    assert_eq!(advertised(&swarm), None, "no address before listening");

    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let listen = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    assert_eq!(advertised(&swarm), Some(listen.clone()));

    // An external address that cannot be written into a Sphinx address block is passed over.
    swarm.add_external_address("/dns4/mix.example/tcp/4001".parse().unwrap());
    assert_eq!(advertised(&swarm), Some(listen.clone()));

    // A confirmed external address wins over a listen address.
    let external: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().unwrap();
    swarm.add_external_address(external.clone());
    assert_eq!(advertised(&swarm), Some(external.clone()));

    // When it expires, the listen address is advertised again.
    swarm.remove_external_address(&external);
    assert_eq!(advertised(&swarm), Some(listen));
}

#[test]
fn an_identity_that_cannot_name_a_mix_node_is_refused() {
    let ed25519 = identity::Keypair::generate_ed25519();
    let refused =
        Mixnet::new(&ed25519, NodeSecretKey::generate(&mut rand::rng()), MixnetConfig::default());
    assert!(matches!(refused, Err(MixnetError::Identity(_))), "{refused:?}");
}

/// A mix node of our own next to a harness network: its mixnet, before it is spawned.
fn own_node() -> (identity::Keypair, Mixnet) {
    let key = identity::Keypair::generate_secp256k1();
    let config = MixnetConfig { mix: common::Options::default().config, ..Default::default() };
    let mixnet = Mixnet::new(&key, NodeSecretKey::generate(&mut rand::rng()), config)
        .unwrap()
        .with_delay(Box::new(libp2p_mix::core::NoDelay));
    (key, mixnet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_send_and_routed_protocols_receive_outside_the_swarm_loop() {
    use libp2p_mix::core::MixNode;
    use libp2p_mix::{Destination, DropReason, Event, SendOptions, StaticPool};

    const ROUTED: &str = "/test/routed/1.0.0";
    let net = common::network(common::Options::default()).await;

    // B routes one protocol to a channel that holds one message.
    let (b_key, mut b_mixnet) = own_node();
    let b_peer = b_key.public().to_peer_id();
    let b_public = *b_mixnet.mix().core().local().mix_key();
    let mut routed = b_mixnet.mix_mut().route_protocol(ROUTED, 1);
    let mut b_swarm = common::build_swarm(b_key, Some(b_mixnet));
    let b_addr = common::listen_at(&mut b_swarm, "/ip4/127.0.0.1/tcp/0".parse().unwrap()).await;
    let b_entry = MixNode::new(b_peer, b_addr.clone(), b_public, true).unwrap();
    let mut b = common::spawn(b_swarm, b_peer, b_addr, Some(b_public));

    // A sends through a handle; its pool is the network and B.
    let (a_key, a_mixnet) = own_node();
    let a_peer = a_key.public().to_peer_id();
    let mut entries: Vec<MixNode> = net.mix.iter().map(|n| n.entry()).collect();
    entries.push(b_entry);
    let mut a_mixnet = a_mixnet.with_pool(Box::new(StaticPool::new(entries).unwrap()));
    let mut handle = a_mixnet.mix_mut().handle();
    assert_eq!(handle.pool_members().len(), net.mix.len() + 1, "the pool as handles see it");
    let mut a_swarm = common::build_swarm(a_key, Some(a_mixnet));
    let a_addr = common::listen_at(&mut a_swarm, "/ip4/127.0.0.1/tcp/0".parse().unwrap()).await;
    let _a = common::spawn(a_swarm, a_peer, a_addr, None);

    let to_b = Destination::MixNode(b_peer);
    let send = |handle: &mut libp2p_mix::Handle, body: &[u8]| {
        handle.send(to_b.clone(), ROUTED, body.to_vec(), SendOptions::default()).unwrap()
    };
    let outcome = send(&mut handle, b"first").await.unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    let first = tokio::time::timeout(Duration::from_secs(30), routed.next()).await.unwrap();
    assert_eq!(first.unwrap().body, b"first");

    // Unread, the channel fills: one more is held, the rest are dropped and counted.
    for i in 0..3u8 {
        send(&mut handle, &[i]).await.unwrap().unwrap();
    }
    let b_metrics = b.metrics.clone().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while b_metrics.packets_dropped(DropReason::RouteFull) < 2 {
        assert!(std::time::Instant::now() < deadline, "route_full never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b_metrics.packets_dropped(DropReason::RouteFull), 2);
    // Each took its own path and delays: whichever arrived first is the one held.
    let held = routed.next().await.unwrap().body;
    assert!([[0], [1], [2]].iter().any(|b| b[..] == held[..]), "{held:?}");

    // Without a receiver, the protocol's messages are events again.
    drop(routed);
    send(&mut handle, b"after").await.unwrap().unwrap();
    loop {
        match b.next_event(Duration::from_secs(30)).await {
            Some(common::NodeEvent::Mix(Event::Received { codec, body, .. }))
                if codec == ROUTED =>
            {
                assert_eq!(body, b"after");
                break;
            }
            Some(_) => {}
            None => panic!("no event for the unrouted protocol"),
        }
    }
}
