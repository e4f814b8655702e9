//! `mixnode bench sphinx`: the cost of packet creation, hop processing, exit processing and
//! SURB creation, as microseconds and as a ratio to one x25519-dalek Diffie-Hellman measured in
//! the same run.

use std::hint::black_box;
use std::time::Duration;

use mix_sphinx::{
    AddressBlock, Hop, MESSAGE_SIZE, NodeSecretKey, Packet, Padding, PayloadCipher, Route,
    WireFormat,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use super::measure::{Op, interleaved};

/// The targets, as ratios to the baseline.
const TARGETS: [(&str, usize, f64); 3] = [("hop", 3, 1.3), ("create", 3, 3.5), ("create", 5, 5.5)];

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    baseline_dh_us: f64,
    baseline: &'static str,
    rounds: usize,
    results: Vec<Row>,
    targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
struct Row {
    op: &'static str,
    hops: usize,
    cipher: &'static str,
    us: f64,
    ratio: f64,
}

#[derive(Debug, Serialize)]
struct Target {
    op: &'static str,
    hops: usize,
    max_ratio: f64,
    worst_ratio: f64,
    met: bool,
}

/// One path with its keys and a packet at each stage, prepared before timing.
struct Fixture {
    format: WireFormat,
    keys: Vec<NodeSecretKey>,
    route: Route,
    message: [u8; MESSAGE_SIZE],
    /// The packet as hop 0 receives it.
    first: Packet,
    /// The packet as the last hop receives it.
    last: Packet,
}

impl Fixture {
    fn new(cipher: PayloadCipher, hops: usize, rng: &mut ChaCha20Rng) -> Self {
        let format = WireFormat::new(cipher, Padding::Plain);
        let keys: Vec<_> = (0..hops).map(|_| NodeSecretKey::generate(rng)).collect();
        let route = Route::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| Hop {
                    public_key: k.public_key(),
                    address: AddressBlock::from_bytes([i as u8 + 1; 94]),
                })
                .collect(),
            vec![1; hops - 1],
        )
        .expect("valid route");
        let mut message = [0u8; MESSAGE_SIZE];
        rng.fill_bytes(&mut message);
        let first = route
            .forward_packet(&format, &AddressBlock::ZERO, &message, rng)
            .expect("fixture packet");
        let mut last = first.clone();
        for key in &keys[..hops - 1] {
            key.process(&format, &mut last).expect("fixture hop");
        }
        Self { format, keys, route, message, first, last }
    }
}

fn cipher_name(cipher: PayloadCipher) -> &'static str {
    match cipher {
        PayloadCipher::AesCtr => "aes-ctr",
        _ => "lioness",
    }
}

pub(crate) fn run(rounds: usize, batch: Duration) -> Report {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed);
    let mut fixtures = Vec::new();
    for cipher in [PayloadCipher::Lioness, PayloadCipher::AesCtr] {
        for hops in [3, 5] {
            fixtures.push(Fixture::new(cipher, hops, &mut rng));
        }
    }

    let mut labels: Vec<(&'static str, usize, &'static str)> = Vec::new();
    let mut ops: Vec<Op<'_>> = Vec::new();

    let mut dh_scalar = [0u8; 32];
    rng.fill_bytes(&mut dh_scalar);
    let mut dh_point = x25519_dalek::x25519(dh_scalar, x25519_dalek::X25519_BASEPOINT_BYTES);
    labels.push(("baseline_dh", 1, "x25519-dalek"));
    ops.push(Op::new(move || {
        dh_point = x25519_dalek::x25519(dh_scalar, black_box(dh_point));
    }));

    for f in &fixtures {
        let cipher = cipher_name(f.format.cipher());
        let hops = f.route.len();
        let mut op_rng = ChaCha20Rng::seed_from_u64(hops as u64);
        labels.push(("create", hops, cipher));
        ops.push(Op::new(move || {
            black_box(f.route.forward_packet(
                &f.format,
                &AddressBlock::ZERO,
                &f.message,
                &mut op_rng,
            ))
            .expect("create");
        }));

        let mut op_rng = ChaCha20Rng::seed_from_u64(hops as u64 + 100);
        labels.push(("surb_create", hops, cipher));
        ops.push(Op::new(move || {
            black_box(f.route.surb(&f.format, &mut op_rng)).expect("surb");
        }));

        if hops != 3 {
            continue;
        }
        let mut buffer = f.first.clone();
        labels.push(("hop", hops, cipher));
        ops.push(Op::new(move || {
            buffer.as_bytes_mut().copy_from_slice(f.first.as_bytes());
            black_box(f.keys[0].process(&f.format, &mut buffer)).expect("hop");
        }));

        let mut buffer = f.last.clone();
        labels.push(("exit", hops, cipher));
        ops.push(Op::new(move || {
            buffer.as_bytes_mut().copy_from_slice(f.last.as_bytes());
            black_box(f.keys[hops - 1].process(&f.format, &mut buffer)).expect("exit");
        }));
    }

    let medians = interleaved(&mut ops, rounds, batch);
    drop(ops);
    let baseline = medians[0];
    let results: Vec<Row> = labels
        .iter()
        .zip(&medians)
        .skip(1)
        .map(|(&(op, hops, cipher), &us)| Row { op, hops, cipher, us, ratio: us / baseline })
        .collect();
    let targets = TARGETS
        .iter()
        .map(|&(op, hops, max_ratio)| {
            let worst_ratio = results
                .iter()
                .filter(|r| r.op == op && r.hops == hops)
                .map(|r| r.ratio)
                .fold(0.0, f64::max);
            Target { op, hops, max_ratio, worst_ratio, met: worst_ratio <= max_ratio }
        })
        .collect();
    Report { baseline_dh_us: baseline, baseline: "x25519-dalek x25519()", rounds, results, targets }
}

pub(crate) fn print(report: &Report) {
    println!("Sphinx costs ({} interleaved rounds, medians)", report.rounds);
    println!("baseline: one {} = {:.2} µs\n", report.baseline, report.baseline_dh_us);
    println!("{:<12} {:>4} {:<8} {:>10} {:>8}", "op", "hops", "cipher", "µs", "ratio");
    for r in &report.results {
        println!("{:<12} {:>4} {:<8} {:>10.2} {:>8.2}", r.op, r.hops, r.cipher, r.us, r.ratio);
    }
    println!("\ntargets (worst cipher):");
    for t in &report.targets {
        let mark = if t.met { "met" } else { "MISSED" };
        println!(
            "  {:<7} L={} ratio {:.2} <= {:.1}  {mark}",
            t.op, t.hops, t.worst_ratio, t.max_ratio
        );
    }
}
