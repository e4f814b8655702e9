//! A loopback network of real rust-libp2p swarms for integration tests: mix nodes, and a plain
//! destination that runs libp2p ping and an echo request-response protocol and knows nothing
//! of mix.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, reason = "test harness")]

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identity, noise, ping, request_response, tcp, yamux,
};
use libp2p_mix::core::{DelayStrategy, DynamicPool, MixNode, NodePool};
use libp2p_mix::{Destination, ExitProtocol, Metrics, ReadRule, ReplyId, StaticPool, discovery};
use mix_sphinx::{NodePublicKey, NodeSecretKey};
use tokio::sync::{mpsc, oneshot};

pub const ECHO: &str = "/test/echo/1.0.0";
pub const PING: &str = "/ipfs/ping/1.0.0";

/// Request and response are one unsigned-varint length-prefixed frame each.
#[derive(Debug, Clone, Default)]
pub struct LpCodec;

async fn read_lp<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut first = [0u8; 1];
    io.read_exact(&mut first).await?;
    libp2p_mix::framing::read_after(io, first[0], 4096).await.map_err(io::Error::other)
}

async fn write_lp<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> io::Result<()> {
    io.write_all(&lp(data)).await?;
    io.close().await
}

/// `data` with its varint length prefix.
pub fn lp(data: &[u8]) -> Vec<u8> {
    libp2p_mix::framing::encode(data)
}

impl request_response::Codec for LpCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_lp(io).await
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_lp(io).await
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()> {
        write_lp(io, &r).await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()> {
        write_lp(io, &r).await
    }
}

#[derive(NetworkBehaviour)]
pub struct TestBehaviour {
    /// The mix protocol with discovery (if on) and RTTs: it wires itself.
    pub mix: Toggle<libp2p_mix::Mixnet>,
    /// Only on the plain destination (a mix node pings as part of its mixnet).
    pub ping: Toggle<ping::Behaviour>,
    pub echo: request_response::Behaviour<LpCodec>,
}

#[derive(Debug)]
pub enum NodeEvent {
    Mix(libp2p_mix::Event),
    /// The destination's echo protocol got a request.
    Echo(Vec<u8>),
}

enum Command {
    Send(Destination, String, Vec<u8>, usize, oneshot::Sender<Result<(), String>>),
    Request(
        Destination,
        String,
        Vec<u8>,
        usize,
        oneshot::Sender<Result<libp2p_mix::RequestId, String>>,
    ),
    Reply(ReplyId, Vec<u8>),
    SetPool(StaticPool),
    PoolSize(oneshot::Sender<usize>),
    PoolEntry(PeerId, oneshot::Sender<Option<MixNode>>),
    SendPacket(PeerId, Multiaddr, mix_sphinx::Packet),
    ExitJobs(oneshot::Sender<usize>),
    PoolRefused(&'static str, oneshot::Sender<u64>),
    PoolPeers(oneshot::Sender<Vec<MixNode>>),
    KnownNodes(oneshot::Sender<usize>),
    StopWithin(Duration),
}

pub struct Node {
    pub peer_id: PeerId,
    pub addr: Multiaddr,
    pub mix_key: Option<NodePublicKey>,
    pub metrics: Option<Metrics>,
    pub discovery: Option<discovery::Metrics>,
    commands: mpsc::UnboundedSender<Command>,
    pub events: mpsc::UnboundedReceiver<NodeEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    pub fn entry(&self) -> MixNode {
        MixNode::new(self.peer_id, self.addr.clone(), self.mix_key.expect("a mix node"), true)
            .unwrap()
    }

    pub fn destination(&self) -> Destination {
        Destination::Peer { peer_id: self.peer_id, addr: self.addr.clone() }
    }

    pub async fn send(&self, dest: &Destination, codec: &str, body: Vec<u8>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Send(dest.clone(), codec.into(), body, 1, tx)).unwrap();
        rx.await.unwrap()
    }

    /// Sends `copies` copies over independent paths.
    pub async fn send_copies(
        &self,
        dest: &Destination,
        codec: &str,
        body: Vec<u8>,
        copies: usize,
    ) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Send(dest.clone(), codec.into(), body, copies, tx)).unwrap();
        rx.await.unwrap()
    }

    pub async fn request(
        &self,
        dest: &Destination,
        codec: &str,
        body: Vec<u8>,
        surbs: usize,
    ) -> Result<libp2p_mix::RequestId, String> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Request(dest.clone(), codec.into(), body, surbs, tx)).unwrap();
        rx.await.unwrap()
    }

    pub fn reply(&self, id: ReplyId, body: Vec<u8>) {
        self.commands.send(Command::Reply(id, body)).unwrap();
    }

    pub fn set_pool(&self, pool: StaticPool) {
        self.commands.send(Command::SetPool(pool)).unwrap();
    }

    /// Usable nodes in the mix pool.
    pub async fn pool_size(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::PoolSize(tx)).unwrap();
        rx.await.unwrap_or(0)
    }

    /// The pool's entry for `peer` (with its current keys), if usable.
    pub async fn pool_entry(&self, peer: PeerId) -> Option<MixNode> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::PoolEntry(peer, tx)).unwrap();
        rx.await.ok().flatten()
    }

    /// Exit deliveries queued or in flight.
    pub async fn exit_jobs(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::ExitJobs(tx)).unwrap();
        rx.await.unwrap_or(0)
    }

    /// Records the pool refused for `reason`.
    pub async fn pool_refused(&self, reason: &'static str) -> u64 {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::PoolRefused(reason, tx)).unwrap();
        rx.await.unwrap_or(0)
    }

    /// The nodes discovery keeps fetching again (records it fetched, not refused by the pool).
    pub async fn known_nodes(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::KnownNodes(tx)).unwrap();
        rx.await.unwrap_or(0)
    }

    /// The usable nodes of the pool.
    pub async fn pool_nodes(&self) -> Vec<MixNode> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::PoolPeers(tx)).unwrap();
        rx.await.unwrap_or_default()
    }

    /// Sends a ready-made packet to `peer`, as is.
    pub fn send_packet(&self, peer: PeerId, addr: Multiaddr, packet: mix_sphinx::Packet) {
        self.commands.send(Command::SendPacket(peer, addr, packet)).unwrap();
    }

    /// Starts a graceful stop: the node reports [`libp2p_mix::Event::Stopped`] when it is over.
    pub fn stop_within(&self, drain: Duration) {
        self.commands.send(Command::StopWithin(drain)).unwrap();
    }

    /// Stops the node: its swarm, listeners and connections go away.
    pub fn kill(&self) {
        self.task.abort();
    }

    /// The next event, or `None` after `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<NodeEvent> {
        tokio::time::timeout(timeout, self.events.recv()).await.ok().flatten()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    Tcp,
    Quic,
}

pub fn build_swarm(
    key: identity::Keypair,
    mix: Option<libp2p_mix::Mixnet>,
) -> Swarm<TestBehaviour> {
    // Exits run ping too (in their mixnet): libp2p-ping stops answering on a connection whose
    // remote does not speak ping.
    let ping = mix.is_none().then(|| {
        ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(3600)))
    });
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_quic()
        .with_behaviour(|_| TestBehaviour {
            mix: mix.into(),
            ping: ping.into(),
            echo: request_response::Behaviour::new(
                [(StreamProtocol::new(ECHO), request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_max_concurrent_streams(10_000),
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

async fn listen(swarm: &mut Swarm<TestBehaviour>, transport: Transport) -> Multiaddr {
    let addr: Multiaddr = match transport {
        Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
        Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
    }
    .parse()
    .unwrap();
    listen_at(swarm, addr).await
}

/// Listens at `addr` and returns the address once the swarm reports it.
pub async fn listen_at(swarm: &mut Swarm<TestBehaviour>, addr: Multiaddr) -> Multiaddr {
    swarm.listen_on(addr).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

pub fn spawn(
    mut swarm: Swarm<TestBehaviour>,
    peer_id: PeerId,
    addr: Multiaddr,
    mix_key: Option<NodePublicKey>,
) -> Node {
    let metrics = swarm.behaviour().mix.as_ref().map(|m| m.mix().metrics().clone());
    let discovery_metrics =
        swarm.behaviour().mix.as_ref().and_then(|m| m.discovery()).map(|d| d.metrics().clone());
    let (commands, mut command_rx) = mpsc::unbounded_channel();
    let (event_tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                command = command_rx.recv() => {
                    let Some(command) = command else { return };
                    let command = match command {
                        Command::KnownNodes(done) => {
                            let discovery = swarm.behaviour().mix.as_ref().and_then(|m| m.discovery());
                            let _ = done.send(discovery.map_or(0, |d| d.known_nodes()));
                            continue;
                        }
                        other => other,
                    };
                    let Some(mix) = swarm.behaviour_mut().mix.as_mut().map(|m| m.mix_mut()) else { continue };
                    match command {
                        Command::Send(d, codec, body, copies, done) => {
                            let options = libp2p_mix::core::SendOptions { copies, ..Default::default() };
                            let _ = done.send(mix.send_with(&d, &codec, &body, options).map(|_| ()).map_err(|e| e.to_string()));
                        }
                        Command::Request(d, codec, body, surbs, done) => {
                            let _ = done.send(mix.request(&d, &codec, &body, surbs).map_err(|e| e.to_string()));
                        }
                        Command::Reply(id, body) => { let _ = mix.reply(id, &body); }
                        Command::SetPool(pool) => mix.set_pool(Box::new(pool)),
                        Command::PoolSize(done) => { let _ = done.send(mix.core().pool().nodes().len()); }
                        Command::PoolEntry(peer, done) => { let _ = done.send(mix.core().pool().get(&peer).cloned()); }
                        Command::SendPacket(peer, addr, packet) => mix.send_packet(peer, addr, packet),
                        Command::ExitJobs(done) => { let _ = done.send(mix.exit_jobs()); }
                        Command::PoolRefused(reason, done) => { let _ = done.send(mix.core().pool().refused(reason)); }
                        Command::PoolPeers(done) => { let _ = done.send(mix.core().pool().nodes().to_vec()); }
                        Command::StopWithin(drain) => mix.stop_within(drain),
                        Command::KnownNodes(_) => unreachable!("answered above"),
                    }
                }
                event = swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(TestBehaviourEvent::Mix(libp2p_mix::Event::Discovery(_))) => {}
                    // As the event says: the stop is over, the swarm goes.
                    SwarmEvent::Behaviour(TestBehaviourEvent::Mix(e @ libp2p_mix::Event::Stopped(_))) => {
                        let _ = event_tx.send(NodeEvent::Mix(e));
                        return;
                    }
                    SwarmEvent::Behaviour(TestBehaviourEvent::Mix(e)) => { let _ = event_tx.send(NodeEvent::Mix(e)); }
                    SwarmEvent::Behaviour(TestBehaviourEvent::Echo(request_response::Event::Message {
                        message: request_response::Message::Request { request, channel, .. }, ..
                    })) => {
                        let mut response = b"echo:".to_vec();
                        response.extend_from_slice(&request);
                        let _ = swarm.behaviour_mut().echo.send_response(channel, response);
                        let _ = event_tx.send(NodeEvent::Echo(request));
                    }
                    _ => {}
                },
            }
        }
    });
    Node { peer_id, addr, mix_key, metrics, discovery: discovery_metrics, commands, events, task }
}

/// `n` mix nodes that all know each other, and one plain destination.
pub struct Network {
    pub mix: Vec<Node>,
    pub dest: Node,
}

pub struct Options {
    pub nodes: usize,
    /// Nodes find each other through discovery (bootstrapping from node 0) instead of a
    /// static pool.
    pub discovery: bool,
    pub transport: Transport,
    pub config: libp2p_mix::Config,
    pub delay: fn() -> Box<dyn DelayStrategy>,
    pub discovery_config: discovery::Config,
    /// Spam protection for every node.
    pub spam: Option<fn() -> libp2p_mix::spam::SpamConfig>,
    /// Without discovery: every node holds the others as static entries of a
    /// [`DynamicPool`] (with liveness: unreachable nodes are suspended) instead of a
    /// [`StaticPool`] (no liveness).
    pub live_pool: bool,
    /// With discovery: the caps of each node's pool.
    pub limits: libp2p_mix::core::SubnetLimits,
    /// Node `i` listens on `127.(i+1).0.1` instead of 127.0.0.1: each in a /16 of its own.
    pub spread: bool,
    /// Changes node `i`'s configuration from `config`.
    pub configure: Option<fn(usize, &mut libp2p_mix::Config)>,
    /// Origin protocols every node delivers as an exit, beside ping and echo.
    pub exit_protocols: Vec<(&'static str, ExitProtocol)>,
}

impl Default for Options {
    fn default() -> Self {
        let mut config = libp2p_mix::Config::default();
        config.core.pre_send_delay = Duration::from_millis(1);
        Self {
            nodes: 5,
            discovery: false,
            transport: Transport::Tcp,
            config,
            delay: || Box::new(libp2p_mix::core::ExponentialDelay::new(Duration::from_millis(2))),
            discovery_config: fast_discovery(),
            spam: None,
            live_pool: false,
            limits: libp2p_mix::core::SubnetLimits::default(),
            spread: false,
            configure: None,
            exit_protocols: Vec::new(),
        }
    }
}

/// Discovery tuned for quick tests.
pub fn fast_discovery() -> discovery::Config {
    discovery::Config {
        initial_walks: 20,
        initial_walk_interval: Duration::from_millis(250),
        walk_interval: Duration::from_secs(2),
        retry_missing: Duration::from_millis(500),
        republish_interval: Duration::from_secs(20),
        ..discovery::Config::default()
    }
}

pub async fn network(options: Options) -> Network {
    let mut swarms = Vec::new();
    let mut bootstrap: Option<(PeerId, Multiaddr)> = None;
    for i in 0..options.nodes {
        let key = identity::Keypair::generate_secp256k1();
        let peer_id = key.public().to_peer_id();
        let secret = NodeSecretKey::generate(&mut rand::rng());
        let public = secret.public_key();
        let pool: Box<dyn NodePool> = if options.discovery {
            Box::new(DynamicPool::new().with_limits(options.limits))
        } else {
            Box::new(StaticPool::default())
        };
        let mut config = options.config.clone();
        if let Some(configure) = options.configure {
            configure(i, &mut config);
        }
        let config = libp2p_mix::MixnetConfig {
            mix: config,
            discovery: options.discovery.then(|| options.discovery_config.clone()),
            bootstrap: bootstrap.iter().cloned().collect(),
            ..Default::default()
        };
        let mut mix = libp2p_mix::Mixnet::new(&key, secret, config)
            .unwrap()
            .with_pool(pool)
            .with_delay((options.delay)());
        // libp2p-ping keeps one inbound stream per connection: the exit's own first ping on a
        // new connection can displace the delivery stream. A repeated ping is harmless.
        mix.mix_mut().register_exit_protocol(
            PING,
            ExitProtocol { read: Some(ReadRule::Exact(32)), retry_on_reset: true, pooled: false },
        );
        mix.mix_mut().register_read_rule(ECHO, ReadRule::LengthPrefixed { max: 2048 });
        for (codec, protocol) in &options.exit_protocols {
            mix.mix_mut().register_exit_protocol(*codec, *protocol);
        }
        if let Some(spam) = options.spam {
            mix = mix.with_spam_protection(spam());
        }
        let mut swarm = build_swarm(key, Some(mix));
        let addr = if options.spread && options.transport == Transport::Tcp {
            listen_at(&mut swarm, format!("/ip4/127.{}.0.1/tcp/0", i + 1).parse().unwrap()).await
        } else {
            listen(&mut swarm, options.transport).await
        };
        assert_eq!(swarm.behaviour().mix.as_ref().unwrap().local_address(), Some(&addr));
        if options.discovery && bootstrap.is_none() {
            bootstrap = Some((peer_id, addr.clone()));
        }
        swarms.push((swarm, peer_id, addr, public));
    }
    let pool = StaticPool::new(
        swarms
            .iter()
            .map(|(_, peer, addr, key)| MixNode::new(*peer, addr.clone(), *key, true).unwrap()),
    )
    .unwrap();
    let mix = swarms
        .into_iter()
        .map(|(mut swarm, peer, addr, key)| {
            if options.live_pool {
                let mut live = DynamicPool::new();
                for node in pool.nodes() {
                    live.insert_static(node.clone());
                }
                swarm.behaviour_mut().mix.as_mut().unwrap().mix_mut().set_pool(Box::new(live));
            } else if !options.discovery {
                swarm
                    .behaviour_mut()
                    .mix
                    .as_mut()
                    .unwrap()
                    .mix_mut()
                    .set_pool(Box::new(pool.clone()));
            }
            spawn(swarm, peer, addr, Some(key))
        })
        .collect();

    let key = identity::Keypair::generate_secp256k1();
    let peer_id = key.public().to_peer_id();
    let mut swarm = build_swarm(key, None);
    let addr = listen(&mut swarm, options.transport).await;
    let dest = spawn(swarm, peer_id, addr, None);
    Network { mix, dest }
}

pub fn pool_of(nodes: &[&Node]) -> StaticPool {
    StaticPool::new(nodes.iter().map(|n| n.entry())).unwrap()
}

/// Log lines written by this thread's tasks while a [`Captured::install`] guard lives.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Captures warnings and errors on this thread (a current-thread runtime runs every
    /// spawned task on it).
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Satisfies the pool trait bound in signatures that take any pool.
pub fn boxed(pool: StaticPool) -> Box<dyn NodePool> {
    Box::new(pool)
}
