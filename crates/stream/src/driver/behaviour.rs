//! The rust-libp2p driver: a [`NetworkBehaviour`] that runs the Mix Protocol and, on top of
//! it, anonymous streams and messages.
//!
//! It wraps a [`libp2p_mix::Mixnet`] (the mix behaviour with discovery and RTTs wired in). The
//! mix behaviour carries the opener's frames as one-way mix messages to the acceptor (through
//! a random exit each time), builds the SURBs the opener sends ahead, and sends the acceptor's frames back through them. Exits deliver
//! frames to the acceptor over `/mix/stream/1.0.0`, like any origin protocol, so the acceptor
//! only ever talks to exits and to the first hops of SURBs. Mix events that are not the
//! streams' own pass through as [`Event::Mix`]; [`Behaviour::mix_mut`] reaches the mix
//! behaviour for everything else it does.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use either::Either;
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};
use futures_timer::Delay;
use libp2p_core::transport::PortUse;
use libp2p_core::{Endpoint as ConnectionRole, Multiaddr};
use libp2p_identity::PeerId;
use libp2p_mix::{Destination, RequestId, SendError, SendOptions};
use libp2p_swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerSelect, ConnectionId, FromSwarm,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use mix_sphinx::{MessageError, Surb};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::control::{Command, Control, Target, TransferError};
use super::handler::{FrameHandler, FromHandler};
use super::metrics::Metrics;
use super::stream::MixStream;
use crate::endpoint::{EndpointEvent, EndpointStats, MixTransport, StreamId};
use crate::{Config, Endpoint, FrameLimits, Mode, OpenStreamError, StreamConfig, StreamPeer};

/// The origin protocol id of stream frames (what exits dial the acceptor with).
pub const CODEC: &str = "/mix/stream/1.0.0";

/// What the behaviour reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// An event of the mix behaviour that is not the streams' own.
    Mix(libp2p_mix::Event),
}

/// Who waits for a message's outcome.
type Waiter = oneshot::Sender<Result<(), TransferError>>;

fn unix_now() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

/// Anonymous streams and messages over the Mix Protocol, on a swarm.
pub struct Behaviour {
    net: libp2p_mix::Mixnet,
    endpoint: Endpoint,
    /// Who waits for the outcome of each message being sent.
    sending: HashMap<StreamId, Waiter>,
    /// The SURB bundles openers sent, to their streams, until the mix node forgets them.
    bundles: Bundles,
    commands: mpsc::Receiver<Command>,
    control: Control,
    kicks: mpsc::UnboundedReceiver<StreamId>,
    kick: mpsc::UnboundedSender<StreamId>,
    incoming: mpsc::Sender<MixStream>,
    messages: mpsc::Sender<Vec<u8>>,
    /// Bytes of the messages in `messages` the application has not taken: at most
    /// [`Config::max_accepted_bytes`] on top of what the endpoint holds.
    queued_message_bytes: Arc<AtomicUsize>,
    timer: Delay,
    timer_at: Option<Instant>,
    metrics: Metrics,
    /// The endpoint's figures as last exported to [`Self::metrics`].
    exported: EndpointStats,
    waker: Option<Waker>,
    observer: Option<FrameObserver>,
    /// The handler's settings.
    max_inbound_reads: usize,
    frame_timeout: Duration,
}

/// Sees every frame exits deliver to this node, as they saw it (see
/// [`Behaviour::set_frame_observer`]).
pub type FrameObserver = Box<dyn FnMut(&[u8]) + Send>;

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl Behaviour {
    /// Streams on top of the mixnet `net`. With `receiver` (this node's X25519 secret, usually its mix
    /// key), the node also accepts streams; openers need the public half.
    pub fn new(mut net: libp2p_mix::Mixnet, receiver: Option<[u8; 32]>, config: Config) -> Self {
        // As an exit, deliver stream frames on one pooled stream per acceptor connection.
        net.mix_mut().register_exit_protocol(
            CODEC,
            libp2p_mix::ExitProtocol { read: None, retry_on_reset: false, pooled: true },
        );
        let (commands_tx, commands) = mpsc::channel(64);
        let (kick, kicks) = mpsc::unbounded();
        let (incoming, incoming_rx) = mpsc::channel(config.accept_backlog.max(1));
        let (messages, messages_rx) = mpsc::channel(config.message_backlog.max(1));
        let queued_message_bytes = Arc::new(AtomicUsize::new(0));
        let control =
            Control::new(commands_tx, incoming_rx, messages_rx, queued_message_bytes.clone());
        let (max_inbound_reads, frame_timeout) = (config.max_inbound_reads, config.frame_timeout);
        let limits = frame_limits(net.mix());
        let now = Instant::now();
        let rng = StdRng::from_rng(&mut rand::rng());
        let endpoint = Endpoint::new(config, receiver, limits, now, unix_now(), rng);
        let mut behaviour = Self {
            net,
            endpoint,
            sending: HashMap::new(),
            bundles: Bundles::default(),
            commands,
            control,
            kicks,
            kick,
            incoming,
            messages,
            queued_message_bytes,
            timer: Delay::new(Duration::ZERO),
            timer_at: None,
            metrics: Metrics::default(),
            exported: EndpointStats::default(),
            waker: None,
            observer: None,
            max_inbound_reads,
            frame_timeout,
        };
        behaviour.refresh_keys();
        behaviour
    }

    /// Accepts streams under the mix keys of the epochs the node holds now (current, previous
    /// in its overlap, next), or under the receiver key while the node does not rotate.
    fn refresh_keys(&mut self) {
        self.endpoint.set_epoch_keys(&self.net.mix().core().epoch_secrets());
    }

    /// A handle to open, accept and send; clones share the behaviour.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The mix behaviour underneath.
    pub fn mix(&self) -> &libp2p_mix::Behaviour {
        self.net.mix()
    }

    /// The mix behaviour underneath, for everything else it does.
    pub fn mix_mut(&mut self) -> &mut libp2p_mix::Behaviour {
        self.net.mix_mut()
    }

    /// The mix behaviour with what is wired around it (discovery, RTTs, its address).
    pub fn mixnet(&self) -> &libp2p_mix::Mixnet {
        &self.net
    }

    /// The same, to change it.
    pub fn mixnet_mut(&mut self) -> &mut libp2p_mix::Mixnet {
        &mut self.net
    }

    /// The sans-IO endpoint that holds the streams.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The stream layer's metrics (register them with [`Metrics::register`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The public key openers need, if this node accepts streams.
    pub fn receiver_key(&self) -> Option<[u8; 32]> {
        self.endpoint.receiver_key()
    }

    /// Streams open now (opened and accepted).
    pub fn active_streams(&self) -> usize {
        self.endpoint.active_streams()
    }

    /// Labels in the index over accepted streams (a measure of its memory).
    pub fn indexed_labels(&self) -> usize {
        self.endpoint.indexed_labels()
    }

    /// Hands `observer` every frame an exit delivers to this node, before anything is done with
    /// it: exactly the bytes that exit read. For audits of what exits learn.
    pub fn set_frame_observer(&mut self, observer: Option<FrameObserver>) {
        self.observer = observer;
    }

    fn resolve(&self, target: Target) -> Result<StreamPeer, OpenStreamError> {
        match target {
            Target::Peer(peer) => Ok(peer),
            Target::MixNode(peer_id) => {
                let core = self.net.mix().core();
                let node =
                    core.pool().get(&peer_id).ok_or(OpenStreamError::UnknownPeer(peer_id))?;
                // A rotating node accepts streams under the key of the epoch, as its record says.
                let key = node
                    .key_for(core.epoch_now(Instant::now()))
                    .ok_or(OpenStreamError::StaleKeys(peer_id))?;
                Ok(StreamPeer { peer_id, addr: node.addr().clone(), key: key.to_bytes() })
            }
        }
    }

    fn handle(&self, id: StreamId) -> Option<MixStream> {
        let shared = self.endpoint.shared(&id)?;
        Some(MixStream { shared, kick: self.kick.clone(), id })
    }

    fn open(
        &mut self,
        target: Target,
        mode: Mode,
        config: Option<StreamConfig>,
    ) -> Result<StreamId, OpenStreamError> {
        let peer = self.resolve(target)?;
        let now = Instant::now();
        self.endpoint.set_wall_clock(now, unix_now());
        self.endpoint.open(peer, mode, config, now)
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Open { target, config, reply } => {
                let result = self
                    .open(target, Mode::Stream, config)
                    .map(|id| self.handle(id).expect("just opened"));
                let _ = reply.send(result);
            }
            Command::Send { target, data, config, reply } => {
                let sent = self.resolve(target).and_then(|peer| {
                    let now = Instant::now();
                    self.endpoint.set_wall_clock(now, unix_now());
                    self.endpoint.send_message(peer, data, config, now)
                });
                match sent {
                    Ok(id) => {
                        self.sending.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(TransferError::Open(e)));
                    }
                }
            }
        }
    }

    /// A frame an exit delivered.
    fn on_forward_frame(&mut self, peer: PeerId, frame: Vec<u8>) {
        if let Some(observe) = self.observer.as_mut() {
            observe(&frame);
        }
        let now = Instant::now();
        self.endpoint.set_wall_clock(now, unix_now());
        let member = self.net.mix().core().pool().get(&peer).is_some();
        self.endpoint.handle_frame(now, peer, member, &frame);
    }

    fn on_mix_event(&mut self, event: libp2p_mix::Event) -> Option<Event> {
        match event {
            libp2p_mix::Event::Reply { request, body, .. } if self.bundles.contains(&request) => {
                if let Some(id) = self.bundles.stream(&request) {
                    self.endpoint.handle_reply(Instant::now(), &id, &body);
                }
                None
            }
            libp2p_mix::Event::SurbsExpired { bundle } if self.bundles.remove(&bundle) => None,
            libp2p_mix::Event::KeysRotated(keys) => {
                self.refresh_keys();
                Some(Event::Mix(libp2p_mix::Event::KeysRotated(keys)))
            }
            other => Some(Event::Mix(other)),
        }
    }

    fn on_endpoint_event(&mut self, event: EndpointEvent) {
        match event {
            EndpointEvent::Incoming(id) => {
                let Some(handle) = self.handle(id) else { return };
                if let Err(unsent) = self.incoming.try_send(handle) {
                    // Nobody takes streams fast enough: refuse this one (before its handle
                    // drops, which would close it gracefully).
                    self.endpoint.refuse(&id);
                    drop(unsent);
                }
            }
            EndpointEvent::Message { data, .. } => {
                let len = data.len();
                let queued = self.queued_message_bytes.load(Ordering::Relaxed);
                if queued + len > self.endpoint.config().max_accepted_bytes {
                    // Received whole and acknowledged, but the application does not take
                    // messages as fast as they come: drop it rather than hold without bound.
                    self.metrics.dropped("message_backlog_full");
                    return;
                }
                self.queued_message_bytes.fetch_add(len, Ordering::Relaxed);
                if let Err(e) = self.messages.try_send(data) {
                    self.queued_message_bytes.fetch_sub(len, Ordering::Relaxed);
                    drop(e);
                    self.metrics.dropped("message_backlog_full");
                }
            }
            EndpointEvent::Sent { id, result } => {
                if let Some(reply) = self.sending.remove(&id) {
                    let _ = reply.send(result.map_err(TransferError::Connection));
                }
            }
        }
    }

    /// Drives everything that is due; `true` if anything was.
    fn run(&mut self, cx: &mut Context<'_>) -> bool {
        let mut worked = false;
        while let Poll::Ready(Some(command)) = self.commands.poll_next_unpin(cx) {
            self.on_command(command);
            worked = true;
        }
        while let Poll::Ready(Some(id)) = self.kicks.poll_next_unpin(cx) {
            self.endpoint.touch(&id);
        }
        // Streams refused for a full backlog go before they are driven (they send nothing).
        while let Some(event) = self.endpoint.poll_event() {
            self.on_endpoint_event(event);
        }
        let now = Instant::now();
        self.endpoint.handle_timeout(now);
        self.endpoint.set_limits(frame_limits(self.net.mix()));
        let mut transport = Transport { mix: self.net.mix_mut(), bundles: &mut self.bundles };
        worked |= self.endpoint.drive(now, &mut transport);
        while let Some(event) = self.endpoint.poll_event() {
            self.on_endpoint_event(event);
        }
        if self.endpoint.stats().changes != self.exported.changes {
            let rtts = self.endpoint.take_rtts();
            let now = self.endpoint.stats().clone();
            self.metrics.export(&self.exported, &now, &rtts);
            self.exported = now;
        }
        worked
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) {
        let Some(at) = self.endpoint.poll_timeout() else {
            self.timer_at = None;
            return;
        };
        // Re-arming registers with the timer thread: only when the deadline moves earlier. A
        // timer that fires early is re-armed for what is due then.
        if self.timer_at.is_none_or(|armed| at < armed) {
            self.timer_at = Some(at);
            self.timer.reset(at.saturating_duration_since(Instant::now()));
        }
        if self.timer.poll_unpin(cx).is_ready() {
            self.timer_at = None;
            cx.waker().wake_by_ref();
        }
    }
}

/// The largest frames the mix node carries each way.
fn frame_limits(mix: &libp2p_mix::Behaviour) -> FrameLimits {
    let proof = mix.core().exit_proof_len();
    FrameLimits {
        forward: mix.max_message_size(CODEC, 0).unwrap_or(0).saturating_sub(proof),
        reverse: mix.max_reply_size(),
    }
}

/// The SURB bundles of this node's streams, by the mix node's name for them.
#[derive(Debug, Default)]
struct Bundles {
    streams: HashMap<RequestId, (StreamId, Instant)>,
    /// Bundles held after the last sweep of expired ones.
    swept: usize,
}

impl Bundles {
    fn insert(&mut self, bundle: RequestId, stream: StreamId, expires: Instant, now: Instant) {
        // A bundle whose SURBs were all used may leave the mix node without an event: sweep
        // expired ones whenever the map doubled since the last sweep.
        if self.streams.len() >= 2 * self.swept.max(64) {
            self.streams.retain(|_, (_, expires)| *expires > now);
            self.swept = self.streams.len();
        }
        self.streams.insert(bundle, (stream, expires));
    }

    fn contains(&self, bundle: &RequestId) -> bool {
        self.streams.contains_key(bundle)
    }

    fn stream(&self, bundle: &RequestId) -> Option<StreamId> {
        self.streams.get(bundle).map(|(id, _)| *id)
    }

    fn remove(&mut self, bundle: &RequestId) -> bool {
        self.streams.remove(bundle).is_some()
    }
}

/// The mix behaviour as the endpoint's transport.
struct Transport<'a> {
    mix: &'a mut libp2p_mix::Behaviour,
    bundles: &'a mut Bundles,
}

impl MixTransport for Transport<'_> {
    fn queued_packets(&self) -> usize {
        self.mix.core().delayed_packets()
    }

    fn send(
        &mut self,
        _now: Instant,
        to: &Destination,
        frame: &[u8],
        options: SendOptions,
    ) -> Result<(), SendError> {
        self.mix.send_with(to, CODEC, frame, options).map(|_| ())
    }

    fn surb_bundle(
        &mut self,
        now: Instant,
        stream: &StreamId,
        count: usize,
        avoid: &PeerId,
        options: SendOptions,
    ) -> Result<(Vec<Surb>, Instant), SendError> {
        let bundle = self.mix.surb_bundle(count, &[*avoid], options)?;
        self.bundles.insert(bundle.id, *stream, bundle.expires, now);
        Ok((bundle.surbs, bundle.expires))
    }

    fn reply(&mut self, _now: Instant, surb: Surb, frame: &[u8]) -> Result<(), MessageError> {
        self.mix.reply_with(&[surb], frame).map(|_| ())
    }

    fn is_suspended(&self, peer: &PeerId) -> bool {
        self.mix.core().pool().is_suspended(peer)
    }
}

type Handler = ConnectionHandlerSelect<THandler<libp2p_mix::Mixnet>, FrameHandler>;

impl Behaviour {
    fn frame_handler(&self) -> FrameHandler {
        FrameHandler::new(
            self.endpoint.receiver_key().is_some(),
            self.max_inbound_reads,
            self.frame_timeout,
        )
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.net.handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let mix = self.net.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        Ok(mix.select(self.frame_handler()))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: ConnectionRole,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.net.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: ConnectionRole,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let mix = self.net.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        Ok(mix.select(self.frame_handler()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.net.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(mix) => self.net.on_connection_handler_event(peer, connection, mix),
            Either::Right(FromHandler::Frame(frame)) => self.on_forward_frame(peer, frame),
            Either::Right(FromHandler::Dropped(reason)) => self.metrics.dropped(reason),
        }
        self.wake();
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        // Bounded, so that a stream that always has work cannot starve the rest of the swarm.
        for _ in 0..64 {
            // What the mix node has to send goes first; streams build more frames only when
            // it has nothing left to hand the swarm.
            match self.net.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    if let Some(event) = self.on_mix_event(event) {
                        return Poll::Ready(ToSwarm::GenerateEvent(event));
                    }
                    continue;
                }
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(Event::Mix).map_in(Either::Left));
                }
                Poll::Pending => {}
            }
            let worked = self.run(cx);
            if !worked && !self.endpoint.has_work() {
                self.poll_timer(cx);
                self.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Behaviour {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}
