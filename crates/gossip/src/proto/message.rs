//! What gossip nodes say to each other.
//!
//! No message carries a hop counter, a round number or an address: a neighbour cannot tell a
//! publisher from a relay by what it receives, and membership gossip spreads only peer
//! identities (addresses come from libp2p itself). The byte encoding, with its size buckets,
//! is in [`crate::codec`].

use sha2::{Digest, Sha256};

/// A topic: the SHA-256 of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub(crate) [u8; 32]);

impl TopicId {
    /// The topic called `name`.
    pub fn from_name(name: &str) -> Self {
        Self(Sha256::digest(name.as_bytes()).into())
    }

    /// The topic with id `bytes`, as the wire carries it.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The id's bytes, as the wire carries them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A broadcast message: the SHA-256 of its topic and content, so that copies (and retries
/// of one publication) are the same message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub(crate) [u8; 32]);

impl MessageId {
    /// The id of `data` published on `topic`.
    pub fn of(topic: &TopicId, data: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(topic.0);
        h.update(data);
        Self(h.finalize().into())
    }

    /// The message with id `bytes`, as the wire carries it.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The id's bytes, as the wire carries them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One message of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<P> {
    /// The topic it is about.
    pub topic: TopicId,
    /// What it says.
    pub body: Body<P>,
}

/// The kinds of messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<P> {
    // HyParView membership.
    /// Asks the receiver to take the sender into its active view and announce it.
    Join,
    /// A random walk announcing `peer`, which joined; `ttl` steps are left.
    ForwardJoin {
        /// The node that joined.
        peer: P,
        /// Steps left.
        ttl: u8,
    },
    /// Asks to become the receiver's neighbour; `high` when the sender has none.
    Neighbor {
        /// The sender has no neighbour at all.
        high: bool,
    },
    /// The receiver became the sender's neighbour.
    NeighborAccept,
    /// The sender ends the neighbourship (or refuses it); `alive`: it is not going away and
    /// may be kept as a passive contact.
    Disconnect {
        /// The sender stays around.
        alive: bool,
    },
    /// A random walk exchanging passive contacts, started by `origin`.
    Shuffle {
        /// The node that started it (the reply goes to it).
        origin: P,
        /// Steps left.
        ttl: u8,
        /// Drawn at random by the origin; the reply carries it back. The origin takes no
        /// reply it did not ask for.
        nonce: u64,
        /// Contacts offered.
        peers: Vec<P>,
    },
    /// Contacts given back to a shuffle's origin.
    ShuffleReply {
        /// The shuffle's nonce.
        nonce: u64,
        /// Contacts offered.
        peers: Vec<P>,
    },
    // PlumTree broadcast.
    /// A broadcast message (eager push).
    Gossip {
        /// Its id.
        id: MessageId,
        /// Its content.
        data: Vec<u8>,
    },
    /// Ids of messages the sender has (lazy push).
    IHave {
        /// The ids.
        ids: Vec<MessageId>,
    },
    /// Asks the receiver to push eagerly again, and for message `id` if given.
    Graft {
        /// A message the sender misses.
        id: Option<MessageId>,
    },
    /// Asks the receiver to push lazily from now on (its eager push was a duplicate).
    Prune,
    /// Liveness, between the two ends of a connection (the driver answers and consumes it;
    /// the state machine ignores it): `reply` is false for a probe, true for its answer.
    Ping {
        /// Whether this answers a probe.
        reply: bool,
    },
    // Publisher anonymity.
    /// A message on its stem (Dandelion++): relayed to one node at a time before it is
    /// broadcast.
    Stem {
        /// Its id.
        id: MessageId,
        /// Its content.
        data: Vec<u8>,
    },
}

impl<P> Body<P> {
    /// Whether the body carries a publication (padded to a payload bucket) rather than
    /// control.
    pub fn is_payload(&self) -> bool {
        matches!(self, Self::Gossip { .. } | Self::Stem { .. })
    }

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::ForwardJoin { .. } => "forward_join",
            Self::Neighbor { .. } => "neighbor",
            Self::NeighborAccept => "neighbor_accept",
            Self::Disconnect { .. } => "disconnect",
            Self::Shuffle { .. } => "shuffle",
            Self::ShuffleReply { .. } => "shuffle_reply",
            Self::Gossip { .. } => "gossip",
            Self::IHave { .. } => "ihave",
            Self::Graft { .. } => "graft",
            Self::Prune => "prune",
            Self::Ping { .. } => "ping",
            Self::Stem { .. } => "stem",
        }
    }
}
