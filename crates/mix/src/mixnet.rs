//! [`Mixnet`]: the mix protocol with what it needs from the rest of the network, wired
//! together.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p_core::transport::PortUse;
use libp2p_core::{Endpoint, Multiaddr};
use libp2p_identity::{Keypair, PeerId};
use libp2p_swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use mix_sphinx::{NodePublicKey, NodeSecretKey};

use crate::core::{DelayStrategy, DynamicPool, ExponentialDelay, MixNode, NodePool, PoolError};
use crate::{Behaviour, Config, Event, discovery};

/// Settings of a [`Mixnet`]: the mix behaviour's, and what is wired around it.
#[derive(Debug, Clone)]
pub struct MixnetConfig {
    /// The mix behaviour's settings.
    pub mix: Config,
    /// Offer to deliver messages to their destinations (be the last hop of paths).
    pub exit: bool,
    /// Find nodes through the mixnet's DHT and publish this node's record there. `None`: the
    /// pool holds only what the application puts in it.
    pub discovery: Option<discovery::Config>,
    /// Peers to join the DHT through (with discovery on).
    pub bootstrap: Vec<(PeerId, Multiaddr)>,
    /// How often connected peers are pinged for RTT-aware path selection. `None`: no pings
    /// (report RTTs with [`Behaviour::report_rtt`] if the application measures them).
    pub rtt_interval: Option<Duration>,
}

impl Default for MixnetConfig {
    fn default() -> Self {
        Self {
            mix: Config::default(),
            exit: true,
            discovery: None,
            bootstrap: Vec::new(),
            rtt_interval: Some(Duration::from_secs(15)),
        }
    }
}

/// Why a [`Mixnet`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MixnetError {
    /// The identity cannot name a mix node (it must be a secp256k1 key: Sphinx headers hold
    /// 39-byte peer ids).
    #[error("the libp2p identity cannot name a mix node: {0}")]
    Identity(#[source] PoolError),
    /// The replay state in the state directory could not be read or written.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// The behaviours a [`Mixnet`] drives. Public only because its handler type names them.
mod parts {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

    use libp2p_swarm::NetworkBehaviour;
    use libp2p_swarm::behaviour::toggle::Toggle;

    use crate::{Behaviour, discovery};

    #[derive(NetworkBehaviour)]
    #[behaviour(prelude = "libp2p_swarm::derive_prelude")]
    pub struct Parts {
        pub(super) mix: Behaviour,
        pub(super) discovery: Toggle<discovery::Behaviour>,
        pub(super) rtt: Toggle<libp2p_ping::Behaviour>,
    }
}
use parts::{Parts, PartsEvent};

/// Where the advertised address came from, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Loopback,
    /// A listen address in a private, link-local, shared or unspecified range.
    Private,
    Listen,
    External,
}

/// The Mix Protocol, node discovery and RTT measurement as one [`NetworkBehaviour`]: the
/// behaviour an application adds to its swarm.
///
/// [`Behaviour`] alone is the Mix Protocol and nothing else: it must be told its own address,
/// fed nodes for its pool and RTTs for path selection, and its key rotations must reach
/// whoever advertises its keys. `Mixnet` does all of that itself:
///
/// * **Its address** comes from the swarm: a confirmed external address
///   ([`libp2p_swarm::Swarm::add_external_address`], or one AutoNAT confirms) if there is
///   one, otherwise the first address it listens on in a public range, then in a private
///   range, then on loopback.
///   The address goes into SURBs and, with discovery, into the node's signed record.
/// * **Discovery** (optional, [`crate::discovery`]): found nodes go into the pool, key
///   rotations into the node's record.
/// * **RTTs** (optional, libp2p ping on every connection) go to path selection.
///
/// Everything the plain behaviour offers is reached through [`Mixnet::mix_mut`].
///
/// ```no_run
/// # fn build() -> Result<(), Box<dyn std::error::Error>> {
/// use libp2p_mix::{Mixnet, MixnetConfig};
///
/// let identity = libp2p_identity::Keypair::generate_secp256k1();
/// let mix_key = mix_sphinx::NodeSecretKey::generate(&mut rand::rng());
/// let mixnet = Mixnet::new(&identity, mix_key, MixnetConfig::default())?;
/// // Add `mixnet` to the swarm's behaviour; listen; send with `mixnet.mix_mut().send(..)`.
/// # Ok(()) }
/// ```
pub struct Mixnet {
    parts: Parts,
    mix_key: NodePublicKey,
    exit: bool,
    /// Whether the node serves as a mix node and so publishes a record.
    publish: bool,
    listen: Vec<Multiaddr>,
    external: Vec<Multiaddr>,
    /// The address in use, if one was learned.
    address: Option<(Multiaddr, Source)>,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for Mixnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixnet")
            .field("address", &self.address)
            .field("mix", &self.parts.mix)
            .finish_non_exhaustive()
    }
}

/// Confirmed external addresses remembered (the swarm keeps as many).
const MAX_EXTERNAL: usize = 20;

/// Stands in for the node's address in its own pool entry until the swarm reports one.
const NO_ADDRESS: &str = "/ip4/127.0.0.1/tcp/1";

impl Mixnet {
    /// A mix node with libp2p identity `identity` (secp256k1) and mix key `secret`. Its pool
    /// starts empty (a [`DynamicPool`] that discovery fills) and it delays packets by 50 ms on
    /// average per hop; change either with [`Self::with_pool`] and [`Self::with_delay`].
    pub fn new(
        identity: &Keypair,
        secret: NodeSecretKey,
        config: MixnetConfig,
    ) -> Result<Self, MixnetError> {
        let peer = identity.public().to_peer_id();
        let mix_key = secret.public_key();
        let placeholder: Multiaddr = NO_ADDRESS.parse().expect("a valid multiaddr");
        let local =
            MixNode::new(peer, placeholder, mix_key, config.exit).map_err(MixnetError::Identity)?;
        let publish = config.mix.serve;
        let mix = Behaviour::new(
            local,
            secret,
            Box::new(DynamicPool::new()),
            Box::new(ExponentialDelay::new(Duration::from_millis(50))),
            config.mix,
        );
        let discovery = config.discovery.map(|c| {
            let mut d = discovery::Behaviour::new(identity.clone(), c);
            for (peer, addr) in config.bootstrap {
                d.add_bootstrap(peer, addr);
            }
            d
        });
        let rtt = config.rtt_interval.map(|every| {
            libp2p_ping::Behaviour::new(libp2p_ping::Config::new().with_interval(every))
        });
        Ok(Self {
            parts: Parts { mix, discovery: discovery.into(), rtt: rtt.into() },
            mix_key,
            exit: config.exit,
            publish,
            listen: Vec::new(),
            external: Vec::new(),
            address: None,
            events: VecDeque::new(),
        })
    }

    /// Draws paths from `pool` instead (discovery, if on, offers the nodes it finds to it).
    pub fn with_pool(mut self, pool: Box<dyn NodePool>) -> Self {
        self.set_pool(pool);
        self
    }

    /// Replaces the pool.
    pub fn set_pool(&mut self, pool: Box<dyn NodePool>) {
        self.parts.mix.set_pool(pool);
    }

    /// Delays packets as `delay` decides instead.
    pub fn with_delay(mut self, delay: Box<dyn DelayStrategy>) -> Self {
        self.set_delay(delay);
        self
    }

    /// Replaces the delay strategy.
    pub fn set_delay(&mut self, delay: Box<dyn DelayStrategy>) {
        self.parts.mix.set_delay(delay);
    }

    /// Chooses paths by `selector` instead of [`crate::core::Config::path_selection`].
    pub fn with_path_selector(mut self, selector: Box<dyn crate::core::PathSelector>) -> Self {
        self.set_path_selector(selector);
        self
    }

    /// Replaces the path selector.
    pub fn set_path_selector(&mut self, selector: Box<dyn crate::core::PathSelector>) {
        self.parts.mix.set_path_selector(selector);
    }

    /// Protects packets with `spam` (see [`Behaviour::with_spam_protection`]).
    pub fn with_spam_protection(mut self, spam: crate::spam::SpamConfig) -> Self {
        self.set_spam_protection(spam);
        self
    }

    /// Replaces the spam protection (see [`Behaviour::set_spam_protection`]).
    pub fn set_spam_protection(&mut self, spam: crate::spam::SpamConfig) {
        self.parts.mix.set_spam_protection(spam);
    }

    /// Keeps the replay state in `dir` (see [`Behaviour::with_state_dir`]).
    pub fn with_state_dir(
        mut self,
        dir: impl Into<std::path::PathBuf>,
    ) -> Result<Self, MixnetError> {
        self.parts.mix = self.parts.mix.with_state_dir(dir)?;
        Ok(self)
    }

    /// The mix behaviour: sending, requests, replies, the core and its metrics.
    pub fn mix(&self) -> &Behaviour {
        &self.parts.mix
    }

    /// The mix behaviour, to send and reply.
    pub fn mix_mut(&mut self) -> &mut Behaviour {
        &mut self.parts.mix
    }

    /// Discovery, if on.
    pub fn discovery(&self) -> Option<&discovery::Behaviour> {
        self.parts.discovery.as_ref()
    }

    /// Discovery, if on (e.g. to add bootstrap peers later).
    pub fn discovery_mut(&mut self) -> Option<&mut discovery::Behaviour> {
        self.parts.discovery.as_mut()
    }

    /// The address the node advertises (in SURBs and its record), once it has one.
    pub fn local_address(&self) -> Option<&Multiaddr> {
        self.address.as_ref().map(|(addr, _)| addr)
    }

    /// The best address the swarm reported: confirmed external ones first, then listen
    /// addresses that are not loopback, then the rest; the earliest of a kind first.
    fn candidates(&self) -> impl Iterator<Item = (&Multiaddr, Source)> + '_ {
        let kind = |a: &Multiaddr| {
            let ip = a.iter().find_map(|p| match p {
                multiaddr::Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
                multiaddr::Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            });
            match ip {
                Some(ip) if ip.is_loopback() => Source::Loopback,
                Some(std::net::IpAddr::V4(ip))
                    if ip.is_private()
                        || ip.is_link_local()
                        || ip.is_unspecified()
                        || (ip.octets()[0] == 100 && (64..128).contains(&ip.octets()[1])) =>
                {
                    Source::Private
                }
                Some(std::net::IpAddr::V6(ip))
                    if ip.is_unspecified()
                        || (ip.segments()[0] & 0xfe00) == 0xfc00
                        || (ip.segments()[0] & 0xffc0) == 0xfe80 =>
                {
                    Source::Private
                }
                _ => Source::Listen,
            }
        };
        let external = self.external.iter().map(|a| (a, Source::External));
        let mut listen: Vec<(&Multiaddr, Source)> =
            self.listen.iter().map(|a| (a, kind(a))).collect();
        // Best kind first; the earliest of a kind first (the sort is stable).
        listen.sort_by_key(|(_, source)| std::cmp::Reverse(*source));
        external.chain(listen)
    }

    /// Adopts the best address that fits a Sphinx address block, if it is not the one in use.
    fn choose_address(&mut self) {
        let candidates: Vec<(Multiaddr, Source)> =
            self.candidates().map(|(a, s)| (a.clone(), s)).collect();
        let mut chosen = None;
        for (addr, source) in candidates {
            if self.address.as_ref().is_some_and(|(current, _)| *current == addr) {
                return;
            }
            match self.parts.mix.set_local_address(addr.clone()) {
                Ok(()) => {
                    chosen = Some((addr, source));
                    break;
                }
                Err(error) => {
                    tracing::debug!(%addr, %error, "address cannot be advertised in SURBs");
                }
            }
        }
        let Some((addr, source)) = chosen else { return };
        tracing::info!(%addr, ?source, "advertising address");
        if self.publish
            && let Some(d) = self.parts.discovery.as_mut()
        {
            d.set_local_record(vec![addr.clone()], self.mix_key, None, self.exit);
            if let Some(keys) = self.parts.mix.core().epoch_keys() {
                d.set_local_keys(keys);
            }
        }
        self.address = Some((addr, source));
    }

    fn on_part_event(&mut self, event: PartsEvent) {
        match event {
            PartsEvent::Mix(Event::KeysRotated(keys)) => {
                // Peers learn the next key a whole epoch ahead; the new record also gives them
                // the one after.
                if let Some(d) = self.parts.discovery.as_mut() {
                    d.set_local_keys(keys);
                }
                self.events.push_back(Event::KeysRotated(keys));
            }
            PartsEvent::Mix(event) => self.events.push_back(event),
            PartsEvent::Discovery(event) => {
                if let discovery::Event::NodeFound { node, seq, expires } = &event {
                    self.parts.mix.offer_node(node.clone(), *seq, *expires);
                    // Discovery's table of nodes to fetch again is bounded: a node the pool
                    // refused (its subnets are full, say) gives its place up, so identities
                    // past the pool's caps cannot fill it and keep honest nodes out.
                    let peer = node.peer_id();
                    if !self.parts.mix.holds_node(peer)
                        && let Some(d) = self.parts.discovery.as_mut()
                    {
                        d.forget(peer);
                    }
                }
                self.events.push_back(Event::Discovery(Box::new(event)));
            }
            PartsEvent::Rtt(libp2p_ping::Event { peer, result: Ok(rtt), .. }) => {
                self.parts.mix.report_rtt(&peer, rtt);
            }
            PartsEvent::Rtt(_) => {}
        }
    }
}

impl NetworkBehaviour for Mixnet {
    type ConnectionHandler = THandler<Parts>;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.parts.handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.parts.handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.parts.handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.parts.handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let changed = match &event {
            FromSwarm::NewListenAddr(e) => {
                self.listen.push(e.addr.clone());
                true
            }
            FromSwarm::ExpiredListenAddr(e) => {
                self.listen.retain(|a| a != e.addr);
                true
            }
            FromSwarm::ExternalAddrConfirmed(e) => {
                // As many as the swarm keeps; the earliest (the operator's, in `mixnode`) stays
                // preferred.
                if !self.external.contains(e.addr) && self.external.len() < MAX_EXTERNAL {
                    self.external.push(e.addr.clone());
                }
                true
            }
            FromSwarm::ExternalAddrExpired(e) => {
                self.external.retain(|a| a != e.addr);
                true
            }
            _ => false,
        };
        self.parts.on_swarm_event(event);
        if changed {
            // An address no longer reported is forgotten here; the core keeps naming it in
            // SURBs until another is chosen (with none, there is nothing better to name).
            if let Some((current, _)) = &self.address
                && !self.listen.contains(current)
                && !self.external.contains(current)
            {
                self.address = None;
            }
            self.choose_address();
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.parts.on_connection_handler_event(peer, connection, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        loop {
            // Nodes the pool gave up when they were reached (their subnets had filled up):
            // discovery's table stays within what the pool holds, as for records refused
            // on arrival.
            for peer in self.parts.mix.take_dropped_nodes() {
                if let Some(d) = self.parts.discovery.as_mut() {
                    d.forget(&peer);
                }
            }
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            match self.parts.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_part_event(event),
                Poll::Ready(other) => {
                    return Poll::Ready(
                        other.map_out(|_| unreachable!("GenerateEvent handled above")),
                    );
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
