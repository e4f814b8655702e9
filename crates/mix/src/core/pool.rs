//! The mix nodes a sender can route through.
//!
//! A node is usable only if its address fits the 94-byte address block (IPv4 TCP or QUIC-v1,
//! secp256k1 peer id) and its mix key is a valid X25519 point; both are checked when the node
//! enters a pool, so that building a packet never fails on a bad entry.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use mix_sphinx::{AddressBlock, AddressError, NodePublicKey};
use multiaddr::Multiaddr;

use super::keys::EpochKeys;

/// A mix node as a sender sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixNode {
    peer_id: PeerId,
    addr: Multiaddr,
    mix_key: NodePublicKey,
    exit: bool,
    address: AddressBlock,
    epochs: Option<(u64, NodePublicKey)>,
    /// Drawn from the peer id once (see [`MixNode::layer`]).
    layer_key: u64,
}

/// The first eight bytes of SHA-256 over a domain tag and the peer id.
fn layer_key(peer_id: &PeerId) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(b"libp2p-mix layer")
        .chain_update(peer_id.to_bytes())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"))
}

/// The IPv4 address a multiaddr starts with, if any.
fn ipv4(addr: &Multiaddr) -> Option<Ipv4Addr> {
    match addr.iter().next()? {
        multiaddr::Protocol::Ip4(ip) => Some(ip),
        _ => None,
    }
}

/// Loopback, private (RFC 1918), shared (RFC 6598) and link-local addresses: a local testnet or
/// a closed network puts every node there, so grouping them by prefix would say nothing.
pub fn is_local(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b))
}

/// An address a node on a public network may dial for others: none of [`is_local`], nor
/// unspecified, "this network" (0/8), multicast, broadcast, reserved (240/4), benchmarking
/// (198.18/15) or IETF protocol (192.0.0/24) addresses.
pub fn is_public(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(is_local(ip)
        || a == 0
        || ip.is_multicast()
        || a >= 240
        || (a == 198 && (b & 0xfe) == 18)
        || (a == 192 && b == 0 && c == 0))
}

/// Which addresses that are not public ([`is_public`]) a node dials for others: at a
/// record's address (see [`SubnetLimits::local_addresses`]) or at one a packet names for a
/// next hop or a destination (`Config::local_addresses` of the behaviour).
///
/// A node on a public network takes [`Self::None`]: nodes it can use are never elsewhere, and
/// an address it dials for anyone could be one of its own machine's or networks' services.
/// `mixnode` chooses by the node's own address: loopback, [`Self::All`]; private or shared,
/// [`Self::Private`]; public, [`Self::None`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalAddresses {
    /// Public addresses only.
    None,
    /// Also private (RFC 1918) and shared (RFC 6598) ones: a closed network. Never loopback,
    /// link-local (where cloud metadata services answer), multicast or reserved ones.
    Private,
    /// Any address: a local testnet, on loopback.
    #[default]
    All,
}

impl LocalAddresses {
    /// Whether a node dials `addr` for others.
    pub fn allows(self, addr: &Multiaddr) -> bool {
        let Some(ip) = ipv4(addr) else { return true };
        match self {
            Self::All => true,
            Self::None => is_public(ip),
            Self::Private => {
                let [a, b, ..] = ip.octets();
                is_public(ip) || ip.is_private() || (a == 100 && (64..128).contains(&b))
            }
        }
    }
}

impl MixNode {
    /// Checks that `addr` and `peer_id` fit an address block.
    pub fn new(
        peer_id: PeerId,
        addr: Multiaddr,
        mix_key: NodePublicKey,
        exit: bool,
    ) -> Result<Self, PoolError> {
        let address = AddressBlock::encode(&addr, &peer_id)
            .map_err(|source| PoolError::Address { peer: Box::new(peer_id), source })?;
        Ok(Self {
            peer_id,
            addr,
            mix_key,
            exit,
            address,
            epochs: None,
            layer_key: layer_key(&peer_id),
        })
    }

    /// A node that rotates its key: `keys.current` serves `keys.epoch`, `keys.next` the epoch
    /// after.
    pub fn with_epoch_keys(mut self, keys: EpochKeys) -> Self {
        self.mix_key = keys.current;
        self.epochs = Some((keys.epoch, keys.next));
        self
    }

    /// The advertised keys, if the node rotates them.
    pub fn epoch_keys(&self) -> Option<EpochKeys> {
        self.epochs.map(|(epoch, next)| EpochKeys { epoch, current: self.mix_key, next })
    }

    /// The key to build packets with in `epoch` (`None`: the node does not rotate, or the
    /// network does not; its one key is used). `None` when the advertised keys are too old.
    pub fn key_for(&self, epoch: Option<u64>) -> Option<&NodePublicKey> {
        match (self.epochs.as_ref(), epoch) {
            (None, _) | (_, None) => Some(&self.mix_key),
            (Some((e, _)), Some(now)) if now <= *e => Some(&self.mix_key),
            (Some((e, next)), Some(now)) if now == e + 1 => Some(next),
            _ => None,
        }
    }

    /// The node's libp2p identity.
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    /// Where to dial it.
    pub fn addr(&self) -> &Multiaddr {
        &self.addr
    }

    /// Its X25519 mix key.
    pub fn mix_key(&self) -> &NodePublicKey {
        &self.mix_key
    }

    /// Whether it delivers messages to destinations outside the mixnet.
    pub fn is_exit(&self) -> bool {
        self.exit
    }

    /// Its address block.
    pub fn address(&self) -> &AddressBlock {
        &self.address
    }

    /// Its IPv4 address.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        ipv4(&self.addr)
    }

    /// Its layer among `layers` (at least 1), for stratified paths (see
    /// [`crate::core::select::LayeredPaths`]): a hash of its peer id, so every sender puts it
    /// in the same layer without asking anyone.
    pub fn layer(&self, layers: u8) -> u8 {
        (self.layer_key % u64::from(layers.max(1))) as u8
    }

    /// The /16 it is in, for the rule that a path holds at most one node of each /16 (as in
    /// Tor: one operator, or one network, rarely spans several). `None` for local addresses
    /// ([`is_local`]), which the rule leaves alone.
    pub fn family(&self) -> Option<u16> {
        let ip = self.ip().filter(|ip| !is_local(*ip))?;
        let [a, b, ..] = ip.octets();
        Some(u16::from_be_bytes([a, b]))
    }
}

/// A node that cannot join a pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Its address does not fit an address block.
    #[error("mix node {peer}: {source}")]
    Address {
        /// The node.
        peer: Box<PeerId>,
        /// Why.
        #[source]
        source: AddressError,
    },
    /// The pool already holds that peer.
    #[error("mix node {0} is listed twice")]
    Duplicate(Box<PeerId>),
}

/// Where path selection finds mix nodes. Discovery keeps a [`DynamicPool`] up to date; a
/// closed network can use a [`StaticPool`]. The liveness and RTT hooks do nothing by default.
pub trait NodePool: Send + fmt::Debug {
    /// Every usable node (not suspended, not expired).
    fn nodes(&self) -> &[MixNode];

    /// The usable node with this peer id, if any.
    fn get(&self, peer: &PeerId) -> Option<&MixNode> {
        self.nodes().iter().find(|n| n.peer_id() == peer)
    }

    /// The round-trip time last measured to `peer`.
    fn rtt(&self, _peer: &PeerId) -> Option<Duration> {
        None
    }

    /// Whether `peer` is known and currently suspended as unreachable.
    fn is_suspended(&self, _peer: &PeerId) -> bool {
        false
    }

    /// Whether the pool keeps an entry for `peer`, usable or suspended. Discovery stops
    /// tracking nodes the pool refused (see [`crate::Mixnet`]); a pool that cannot tell
    /// says `true`.
    fn holds(&self, _peer: &PeerId) -> bool {
        true
    }

    /// `peer` failed to accept a packet or a probe, or was not reached at its record's
    /// address (see [`Self::to_reach`]).
    fn report_unreachable(&mut self, _peer: &PeerId, _now: Instant) {}

    /// The node with this peer id if it is known from a record but has not been reached at
    /// the record's address yet. A record is only a claim: anyone can publish one naming an
    /// address where nobody answers for it. The driver dials such a node there, and it is not
    /// offered for paths until [`Self::report_reached`].
    fn to_reach(&self, _peer: &PeerId) -> Option<&MixNode> {
        None
    }

    /// A connection this node dialed reached `peer` at `addr` (the peer proved its identity
    /// there). Returns whether the set of usable nodes changed.
    fn report_reached(&mut self, _peer: &PeerId, _addr: &Multiaddr) -> bool {
        false
    }

    /// One of this node's loops through `path` came back (`returned`) or was lost. A node on
    /// the paths of several lost loops in a row is likely down.
    fn report_loop(&mut self, _path: &[PeerId], _returned: bool, _now: Instant) {}

    /// A round-trip time to `peer` was measured.
    fn report_rtt(&mut self, _peer: &PeerId, _rtt: Duration) {}

    /// A valid record with sequence number `seq`, usable until `expires`, describes `node`.
    /// Returns whether the set of usable nodes changed.
    fn offer(&mut self, _node: MixNode, _seq: u64, _expires: Instant, _now: Instant) -> bool {
        false
    }

    /// Forgets expired records and ends suspensions that time out.
    fn expire(&mut self, _now: Instant) {}

    /// Records refused so far for `reason` (`subnet_24`, `subnet_16`, `full`, `unreached`,
    /// `local_address`). A record is
    /// refused when it arrives, or when its node is reached (see [`Self::to_reach`]) and its
    /// subnets filled up meanwhile.
    fn refused(&self, _reason: &str) -> u64 {
        0
    }
}

/// How many nodes of one network a [`DynamicPool`] admits, and how many nodes in all.
///
/// A Sybil who publishes many valid records from addresses it rents cheaply (one /24, a few
/// /16s) gets at most `per_24` of its identities into the pool per /24 and `per_16` per /16;
/// when the pool holds `max_nodes`, a newcomer takes the place of the node suspended longest
/// or is refused, so nodes already known and alive are never pushed out by a flood of new records.
/// Records arriving first win a subnet's places: an honest node that shares a /24 with
/// Sybils that came first is refused too, which is the price of the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetLimits {
    /// Nodes per IPv4 /24.
    pub per_24: usize,
    /// Nodes per IPv4 /16.
    pub per_16: usize,
    /// Nodes in the pool in all (usable or suspended).
    pub max_nodes: usize,
    /// Nodes known from a record and waiting to be reached at its address
    /// ([`NodePool::to_reach`]). A record costs nothing to make, so when these places are all
    /// taken a newcomer takes the place of one drawn at random: a flood of claims can make an
    /// honest node wait for a later copy of its record, and cannot keep it out for good.
    pub max_unreached: usize,
    /// Leave loopback, private, shared and link-local addresses ([`is_local`]) out of the
    /// per-subnet caps: a local testnet runs every node on 127.0.0.1, and a closed network on
    /// one private range. Only `max_nodes` applies to them. On by default, for local use; a
    /// node on a public network must turn it off, or records claiming private addresses fill
    /// its pool with no cap, for free (`mixnode` turns it off unless its own addresses are
    /// local).
    pub exempt_local: bool,
    /// Which addresses that are not public ([`is_public`]: loopback, private, link-local,
    /// multicast, reserved...) records may name; others are refused (`local_address`). Every
    /// record the pool takes is dialed at the address it names, so a public node taking them
    /// would dial into its own machine and networks for anyone. [`LocalAddresses::All`] by
    /// default, for local use; see [`LocalAddresses`] for what a node on a network should
    /// take.
    pub local_addresses: LocalAddresses,
}

impl Default for SubnetLimits {
    fn default() -> Self {
        Self {
            per_24: 2,
            per_16: 8,
            max_nodes: 4096,
            max_unreached: 1024,
            exempt_local: true,
            local_addresses: LocalAddresses::All,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    node: MixNode,
    /// `None` for a static entry (from configuration).
    seq: Option<u64>,
    expires: Option<Instant>,
    suspended: Option<Suspension>,
    /// Reached at `node`'s address by a connection this node dialed (static entries are
    /// trusted as reached).
    reached: bool,
    rtt: Option<Duration>,
    /// Loops lost in a row through this node.
    lost_loops: u32,
}

impl Entry {
    /// Offered for paths, and holding a place in its subnets.
    fn usable(&self) -> bool {
        self.reached && self.suspended.is_none()
    }

    /// Known from a record and waiting to be reached at its address.
    fn waiting(&self) -> bool {
        !self.reached && self.suspended.is_none()
    }
}

/// The same transport address, whether or not either ends in the peer's `/p2p` id (libp2p
/// adds it to the addresses it dials).
pub(crate) fn same_address(a: &Multiaddr, b: &Multiaddr) -> bool {
    let bare = |m: &Multiaddr| {
        let mut m = m.clone();
        if matches!(m.iter().last(), Some(multiaddr::Protocol::P2p(_))) {
            m.pop();
        }
        m
    };
    bare(a) == bare(b)
}

#[derive(Debug, Clone, Copy)]
struct Suspension {
    /// When it began.
    since: Instant,
    /// When a static entry comes back on its own.
    until: Option<Instant>,
}

/// A pool fed by discovery (and optionally seeded with static entries), with liveness.
///
/// A discovered node is offered for paths, and takes a place in its subnets, only once this
/// node has reached it at its record's address ([`NodePool::to_reach`]): a signed record
/// proves who published it, not that its publisher is where it says.
///
/// A node that fails to accept a packet or a probe is suspended. It waits for a record with a
/// higher sequence number (live nodes republish theirs with a new number; a dead node's last
/// record stays retrievable from the DHT, so an old one must not bring it back), and then to
/// be reached again. Static entries have no records and come back after
/// [`Self::with_suspension`]. Records are dropped when they expire.
#[derive(Debug, Clone)]
pub struct DynamicPool {
    entries: HashMap<PeerId, Entry>,
    /// The usable nodes, in the order they became usable, and where each one is.
    active: Vec<MixNode>,
    index: HashMap<PeerId, usize>,
    suspension: Duration,
    next_expiry: Option<Instant>,
    loss_threshold: u32,
    limits: SubnetLimits,
    per_24: HashMap<[u8; 3], usize>,
    per_16: HashMap<[u8; 2], usize>,
    refused: [u64; REFUSALS.len()],
    /// Keys the draw of a node waiting to be reached that gives its place up, so that nobody
    /// can choose identities that are never drawn.
    salt: [u64; 2],
    draws: u64,
}

impl Default for DynamicPool {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            active: Vec::new(),
            index: HashMap::new(),
            suspension: Duration::from_secs(60),
            next_expiry: None,
            loss_threshold: 3,
            limits: SubnetLimits::default(),
            per_24: HashMap::new(),
            per_16: HashMap::new(),
            refused: [0; REFUSALS.len()],
            salt: [rand::random(), rand::random()],
            draws: 0,
        }
    }
}

/// Why a record was refused, by index into `DynamicPool::refused`: its subnets were full, or
/// the pool was; (`unreached`) a node waiting to be reached gave its place to a newcomer; or
/// it named a local address to a node that takes none.
pub(crate) const REFUSALS: [&str; 5] =
    ["subnet_24", "subnet_16", "full", "unreached", "local_address"];

impl DynamicPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a static entry stays suspended.
    pub fn with_suspension(mut self, suspension: Duration) -> Self {
        self.suspension = suspension;
        self
    }

    /// How many loops in a row may be lost through a node before it is suspended, as if it
    /// were unreachable (each lost loop counts against every node of its path; a returned
    /// loop clears them all).
    pub fn with_loop_loss_threshold(mut self, lost: u32) -> Self {
        self.loss_threshold = lost.max(1);
        self
    }

    /// Caps per subnet and in all (see [`SubnetLimits`]).
    pub fn with_limits(mut self, limits: SubnetLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Adds an entry that never expires (a configured node). Configured nodes are trusted:
    /// no cap applies to them.
    pub fn insert_static(&mut self, node: MixNode) {
        let peer = *node.peer_id();
        if let Some(old) = self.entries.remove(&peer)
            && old.usable()
        {
            self.count(&old.node, false);
        }
        self.count(&node, true);
        self.activate(node.clone());
        self.entries.insert(
            peer,
            Entry {
                node,
                seq: None,
                expires: None,
                suspended: None,
                reached: true,
                rtt: None,
                lost_loops: 0,
            },
        );
    }

    /// Every node known, usable or not.
    pub fn known(&self) -> usize {
        self.entries.len()
    }

    /// Nodes currently suspended.
    pub fn suspended(&self) -> usize {
        self.entries.values().filter(|e| e.suspended.is_some()).count()
    }

    /// Nodes known from a record and waiting to be reached at its address.
    pub fn unreached(&self) -> usize {
        self.entries.values().filter(|e| e.waiting()).count()
    }

    /// Makes room among the nodes waiting to be reached, if their places are all taken, by
    /// dropping one drawn at random.
    fn make_waiting_room(&mut self) {
        use std::hash::{Hash, Hasher};
        if self.entries.values().filter(|e| e.waiting()).count() < self.limits.max_unreached.max(1)
        {
            return;
        }
        self.draws += 1;
        let (salt, draw) = (self.salt, self.draws);
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.waiting())
            .map(|(p, _)| p)
            .min_by_key(|p| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (salt, draw, p).hash(&mut h);
                h.finish()
            })
            .copied();
        if let Some(peer) = victim {
            self.entries.remove(&peer);
            self.refused[3] += 1;
        }
    }

    /// The /24 and /16 of `node`, unless its address is exempt from the caps.
    fn prefixes(&self, node: &MixNode) -> Option<([u8; 3], [u8; 2])> {
        let ip = node.ip().filter(|ip| !(self.limits.exempt_local && is_local(*ip)))?;
        let [a, b, c, _] = ip.octets();
        Some(([a, b, c], [a, b]))
    }

    /// Adds (or removes) `node` to the per-subnet counts.
    fn count(&mut self, node: &MixNode, add: bool) {
        let Some((p24, p16)) = self.prefixes(node) else { return };
        let step = |n: &mut usize| if add { *n += 1 } else { *n = n.saturating_sub(1) };
        step(self.per_24.entry(p24).or_default());
        step(self.per_16.entry(p16).or_default());
        if self.per_24.get(&p24) == Some(&0) {
            self.per_24.remove(&p24);
        }
        if self.per_16.get(&p16) == Some(&0) {
            self.per_16.remove(&p16);
        }
    }

    /// Whether `node`'s subnets have room for one more node; `Err` names the full one.
    fn subnet_room(&self, node: &MixNode) -> Result<(), usize> {
        let Some((p24, p16)) = self.prefixes(node) else { return Ok(()) };
        if self.per_24.get(&p24).copied().unwrap_or(0) >= self.limits.per_24 {
            return Err(0);
        }
        if self.per_16.get(&p16).copied().unwrap_or(0) >= self.limits.per_16 {
            return Err(1);
        }
        Ok(())
    }

    /// Makes room for a newcomer in a full pool by forgetting one suspended node: the
    /// discovered node suspended longest, else a static one; by peer id between equals, so a
    /// seeded run evicts the same. (Not the record that expires first: a Sybil's record may
    /// claim a day, an honest one an hour.) `false` if every node is usable: those stay, the
    /// newcomer is refused.
    fn make_room(&mut self) -> bool {
        let Some(peer) = self
            .entries
            .iter()
            .filter_map(|(p, e)| Some((p, e.seq.is_none(), e.suspended?.since)))
            .min_by_key(|(p, is_static, since)| (*is_static, *since, **p))
            .map(|(p, _, _)| *p)
        else {
            return false;
        };
        // A suspended node holds no place in its subnets: nothing to give back.
        self.entries.remove(&peer);
        true
    }

    fn activate(&mut self, node: MixNode) {
        match self.index.get(node.peer_id()) {
            Some(&i) => self.active[i] = node,
            None => {
                self.index.insert(*node.peer_id(), self.active.len());
                self.active.push(node);
            }
        }
    }

    fn deactivate(&mut self, peer: &PeerId) {
        let Some(i) = self.index.remove(peer) else { return };
        self.active.swap_remove(i);
        if let Some(moved) = self.active.get(i) {
            self.index.insert(*moved.peer_id(), i);
        }
    }

    fn note_deadline(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.next_expiry = Some(self.next_expiry.map_or(at, |t| t.min(at)));
        }
    }
}

impl NodePool for DynamicPool {
    fn nodes(&self) -> &[MixNode] {
        &self.active
    }

    fn get(&self, peer: &PeerId) -> Option<&MixNode> {
        self.entries.get(peer).filter(|e| e.usable()).map(|e| &e.node)
    }

    fn is_suspended(&self, peer: &PeerId) -> bool {
        self.entries.get(peer).is_some_and(|e| e.suspended.is_some())
    }

    fn rtt(&self, peer: &PeerId) -> Option<Duration> {
        self.entries.get(peer).and_then(|e| e.rtt)
    }

    fn holds(&self, peer: &PeerId) -> bool {
        self.entries.contains_key(peer)
    }

    fn report_unreachable(&mut self, peer: &PeerId, now: Instant) {
        let suspension = self.suspension;
        let Some(entry) = self.entries.get_mut(peer) else { return };
        if entry.suspended.is_some() {
            return;
        }
        let was_usable = entry.usable();
        let until = entry.seq.is_none().then(|| now + suspension);
        entry.suspended = Some(Suspension { since: now, until });
        let node = entry.node.clone();
        if was_usable {
            self.count(&node, false);
            self.deactivate(peer);
        }
        self.note_deadline(until);
    }

    fn report_loop(&mut self, path: &[PeerId], returned: bool, now: Instant) {
        let mut suspect = Vec::new();
        for peer in path {
            let Some(entry) = self.entries.get_mut(peer) else { continue };
            if returned {
                entry.lost_loops = 0;
            } else {
                entry.lost_loops += 1;
                if entry.lost_loops >= self.loss_threshold {
                    entry.lost_loops = 0;
                    suspect.push(*peer);
                }
            }
        }
        for peer in suspect {
            tracing::debug!(%peer, "loops through the node keep getting lost; suspending it");
            self.report_unreachable(&peer, now);
        }
    }

    fn report_rtt(&mut self, peer: &PeerId, rtt: Duration) {
        if let Some(entry) = self.entries.get_mut(peer) {
            entry.rtt = Some(rtt);
        }
    }

    fn offer(&mut self, node: MixNode, seq: u64, expires: Instant, now: Instant) -> bool {
        if expires <= now {
            return false;
        }
        if !self.limits.local_addresses.allows(node.addr()) {
            self.refused[4] += 1;
            return false;
        }
        let peer = *node.peer_id();
        if let Some(entry) = self.entries.get_mut(&peer)
            && entry.seq.is_some_and(|old| old >= seq)
        {
            // The same record again (or an older one): it may only extend the expiry.
            if entry.seq == Some(seq) && entry.expires.is_some_and(|e| e < expires) {
                entry.expires = Some(expires);
            }
            return false;
        }
        // The record applies. The node stays usable only if it was, at the same address. A new
        // node, a new address, or the end of a suspension waits until the node is reached
        // there: a newer record from a node that stopped answering says nothing about
        // whether it answers now.
        let old = self.entries.get(&peer).map(|e| (e.node.clone(), e.usable()));
        let was_usable = old.as_ref().is_some_and(|(_, usable)| *usable);
        let stays_usable =
            old.as_ref().is_some_and(|(n, usable)| *usable && same_address(n.addr(), node.addr()));
        if let Some((old_node, true)) = &old {
            self.count(old_node, false);
        }
        // Places in a subnet are held by usable nodes only. A node that could not take one
        // now is refused at once, rather than dialed for nothing.
        if let Err(reason) = self.subnet_room(&node) {
            if let Some((old_node, true)) = &old {
                self.count(old_node, true);
            }
            self.refused[reason] += 1;
            return false;
        }
        if !stays_usable && !self.entries.get(&peer).is_some_and(Entry::waiting) {
            self.make_waiting_room();
        }
        self.note_deadline(Some(expires));
        let changed = match &old {
            Some((old_node, _)) if stays_usable => old_node != &node,
            _ => was_usable,
        };
        if stays_usable {
            self.count(&node, true);
            self.activate(node.clone());
        } else if was_usable {
            self.deactivate(&peer);
        }
        let entry = self.entries.entry(peer).or_insert_with(|| Entry {
            node: node.clone(),
            seq: None,
            expires: None,
            suspended: None,
            reached: false,
            rtt: None,
            lost_loops: 0,
        });
        entry.node = node;
        entry.seq = Some(seq);
        entry.expires = Some(expires);
        entry.suspended = None;
        entry.reached = stays_usable;
        changed
    }

    fn to_reach(&self, peer: &PeerId) -> Option<&MixNode> {
        self.entries.get(peer).filter(|e| !e.reached && e.suspended.is_none()).map(|e| &e.node)
    }

    fn report_reached(&mut self, peer: &PeerId, addr: &Multiaddr) -> bool {
        let Some(node) = self.to_reach(peer).filter(|n| same_address(n.addr(), addr)).cloned()
        else {
            return false;
        };
        // Its subnets, or the pool, may have filled up while it waited.
        let held = self.entries.values().filter(|e| !e.waiting()).count();
        let refusal = match self.subnet_room(&node) {
            Err(reason) => Some(reason),
            Ok(()) if held >= self.limits.max_nodes => (!self.make_room()).then_some(2),
            Ok(()) => None,
        };
        if let Some(reason) = refusal {
            self.refused[reason] += 1;
            self.entries.remove(peer);
            return false;
        }
        if let Some(entry) = self.entries.get_mut(peer) {
            entry.reached = true;
        }
        self.count(&node, true);
        self.activate(node);
        true
    }

    fn refused(&self, reason: &str) -> u64 {
        REFUSALS.iter().position(|r| *r == reason).map_or(0, |i| self.refused[i])
    }

    fn expire(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|t| t > now) {
            return;
        }
        // Both lists in a fixed order: paths are drawn by index into the active nodes, whose
        // order must not depend on a hash map's, which changes from run to run.
        let mut gone: Vec<PeerId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires.is_some_and(|t| t <= now))
            .map(|(p, _)| *p)
            .collect();
        gone.sort_unstable();
        for peer in gone {
            if let Some(entry) = self.entries.remove(&peer)
                && entry.usable()
            {
                self.count(&entry.node, false);
            }
            self.deactivate(&peer);
        }
        let mut back = Vec::new();
        for entry in self.entries.values_mut() {
            if entry.suspended.is_some_and(|s| s.until.is_some_and(|t| t <= now)) {
                entry.suspended = None;
                if entry.reached {
                    back.push(entry.node.clone());
                }
            }
        }
        back.sort_unstable_by_key(|n| *n.peer_id());
        for node in back {
            // Configured nodes come back whatever the caps say.
            self.count(&node, true);
            self.activate(node);
        }
        self.next_expiry = self
            .entries
            .values()
            .flat_map(|e| [e.expires, e.suspended.and_then(|s| s.until)])
            .flatten()
            .min();
    }
}

/// A fixed list of nodes, e.g. from a configuration file.
#[derive(Debug, Clone, Default)]
pub struct StaticPool {
    nodes: Vec<MixNode>,
    index: HashMap<PeerId, usize>,
}

impl StaticPool {
    /// A pool of `nodes`, each listed once.
    pub fn new(nodes: impl IntoIterator<Item = MixNode>) -> Result<Self, PoolError> {
        let mut pool = Self::default();
        for node in nodes {
            pool.insert(node)?;
        }
        Ok(pool)
    }

    /// Adds a node.
    pub fn insert(&mut self, node: MixNode) -> Result<(), PoolError> {
        if self.index.contains_key(node.peer_id()) {
            return Err(PoolError::Duplicate(Box::new(*node.peer_id())));
        }
        self.index.insert(*node.peer_id(), self.nodes.len());
        self.nodes.push(node);
        Ok(())
    }
}

impl NodePool for StaticPool {
    fn nodes(&self) -> &[MixNode] {
        &self.nodes
    }

    fn get(&self, peer: &PeerId) -> Option<&MixNode> {
        self.index.get(peer).map(|&i| &self.nodes[i])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mix_sphinx::NodeSecretKey;

    /// A node with a fresh identity at 10.0.0.`i`.
    pub(crate) fn node(i: u8) -> MixNode {
        let peer = libp2p_identity::Keypair::generate_secp256k1().public().to_peer_id();
        let key = NodeSecretKey::from_bytes([i; 32]).public_key();
        MixNode::new(peer, format!("/ip4/10.0.0.{i}/tcp/1").parse().unwrap(), key, true).unwrap()
    }

    fn node_at(addr: &str) -> MixNode {
        let peer = libp2p_identity::Keypair::generate_secp256k1().public().to_peer_id();
        let key = NodeSecretKey::from_bytes([7; 32]).public_key();
        MixNode::new(peer, addr.parse().unwrap(), key, true).unwrap()
    }

    /// Offers `node`'s record and reaches it at its address, as the driver would.
    fn offer_reached(pool: &mut DynamicPool, node: &MixNode, seq: u64, expires: Instant) -> bool {
        let now = expires - Duration::from_secs(1);
        pool.offer(node.clone(), seq, expires, now);
        pool.report_reached(node.peer_id(), node.addr())
    }

    /// Two records claiming addresses in an honest node's /24 arrive before its own. Their
    /// owners are not there; the honest node is. The claims must not keep it out.
    #[test]
    fn claims_nobody_answers_for_hold_no_subnet_place() {
        let t0 = Instant::now();
        let limits = SubnetLimits { exempt_local: false, ..SubnetLimits::default() };
        let mut pool = DynamicPool::new().with_limits(limits);
        let hour = t0 + Duration::from_secs(3600);
        let fakes = [node_at("/ip4/1.2.3.7/tcp/1"), node_at("/ip4/1.2.3.8/tcp/1")];
        let honest = node_at("/ip4/1.2.3.4/tcp/1");
        for fake in &fakes {
            assert!(!pool.offer(fake.clone(), 1, hour, t0), "usable before it was reached");
            assert!(pool.to_reach(fake.peer_id()).is_some());
        }
        pool.offer(honest.clone(), 1, hour, t0);
        assert!(pool.holds(honest.peer_id()), "the honest node was refused");
        assert!(pool.nodes().is_empty(), "nobody was reached yet");
        // The honest node answers at its address; the claims' owners never do.
        assert!(pool.report_reached(
            honest.peer_id(),
            &format!("{}/p2p/{}", honest.addr(), honest.peer_id()).parse().unwrap()
        ));
        assert_eq!(pool.nodes(), std::slice::from_ref(&honest));
        for fake in &fakes {
            pool.report_unreachable(fake.peer_id(), t0);
            assert!(pool.get(fake.peer_id()).is_none());
        }
        assert_eq!(pool.unreached(), 0);
        // A third honest node of that /24 takes the second place.
        let second = node_at("/ip4/1.2.3.5/tcp/1");
        assert!(offer_reached(&mut pool, &second, 1, hour));
        assert_eq!(pool.nodes().len(), 2);
    }

    /// The per-subnet counts match the usable entries.
    fn assert_counts(pool: &DynamicPool) {
        let mut per_24: HashMap<[u8; 3], usize> = HashMap::new();
        for e in pool.entries.values().filter(|e| e.usable()) {
            if let Some((p24, _)) = pool.prefixes(&e.node) {
                *per_24.entry(p24).or_default() += 1;
            }
        }
        assert_eq!(per_24, pool.per_24);
    }

    /// A full pool forgets a suspended node to make room. A suspended node holds no place in
    /// its subnets, so forgetting it must give none back: claims in a /24, suspended and
    /// then pushed out, would otherwise open places there past the cap.
    #[test]
    fn forgetting_a_suspended_node_frees_no_subnet_place() {
        let t0 = Instant::now();
        let limits = SubnetLimits {
            exempt_local: false,
            per_24: 1,
            max_nodes: 2,
            ..SubnetLimits::default()
        };
        let mut pool = DynamicPool::new().with_limits(limits);
        let hour = t0 + Duration::from_secs(3600);
        let claim = node_at("/ip4/1.2.3.9/tcp/1");
        pool.offer(claim.clone(), 1, hour, t0);
        pool.report_unreachable(claim.peer_id(), t0);
        let a = node_at("/ip4/1.2.3.4/tcp/1");
        assert!(offer_reached(&mut pool, &a, 1, hour));
        // The pool is full: this one takes the suspended claim's place.
        let b = node_at("/ip4/5.6.7.8/tcp/1");
        assert!(offer_reached(&mut pool, &b, 1, hour));
        assert!(!pool.holds(claim.peer_id()));
        assert_counts(&pool);
        let c = node_at("/ip4/1.2.3.5/tcp/1");
        assert!(!offer_reached(&mut pool, &c, 1, hour), "a second node in a /24 capped at one");
        assert_eq!(pool.refused("subnet_24"), 1);
    }

    /// A flood of records naming fresh identities fills the places of nodes waiting to be
    /// reached, not the pool; each newcomer then takes the place of one drawn at random, so an
    /// honest node keeps its place through a few more claims (a quarter of it per claim here,
    /// with 4 places; one in 1,024 with the default).
    #[test]
    fn a_flood_of_claims_cannot_keep_an_honest_node_from_waiting_its_turn() {
        let t0 = Instant::now();
        let limits = SubnetLimits { max_unreached: 4, ..SubnetLimits::default() };
        let mut pool = DynamicPool::new().with_limits(limits);
        let hour = t0 + Duration::from_secs(3600);
        let usable = node(200);
        assert!(offer_reached(&mut pool, &usable, 1, hour));
        for i in 0..1000u32 {
            let claim = node_at(&format!("/ip4/1.{}.{}.1/tcp/1", i / 250, i % 250));
            pool.offer(claim, 1, hour, t0);
            assert!(pool.unreached() <= 4);
        }
        assert_eq!(pool.unreached(), 4);
        assert_eq!(pool.refused("unreached"), 996, "each newcomer past 4 took a place");
        assert_eq!(pool.nodes(), std::slice::from_ref(&usable), "usable nodes stay");
        let honest = node(201);
        pool.offer(honest.clone(), 1, hour, t0);
        assert!(pool.to_reach(honest.peer_id()).is_some(), "a newcomer always gets a place");
        // Over many rounds of one claim each, the honest node keeps its place about 3 in 4.
        let mut kept = 0;
        for i in 0..400u32 {
            let claim = node_at(&format!("/ip4/2.{}.{}.1/tcp/1", i / 250, i % 250));
            pool.offer(claim, 1, hour, t0);
            if pool.to_reach(honest.peer_id()).is_some() {
                kept += 1;
            } else {
                pool.offer(honest.clone(), 1, hour, t0);
            }
        }
        assert!((240..=360).contains(&kept), "kept its place {kept} times in 400");
        assert!(pool.report_reached(honest.peer_id(), honest.addr()));
        assert_counts(&pool);
    }

    /// A node on a public network takes no record naming a local address: it would dial
    /// there for whoever published it.
    #[test]
    fn a_node_that_takes_no_local_addresses_refuses_records_naming_them() {
        let t0 = Instant::now();
        let limits = SubnetLimits {
            exempt_local: false,
            local_addresses: LocalAddresses::None,
            ..SubnetLimits::default()
        };
        let mut pool = DynamicPool::new().with_limits(limits);
        let hour = t0 + Duration::from_secs(3600);
        for addr in [
            "/ip4/127.0.0.1/tcp/22",
            "/ip4/10.1.2.3/tcp/6379",
            "/ip4/169.254.169.254/tcp/80",
            "/ip4/100.64.0.1/tcp/1",
            "/ip4/224.0.0.251/udp/5353/quic-v1",
            "/ip4/255.255.255.255/tcp/1",
            "/ip4/198.18.0.1/tcp/1",
        ] {
            let claim = node_at(addr);
            pool.offer(claim.clone(), 1, hour, t0);
            assert!(!pool.holds(claim.peer_id()), "{addr} taken");
        }
        assert_eq!(pool.refused("local_address"), 7);
        let public = node_at("/ip4/1.2.3.4/tcp/1");
        pool.offer(public.clone(), 1, hour, t0);
        assert!(pool.to_reach(public.peer_id()).is_some());
        // Configured nodes are trusted wherever they are.
        let configured = node(9);
        pool.insert_static(configured.clone());
        assert!(pool.get(configured.peer_id()).is_some());
    }

    /// A node on a closed private network takes its neighbours' private addresses, never
    /// loopback or link-local ones (where cloud metadata services answer).
    #[test]
    fn a_private_node_takes_private_addresses_only() {
        let allows = |addr: &str| LocalAddresses::Private.allows(&addr.parse().unwrap());
        for addr in ["/ip4/10.1.2.3/tcp/1", "/ip4/172.17.0.2/tcp/1", "/ip4/100.64.0.1/tcp/1"] {
            assert!(allows(addr), "{addr}");
        }
        assert!(allows("/ip4/1.2.3.4/tcp/1"));
        for addr in ["/ip4/127.0.0.1/tcp/22", "/ip4/169.254.169.254/tcp/80", "/ip4/224.0.0.1/tcp/1"]
        {
            assert!(!allows(addr), "{addr}");
        }
        assert!(LocalAddresses::All.allows(&"/ip4/127.0.0.1/tcp/22".parse().unwrap()));
    }

    /// Only a connection to the record's own address counts: the peer answering somewhere else
    /// says nothing about the address others will dial.
    #[test]
    fn a_node_reached_elsewhere_is_not_usable() {
        let t0 = Instant::now();
        let mut pool = DynamicPool::new();
        let a = node(1);
        pool.offer(a.clone(), 1, t0 + Duration::from_secs(60), t0);
        assert!(!pool.report_reached(a.peer_id(), &"/ip4/10.9.9.9/tcp/1".parse().unwrap()));
        assert!(pool.nodes().is_empty());
        assert!(pool.report_reached(a.peer_id(), a.addr()));
        assert!(!pool.report_reached(a.peer_id(), a.addr()), "reached once");
        // A record moving it elsewhere makes it wait to be reached there.
        let moved =
            MixNode::new(*a.peer_id(), "/ip4/10.0.0.99/tcp/1".parse().unwrap(), *a.mix_key(), true)
                .unwrap();
        assert!(pool.offer(moved.clone(), 2, t0 + Duration::from_secs(60), t0));
        assert!(pool.nodes().is_empty());
        assert!(!pool.report_reached(a.peer_id(), a.addr()), "the old address");
        assert!(pool.report_reached(a.peer_id(), moved.addr()));
        // A new key at the same address keeps it usable.
        let rekeyed = MixNode::new(
            *a.peer_id(),
            moved.addr().clone(),
            NodeSecretKey::from_bytes([42; 32]).public_key(),
            true,
        )
        .unwrap();
        assert!(pool.offer(rekeyed.clone(), 3, t0 + Duration::from_secs(60), t0));
        assert_eq!(pool.nodes(), std::slice::from_ref(&rekeyed));
    }

    /// A node reached while its subnets filled up is refused then, and counted.
    #[test]
    fn a_node_reached_after_its_subnet_filled_is_refused() {
        let t0 = Instant::now();
        let limits = SubnetLimits { exempt_local: false, per_24: 1, ..SubnetLimits::default() };
        let mut pool = DynamicPool::new().with_limits(limits);
        let hour = t0 + Duration::from_secs(3600);
        let (a, b) = (node_at("/ip4/1.2.3.4/tcp/1"), node_at("/ip4/1.2.3.5/tcp/1"));
        pool.offer(a.clone(), 1, hour, t0);
        pool.offer(b.clone(), 1, hour, t0);
        assert!(pool.report_reached(a.peer_id(), a.addr()));
        assert!(!pool.report_reached(b.peer_id(), b.addr()));
        assert!(!pool.holds(b.peer_id()));
        assert_eq!(pool.refused("subnet_24"), 1);
        // One arriving now is refused at once, without a dial.
        let c = node_at("/ip4/1.2.3.6/tcp/1");
        pool.offer(c.clone(), 1, hour, t0);
        assert!(pool.to_reach(c.peer_id()).is_none());
        assert_eq!(pool.refused("subnet_24"), 2);
    }

    #[test]
    fn suspended_nodes_need_a_newer_record_and_a_new_reach() {
        let t0 = Instant::now();
        let mut pool = DynamicPool::new();
        let (a, b) = (node(1), node(2));
        let minute = t0 + Duration::from_secs(60);
        assert!(offer_reached(&mut pool, &a, 1, minute));
        assert!(offer_reached(&mut pool, &b, 1, minute));
        assert_eq!(pool.nodes().len(), 2);

        pool.report_unreachable(a.peer_id(), t0);
        assert_eq!(pool.nodes(), std::slice::from_ref(&b));
        assert!(pool.get(a.peer_id()).is_none());
        // The same (or an older) record from the DHT does not bring it back.
        assert!(!pool.offer(a.clone(), 1, t0 + Duration::from_secs(90), t0));
        assert!(pool.to_reach(a.peer_id()).is_none());
        assert!(!pool.report_reached(a.peer_id(), a.addr()), "suspended");
        assert_eq!(pool.nodes().len(), 1);
        // A republished record makes it a candidate again, usable once it answers.
        assert!(!pool.offer(a.clone(), 2, t0 + Duration::from_secs(90), t0));
        assert_eq!(pool.nodes().len(), 1);
        assert!(pool.to_reach(a.peer_id()).is_some());
        assert!(pool.report_reached(a.peer_id(), a.addr()));
        assert_eq!(pool.nodes().len(), 2);
    }

    /// A full pool makes room by forgetting the node suspended longest, however long its
    /// record claims to last (a Sybil's may claim a day, where an honest one claims an hour).
    #[test]
    fn a_full_pool_forgets_the_node_suspended_longest() {
        let t0 = Instant::now();
        let limits = SubnetLimits { max_nodes: 3, ..SubnetLimits::default() };
        let mut pool = DynamicPool::new().with_limits(limits);
        let (sybil, honest, live, newcomer) = (node(1), node(2), node(3), node(4));
        let (hour, day) = (t0 + Duration::from_secs(3600), t0 + Duration::from_secs(86_400));
        offer_reached(&mut pool, &sybil, 1, day);
        offer_reached(&mut pool, &honest, 1, hour);
        offer_reached(&mut pool, &live, 1, hour);
        pool.report_unreachable(sybil.peer_id(), t0);
        pool.report_unreachable(honest.peer_id(), t0 + Duration::from_secs(1));
        let now = t0 + Duration::from_secs(2);
        pool.offer(newcomer.clone(), 1, hour, now);
        assert!(pool.report_reached(newcomer.peer_id(), newcomer.addr()));
        assert!(!pool.holds(sybil.peer_id()), "suspended longest");
        for kept in [&honest, &live, &newcomer] {
            assert!(pool.holds(kept.peer_id()));
        }
    }

    #[test]
    fn records_expire_and_static_entries_come_back() {
        let t0 = Instant::now();
        let mut pool = DynamicPool::new().with_suspension(Duration::from_secs(10));
        let (a, s) = (node(1), node(3));
        offer_reached(&mut pool, &a, 5, t0 + Duration::from_secs(30));
        pool.insert_static(s.clone());
        pool.report_unreachable(s.peer_id(), t0);
        assert_eq!(pool.nodes(), std::slice::from_ref(&a));
        pool.expire(t0 + Duration::from_secs(11));
        assert_eq!(pool.nodes().len(), 2, "static entry back after its suspension");
        pool.expire(t0 + Duration::from_secs(31));
        assert_eq!(pool.nodes(), std::slice::from_ref(&s), "record expired");
        assert_eq!(pool.known(), 1);
        // Expired offers are ignored; RTTs are kept per node.
        assert!(!pool.offer(a.clone(), 9, t0, t0 + Duration::from_secs(1)));
        pool.report_rtt(s.peer_id(), Duration::from_millis(3));
        assert_eq!(pool.rtt(s.peer_id()), Some(Duration::from_millis(3)));
    }
}
