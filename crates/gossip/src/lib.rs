//! Privacy-hardened gossip for rust-libp2p.
//!
//! HyParView membership and PlumTree broadcast, written as a sans-IO state machine
//! ([`proto::State`]) that the libp2p driver ([`Behaviour`]) and the simulator (`mix-sim`) both
//! run, with what a broadcast layer needs to stop naming its publishers:
//!
//! * no hop counter and no address on the wire: a neighbour cannot tell a publisher from a
//!   relay by what it receives, and membership gossip spreads peer ids only;
//! * a forwarding scheduler for own and forwarded publications alike: at once, in shuffled
//!   batches (a window, or `max_batch`), or each after an independent exponential delay;
//! * partial rotation of neighbours, with jitter, replacements drawn uniformly;
//! * a [`proto::PeerFilter`] consulted wherever a peer can become a neighbour or a contact;
//! * frames padded to size buckets ([`codec`]), publications and control alike;
//! * a per-message [`proto::Route`]: `Direct`, `Stem` (Dandelion++) or `Mix` (through the
//!   mixnet to a random member that broadcasts it).
//!
//! Without the default feature `net`, only the state machine, the codec and their limits are
//! built: no libp2p-swarm, no prometheus-client (the simulator uses it so).
//!
//! # Layers
//!
//! ```text
//!  your swarm ── Behaviour ──────── the driver: frames, dials, timers, liveness
//!                 ├─ MixRoute ───── the Mix route through a libp2p-mix node (feature `mix`)
//!                 └─ proto::State ─ HyParView + PlumTree, sans-IO (time, RNG passed in)
//!                      └─ codec ─── frames padded to size buckets
//! ```
//!
//! # Embedding
//!
//! Add a [`Behaviour`] to the swarm, [`Behaviour::join`] a topic through a known member and
//! [`Behaviour::publish`] with a route; messages arrive as [`Event::Message`]. For the `Mix`
//! route, enable the `mix` feature and attach `MixRoute::attach(mixnet.mix_mut())` with
//! `Behaviour::with_mix_route`: rebroadcasters then come from the mix pool.
//! `examples/chat.rs` in the repository is a whole program.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
#[cfg(feature = "net")]
mod driver;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod proto;

#[cfg(feature = "mix")]
pub use driver::mix_route::{self, MixRoute};
#[cfg(feature = "net")]
pub use driver::{
    Behaviour, Config, Event, MAX_ADDRESS_BOOK, MAX_ADDRESSES_PER_PEER, MIX_PUBLISH_CODEC, Metrics,
    PROTOCOL, mix_publish_body, parse_mix_publish,
};
pub use proto::{
    AllowAll, ConfigError, DownReason, Forwarding, IgnoreReason, LIVENESS_TIMEOUT,
    MAX_FORWARDING_DELAY, MessageId, PeerFilter, PublishError, Rebroadcasters, RotationConfig,
    Route, State, TopicId,
};
