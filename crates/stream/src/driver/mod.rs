//! The rust-libp2p driver of the stream layer.

mod behaviour;
mod control;
mod handler;
mod metrics;
mod stream;

pub use behaviour::{Behaviour, CODEC, Event, FrameObserver};
pub use control::{Control, Target, TransferError};
pub use handler::{FromHandler, PROTOCOL};
pub use metrics::Metrics;
pub use stream::MixStream;
