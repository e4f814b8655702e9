//! The rust-libp2p driver of the state machine.

mod behaviour;
mod handler;
mod metrics;
#[cfg(feature = "mix")]
pub mod mix_route;

pub use behaviour::{
    Behaviour, Config, Event, MAX_ADDRESS_BOOK, MAX_ADDRESSES_PER_PEER, MIX_PUBLISH_CODEC,
    mix_publish_body, parse_mix_publish,
};
pub use handler::PROTOCOL;
pub use metrics::Metrics;
