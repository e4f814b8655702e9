//! `mixnode`: a libp2p mix node, its local testnet, and the tools to measure it.
//!
//! The program lives in this library so that fuzz targets (`fuzz/`) reach its config parser;
//! `main.rs` only calls [`main`].

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
