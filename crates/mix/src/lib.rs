//! The libp2p Mix Protocol (`/mix/1.0.0`).
//!
//! * [`core`]: the mix node as a sans-IO state machine (path selection, packet building, hop
//!   processing, replay protection, SURB replies, mixing delays, cover traffic, key rotation).
//! * [`spam`]: pluggable spam protection (proof of work), at the exit or at every hop.
//! * [`Behaviour`]: the rust-libp2p driver, a `NetworkBehaviour` any swarm can compose.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod behaviour;
pub mod core;
pub mod discovery;
pub mod framing;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod handle;
pub mod handler;
mod metrics;
mod mixnet;
mod protocol;
pub mod spam;
pub mod state;
mod workers;

pub use behaviour::{Behaviour, Config, Event, ReplyId, RequestError};
pub use core::{
    DelaySemantics, Destination, MessageId, Mismatch, MixNode, NodePool, RequestId, SendError,
    SendOptions, StaticPool, SurbBundle, Wire,
};
pub use handle::{Handle, HandleError};
pub use handler::ExitError;
pub use metrics::{DropReason, Metrics};
pub use mixnet::{Mixnet, MixnetConfig, MixnetError};
pub use protocol::{ExitProtocol, PROTOCOL, ReadRule};
pub use workers::{MAX_HOP_WORKERS, default_hop_workers};
