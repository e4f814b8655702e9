//! One mix node on a tokio task: its swarm, and a handle to drive it and hear from it.

use std::io;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identity, noise, request_response, tcp, yamux,
};
use libp2p_mix::core::{DelayStrategy, MixNode};
use libp2p_mix::{Destination, Metrics, ReadRule, RequestId, StaticPool};
use mix_sphinx::{NodePublicKey, NodeSecretKey, Packet};
use tokio::sync::{mpsc, oneshot};

/// A tiny request-response service the testnet's nodes offer as destinations: the reply is
/// the request with `echo:` in front. One varint length-prefixed frame each way.
pub(crate) const ECHO: &str = "/mixnode/echo/1.0.0";
const ECHO_MAX: usize = 4096;

#[derive(Debug, Clone, Default)]
pub(crate) struct EchoCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let len = unsigned_varint::aio::read_usize(&mut *io).await.map_err(io::Error::other)?;
    if len > ECHO_MAX {
        return Err(io::Error::other("echo frame too large"));
    }
    let mut buf = vec![0; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, data: &[u8]) -> io::Result<()> {
    io.write_all(&length_prefixed(data)).await?;
    io.close().await
}

/// `data` behind its unsigned-varint length.
pub(crate) fn length_prefixed(data: &[u8]) -> Vec<u8> {
    let mut buf = unsigned_varint::encode::usize_buffer();
    let mut out = unsigned_varint::encode::usize(data.len(), &mut buf).to_vec();
    out.extend_from_slice(data);
    out
}

impl request_response::Codec for EchoCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &r).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &r).await
    }
}

#[derive(NetworkBehaviour)]
pub(crate) struct NodeBehaviour {
    pub(crate) mix: libp2p_mix::Behaviour,
    pub(crate) echo: Toggle<request_response::Behaviour<EchoCodec>>,
}

/// Everything needed to start a node.
pub(crate) struct NodeSpec {
    pub(crate) identity: identity::Keypair,
    pub(crate) mix_secret: NodeSecretKey,
    pub(crate) listen: Vec<Multiaddr>,
    /// The address others dial; by default the first address the node listens on.
    pub(crate) advertise: Option<Multiaddr>,
    pub(crate) exit: bool,
    pub(crate) pool: StaticPool,
    pub(crate) delay: Box<dyn DelayStrategy>,
    pub(crate) config: libp2p_mix::Config,
    /// Serve the echo protocol (and read its replies as an exit).
    pub(crate) echo: bool,
}

enum Command {
    Send(Destination, &'static str, Vec<u8>, oneshot::Sender<Result<(), libp2p_mix::SendError>>),
    Request(
        Destination,
        &'static str,
        Vec<u8>,
        usize,
        oneshot::Sender<Result<RequestId, libp2p_mix::SendError>>,
    ),
    SendPacket(PeerId, Multiaddr, Packet),
    SetPool(StaticPool),
}

#[derive(Debug)]
pub(crate) enum NodeEvent {
    Mix(libp2p_mix::Event),
    /// The echo service got a request.
    Echo {
        body: Vec<u8>,
        at: Instant,
    },
}

/// A running node.
pub(crate) struct NodeHandle {
    pub(crate) peer_id: PeerId,
    pub(crate) addr: Multiaddr,
    pub(crate) mix_key: NodePublicKey,
    pub(crate) exit: bool,
    pub(crate) metrics: Metrics,
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
    ) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Send(dest, codec, body, tx)).context("node stopped")?;
        Ok(rx.await.context("node stopped")??)
    }

    pub(crate) async fn request(
        &self,
        dest: Destination,
        codec: &'static str,
        body: Vec<u8>,
        surbs: usize,
    ) -> anyhow::Result<RequestId> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Request(dest, codec, body, surbs, tx))
            .context("node stopped")?;
        Ok(rx.await.context("node stopped")??)
    }

    pub(crate) fn send_packet(&self, peer: PeerId, addr: Multiaddr, packet: Packet) {
        let _ = self.commands.send(Command::SendPacket(peer, addr, packet));
    }

    pub(crate) fn set_pool(&self, pool: StaticPool) {
        let _ = self.commands.send(Command::SetPool(pool));
    }

    /// Stops the node.
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

/// Starts a node on a thread of its own with a single-threaded runtime (one node per core).
/// Returns its handle and the thread's Linux thread id, for CPU accounting.
pub(crate) fn start_on_thread(spec: NodeSpec) -> anyhow::Result<(NodeHandle, Option<u32>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("mix-node".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(anyhow::Error::from(e)));
                return;
            }
        };
        runtime.block_on(async move {
            match start_task(spec).await {
                Ok((handle, task)) => {
                    let _ = tx.send(Ok((handle, crate::cpu::current_thread_id())));
                    let _ = task.await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    })?;
    rx.recv().context("node thread died")?
}

/// Starts a node: listens, learns its address, and runs its swarm on a task.
pub(crate) async fn start(spec: NodeSpec) -> anyhow::Result<NodeHandle> {
    Ok(start_task(spec).await?.0)
}

async fn start_task(spec: NodeSpec) -> anyhow::Result<(NodeHandle, tokio::task::JoinHandle<()>)> {
    let peer_id = spec.identity.public().to_peer_id();
    let mix_key = spec.mix_secret.public_key();
    let placeholder: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse()?;
    let local = MixNode::new(peer_id, placeholder, mix_key, spec.exit)
        .context("the libp2p identity must be a secp256k1 key (39-byte peer id)")?;
    let mut mix = libp2p_mix::Behaviour::new(
        local,
        spec.mix_secret,
        Box::new(spec.pool),
        spec.delay,
        spec.config,
    );
    let echo = spec.echo.then(|| {
        mix.register_read_rule(ECHO, ReadRule::LengthPrefixed { max: ECHO_MAX });
        request_response::Behaviour::new(
            [(StreamProtocol::new(ECHO), request_response::ProtocolSupport::Full)],
            request_response::Config::default().with_max_concurrent_streams(4096),
        )
    });
    let mut swarm = build_swarm(spec.identity, NodeBehaviour { mix, echo: echo.into() })?;

    let mut listening = Vec::new();
    for addr in &spec.listen {
        swarm.listen_on(addr.clone()).with_context(|| format!("listening on {addr}"))?;
    }
    while listening.len() < spec.listen.len() {
        match tokio::time::timeout(Duration::from_secs(10), swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { address, .. }) => listening.push(address),
            Ok(SwarmEvent::ListenerError { error, .. }) => {
                return Err(error).context("listener failed");
            }
            Ok(_) => {}
            Err(_) => anyhow::bail!("no listen address after 10 s"),
        }
    }
    let addr = match spec.advertise {
        Some(addr) => addr,
        None => {
            listening.first().cloned().context("the node must listen on at least one address")?
        }
    };
    swarm
        .behaviour_mut()
        .mix
        .set_local_address(addr.clone())
        .with_context(|| format!("advertised address {addr}"))?;
    let metrics = swarm.behaviour().mix.metrics().clone();

    let (commands, command_rx) = mpsc::unbounded_channel();
    let (event_tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(swarm, command_rx, event_tx));
    let abort = task.abort_handle();
    Ok((
        NodeHandle {
            peer_id,
            addr,
            mix_key,
            exit: spec.exit,
            metrics,
            commands,
            events: Some(events),
            task: abort,
        },
        task,
    ))
}

async fn run(
    mut swarm: Swarm<NodeBehaviour>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<NodeEvent>,
) {
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                let mix = &mut swarm.behaviour_mut().mix;
                match command {
                    Command::Send(dest, codec, body, done) => {
                        let _ = done.send(mix.send(&dest, codec, &body).map(|_| ()));
                    }
                    Command::Request(dest, codec, body, surbs, done) => {
                        let _ = done.send(mix.request(&dest, codec, &body, surbs));
                    }
                    Command::SendPacket(peer, addr, packet) => mix.send_packet(peer, addr, packet),
                    Command::SetPool(pool) => mix.set_pool(Box::new(pool)),
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(NodeBehaviourEvent::Mix(event)) => {
                    tracing::debug!(?event, "mix event");
                    let _ = events.send(NodeEvent::Mix(event));
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
