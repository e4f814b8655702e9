//! The rust-libp2p driver of the stream layer.

mod behaviour;
mod control;
mod handler;
mod metrics;
mod stream;

pub use behaviour::{Behaviour, CODEC, Event, FrameObserver};
pub use control::{Control, Target, TransferError};
pub use handler::PROTOCOL;
// What a connection hands the behaviour: public only for tests that drive the behaviour
// without a swarm.
#[doc(hidden)]
pub use handler::FromHandler;
pub use metrics::Metrics;
pub use stream::MixStream;
