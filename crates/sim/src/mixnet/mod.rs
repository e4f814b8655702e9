//! The mixnet's anonymity, measured the way the field measures it (`mixnode sim mix`).
//!
//! * [`observer`]: what a global passive adversary with corrupt nodes believes about who
//!   sent, and who received, every packet: the probability-vector bookkeeping of the Loopix
//!   and Nym analyses, fed by the steps a simulation (or a recorded trace) produces.
//! * [`network`]: mix nodes running the node's own core in virtual time, observed.

pub mod network;
pub mod observer;

pub use network::{MixSimConfig, MixSimReport, run};
pub use observer::{Belief, Node, Observer, ObserverError, PacketId, Step, reversed};
