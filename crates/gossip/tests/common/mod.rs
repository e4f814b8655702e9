//! Real gossip swarms on loopback TCP (noise, yamux), shared by the network tests.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, identity, noise, tcp, yamux};
use mix_gossip::{Behaviour, Config};

/// A gossip swarm with a fresh identity; connections idle for `idle` are closed.
pub(crate) fn swarm(config: &Config, idle: Duration) -> Swarm<Behaviour> {
    libp2p::SwarmBuilder::with_existing_identity(identity::Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key| Behaviour::new(key.public().to_peer_id(), config.clone()))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build()
}

/// Listens on a free loopback port and returns its address.
pub(crate) async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> Multiaddr {
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}
