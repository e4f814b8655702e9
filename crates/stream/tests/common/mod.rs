//! A loopback network of real rust-libp2p swarms (TCP, Noise, Yamux), each a mix node that
//! also accepts streams, for integration tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, reason = "test harness")]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identity, noise, tcp, yamux};
use libp2p_mix::StaticPool;
use libp2p_mix::core::{DynamicPool, EpochKeys, MixNode, NodePool};
use mix_sphinx::{NodePublicKey, NodeSecretKey};
use mix_stream::{Behaviour, Config, Control};

pub struct Node {
    pub peer_id: PeerId,
    pub addr: Multiaddr,
    pub mix_key: NodePublicKey,
    pub control: Control,
    pub metrics: mix_stream::Metrics,
    pub mix_metrics: libp2p_mix::Metrics,
    /// Every peer this node had a connection with.
    pub connected: Arc<Mutex<HashSet<PeerId>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    pub fn entry(&self) -> MixNode {
        MixNode::new(self.peer_id, self.addr.clone(), self.mix_key, true).unwrap()
    }

    /// Stops the node: its swarm, listeners and connections go away.
    pub fn kill(&self) {
        self.task.abort();
    }

    /// The node's metrics as Prometheus text.
    pub fn metrics_text(&self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        self.metrics.register(&mut registry);
        self.mix_metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Options {
    pub nodes: usize,
    pub mix: libp2p_mix::Config,
    pub streams: Config,
    /// Every frame any exit delivers, as the exit saw it.
    pub observed: Option<Arc<Mutex<Vec<Vec<u8>>>>>,
    /// Mix keys rotate; each node's new keys reach every pool at once (as discovery would
    /// spread them).
    pub rotation: Option<libp2p_mix::core::RotationConfig>,
}

impl Default for Options {
    fn default() -> Self {
        let mut mix = libp2p_mix::Config::default();
        mix.core.pre_send_delay = Duration::from_millis(1);
        mix.core.send_jitter = Duration::ZERO;
        // No probes: the test decides who talks to whom.
        mix.probe_interval = None;
        Self { nodes: 6, mix, streams: Config::default(), observed: None, rotation: None }
    }
}

fn build_swarm(key: identity::Keypair, behaviour: Behaviour) -> Swarm<Behaviour> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(60))
                .with_per_connection_event_buffer_size(64)
                .with_notify_handler_buffer_size(std::num::NonZeroUsize::new(64).unwrap())
        })
        .build()
}

/// `n` mix nodes that all know each other (a static pool), each accepting streams.
pub async fn network(mut options: Options) -> Vec<Node> {
    options.mix.core.rotation = options.rotation;
    let (records, _) = tokio::sync::broadcast::channel::<(PeerId, Multiaddr, EpochKeys)>(256);
    let mut swarms = Vec::new();
    for _ in 0..options.nodes {
        let key = identity::Keypair::generate_secp256k1();
        let peer_id = key.public().to_peer_id();
        let secret = NodeSecretKey::generate(&mut rand::rng());
        let public = secret.public_key();
        let receiver = *secret.to_bytes();
        let pool: Box<dyn NodePool> = Box::new(StaticPool::default());
        let config = libp2p_mix::MixnetConfig { mix: options.mix.clone(), ..Default::default() };
        let mixnet = libp2p_mix::Mixnet::new(&key, secret, config)
            .unwrap()
            .with_pool(pool)
            .with_delay(Box::new(libp2p_mix::core::NoDelay));
        let mut behaviour = Behaviour::new(mixnet, Some(receiver), options.streams.clone());
        if let Some(observed) = options.observed.clone() {
            behaviour.set_frame_observer(Some(Box::new(move |frame: &[u8]| {
                observed.lock().unwrap().push(frame.to_vec());
            })));
        }
        let mut swarm = build_swarm(key, behaviour);
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        assert_eq!(swarm.behaviour().mixnet().local_address(), Some(&addr));
        swarms.push((swarm, peer_id, addr, public));
    }
    // A dynamic pool of configured entries, as a node runs: unreachable nodes are suspended.
    let mut pool = DynamicPool::new();
    for (_, peer, addr, key) in &swarms {
        pool.insert_static(MixNode::new(*peer, addr.clone(), *key, true).unwrap());
    }
    // Every node listens for records before any starts (and rotates its first keys).
    let listeners: Vec<_> = swarms.iter().map(|_| records.subscribe()).collect();
    swarms
        .into_iter()
        .zip(listeners)
        .map(|((mut swarm, peer_id, addr, mix_key), mut heard)| {
            swarm.behaviour_mut().mix_mut().set_pool(Box::new(pool.clone()));
            let control = swarm.behaviour().control();
            let metrics = swarm.behaviour().metrics().clone();
            let mix_metrics = swarm.behaviour().mix().metrics().clone();
            let connected = Arc::new(Mutex::new(HashSet::new()));
            let seen = connected.clone();
            let publish = records.clone();
            let (me, at) = (peer_id, addr.clone());
            let task = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        event = swarm.select_next_some() => match event {
                            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                                seen.lock().unwrap().insert(peer_id);
                            }
                            SwarmEvent::Behaviour(mix_stream::Event::Mix(
                                libp2p_mix::Event::KeysRotated(keys),
                            )) => {
                                let _ = publish.send((me, at.clone(), keys));
                            }
                            _ => {}
                        },
                        Ok((peer, addr, keys)) = heard.recv() => {
                            if peer != me {
                                let node = MixNode::new(peer, addr, keys.current, true)
                                    .unwrap()
                                    .with_epoch_keys(keys);
                                let expires = std::time::Instant::now() + Duration::from_secs(3600);
                                swarm.behaviour_mut().mix_mut().offer_node(node, keys.epoch, expires);
                            }
                        }
                    }
                }
            });
            Node { peer_id, addr, mix_key, control, metrics, mix_metrics, connected, task }
        })
        .collect()
}

pub fn random(len: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut data = vec![0u8; len];
    rand_chacha::ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
