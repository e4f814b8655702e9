//! `mixnode bench pow`: solving and verifying the proof of work at several difficulties.
//!
//! The baseline is one attempt (SHA-256 of the final 12 bytes from a midstate that already
//! absorbed the binding), timed in the same run: a solve at difficulty D is expected to take
//! 2^D attempts, so `solve / (2^D × attempt)` near 1 says the solver wastes nothing. Solve
//! times are geometric, so their mean over many solves is reported along with the median.

use std::hint::black_box;
use std::time::{Duration, Instant};

use libp2p_mix::spam::{POW_PROOF_LEN, PowConfig, ProofOfWork, SpamProtection, solve};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::measure::{Op, interleaved, median};

/// Bytes bound by each proof: a whole packet, as per-hop proofs are.
const BINDING: usize = 4608;
const NOW: u64 = 1_800_000_000;

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    baseline: &'static str,
    attempt_ns: f64,
    binding_bytes: usize,
    results: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct Row {
    difficulty: u32,
    solves: usize,
    solve_mean_ms: f64,
    solve_median_ms: f64,
    /// Mean solve time over the expected 2^D attempts at the baseline's cost.
    solve_vs_expected: f64,
    verify_us: f64,
}

fn solves_for(difficulty: u32) -> usize {
    match difficulty {
        ..=16 => 96,
        17..=18 => 48,
        _ => 16,
    }
}

pub(crate) fn run(difficulties: &[u32]) -> Report {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut binding = vec![0u8; BINDING];
    rng.fill_bytes(&mut binding);

    let mut prefix = Sha256::new();
    prefix.update(&binding);
    prefix.update(NOW.to_le_bytes());
    let mut nonce = 0u32;
    let mut ops = [Op::new(|| {
        let mut h = prefix.clone();
        h.update(nonce.to_le_bytes());
        black_box(h.finalize());
        nonce = nonce.wrapping_add(1);
    })];
    let attempt_us = interleaved(&mut ops, 9, Duration::from_millis(20))[0];

    let mut results = Vec::new();
    for &difficulty in difficulties {
        let n = solves_for(difficulty);
        let mut times = Vec::with_capacity(n);
        let mut proofs = Vec::with_capacity(n);
        for _ in 0..n {
            rng.fill_bytes(&mut binding[..32]);
            let start: u32 = rng.random();
            let t = Instant::now();
            let nonce = solve(&binding, NOW, start, difficulty).expect("a nonce exists");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let mut proof = [0u8; POW_PROOF_LEN];
            proof[..8].copy_from_slice(&NOW.to_le_bytes());
            proof[8..].copy_from_slice(&nonce.to_le_bytes());
            proofs.push((binding.clone(), proof));
        }
        let mean = times.iter().sum::<f64>() / n as f64;
        // Verification as a node does it, replay set included; each proof once.
        let mut verifier = ProofOfWork::new(PowConfig { difficulty, ..PowConfig::default() });
        let t = Instant::now();
        for (binding, proof) in &proofs {
            verifier.verify(binding, proof, NOW).expect("valid");
        }
        let verify_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let expected_ms = f64::from(1u32 << difficulty.min(31)) * attempt_us / 1e3;
        results.push(Row {
            difficulty,
            solves: n,
            solve_mean_ms: mean,
            solve_median_ms: median(&mut times),
            solve_vs_expected: mean / expected_ms,
            verify_us,
        });
    }
    Report {
        baseline: "one SHA-256 attempt (12 bytes from a midstate)",
        attempt_ns: attempt_us * 1e3,
        binding_bytes: BINDING,
        results,
    }
}

pub(crate) fn print(report: &Report) {
    println!(
        "proof of work over {} B bindings; baseline {}: {:.0} ns",
        report.binding_bytes, report.baseline, report.attempt_ns
    );
    println!(
        "{:>10} {:>7} {:>14} {:>16} {:>18} {:>11}",
        "difficulty",
        "solves",
        "solve mean ms",
        "solve median ms",
        "mean / (2^D×base)",
        "verify µs"
    );
    for r in &report.results {
        println!(
            "{:>10} {:>7} {:>14.2} {:>16.2} {:>18.2} {:>11.2}",
            r.difficulty,
            r.solves,
            r.solve_mean_ms,
            r.solve_median_ms,
            r.solve_vs_expected,
            r.verify_us
        );
    }
}
