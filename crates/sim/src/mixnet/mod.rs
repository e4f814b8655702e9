//! The mixnet's anonymity, measured the way the field measures it (`mixnode sim mix`).
//!
//! * [`observer`]: what a global passive adversary with corrupt nodes believes about who
//!   sent, and who received, every packet: the probability-vector bookkeeping of the Loopix
//!   and Nym analyses, fed by the steps a simulation (or a recorded trace) produces.
//! * [`network`]: mix nodes running the node's own core in virtual time, observed.
//! * [`analysis`]: from a run's record to the figures ([`MixSimReport`]).
//! * [`scenario`]: the settings ([`MixScenario`], TOML files, sweeps).
//! * [`trace`]: what the observer saw and the ground truth, as files for outside attacks.

pub mod analysis;
pub mod network;
pub mod observer;
pub mod scenario;
pub mod trace;

pub use analysis::{LinkedFigures, MixSimReport, ReplyFigures};
pub use network::{run, run_traced};
pub use observer::{
    Belief, Layers, Node, Observer, ObserverError, PacketId, Rates, Step, reversed,
};
pub use scenario::{CoverKind, MixScenario, MixScenarioError, PathMode, TrafficKind};
pub use trace::MixTrace;
