//! `mixnode`: a libp2p mix node, its local testnet, and the tools to measure it.

#![forbid(unsafe_code)]

mod bench;
mod vectors;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mixnode", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Sphinx test-vector files (format mix-sphinx-vectors/1).
    Vectors {
        #[command(subcommand)]
        command: VectorsCommand,
    },
    /// Benchmark programs: each prints its baseline beside its figures.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum VectorsCommand {
    /// Recompute every expected field of each file from its inputs; exits non-zero on any
    /// mismatch, naming the case and field.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Packet creation, hop and exit processing and SURB creation, against one x25519-dalek
    /// Diffie-Hellman measured in the same run.
    Sphinx {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Interleaved measurement rounds; the median is reported.
        #[arg(long, default_value_t = 15)]
        rounds: usize,
        /// Duration of one batch of one operation, in milliseconds.
        #[arg(long, default_value_t = 20)]
        batch_ms: u64,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Vectors { command: VectorsCommand::Verify { files } } => vectors::verify(&files),
        Command::Bench { command: BenchCommand::Sphinx { json, rounds, batch_ms } } => {
            let report = bench::sphinx::run(rounds.max(1), Duration::from_millis(batch_ms.max(1)));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                bench::sphinx::print(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
