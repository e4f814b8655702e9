//! What the examples share, none of it needed to embed the mixnet: a swarm on TCP, and a
//! small local mixnet to run against (in a real deployment, the public mix nodes your pool
//! learns of through discovery).
//!
//! * [`request_response.rs`](https://github.com/mixnet-rs/mixnet/blob/main/examples/request_response.rs):
//!   an application that already speaks a request-response protocol sends one request
//!   anonymously and reads the reply.
//! * [`file_transfer.rs`](https://github.com/mixnet-rs/mixnet/blob/main/examples/file_transfer.rs):
//!   a file sent over an anonymous [`mix_stream::MixStream`] and received.
//! * [`chat.rs`](https://github.com/mixnet-rs/mixnet/blob/main/examples/chat.rs): a chat over
//!   private gossip whose messages travel through the mixnet before they are broadcast.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, Swarm, identity, noise, tcp, yamux};
use libp2p_mix::core::{ExponentialDelay, MixNode};
use libp2p_mix::{Mixnet, MixnetConfig, ReadRule, StaticPool};
use mix_sphinx::NodeSecretKey;

/// A swarm for `identity` running `behaviour` over TCP with Noise and Yamux, on tokio.
pub fn swarm<B: NetworkBehaviour>(
    identity: identity::Keypair,
    behaviour: B,
) -> anyhow::Result<Swarm<B>> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_behaviour(|_| behaviour)?
        // Mix connections carry every packet to a peer; keep them.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// Listens on a free loopback port and returns the address once the swarm reports it.
pub async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>) -> anyhow::Result<Multiaddr> {
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let wait = async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.context("no listen address")
}

/// A fresh libp2p identity (mix nodes need secp256k1 keys) and mix key.
pub fn keys() -> (identity::Keypair, NodeSecretKey) {
    (identity::Keypair::generate_secp256k1(), NodeSecretKey::generate(&mut rand::rng()))
}

/// Mix nodes on loopback that know each other, each running its swarm on a tokio task until
/// this is dropped.
#[derive(Debug)]
pub struct LocalMixnet {
    nodes: Vec<MixNode>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LocalMixnet {
    /// Starts `n` mix nodes (exits all) whose exits read replies of each `(protocol, rule)`
    /// (exits must know how a destination's protocol answers, see [`ReadRule`]). They run the
    /// stream layer too, so that exits deliver stream frames to acceptors.
    pub async fn start(n: usize, exit_rules: &[(&str, ReadRule)]) -> anyhow::Result<Self> {
        let mut swarms = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..n {
            let (identity, secret) = keys();
            let peer = identity.public().to_peer_id();
            let mix_key = secret.public_key();
            let mut mixnet = Mixnet::new(&identity, secret, MixnetConfig::default())?
                .with_delay(Box::new(ExponentialDelay::new(Duration::from_millis(5))));
            for (protocol, rule) in exit_rules {
                mixnet.mix_mut().register_read_rule(*protocol, *rule);
            }
            let node = mix_stream::Behaviour::new(mixnet, None, mix_stream::Config::default());
            let mut swarm = swarm(identity, node)?;
            let addr = listen(&mut swarm).await?;
            nodes.push(MixNode::new(peer, addr, mix_key, true)?);
            swarms.push(swarm);
        }
        let tasks = swarms
            .into_iter()
            .map(|mut swarm| {
                let pool = StaticPool::new(nodes.clone()).expect("distinct nodes");
                swarm.behaviour_mut().mix_mut().set_pool(Box::new(pool));
                tokio::spawn(async move {
                    loop {
                        swarm.select_next_some().await;
                    }
                })
            })
            .collect();
        Ok(Self { nodes, tasks })
    }

    /// The nodes, as pool entries.
    pub fn nodes(&self) -> &[MixNode] {
        &self.nodes
    }

    /// A pool of these nodes, for a client's [`Mixnet::with_pool`].
    pub fn pool(&self) -> StaticPool {
        StaticPool::new(self.nodes.clone()).expect("distinct nodes")
    }
}

impl Drop for LocalMixnet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
