//! The rust-libp2p driver of the stream layer.

mod behaviour;
mod control;
mod handler;
mod metrics;
mod stream;

pub use behaviour::{
    Behaviour, CODEC, Config, Event, FrameObserver, RESET_ABANDONED, RESET_REFUSED, RESET_TOO_LARGE,
};
pub use control::{Control, OpenStreamError, StreamPeer, Target, TransferError};
pub use handler::{FromHandler, PROTOCOL};
pub use metrics::Metrics;
pub use stream::MixStream;
