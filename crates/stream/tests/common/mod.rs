//! A loopback network of real rust-libp2p swarms (TCP, Noise, Yamux), each a mix node that
//! also accepts streams, for integration tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, reason = "test harness")]

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identity, noise, tcp, yamux};
use libp2p_mix::StaticPool;
use libp2p_mix::core::{DynamicPool, MixNode, NodePool};
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
    /// Mix keys rotate, and the nodes find each other's keys through discovery.
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

/// Discovery tuned for quick tests: records are fetched again every second, so that rotated
/// keys spread within the overlap of the rotation tests.
fn fast_discovery() -> libp2p_mix::discovery::Config {
    libp2p_mix::discovery::Config {
        initial_walks: 20,
        initial_walk_interval: Duration::from_millis(250),
        walk_interval: Duration::from_secs(2),
        retry_missing: Duration::from_millis(500),
        refetch_interval: Duration::from_secs(1),
        republish_interval: Duration::from_secs(20),
        ..libp2p_mix::discovery::Config::default()
    }
}

/// `n` mix nodes, each accepting streams. They know each other from a static pool, or, when
/// keys rotate, find each other (and each other's new keys) through the mixnet's discovery,
/// bootstrapping from the first node; this returns once every pool holds every other node.
pub async fn network(mut options: Options) -> Vec<Node> {
    options.mix.core.rotation = options.rotation;
    let discovery = options.rotation.is_some();
    let mut swarms = Vec::new();
    let mut bootstrap: Option<(PeerId, Multiaddr)> = None;
    for _ in 0..options.nodes {
        let key = identity::Keypair::generate_secp256k1();
        let peer_id = key.public().to_peer_id();
        let secret = NodeSecretKey::generate(&mut rand::rng());
        let public = secret.public_key();
        let receiver = *secret.to_bytes();
        let pool: Box<dyn NodePool> =
            if discovery { Box::new(DynamicPool::new()) } else { Box::new(StaticPool::default()) };
        let config = libp2p_mix::MixnetConfig {
            mix: options.mix.clone(),
            discovery: discovery.then(fast_discovery),
            bootstrap: bootstrap.iter().cloned().collect(),
            ..Default::default()
        };
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
        if discovery && bootstrap.is_none() {
            bootstrap = Some((peer_id, addr.clone()));
        }
        swarms.push((swarm, peer_id, addr, public));
    }
    // Without discovery: a dynamic pool of configured entries, as a node runs (unreachable
    // nodes are suspended).
    let mut pool = DynamicPool::new();
    for (_, peer, addr, key) in &swarms {
        pool.insert_static(MixNode::new(*peer, addr.clone(), *key, true).unwrap());
    }
    let known = Arc::new(AtomicUsize::new(0));
    let nodes: Vec<Node> = swarms
        .into_iter()
        .map(|(mut swarm, peer_id, addr, mix_key)| {
            if !discovery {
                swarm.behaviour_mut().mix_mut().set_pool(Box::new(pool.clone()));
            }
            let control = swarm.behaviour().control();
            let metrics = swarm.behaviour().metrics().clone();
            let mix_metrics = swarm.behaviour().mix().metrics().clone();
            let connected = Arc::new(Mutex::new(HashSet::new()));
            let seen = connected.clone();
            // Counts this node once when its pool first holds every other node.
            let (known, others) = (known.clone(), options.nodes - 1);
            let mut counted = false;
            let task = tokio::spawn(async move {
                loop {
                    if !counted && swarm.behaviour().mix().core().pool().nodes().len() >= others {
                        counted = true;
                        known.fetch_add(1, Ordering::Relaxed);
                    }
                    if let SwarmEvent::ConnectionEstablished { peer_id, .. } =
                        swarm.select_next_some().await
                    {
                        seen.lock().unwrap().insert(peer_id);
                    }
                }
            });
            Node { peer_id, addr, mix_key, control, metrics, mix_metrics, connected, task }
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while known.load(Ordering::Relaxed) < nodes.len() {
        assert!(std::time::Instant::now() < deadline, "discovery: pools still incomplete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes
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
