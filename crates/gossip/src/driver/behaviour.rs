//! The rust-libp2p driver: a [`NetworkBehaviour`] that runs a [`State`] on a swarm.
//!
//! It carries the state machine's messages as padded frames over `/mix-gossip/1.1.0`, dials
//! peers it must reach (with the addresses it was given or that other behaviours know), feeds
//! closed connections and failed dials back as failures, keeps the timers, and reports
//! [`Event`]s. The mix route goes through a libp2p-mix behaviour of the same swarm when one is
//! attached (feature `mix`, [`Behaviour::with_mix_route`]); otherwise the application, which
//! owns the mix node, sends [`Event::MixPublish`] through the mixnet to the named member,
//! whose application hands the delivery to [`Behaviour::handle_mix_delivery`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p_core::transport::PortUse;
use libp2p_core::{Endpoint, Multiaddr};
use libp2p_identity::PeerId;
use libp2p_swarm::DialError;
use libp2p_swarm::behaviour::{ConnectionClosed, ConnectionEstablished, DialFailure, FromSwarm};
use libp2p_swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p_swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::handler::{Handler, InEvent, OutEvent};
use super::metrics::Metrics;
use crate::codec;
use crate::proto::{
    self, MessageId, Output, PeerFilter, PublishError, Route, State, Timer, TopicId,
};

/// The origin protocol of publications sent through the mixnet to a rebroadcaster: the body is
/// the topic id (32 bytes) and the publication.
pub const MIX_PUBLISH_CODEC: &str = "/mix-gossip/publish/1.0.0";

/// What the behaviour reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A publication on a topic this node joined, delivered once. `from` is the neighbour it
    /// came from, not its author.
    Message {
        /// Its topic.
        topic: TopicId,
        /// Its id.
        id: MessageId,
        /// Its content.
        data: Vec<u8>,
        /// The neighbour it came from.
        from: PeerId,
    },
    /// A neighbour came.
    NeighborUp {
        /// The topic.
        topic: TopicId,
        /// The neighbour.
        peer: PeerId,
    },
    /// A neighbour went.
    NeighborDown {
        /// The topic.
        topic: TopicId,
        /// The neighbour.
        peer: PeerId,
        /// Why.
        reason: proto::DownReason,
    },
    /// No neighbour and no eligible contact on `topic`; the node joins again through its
    /// bootstrap peers.
    Isolated {
        /// The topic.
        topic: TopicId,
    },
    /// Send this through the mixnet to `to` (a mix node and a member of the topic) with origin
    /// protocol [`MIX_PUBLISH_CODEC`] and body [`mix_publish_body`]; if it cannot be sent,
    /// call [`Behaviour::mix_failed`].
    MixPublish {
        /// The rebroadcaster.
        to: PeerId,
        /// The topic.
        topic: TopicId,
        /// The publication.
        data: Vec<u8>,
    },
    /// An own stem or mix publication came back as a broadcast.
    PublishConfirmed {
        /// The topic.
        topic: TopicId,
        /// The publication.
        id: MessageId,
    },
    /// An own mix publication never came back, after every retry.
    PublishFailed {
        /// The topic.
        topic: TopicId,
        /// The publication.
        id: MessageId,
    },
}

/// The body of a [`MIX_PUBLISH_CODEC`] message.
pub fn mix_publish_body(topic: &TopicId, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + data.len());
    body.extend_from_slice(&topic.0);
    body.extend_from_slice(data);
    body
}

/// Parses a [`MIX_PUBLISH_CODEC`] body.
pub fn parse_mix_publish(body: &[u8]) -> Option<(TopicId, &[u8])> {
    let (topic, data) = body.split_first_chunk::<32>()?;
    Some((TopicId(*topic), data))
}

/// Addresses kept per peer (the newest).
pub const MAX_ADDRESSES_PER_PEER: usize = 4;
/// Peers whose addresses are kept at most (the mix pool's directory refreshes them).
pub const MAX_ADDRESS_BOOK: usize = 8192;

/// Driver settings, with the state machine's.
#[derive(Debug, Clone)]
pub struct Config {
    /// The sans-IO protocol's settings.
    pub proto: proto::Config,
    /// Frames queued per connection, at most.
    pub max_queued_frames: usize,
    /// Inbound streams per connection.
    pub max_inbound_streams: usize,
    /// Once a frame has started, how long it may take to arrive.
    pub frame_timeout: Duration,
    /// Frames waiting for a connection to a peer being dialed, at most.
    pub max_pending_frames: usize,
    /// A connection gossip needs is probed when the peer has been quiet for a quarter of
    /// this, and closed (the peer taken for gone) when it stays quiet this long. `None`
    /// leaves failure detection to the transport, which over TCP may take minutes when a
    /// host dies without resetting its connections.
    pub liveness_timeout: Option<Duration>,
}

impl Config {
    /// The longest a silent peer goes unnoticed: the liveness timeout and one probe period
    /// (the clock is checked once a period). The simulator's silent-crash model uses this.
    pub fn liveness_detection(&self) -> Option<Duration> {
        self.liveness_timeout.map(proto::silent_neighbour_detection)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            proto: proto::Config::default(),
            max_queued_frames: 4096,
            max_inbound_streams: 8,
            frame_timeout: Duration::from_secs(10),
            max_pending_frames: 256,
            liveness_timeout: Some(proto::LIVENESS_TIMEOUT),
        }
    }
}

/// Privacy-hardened gossip on a swarm.
pub struct Behaviour {
    state: State<PeerId, ChaCha20Rng>,
    config: Config,
    timers: BTreeSet<(Instant, u64, Timer)>,
    timer_seq: u64,
    timer: Delay,
    timer_at: Option<Instant>,
    connected: HashMap<PeerId, Vec<ConnectionId>>,
    /// Frames for peers being dialed.
    pending: HashMap<PeerId, Vec<Vec<u8>>>,
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers gossip needs a connection to.
    needed: std::collections::HashSet<PeerId>,
    events: VecDeque<ToSwarm<Event, InEvent>>,
    metrics: Metrics,
    waker: Option<Waker>,
    /// The `Mix` route, when gossip drives it itself.
    #[cfg(feature = "mix")]
    mix_route: Option<super::mix_route::MixRoute>,
    /// Mix publications that could not be handed to the route, to try another member with.
    #[cfg(feature = "mix")]
    mix_retries: Vec<(TopicId, Vec<u8>)>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour").field("state", &self.state).finish_non_exhaustive()
    }
}

impl Behaviour {
    /// Gossip as `local`, admitting every peer until a filter is set ([`Self::with_filter`]).
    pub fn new(local: PeerId, config: Config) -> Self {
        let rng = ChaCha20Rng::from_rng(&mut rand::rng());
        Self {
            state: State::new(local, config.proto.clone(), rng),
            config,
            timers: BTreeSet::new(),
            timer_seq: 0,
            timer: Delay::new(Duration::ZERO),
            timer_at: None,
            connected: HashMap::new(),
            pending: HashMap::new(),
            addresses: HashMap::new(),
            needed: std::collections::HashSet::new(),
            events: VecDeque::new(),
            metrics: Metrics::default(),
            waker: None,
            #[cfg(feature = "mix")]
            mix_route: None,
            #[cfg(feature = "mix")]
            mix_retries: Vec::new(),
        }
    }

    /// Sends and receives `Mix`-route publications through `route` (a libp2p-mix behaviour of
    /// the same swarm) instead of reporting [`Event::MixPublish`]; rebroadcasters then come
    /// from its pool. See [`super::mix_route`].
    #[cfg(feature = "mix")]
    pub fn with_mix_route(mut self, route: super::mix_route::MixRoute) -> Self {
        self.mix_route = Some(route);
        self
    }

    #[cfg(feature = "mix")]
    fn poll_mix_route(&mut self, cx: &mut Context<'_>) {
        use super::mix_route::RouteEvent;
        for (topic, data) in std::mem::take(&mut self.mix_retries) {
            self.mix_failed(&topic, &data);
        }
        // Bounded, so that a flood of deliveries cannot keep the rest of the swarm waiting.
        for _ in 0..64 {
            let Some(route) = self.mix_route.as_mut() else { return };
            let Poll::Ready(event) = route.poll(cx) else { return };
            match event {
                RouteEvent::Delivery { topic, data } => {
                    if let Err(error) = self.handle_mix_delivery(&topic, data) {
                        tracing::debug!(%error, "mix publication refused");
                    }
                }
                RouteEvent::Malformed => self.metrics.dropped("mix_delivery_malformed"),
                RouteEvent::Failed { topic, data } => self.mix_failed(&topic, &data),
                RouteEvent::Directory(members) => {
                    self.forget_addresses_outside(&members);
                    for (peer, addr) in &members {
                        self.add_address(*peer, addr.clone());
                    }
                    self.set_directory(members.into_iter().map(|(peer, _)| peer));
                }
            }
        }
        cx.waker().wake_by_ref();
    }

    /// The metrics (register them with [`Metrics::register`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The state machine, for inspection.
    pub fn state(&self) -> &State<PeerId, ChaCha20Rng> {
        &self.state
    }

    /// Where `peer` can be dialed (addresses are never taken from gossip messages). The
    /// newest [`MAX_ADDRESSES_PER_PEER`] are kept, for at most [`MAX_ADDRESS_BOOK`] peers:
    /// past that, a peer this node neither is connected to nor needs is forgotten (and with
    /// the `mix` route, peers that left the directory go when it is refreshed).
    pub fn add_address(&mut self, peer: PeerId, addr: Multiaddr) {
        if !self.addresses.contains_key(&peer) && self.addresses.len() >= MAX_ADDRESS_BOOK {
            let idle = self
                .addresses
                .keys()
                .find(|p| !self.connected.contains_key(p) && !self.needed.contains(p))
                .copied();
            match idle {
                Some(idle) => {
                    self.addresses.remove(&idle);
                }
                None => return,
            }
        }
        let addrs = self.addresses.entry(peer).or_default();
        addrs.retain(|a| a != &addr);
        addrs.insert(0, addr);
        addrs.truncate(MAX_ADDRESSES_PER_PEER);
    }

    /// Forgets the addresses of peers that left the directory, unless gossip still uses them
    /// (connected, needed, or in a view or contacts of a topic).
    #[cfg(feature = "mix")]
    fn forget_addresses_outside(&mut self, members: &[(PeerId, Multiaddr)]) {
        let keep: std::collections::HashSet<PeerId> = members
            .iter()
            .map(|(p, _)| *p)
            .chain(self.connected.keys().copied())
            .chain(self.needed.iter().copied())
            .chain(self.state.topics().flat_map(|t| {
                self.state.neighbors(t).iter().chain(self.state.contacts(t)).copied()
            }))
            .collect();
        self.addresses.retain(|p, _| keep.contains(p));
    }

    /// Peers whose addresses are known now.
    pub fn known_addresses(&self) -> usize {
        self.addresses.len()
    }

    /// Joins `topic` through `bootstrap`.
    pub fn join(&mut self, topic: TopicId, bootstrap: Vec<PeerId>) {
        self.state.join(Instant::now(), topic, bootstrap);
        self.drain();
    }

    /// Leaves `topic`.
    pub fn leave(&mut self, topic: &TopicId) {
        self.state.leave(Instant::now(), topic);
        self.drain();
    }

    /// Publishes `data` on `topic` by `route`.
    pub fn publish(
        &mut self,
        topic: &TopicId,
        data: Vec<u8>,
        route: Route,
    ) -> Result<MessageId, PublishError> {
        let id = self.state.publish(Instant::now(), topic, data, route)?;
        self.metrics.published(route);
        self.drain();
        Ok(id)
    }

    /// A publication that reached this node through the mixnet, for it to broadcast; refused
    /// (and counted) if this node is not in the topic or it is too large.
    pub fn handle_mix_delivery(
        &mut self,
        topic: &TopicId,
        data: Vec<u8>,
    ) -> Result<(), PublishError> {
        let result = self.state.handle_mix_delivery(Instant::now(), topic, data);
        if result.is_err() {
            self.metrics.dropped("mix_delivery_refused");
        }
        self.drain();
        result
    }

    /// An [`Event::MixPublish`] could not be sent: another member is tried.
    pub fn mix_failed(&mut self, topic: &TopicId, data: &[u8]) {
        self.state.mix_failed(Instant::now(), topic, data);
        self.drain();
    }

    /// Sets the members that mix publications' rebroadcasters are drawn from: a list no
    /// single peer can bias for one victim, such as the peers of the mixnet's signed
    /// discovery records (see [`crate::Rebroadcasters`]). Call it again when that list
    /// changes; until the first call, rebroadcasters come from this node's views.
    pub fn set_directory(&mut self, members: impl IntoIterator<Item = PeerId>) {
        self.state.set_directory(members);
    }

    /// The filter's answers changed for `topic`: neighbours it no longer admits go.
    pub fn refilter(&mut self, topic: &TopicId) {
        self.state.refilter(Instant::now(), topic);
        self.drain();
    }

    /// Admits neighbours and contacts by `filter` (the policy of whom to gossip with).
    pub fn with_filter(mut self, filter: Arc<dyn PeerFilter<PeerId>>) -> Self {
        self.state.set_filter(filter);
        self
    }

    /// Replaces the filter (then call [`Self::refilter`]).
    pub fn set_filter(&mut self, filter: Arc<dyn PeerFilter<PeerId>>) {
        self.state.set_filter(filter);
    }

    /// Replaces `count` neighbours of `topic` now.
    pub fn rotate_now(&mut self, topic: &TopicId, count: usize) {
        self.state.rotate_now(Instant::now(), topic, count);
        self.drain();
    }

    /// The neighbours on `topic`.
    pub fn neighbors(&self, topic: &TopicId) -> &[PeerId] {
        self.state.neighbors(topic)
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn send_frame(&mut self, peer: PeerId, frame: Vec<u8>) {
        if let Some(connection) = self.connected.get(&peer).and_then(|c| c.first()) {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(*connection),
                event: InEvent::Send(frame),
            });
            return;
        }
        let first = !self.pending.contains_key(&peer);
        let queue = self.pending.entry(peer).or_default();
        if queue.len() >= self.config.max_pending_frames {
            self.metrics.dropped("pending_full");
            return;
        }
        queue.push(frame);
        if first {
            self.redial(peer);
        }
    }

    fn redial(&mut self, peer: PeerId) {
        let addrs = self.addresses.get(&peer).cloned().unwrap_or_default();
        self.events.push_back(ToSwarm::Dial {
            opts: DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
        });
    }

    /// Stops using `connection` to `peer`; `false` if it was not in use.
    fn forget(&mut self, peer: PeerId, connection: ConnectionId) -> bool {
        let Some(c) = self.connected.get_mut(&peer) else { return false };
        let known = c.contains(&connection);
        c.retain(|id| *id != connection);
        if c.is_empty() {
            self.connected.remove(&peer);
        }
        known
    }

    fn set_needed(&mut self, peer: PeerId, needed: bool) {
        let changed = if needed { self.needed.insert(peer) } else { self.needed.remove(&peer) };
        if !changed {
            return;
        }
        for connection in self.connected.get(&peer).into_iter().flatten() {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(*connection),
                event: InEvent::KeepAlive(needed),
            });
        }
    }

    /// Carries out what the state machine asked for.
    fn drain(&mut self) {
        while let Some(output) = self.state.poll_output() {
            match output {
                Output::Send { to, message } => {
                    self.metrics.sent(message.body.kind());
                    match codec::encode(&message) {
                        Ok(frame) => {
                            self.set_needed(to, true);
                            self.send_frame(to, frame);
                        }
                        Err(e) => {
                            tracing::debug!(%e, "message not encodable");
                            self.metrics.dropped("unencodable");
                        }
                    }
                }
                Output::Timer { at, timer } => {
                    self.timer_seq += 1;
                    self.timers.insert((at, self.timer_seq, timer));
                }
                Output::Disconnect(peer) => self.set_needed(peer, false),
                Output::Event(event) => self.on_event(event),
                Output::MixPublish { to, topic, data } => {
                    #[cfg(feature = "mix")]
                    if let Some(route) = self.mix_route.as_mut() {
                        if let Err(failed) = route.send(to, topic, data) {
                            self.mix_retries.push(failed);
                        }
                        continue;
                    }
                    self.events.push_back(ToSwarm::GenerateEvent(Event::MixPublish {
                        to,
                        topic,
                        data,
                    }));
                }
            }
        }
        self.wake();
    }

    fn on_event(&mut self, event: proto::Event<PeerId>) {
        let event = match event {
            proto::Event::Received { topic, id, data, from } => {
                self.metrics.delivered();
                Event::Message { topic, id, data, from }
            }
            proto::Event::NeighborUp { topic, peer } => {
                self.metrics.neighbor(true, None);
                Event::NeighborUp { topic, peer }
            }
            proto::Event::NeighborDown { topic, peer, reason } => {
                self.metrics.neighbor(false, Some(reason));
                Event::NeighborDown { topic, peer, reason }
            }
            proto::Event::Refused { .. } => {
                self.metrics.refused();
                return;
            }
            proto::Event::Ignored { reason, .. } => {
                self.metrics.dropped(reason.as_str());
                return;
            }
            proto::Event::Isolated { topic } => Event::Isolated { topic },
            proto::Event::PublishConfirmed { topic, id } => Event::PublishConfirmed { topic, id },
            proto::Event::PublishFailed { topic, id } => Event::PublishFailed { topic, id },
        };
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    fn lost(&mut self, peer: PeerId) {
        if let Some(frames) = self.pending.remove(&peer) {
            for _ in frames {
                self.metrics.dropped("unreachable");
            }
        }
        self.needed.remove(&peer);
        self.state.handle_disconnected(Instant::now(), peer);
        self.drain();
    }

    fn poll_timers(&mut self, cx: &mut Context<'_>) {
        loop {
            let now = Instant::now();
            let Some(&(at, seq, timer)) = self.timers.first() else {
                self.timer_at = None;
                return;
            };
            if at <= now {
                self.timers.remove(&(at, seq, timer));
                self.state.handle_timer(now, timer);
                self.drain();
                continue;
            }
            if self.timer_at.is_none_or(|armed| at < armed) {
                self.timer_at = Some(at);
                self.timer.reset(at - now);
            }
            if self.timer.poll_unpin(cx).is_ready() {
                self.timer_at = None;
                continue;
            }
            return;
        }
    }

    fn handler(&self) -> Handler {
        Handler::new(
            self.config.max_queued_frames,
            self.config.max_inbound_streams,
            self.config.frame_timeout,
            self.config.liveness_timeout,
        )
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(peer.and_then(|p| self.addresses.get(&p).cloned()).unwrap_or_default())
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => {
                self.connected.entry(peer_id).or_default().push(connection_id);
                if self.needed.contains(&peer_id) {
                    self.events.push_back(ToSwarm::NotifyHandler {
                        peer_id,
                        handler: NotifyHandler::One(connection_id),
                        event: InEvent::KeepAlive(true),
                    });
                }
                for frame in self.pending.remove(&peer_id).unwrap_or_default() {
                    self.events.push_back(ToSwarm::NotifyHandler {
                        peer_id,
                        handler: NotifyHandler::One(connection_id),
                        event: InEvent::Send(frame),
                    });
                }
                self.wake();
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                remaining_established,
                ..
            }) => {
                // A connection given up as silent was forgotten (and its peer lost, if it
                // was the last) already.
                let in_use = self.forget(peer_id, connection_id);
                // The transport as failure detector: the last connection in use went (the
                // swarm may still count one given up as silent, whose close is pending).
                if in_use && !self.connected.contains_key(&peer_id) {
                    self.lost(peer_id);
                }
                // Frames queued while a silent connection closed: dial again for them.
                if remaining_established == 0
                    && !self.connected.contains_key(&peer_id)
                    && self.pending.contains_key(&peer_id)
                {
                    self.redial(peer_id);
                }
            }
            // A dial skipped because another is under way (mix traffic, discovery) is no
            // failure: the frames wait for that dial's connection, or its failure.
            FromSwarm::DialFailure(DialFailure {
                error: DialError::DialPeerConditionFalse(_),
                ..
            }) => {}
            FromSwarm::DialFailure(DialFailure { peer_id: Some(peer), error, .. })
                if !self.connected.contains_key(&peer) && self.pending.contains_key(&peer) =>
            {
                tracing::debug!(%peer, %error, "gossip peer unreachable");
                self.lost(peer);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        // What still arrives on a connection given up as silent is not heard: the peer was
        // taken for gone, and must come back on a connection of its own.
        let in_use = self.connected.get(&peer).is_some_and(|c| c.contains(&connection));
        match event {
            OutEvent::Message(_) if !in_use => self.metrics.dropped("silent_connection"),
            OutEvent::Message(message) => {
                self.metrics.received(message.body.kind());
                self.state.handle_message(Instant::now(), peer, message);
                self.drain();
            }
            OutEvent::Malformed(e) => {
                tracing::debug!(%peer, %e, "malformed gossip frame");
                self.metrics.dropped("malformed");
            }
            OutEvent::StreamError(reason) => self.metrics.dropped(reason),
            OutEvent::Written(len) => self.metrics.frame(len),
            OutEvent::Unreachable(frames) => {
                for _ in 0..frames {
                    self.metrics.dropped("unreachable");
                }
            }
            OutEvent::Dead => {
                tracing::debug!(%peer, "gossip peer silent past the liveness timeout");
                self.metrics.dead();
                self.events.push_back(ToSwarm::CloseConnection {
                    peer_id: peer,
                    connection: CloseConnection::One(connection),
                });
                // Closing may wait on the silent peer; the protocol moves on now.
                if self.forget(peer, connection) && !self.connected.contains_key(&peer) {
                    self.lost(peer);
                }
                self.wake();
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        #[cfg(feature = "mix")]
        self.poll_mix_route(cx);
        self.poll_timers(cx);
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_book_is_bounded() {
        let mut gossip = Behaviour::new(PeerId::random(), Config::default());
        let peer = PeerId::random();
        for port in 0..10u16 {
            gossip.add_address(peer, format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap());
        }
        let kept = &gossip.addresses[&peer];
        assert_eq!(kept.len(), MAX_ADDRESSES_PER_PEER);
        assert_eq!(kept[0], "/ip4/10.0.0.1/tcp/9".parse::<Multiaddr>().unwrap(), "newest first");
        for _ in 0..MAX_ADDRESS_BOOK + 100 {
            gossip.add_address(PeerId::random(), "/ip4/10.0.0.2/tcp/1".parse().unwrap());
        }
        assert_eq!(gossip.known_addresses(), MAX_ADDRESS_BOOK);
    }
}
