//! `mixnode`: a libp2p mix node, its local testnet, and the tools to measure it.
//!
//! The program lives in this library so that fuzz targets (`fuzz/`) reach its config parser;
//! `main.rs` only calls [`main`].
//!
//! # Layers
//!
//! ```text
//!  cli ─────────── the commands (clap): run, init, keygen, testnet, bench, sim, vectors
//!   ├─ config ──── node.toml → a NodeSpec (every value checked; init writes one)
//!   ├─ runtime ─── one node: a swarm of the library behaviours, driven on a tokio task
//!   │    ├─ libp2p_mix::Mixnet ─── mix protocol, discovery, RTTs (wires itself)
//!   │    ├─ mix_stream::Behaviour ─ anonymous streams and messages over it
//!   │    ├─ mix_gossip::Behaviour ─ private gossip, its mix route through MixRoute
//!   │    └─ echo ───────────────── a test service: answers directly and through SURBs
//!   ├─ metrics_http ─ the Prometheus endpoint
//!   ├─ testnet, cluster ─ nodes in one process or as processes, a workload each, a report
//!   ├─ bench ──── throughput and cost against the crypto-only rate of the same run
//!   └─ sim, sim_mix ─ the gossip and mixnet simulators (mix-sim) and their plots
//! ```
//!
//! Nothing here wires one behaviour to another: the libraries do that. The runtime only
//! builds them from the configuration, answers the testnet's commands and stops gracefully.

#![forbid(unsafe_code)]

mod bench;
mod cli;
mod cluster;
mod config;
mod cpu;
mod echo;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod init;
mod keygen;
mod metrics_http;
mod runtime;
mod sim;
mod sim_mix;
mod sim_plot;
mod testnet;
mod transfer;
mod vectors;

pub use cli::main;
