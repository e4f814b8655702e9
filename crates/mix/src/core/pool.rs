//! The mix nodes a sender can route through.
//!
//! A node is usable only if its address fits the 94-byte address block (IPv4 TCP or QUIC-v1,
//! secp256k1 peer id) and its mix key is a valid X25519 point; both are checked when the node
//! enters a pool, so that building a packet never fails on a bad entry.

use std::collections::HashMap;
use std::fmt;

use libp2p_identity::PeerId;
use mix_sphinx::{AddressBlock, AddressError, NodePublicKey};
use multiaddr::Multiaddr;

/// A mix node as a sender sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixNode {
    peer_id: PeerId,
    addr: Multiaddr,
    mix_key: NodePublicKey,
    exit: bool,
    address: AddressBlock,
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
        Ok(Self { peer_id, addr, mix_key, exit, address })
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

/// Where path selection finds mix nodes. Discovery keeps one up to date; a closed network
/// uses a [`StaticPool`].
pub trait NodePool: Send + fmt::Debug {
    /// Every usable node.
    fn nodes(&self) -> &[MixNode];

    /// The node with this peer id, if any.
    fn get(&self, peer: &PeerId) -> Option<&MixNode> {
        self.nodes().iter().find(|n| n.peer_id() == peer)
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
