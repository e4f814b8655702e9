//! `mixnode bench node`: real mix nodes on loopback forwarding 3-hop traffic with zero mixing
//! delay, next to the crypto-only rate of hop processing measured in the same run.
//!
//! Three nodes form the path n0 → n1 → n2 (n2 is the exit and the destination). A fourth node
//! injects packets built before the clock starts, so that packet creation does not compete
//! with forwarding for the cores. Two phases:
//! * latency: packets one at a time at light load; e2e latency is from injection to delivery
//!   at n2, and the per-hop overhead is that over the 3 links (the configured delay is 0);
//! * throughput: all remaining packets with a window of packets in flight; every delivered
//!   packet was processed three times (two forwards and an exit).
//!
//! Each forwarding node runs on a thread of its own (a single-threaded runtime: one node per
//! core, as deployed), and is charged the CPU time of that thread during the throughput phase,
//! so the injector and this program's bookkeeping do not count against it. The crypto-only
//! figure runs the same three Sphinx operations per packet on one core with nothing else:
//! `ratio` = packets processed per CPU-second of the nodes / crypto-only processings per
//! CPU-second. The all-in figure (every processing over wall time and all cores, injector
//! included) is reported beside it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p_mix::Event;
use mix_sphinx::{
    AddressBlock, Hop, MESSAGE_SIZE, NodeSecretKey, Packet, Route, WireFormat, message,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::runtime::{self, NodeEvent, NodeHandle, NodeSpec};

pub(crate) const CODEC: &str = "/mixnode/bench/1";
const LATENCY_PACKETS: usize = 300;
const WINDOW: usize = 1000;
/// Packets per crypto-only window (3 operations each, ~0.15 s).
const CRYPTO_SAMPLES: usize = 1000;

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    cores: usize,
    nodes: usize,
    packets: usize,
    /// Sphinx processings (hop, hop, exit) per second on one core, nothing else running.
    crypto_only_pps: f64,
    crypto_hop_us: f64,
    crypto_exit_us: f64,
    /// µs for hop + hop + exit in each crypto-only window, sorted; the fastest is used.
    crypto_windows_us: Vec<f64>,
    /// Processings per second across all nodes in the throughput phase.
    forward_pps_total: f64,
    /// Processings per CPU-second of the nodes (each node charged its own thread's CPU).
    forward_pps_per_core: f64,
    /// Each node processes every packet once.
    forward_pps_per_node: f64,
    delivered_pps: f64,
    /// `forward_pps_per_core / crypto_only_pps`.
    ratio: f64,
    /// Each node's own ratio: its crypto time per packet over its CPU time per packet.
    per_node_ratio: Option<Vec<f64>>,
    node_cpu_s: Option<Vec<f64>>,
    /// Every processing over wall time and all cores, injector and bookkeeping included.
    all_in_pps_per_core: f64,
    all_in_ratio: f64,
    e2e_latency_ms_p50: f64,
    e2e_latency_ms_p99: f64,
    per_hop_overhead_ms_p50: f64,
    per_hop_overhead_ms_p99: f64,
    lost: usize,
    targets: Targets,
    /// With `--cores N`: one node's forwarding rate on N cores over its rate on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    scaling: Option<f64>,
    /// With `--cores N`: the runs behind [`Self::scaling`].
    #[serde(skip_serializing_if = "Option::is_none")]
    scaling_runs: Option<super::scaling::Scaling>,
    /// With `--cores N`: one node building and sending its own packets on 1..N cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    own_scaling: Option<super::own::OwnScaling>,
}

#[derive(Debug, Serialize)]
struct Targets {
    ratio_min: f64,
    ratio_met: bool,
    per_hop_overhead_ms_p50_max: f64,
    per_hop_overhead_met: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scaling_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scaling_met: Option<bool>,
}

pub(crate) struct Path {
    pub(crate) keys: Vec<NodeSecretKey>,
    pub(crate) route: Route,
    pub(crate) format: WireFormat,
}

/// Packets carrying their sequence number, built on all cores.
pub(crate) fn build_packets(path: &Path, count: usize, threads: usize) -> Vec<Packet> {
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = ChaCha20Rng::seed_from_u64(t as u64);
                    let start = t * per_thread;
                    (start..(start + per_thread).min(count))
                        .map(|seq| {
                            let mut m = [0u8; MESSAGE_SIZE];
                            message::encode_forward(
                                path.format.padding(),
                                0,
                                CODEC,
                                &[],
                                &(seq as u64).to_be_bytes(),
                                &mut m,
                            )
                            .expect("fits");
                            path.route
                                .forward_packet(&path.format, &AddressBlock::ZERO, &m, &mut rng)
                                .expect("valid route")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("builder thread")).collect()
    })
}

/// Single-core time of each Sphinx operation on the path, in µs: (hop 0, hop 1, exit).
pub(crate) fn crypto_only(path: &Path, samples: &[Packet]) -> (f64, f64, f64) {
    let mut totals = [Duration::ZERO; 3];
    for packet in samples {
        let mut p = packet.clone();
        for (i, key) in path.keys.iter().enumerate() {
            let start = Instant::now();
            key.process(&path.format, &mut p).expect("valid packet");
            totals[i] += start.elapsed();
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6 / samples.len() as f64;
    (us(totals[0]), us(totals[1]), us(totals[2]))
}

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    if samples.is_empty() {
        return 0.0;
    }
    samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]
}

pub(crate) fn spec(packets: usize) -> anyhow::Result<NodeSpec> {
    let mut config = libp2p_mix::Config::default();
    config.core.pre_send_delay = Duration::ZERO;
    config.core.replay.packets_per_second = (packets as u32).max(1000);
    config.core.replay.key_lifetime = Duration::from_secs(1);
    config.core.max_delayed_packets = 100_000;
    // Raw capacity: no per-connection read limit.
    config.inbound_frame_rate = None;
    // One node per core: packets are opened on the node's own thread, so that the CPU time
    // charged to it is all of its work (`--cores` measures hop workers separately).
    config.hop_workers = 0;
    Ok(NodeSpec::new("/ip4/127.0.0.1/tcp/0".parse()?, config))
}

/// The path's nodes, each on its own thread.
pub(crate) struct PathNodes {
    pub(crate) nodes: Vec<NodeHandle>,
    pub(crate) keys: Vec<NodeSecretKey>,
    /// Thread ids, for CPU accounting.
    pub(crate) threads: Vec<Option<u32>>,
}

pub(crate) async fn start_path(
    packets: usize,
    edit: impl Fn(&mut NodeSpec),
) -> anyhow::Result<PathNodes> {
    let mut nodes = Vec::new();
    let mut keys = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..3 {
        let mut spec = spec(packets)?;
        edit(&mut spec);
        keys.push(spec.mix_secret.clone());
        let (node, tid) = runtime::start_on_thread(spec)?;
        nodes.push(node);
        threads.push(tid);
    }
    let entries = nodes.iter().map(NodeHandle::entry).collect::<anyhow::Result<Vec<_>>>()?;
    for node in &nodes {
        node.set_static_nodes(entries.clone()).await;
    }
    Ok(PathNodes { nodes, keys, threads })
}

fn cpu_times(threads: &[Option<u32>]) -> Option<Vec<Duration>> {
    threads.iter().map(|t| crate::cpu::thread_cpu_time((*t)?)).collect()
}

/// Waits for deliveries at the exit; returns (seq, arrival).
pub(crate) async fn next_delivery(
    events: &mut mpsc::UnboundedReceiver<NodeEvent>,
) -> Option<(u64, Instant)> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.ok()??;
        if let NodeEvent::Mix(Event::Received { body, .. }) = event {
            let seq = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
            return Some((seq, Instant::now()));
        }
    }
}

pub(crate) async fn run(
    packets: usize,
    cores: Option<usize>,
    segments: usize,
) -> anyhow::Result<Report> {
    let mut report = run_path(packets).await?;
    if let Some(cores) = cores {
        let scaling = super::scaling::run(cores, packets, segments).await?;
        report.targets.scaling_min = Some(1.7);
        report.targets.scaling_met = Some(scaling.figures.median >= 1.7);
        report.scaling = Some(scaling.figures.median);
        report.scaling_runs = Some(scaling);
        report.own_scaling = Some(super::own::run(cores, packets / 4, segments).await?);
    }
    Ok(report)
}

async fn run_path(packets: usize) -> anyhow::Result<Report> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let PathNodes { mut nodes, keys, threads } =
        start_path(packets + LATENCY_PACKETS, |_| {}).await?;
    let injector = runtime::start(spec(0)?).await?;
    let format = WireFormat::default();
    let hops = nodes
        .iter()
        .map(|n| Hop { public_key: n.mix_key, address: *n.entry().expect("entry").address() })
        .collect();
    let path = Path { keys, route: Route::new(hops, vec![1, 1])?, format };
    let first = (nodes[0].peer_id, nodes[0].addr.clone());
    let mut deliveries = nodes[2].take_events().context("events")?;

    let total = packets + LATENCY_PACKETS;
    eprintln!("building {total} packets …");
    let mut built = tokio::task::block_in_place(|| build_packets(&path, total, cores)).into_iter();
    // The crypto-only baseline is taken in several windows across the run (the machine's speed
    // drifts); each is ~0.15 s on one core. The fastest window is used: the least disturbed
    // measurement, and the one that gives the lowest (most conservative) ratio.
    let samples: Vec<Packet> = built.as_slice()[..CRYPTO_SAMPLES.min(total)].to_vec();
    let mut windows = vec![tokio::task::block_in_place(|| crypto_only(&path, &samples))];

    // Latency at light load: one packet at a time.
    eprintln!("latency phase …");
    let mut latencies = Vec::new();
    for _ in 0..LATENCY_PACKETS {
        let packet = built.next().context("packets")?;
        let sent = Instant::now();
        injector.send_packet(first.0, first.1.clone(), packet);
        let (_, at) = next_delivery(&mut deliveries).await.context("a latency packet was lost")?;
        latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
    }

    // Throughput: keep a window of packets in flight.
    windows.push(tokio::task::block_in_place(|| crypto_only(&path, &samples)));
    eprintln!("throughput phase ({packets} packets) …");
    let cpu_before = cpu_times(&threads);
    let started = Instant::now();
    let mut in_flight = 0;
    let mut delivered = 0;
    let mut seen = HashMap::new();
    loop {
        while in_flight < WINDOW {
            let Some(packet) = built.next() else { break };
            injector.send_packet(first.0, first.1.clone(), packet);
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        let Some((seq, _)) = next_delivery(&mut deliveries).await else { break };
        seen.insert(seq, ());
        delivered += 1;
        in_flight -= 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_times(&threads);
    windows.push(tokio::task::block_in_place(|| crypto_only(&path, &samples)));
    windows.sort_by(|a, b| (a.0 + a.1 + a.2).total_cmp(&(b.0 + b.1 + b.2)));
    let crypto_windows_us: Vec<f64> = windows.iter().map(|w| round2(w.0 + w.1 + w.2)).collect();
    let (hop0, hop1, exit) = windows[0];
    let crypto_only_pps = 3.0 / ((hop0 + hop1 + exit) / 1e6);
    let delivered_pps = delivered as f64 / elapsed;
    let processings = 3.0 * delivered as f64;
    let all_in_pps_per_core = processings / elapsed / cores as f64;
    // CPU seconds each node spent; without /proc, fall back to the all-in figure.
    let node_cpu_s: Option<Vec<f64>> = cpu_before
        .zip(cpu_after)
        .map(|(b, a)| a.iter().zip(&b).map(|(a, b)| a.saturating_sub(*b).as_secs_f64()).collect());
    let forward_pps_per_core = match &node_cpu_s {
        Some(cpu) if cpu.iter().sum::<f64>() > 0.0 => processings / cpu.iter().sum::<f64>(),
        _ => all_in_pps_per_core,
    };
    let per_node_ratio = node_cpu_s.as_ref().map(|cpu| {
        let crypto_us = [hop0, hop1, exit];
        cpu.iter()
            .zip(crypto_us)
            .map(|(cpu, us)| round2(delivered as f64 * us / 1e6 / cpu))
            .collect()
    });
    let ratio = forward_pps_per_core / crypto_only_pps;
    let p50 = percentile(&mut latencies, 0.5);
    let p99 = percentile(&mut latencies, 0.99);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok(Report {
        cores,
        nodes: 3,
        packets,
        crypto_only_pps: crypto_only_pps.round(),
        crypto_hop_us: round((hop0 + hop1) / 2.0),
        crypto_exit_us: round(exit),
        crypto_windows_us,
        forward_pps_total: (processings / elapsed).round(),
        forward_pps_per_core: forward_pps_per_core.round(),
        forward_pps_per_node: delivered_pps.round(),
        delivered_pps: delivered_pps.round(),
        ratio: round(ratio),
        per_node_ratio,
        node_cpu_s: node_cpu_s.map(|v| v.into_iter().map(round2).collect()),
        all_in_pps_per_core: all_in_pps_per_core.round(),
        all_in_ratio: round(all_in_pps_per_core / crypto_only_pps),
        e2e_latency_ms_p50: round(p50),
        e2e_latency_ms_p99: round(p99),
        per_hop_overhead_ms_p50: round(p50 / 3.0),
        per_hop_overhead_ms_p99: round(p99 / 3.0),
        lost: packets - seen.len(),
        targets: Targets {
            ratio_min: 0.7,
            ratio_met: ratio >= 0.7,
            per_hop_overhead_ms_p50_max: 0.5,
            per_hop_overhead_met: p50 / 3.0 <= 0.5,
            scaling_min: None,
            scaling_met: None,
        },
        scaling: None,
        scaling_runs: None,
        own_scaling: None,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn print(r: &Report) {
    println!("Mix nodes on loopback, 3 hops, zero mixing delay, {} cores", r.cores);
    println!(
        "crypto only (one core, fastest of {} windows): hop {:.1} µs, exit {:.1} µs -> {:.0} processings/s",
        r.crypto_windows_us.len(),
        r.crypto_hop_us,
        r.crypto_exit_us,
        r.crypto_only_pps
    );
    println!(
        "network: {:.0} packets/s delivered through 3 nodes ({:.0} processings/s); {} lost",
        r.delivered_pps, r.forward_pps_total, r.lost
    );
    if let (Some(cpu), Some(ratios)) = (&r.node_cpu_s, &r.per_node_ratio) {
        println!(
            "node CPU seconds (n0, n1, exit): {cpu:?}; per-node ratio to crypto-only: {ratios:?}"
        );
    }
    println!(
        "per node per core: {:.0} processings per CPU-second -> ratio {:.2} (target >= 0.7: {})",
        r.forward_pps_per_core,
        r.ratio,
        if r.targets.ratio_met { "met" } else { "MISSED" }
    );
    println!(
        "all-in (wall time x {} cores, injector included): {:.0} per core -> ratio {:.2}",
        r.cores, r.all_in_pps_per_core, r.all_in_ratio
    );
    println!(
        "e2e latency at light load: p50 {:.3} ms, p99 {:.3} ms; per-hop overhead p50 {:.3} ms (target <= 0.5: {}), p99 {:.3} ms",
        r.e2e_latency_ms_p50,
        r.e2e_latency_ms_p99,
        r.per_hop_overhead_ms_p50,
        if r.targets.per_hop_overhead_met { "met" } else { "MISSED" },
        r.per_hop_overhead_ms_p99
    );
    if let Some(scaling) = &r.scaling_runs {
        super::scaling::print(scaling);
    }
    if let Some(own) = &r.own_scaling {
        super::own::print(own);
    }
}
