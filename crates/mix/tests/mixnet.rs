//! The composed behaviour wires itself: it learns the address it advertises from the swarm.

#![allow(clippy::unwrap_used, reason = "test")]

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
    let refused = Mixnet::new(
        &ed25519,
        NodeSecretKey::generate(&mut rand::rng()),
        MixnetConfig::default(),
    );
    assert!(matches!(refused, Err(MixnetError::Identity(_))), "{refused:?}");
}
