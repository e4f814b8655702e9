//! Anonymous streams and large messages over the libp2p Mix Protocol.
//!
//! A stream's bytes are cut into blocks; each block is compressed (when that helps), sealed
//! and erasure-coded into shards that each fit one Sphinx packet, and every shard travels as
//! its own mix message on its own random path. The receiver rebuilds a block from any `k` of
//! its `n` shards, acknowledges what it has and asks for the rest; the opener sends the
//! receiver SURBs ahead of time, so the receiver answers (acknowledgements and its own data)
//! without ever learning who opened the stream.
//!
//! # Layers
//!
//! ```text
//!  your swarm ── Behaviour ─────────── streams over a libp2p_mix::Mixnet it wraps (feature `net`)
//!                 ├─ Control, MixStream ─ the application's side (async, Clone + Send)
//!                 └─ Endpoint ────────── every stream of the node, sans-IO: demultiplexing,
//!                      │                  accept budgets, lingering, SURB replies, loss learning
//!                      └─ Connection ─── one stream, either side, sans-IO (time, RNG passed in)
//!                           └─ frame, coding ─ the wire format, erasure coding, sealing
//! ```
//!
//! * The sans-IO core: [`Endpoint`] (all of a node's streams; it talks to the mix node through
//!   the [`MixTransport`] trait), [`Connection`] (one stream, either side), their [`Config`]
//!   and [`StreamConfig`], and the wire [`frame`] format. No sockets, no clock, randomness
//!   passed in; `tests/endpoint.rs` runs two endpoints in virtual time.
//! * [`sim`]: a virtual-time channel with loss, delay and duplication that runs connections,
//!   for tests and for measuring delivery against loss.
//! * The rust-libp2p driver: [`Behaviour`] (it wraps the mix behaviour), [`Control`]
//!   (`open_stream`, `send`, `accept_stream`, `next_message`) and [`MixStream`]
//!   (`futures::AsyncRead + AsyncWrite`; `tokio_util::compat` adapts it to tokio).
//!
//! # Embedding
//!
//! Wrap the node's [`libp2p_mix::Mixnet`] in a [`Behaviour`] (with the node's mix secret if it
//! accepts streams), put that in the swarm, and use its [`Control`]: `open_stream(peer)` gives
//! a [`MixStream`] to write to, `accept_stream()` the streams others opened.
//! `examples/file_transfer.rs` in the repository is a whole program.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod coding;
mod config;
mod connection;
#[cfg(feature = "net")]
mod driver;
mod elligator;
mod endpoint;
mod estimate;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod labels;
mod recv;
mod send;
pub mod sim;

pub use coding::{BlockError, MAX_BLOCK_BYTES};
pub use config::{ConfigError, Redundancy, StreamConfig};
pub use connection::{
    AcceptError, Connection, ConnectionError, ConnectionStats, FrameDrop, FrameLimits, Mode,
    OpenError, Role, SurbSource,
};
#[cfg(feature = "net")]
#[doc(hidden)]
pub use driver::FromHandler;
#[cfg(feature = "net")]
pub use driver::{
    Behaviour, CODEC, Control, Event, FrameObserver, Metrics, MixStream, PROTOCOL, Target,
    TransferError,
};
pub use endpoint::{
    Config, Endpoint, EndpointEvent, EndpointStats, MixTransport, OpenStreamError, Outcome,
    RESET_ABANDONED, RESET_REFUSED, RESET_TOO_LARGE, StreamId, StreamPeer,
};
pub use estimate::NetworkLoss;
pub use frame::{FrameError, SurbBytes};
pub use keys::ReceiverKey;
pub use recv::{RecvStats, ShardError};
pub use send::SendStats;
