//! Discrete-event simulation, in virtual time, of the code the nodes run.
//!
//! * [`gossip`]: thousands of `mix_gossip::State` machines on a simulated network with
//!   latency, crashes and spies; measures delivery, redundancy, hops and publisher anonymity.
//! * [`mixnet`]: the mixnet's sender and receiver anonymity against a global passive
//!   adversary with corrupt nodes.
//! * [`scenario`]: scenario files and reports (`mixnode sim gossip`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod gossip;
pub mod mixnet;
pub mod scenario;

pub use scenario::{Report, Scenario, ScenarioError};
