//! The libp2p Mix Protocol (`/mix/1.0.0`): Sphinx packets through mix nodes that each delay
//! them, with anonymous replies, cover traffic and spam protection.
//!
//! Without the default feature `net`, only the sans-IO core is built (with [`spam`] and
//! [`state`]): no libp2p-swarm, no prometheus-client. The simulator (`mix-sim`) uses it so.
//!
//! # Layers
//!
//! ```text
//!  your swarm ── Mixnet ─────────── the NetworkBehaviour to add: wires the rest itself
//!                 ├─ Behaviour ──── the driver: connections, dials, timers, hop workers
//!                 │    └─ MixCore ─ the node as a sans-IO state machine (time, RNG passed in)
//!                 │         └─ mix_sphinx ─ the packet format
//!                 ├─ discovery ──── signed node records in Kademlia (optional)
//!                 └─ libp2p ping ── RTTs for path selection (optional)
//! ```
//!
//! * [`core`]: the mix node as a sans-IO state machine (path selection, packet building, hop
//!   processing, replay protection, SURB replies, mixing delays, cover traffic, key rotation).
//!   It reads no clock and opens no socket; the driver and the simulator (`mix-sim`) run it.
//! * [`Behaviour`]: the rust-libp2p driver of one core. [`discovery::Behaviour`] finds nodes.
//! * [`Mixnet`]: both, wired: found nodes go to the pool, key rotations to the record, RTTs
//!   to path selection, and the address it advertises comes from the swarm.
//! * [`Handle`] and [`Behaviour::route_protocol`]: the mix layer from outside the swarm's
//!   loop (gossip's mix route uses them); [`framing`]: the length-prefixed frames of the
//!   wire; [`spam`]: proof of work; [`state`]: replay state across restarts.
//!
//! # Embedding
//!
//! Put a [`Mixnet`] in your `#[derive(NetworkBehaviour)]` struct next to your protocols, then
//! send with `mixnet.mix_mut().request(&Destination::Peer { peer_id, addr }, protocol, &body,
//! surbs)` and read [`Event::Reply`]. The destination runs no mix code: an exit opens
//! `protocol` to it, writes the body and reads the reply by the [`ReadRule`] exits registered
//! for `protocol`. `examples/request_response.rs` in the repository is a whole program.
//!
//! # Policies
//!
//! What a node may want to decide its own way is a trait: the pool paths come from
//! ([`NodePool`]), each hop's delay ([`core::DelayStrategy`]), path selection
//! ([`core::PathSelector`]) and spam protection ([`spam::SpamConfig`]). Every layer takes
//! them the same way: `with_pool`, `with_delay`, `with_path_selector`, `with_spam_protection`
//! when building a [`Mixnet`] or a [`Behaviour`], and the `set_` twin of each to replace one
//! later ([`core::MixCore::new`] takes its pool and delay strategy as arguments, and has the
//! `set_` calls). mix-gossip's admission filter follows the same rule (`with_filter`,
//! `set_filter`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "net")]
mod behaviour;
pub mod core;
#[cfg(feature = "net")]
pub mod discovery;
#[cfg(feature = "net")]
pub mod framing;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "net")]
pub mod handle;
#[cfg(feature = "net")]
mod handler;
#[cfg(feature = "net")]
mod metrics;
#[cfg(feature = "net")]
mod mixnet;
#[cfg(feature = "net")]
mod protocol;
#[cfg(feature = "net")]
mod reach;
pub mod spam;
pub mod state;
#[cfg(feature = "net")]
mod stopping;
#[cfg(feature = "net")]
mod workers;

pub use core::DropReason;
pub use core::{
    DelaySemantics, Destination, MessageId, Mismatch, MixNode, NodePool, RequestId, SendError,
    SendOptions, StaticPool, SurbBundle, Wire,
};
#[cfg(feature = "net")]
pub use {
    behaviour::{Behaviour, Config, Event, ReplyId, RequestError},
    handle::{Handle, HandleError},
    handler::ExitError,
    metrics::Metrics,
    mixnet::{Mixnet, MixnetConfig, MixnetError},
    protocol::{ExitProtocol, PROTOCOL, ReadRule},
    stopping::StopReport,
    workers::{MAX_HOP_WORKERS, default_hop_workers},
};
