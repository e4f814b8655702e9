//! Discrete-event simulation, in virtual time, of the code the nodes run.
//!
//! # Layers
//!
//! ```text
//!  mixnode sim … ─── scenario files, sweeps, reports, plots
//!   └─ gossip, mixnet ─ simulated networks: event queue, latency model, crashes, observers
//!       └─ mix_gossip::State, libp2p_mix::core::MixCore ─ the nodes' own sans-IO cores
//! ```
//!
//! The simulator replaces only the network and the clock; it builds the cores without their
//! drivers (`default-features = false`: no libp2p-swarm, no prometheus-client).
//!
//! * [`gossip`]: thousands of `mix_gossip::State` machines on a simulated network with
//!   latency, crashes, spies and Sybils; measures delivery, redundancy, hops and publisher
//!   anonymity.
//! * [`adversary`]: what the attacker concludes about a publisher from what its nodes saw.
//! * [`mixnet`]: the mixnet's sender and receiver anonymity against a global passive
//!   adversary with corrupt nodes.
//! * [`scenario`]: scenario files and reports (`mixnode sim gossip`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod adversary;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod gossip;
pub mod mixnet;
pub mod scenario;

pub use scenario::{Report, Scenario, ScenarioError};
