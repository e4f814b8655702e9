//! One mix node on a tokio task: its swarm, and a handle to drive it and hear from it.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identity, noise, request_response, tcp, yamux,
};
use libp2p_mix::core::{DelayStrategy, DynamicPool, MixNode, NodePool, SendOptions};
use libp2p_mix::{
    Destination, Event, Metrics, Mixnet, MixnetConfig, ReadRule, RequestId, discovery,
};
use mix_gossip::{MessageId, PublishError, Route, TopicId};
use mix_sphinx::{NodePublicKey, NodeSecretKey, Packet};
use mix_stream::Event::Mix;
use tokio::sync::{mpsc, oneshot};

use crate::echo::{ECHO, ECHO_MAX, EchoCodec, length_prefixed, unframe};

#[derive(NetworkBehaviour)]
pub(crate) struct NodeBehaviour {
    /// The Mix Protocol with discovery and RTTs, and anonymous streams on top.
    pub(crate) stream: mix_stream::Behaviour,
    pub(crate) echo: Toggle<request_response::Behaviour<EchoCodec>>,
    /// Privacy-hardened gossip; its `Mix` route goes through this node's mix layer.
    pub(crate) gossip: Toggle<mix_gossip::Behaviour>,
}

/// Gossip settings of a node.
#[derive(Debug, Clone)]
pub(crate) struct GossipSpec {
    pub(crate) config: mix_gossip::Config,
    /// Topics joined at start, by name.
    pub(crate) topics: Vec<String>,
    /// Members to join them through.
    pub(crate) bootstrap: Vec<(PeerId, Multiaddr)>,
}

/// Discovery settings of a node.
pub(crate) struct DiscoverySpec {
    pub(crate) config: discovery::Config,
    /// Peers to join the DHT through.
    pub(crate) bootstrap: Vec<(PeerId, Multiaddr)>,
}

/// Everything needed to start a node.
pub(crate) struct NodeSpec {
    pub(crate) identity: identity::Keypair,
    pub(crate) mix_secret: NodeSecretKey,
    pub(crate) listen: Vec<Multiaddr>,
    /// The address others dial; by default the first address the node listens on.
    pub(crate) advertise: Option<Multiaddr>,
    pub(crate) exit: bool,
    /// Configured pool entries (never expire; suspended for a while when unreachable).
    pub(crate) static_nodes: Vec<MixNode>,
    pub(crate) discovery: Option<DiscoverySpec>,
    pub(crate) delay: Box<dyn DelayStrategy>,
    pub(crate) config: libp2p_mix::Config,
    /// Serve the echo protocol (and read its replies as an exit).
    pub(crate) echo: bool,
    /// Spam protection, the same on every node of the network.
    pub(crate) spam: Option<libp2p_mix::spam::SpamConfig>,
    /// Settings of the stream layer.
    pub(crate) streams: mix_stream::Config,
    /// Accept streams and messages, with the node's mix key.
    pub(crate) accept_streams: bool,
    /// Run gossip.
    pub(crate) gossip: Option<GossipSpec>,
    /// Caps of the pool per subnet and in all.
    pub(crate) pool_limits: libp2p_mix::core::SubnetLimits,
}

impl NodeSpec {
    /// A node with fresh keys listening on `listen`: an exit, no mixing delay, no discovery,
    /// no echo, no spam protection, gossip off, accepting streams. Callers change what they
    /// need with struct update syntax.
    pub(crate) fn new(listen: Multiaddr, config: libp2p_mix::Config) -> Self {
        Self {
            identity: identity::Keypair::generate_secp256k1(),
            mix_secret: NodeSecretKey::generate(&mut rand::rng()),
            listen: vec![listen],
            advertise: None,
            exit: true,
            static_nodes: Vec::new(),
            discovery: None,
            delay: Box::new(libp2p_mix::core::NoDelay),
            config,
            echo: false,
            spam: None,
            streams: mix_stream::Config::default(),
            accept_streams: true,
            gossip: None,
            pool_limits: libp2p_mix::core::SubnetLimits::default(),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, libp2p_mix::SendError>>;

enum Command {
    Send(Destination, &'static str, Vec<u8>, SendOptions, Reply<()>),
    Request(Destination, &'static str, Vec<u8>, usize, SendOptions, Reply<RequestId>),
    SendPacket(PeerId, Multiaddr, Packet),
    SetStaticNodes(Vec<MixNode>, oneshot::Sender<()>),
    PoolPeers(oneshot::Sender<Vec<PeerId>>),
    GossipJoin(TopicId, Vec<(PeerId, Multiaddr)>),
    GossipPublish(TopicId, Vec<u8>, Route, oneshot::Sender<Result<MessageId, PublishError>>),
    GossipNeighbors(TopicId, oneshot::Sender<usize>),
    Stop(Duration, oneshot::Sender<StopReport>),
}

/// What a graceful stop did with the packets the node held.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct StopReport {
    /// Packets held when the stop began (being opened or built, delayed, or waiting to be
    /// sent).
    pub(crate) held: usize,
    /// Packets forwarded for others while the node drained.
    pub(crate) sent_on: u64,
    /// Packets dropped, counted as `stopping`: those still held (being built, for their delay
    /// or a cover slot) when the time allowed ran out.
    pub(crate) dropped: usize,
    /// Packets received after the stop began, refused (counted as `stopping`).
    pub(crate) refused: u64,
    pub(crate) took_ms: u64,
}

#[derive(Debug)]
pub(crate) enum NodeEvent {
    Mix(Event),
    /// The echo service got a request (over its own protocol, or as a mix destination).
    Echo {
        body: Vec<u8>,
        at: Instant,
    },
    /// What gossip reported (deliveries, neighbours, confirmations).
    Gossip(mix_gossip::Event),
}

/// A running node.
pub(crate) struct NodeHandle {
    pub(crate) peer_id: PeerId,
    pub(crate) addr: Multiaddr,
    pub(crate) mix_key: NodePublicKey,
    pub(crate) exit: bool,
    pub(crate) metrics: Metrics,
    pub(crate) discovery_metrics: Option<discovery::Metrics>,
    /// Opens, sends and accepts anonymous streams and messages.
    pub(crate) streams: mix_stream::Control,
    pub(crate) stream_metrics: mix_stream::Metrics,
    pub(crate) gossip_metrics: Option<mix_gossip::Metrics>,
    commands: mpsc::UnboundedSender<Command>,
    events: Option<mpsc::UnboundedReceiver<NodeEvent>>,
    task: tokio::task::AbortHandle,
}

impl NodeHandle {
    /// The node as a pool entry.
    pub(crate) fn entry(&self) -> anyhow::Result<MixNode> {
        Ok(MixNode::new(self.peer_id, self.addr.clone(), self.mix_key, self.exit)?)
    }

    /// The node as a destination reached through an exit.
    pub(crate) fn destination(&self) -> Destination {
        Destination::Peer { peer_id: self.peer_id, addr: self.addr.clone() }
    }

    /// Takes the event stream (once).
    pub(crate) fn take_events(&mut self) -> Option<mpsc::UnboundedReceiver<NodeEvent>> {
        self.events.take()
    }

    pub(crate) async fn send(
        &self,
        dest: Destination,
        codec: &'static str,
        body: Vec<u8>,
        options: SendOptions,
    ) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Send(dest, codec, body, options, tx))
            .context("node stopped")?;
        Ok(rx.await.context("node stopped")??)
    }

    pub(crate) async fn request(
        &self,
        dest: Destination,
        codec: &'static str,
        body: Vec<u8>,
        surbs: usize,
        options: SendOptions,
    ) -> anyhow::Result<RequestId> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Request(dest, codec, body, surbs, options, tx))
            .context("node stopped")?;
        Ok(rx.await.context("node stopped")??)
    }

    pub(crate) fn send_packet(&self, peer: PeerId, addr: Multiaddr, packet: Packet) {
        let _ = self.commands.send(Command::SendPacket(peer, addr, packet));
    }

    /// Replaces the pool with configured nodes only; returns once the node uses them (a
    /// stream opened earlier could race the stream driver's own channel and find no peer).
    pub(crate) async fn set_static_nodes(&self, nodes: Vec<MixNode>) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::SetStaticNodes(nodes, tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The peers currently usable in paths.
    pub(crate) async fn pool_peers(&self) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::PoolPeers(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Joins a gossip topic through `bootstrap` (gossip must be on).
    pub(crate) fn gossip_join(&self, topic: TopicId, bootstrap: Vec<(PeerId, Multiaddr)>) {
        let _ = self.commands.send(Command::GossipJoin(topic, bootstrap));
    }

    /// Publishes on a gossip topic.
    pub(crate) async fn gossip_publish(
        &self,
        topic: TopicId,
        data: Vec<u8>,
        route: Route,
    ) -> anyhow::Result<MessageId> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::GossipPublish(topic, data, route, tx))
            .context("node stopped")?;
        Ok(rx.await.context("node stopped (or gossip off)")??)
    }

    /// Neighbours on a gossip topic.
    pub(crate) async fn gossip_neighbors(&self, topic: TopicId) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::GossipNeighbors(topic, tx)).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Stops the node gracefully ([`libp2p_mix::Behaviour::stop_within`]): no new packets,
    /// held packets sent on when due for at most `drain`, the rest dropped (counted), half a
    /// second for peers to read the last frames, connections closed, the replay state saved;
    /// then the swarm goes away.
    pub(crate) async fn shutdown(&self, drain: Duration) -> StopReport {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(drain, tx)).is_err() {
            return StopReport::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Stops the node: its swarm, listeners and connections go away.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn build_swarm(
    identity: identity::Keypair,
    behaviour: NodeBehaviour,
) -> anyhow::Result<Swarm<NodeBehaviour>> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_quic()
        .with_behaviour(|_| behaviour)?
        .with_swarm_config(|c| {
            // Mix connections are reused for every packet; re-dialing costs milliseconds.
            c.with_idle_connection_timeout(Duration::from_secs(300))
                // Every packet crosses between a connection task and the swarm task twice; the
                // default buffers of 7-8 events make the tasks hand over the core per packet.
                .with_per_connection_event_buffer_size(64)
                .with_notify_handler_buffer_size(std::num::NonZeroUsize::new(64).expect("non-zero"))
        })
        .build())
}

fn pool_of(nodes: Vec<MixNode>, limits: libp2p_mix::core::SubnetLimits) -> DynamicPool {
    let mut pool = DynamicPool::new().with_limits(limits);
    for node in nodes {
        pool.insert_static(node);
    }
    pool
}

/// Starts a node on a thread of its own with a single-threaded runtime (one node per core).
/// Returns its handle and the thread's Linux thread id, for CPU accounting.
pub(crate) fn start_on_thread(spec: NodeSpec) -> anyhow::Result<(NodeHandle, Option<u32>)> {
    on_own_thread("mix-node", |started| async move {
        match start_task(spec).await {
            Ok((handle, task)) => {
                let _ = started.send(Ok((handle, crate::cpu::current_thread_id())));
                let _ = task.await;
            }
            Err(e) => {
                let _ = started.send(Err(e));
            }
        }
    })
}

/// Runs `task` on a new thread named `name` with a single-threaded runtime of its own, and
/// waits for what it sends on `started` (its handle once it is up, or why it could not start).
pub(crate) fn on_own_thread<T, F, Fut>(name: &str, task: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(std::sync::mpsc::Sender<anyhow::Result<T>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (started, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(task(started)),
            Err(e) => {
                let _ = started.send(Err(anyhow::Error::from(e)));
            }
        }
    })?;
    rx.recv().with_context(|| format!("thread {name} died"))?
}

/// Starts a node: listens, learns its address, and runs its swarm on a task.
pub(crate) async fn start(spec: NodeSpec) -> anyhow::Result<NodeHandle> {
    Ok(start_task(spec).await?.0)
}

/// A node's behaviour and what its swarm needs besides, built from its spec without touching
/// the network (only a configured state directory is read).
pub(crate) struct Assembled {
    pub(crate) behaviour: NodeBehaviour,
    identity: identity::Keypair,
    mix_key: NodePublicKey,
    listen: Vec<Multiaddr>,
    advertise: Option<Multiaddr>,
    exit: bool,
    gossip: Option<GossipSpec>,
}

impl std::fmt::Debug for Assembled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assembled").field("listen", &self.listen).finish_non_exhaustive()
    }
}

pub(crate) fn assemble(spec: NodeSpec) -> anyhow::Result<Assembled> {
    let peer_id = spec.identity.public().to_peer_id();
    let mix_key = spec.mix_secret.public_key();
    let stream_secret = *spec.mix_secret.to_bytes();
    let state_dir = spec.config.state_dir.clone();
    let (discovery, bootstrap) = match spec.discovery {
        Some(d) => (Some(d.config), d.bootstrap),
        None => (None, Vec::new()),
    };
    let config = MixnetConfig {
        mix: spec.config,
        exit: spec.exit,
        discovery,
        bootstrap,
        rtt_interval: Some(Duration::from_secs(15)),
    };
    let pool: Box<dyn NodePool> = Box::new(pool_of(spec.static_nodes, spec.pool_limits));
    let mut mixnet = Mixnet::new(&spec.identity, spec.mix_secret, config)
        .context("the libp2p identity must be a secp256k1 key (39-byte peer id)")?
        .with_pool(pool)
        .with_delay(spec.delay);
    if let Some(dir) = state_dir {
        mixnet = mixnet.with_state_dir(dir)?;
    }
    if let Some(spam) = spec.spam {
        mixnet = mixnet.with_spam_protection(spam);
    }
    let echo = spec.echo.then(|| {
        mixnet.mix_mut().register_read_rule(ECHO, ReadRule::LengthPrefixed { max: ECHO_MAX });
        request_response::Behaviour::new(
            [(StreamProtocol::new(ECHO), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_max_concurrent_streams(4096),
        )
    });
    let receiver = spec.accept_streams.then_some(stream_secret);
    let mut streams = spec.streams;
    // The stream keys come from the node's key, which a restart keeps: openings the last run
    // accepted must not pass again.
    streams.after_restart |= mixnet.mix().resumed();
    let mut stream = mix_stream::Behaviour::new(mixnet, receiver, streams);
    // Gossip's `Mix` route goes through this node's mix layer, its rebroadcasters drawn from
    // the mix pool (signed records, capped per subnet), not from views a poisoner can fill.
    let gossip = spec.gossip.as_ref().map(|g| {
        mix_gossip::Behaviour::new(peer_id, g.config.clone())
            .with_mix_route(mix_gossip::MixRoute::attach(stream.mix_mut()))
    });
    let behaviour = NodeBehaviour { stream, echo: echo.into(), gossip: gossip.into() };
    Ok(Assembled {
        behaviour,
        identity: spec.identity,
        mix_key,
        listen: spec.listen,
        advertise: spec.advertise,
        exit: spec.exit,
        gossip: spec.gossip,
    })
}

async fn start_task(spec: NodeSpec) -> anyhow::Result<(NodeHandle, tokio::task::JoinHandle<()>)> {
    let Assembled { behaviour, identity, mix_key, listen, advertise, exit, gossip } =
        assemble(spec)?;
    let peer_id = identity.public().to_peer_id();
    let mut swarm = build_swarm(identity, behaviour)?;

    // The mixnet advertises a confirmed external address before any it listens on.
    if let Some(addr) = &advertise {
        swarm.add_external_address(addr.clone());
    }
    let mut listening = 0;
    for addr in &listen {
        swarm.listen_on(addr.clone()).with_context(|| format!("listening on {addr}"))?;
    }
    while listening < listen.len() {
        match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { .. }) => listening += 1,
            Ok(SwarmEvent::ListenerError { error, .. }) => {
                return Err(error).context("listener failed");
            }
            Ok(_) => {}
            Err(_) => anyhow::bail!("no listen address after 10 s"),
        }
    }
    let addr = swarm
        .behaviour()
        .stream
        .mixnet()
        .local_address()
        .cloned()
        .context("no address this node listens on can be advertised in SURBs")?;
    if let Some(wanted) = advertise
        && wanted != addr
    {
        anyhow::bail!(
            "network.advertise {wanted} cannot be advertised (Sphinx address blocks hold IPv4 \
             TCP or QUIC addresses only)"
        );
    }
    let metrics = swarm.behaviour().stream.mix().metrics().clone();
    let streams = swarm.behaviour().stream.control();
    let stream_metrics = swarm.behaviour().stream.metrics().clone();
    let discovery_metrics =
        swarm.behaviour().stream.mixnet().discovery().map(|d| d.metrics().clone());
    let gossip_metrics = swarm.behaviour().gossip.as_ref().map(|g| g.metrics().clone());
    if let Some(g) = gossip {
        for name in &g.topics {
            gossip_join(&mut swarm, TopicId::from_name(name), g.bootstrap.clone());
        }
    }

    let (commands, command_rx) = mpsc::unbounded_channel();
    let (event_tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(swarm, command_rx, event_tx));
    let abort = task.abort_handle();
    let handle = NodeHandle {
        peer_id,
        addr,
        mix_key,
        exit,
        metrics,
        discovery_metrics,
        streams,
        stream_metrics,
        gossip_metrics,
        commands,
        events: Some(events),
        task: abort,
    };
    Ok((handle, task))
}

fn gossip_join(
    swarm: &mut Swarm<NodeBehaviour>,
    topic: TopicId,
    bootstrap: Vec<(PeerId, Multiaddr)>,
) {
    let local = *swarm.local_peer_id();
    let Some(gossip) = swarm.behaviour_mut().gossip.as_mut() else {
        tracing::warn!("gossip is off: not joining");
        return;
    };
    let mut peers = Vec::new();
    for (peer, addr) in bootstrap {
        if peer != local {
            gossip.add_address(peer, addr);
            peers.push(peer);
        }
    }
    gossip.join(topic, peers);
}

fn on_command(swarm: &mut Swarm<NodeBehaviour>, command: Command) {
    let behaviour = swarm.behaviour_mut();
    let mix = behaviour.stream.mix_mut();
    match command {
        Command::Send(dest, codec, body, options, done) => {
            let _ = done.send(mix.send_with(&dest, codec, &body, options).map(|_| ()));
        }
        Command::Request(dest, codec, body, surbs, options, done) => {
            let _ = done.send(mix.request_with(&dest, codec, &body, surbs, options));
        }
        Command::SendPacket(peer, addr, packet) => mix.send_prebuilt(peer, addr, packet),
        Command::SetStaticNodes(nodes, done) => {
            mix.set_pool(Box::new(pool_of(nodes, libp2p_mix::core::SubnetLimits::default())));
            let _ = done.send(());
        }
        Command::PoolPeers(done) => {
            let _ = done.send(mix.core().pool().nodes().iter().map(|n| *n.peer_id()).collect());
        }
        Command::GossipJoin(topic, bootstrap) => gossip_join(swarm, topic, bootstrap),
        Command::GossipPublish(topic, data, route, done) => {
            let result = match behaviour.gossip.as_mut() {
                Some(g) => g.publish(&topic, data, route),
                None => Err(PublishError::NotJoined),
            };
            let _ = done.send(result);
        }
        Command::GossipNeighbors(topic, done) => {
            let _ = done.send(behaviour.gossip.as_ref().map_or(0, |g| g.neighbors(&topic).len()));
        }
        // Handled by the run loop, which owns the stop's state.
        Command::Stop(..) => {}
    }
}

impl From<libp2p_mix::StopReport> for StopReport {
    fn from(r: libp2p_mix::StopReport) -> Self {
        Self {
            held: r.held,
            sent_on: r.sent_on,
            dropped: r.dropped,
            refused: r.refused,
            took_ms: r.took.as_millis() as u64,
        }
    }
}

async fn run(
    mut swarm: Swarm<NodeBehaviour>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<NodeEvent>,
) {
    // Who asked for the stop under way: a second caller gets no report (its sender is
    // dropped), and the stop keeps its first deadline.
    let mut stop_asked: Option<oneshot::Sender<StopReport>> = None;
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                if let Command::Stop(drain, done) = command {
                    if stop_asked.is_none() {
                        stop_asked = Some(done);
                        swarm.behaviour_mut().stream.mix_mut().stop_within(drain);
                    }
                    continue;
                }
                on_command(&mut swarm, command);
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(NodeBehaviourEvent::Stream(Mix(Event::Stopped(report)))) => {
                    // The replay state is saved; the swarm goes before the stop is reported.
                    drop(swarm);
                    let _ = stop_asked.take().map(|done| done.send(report.into()));
                    return;
                }
                // As a mix destination, the echo service answers through the SURBs.
                SwarmEvent::Behaviour(NodeBehaviourEvent::Stream(Mix(Event::Received { codec, body, reply })))
                    if codec == ECHO && swarm.behaviour().echo.is_enabled() =>
                {
                    let at = Instant::now();
                    let request = unframe(&body).unwrap_or(&body).to_vec();
                    if let Some(id) = reply {
                        let mut response = b"echo:".to_vec();
                        response.extend_from_slice(&request);
                        let _ = swarm.behaviour_mut().stream.mix_mut().reply(id, &length_prefixed(&response));
                    }
                    let _ = events.send(NodeEvent::Echo { body: request, at });
                }
                SwarmEvent::Behaviour(NodeBehaviourEvent::Gossip(event)) => {
                    let _ = events.send(NodeEvent::Gossip(event));
                }
                SwarmEvent::Behaviour(NodeBehaviourEvent::Stream(Mix(event))) => {
                    if let Event::Received { reply: Some(id), .. } = &event {
                        // Nobody here answers this codec: its SURBs go now.
                        swarm.behaviour_mut().stream.mix_mut().forget(*id);
                    }
                    tracing::debug!(?event, "mix event");
                    let _ = events.send(NodeEvent::Mix(event));
                }
                SwarmEvent::Behaviour(NodeBehaviourEvent::Stream(event)) => {
                    tracing::debug!(?event, "stream event");
                }
                SwarmEvent::Behaviour(NodeBehaviourEvent::Echo(request_response::Event::Message {
                    message: request_response::Message::Request { request, channel, .. },
                    ..
                })) => {
                    let at = Instant::now();
                    let mut response = b"echo:".to_vec();
                    response.extend_from_slice(&request);
                    if let Some(echo) = swarm.behaviour_mut().echo.as_mut() {
                        let _ = echo.send_response(channel, response);
                    }
                    let _ = events.send(NodeEvent::Echo { body: request, at });
                }
                SwarmEvent::ConnectionEstablished { peer_id, .. } => tracing::trace!(%peer_id, "connected"),
                SwarmEvent::ConnectionClosed { peer_id, cause, .. } => tracing::trace!(%peer_id, ?cause, "disconnected"),
                _ => {}
            },
        }
    }
}

#[cfg(test)]
#[path = "runtime_stop_tests.rs"]
mod stop_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_advertised_address_sphinx_cannot_carry_is_refused_at_start() {
        let mut spec = NodeSpec::new(
            "/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"),
            libp2p_mix::Config::default(),
        );
        spec.advertise = Some("/dns4/mix.example/tcp/4001".parse().expect("multiaddr"));
        match start(spec).await {
            Ok(_) => panic!("a node advertising a DNS address started"),
            Err(error) => assert!(error.to_string().contains("network.advertise"), "{error:#}"),
        }
    }

    /// A node whose state directory holds an earlier run's state is a restart: its stream
    /// layer refuses openings the earlier run may have accepted. A second node on the same
    /// directory is refused while the first holds it.
    #[tokio::test]
    async fn a_restarted_node_tells_its_stream_layer() {
        let dir = std::env::temp_dir().join(format!("mixnode-restart-{:x}", rand::random::<u64>()));
        let spec = || {
            let config = libp2p_mix::Config { state_dir: Some(dir.clone()), ..Default::default() };
            NodeSpec::new("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"), config)
        };
        let restarted = |a: &Assembled| a.behaviour.stream.endpoint().config().after_restart;
        let first = assemble(spec()).expect("first start");
        assert!(!restarted(&first), "a first start");
        let error = assemble(spec()).expect_err("a second node on the same directory");
        assert!(format!("{error:#}").contains("locked by another node"), "{error:#}");
        drop(first);
        let again = assemble(spec()).expect("restart");
        assert!(restarted(&again), "a restart");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
