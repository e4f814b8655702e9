//! `mixnode bench node --cores N`: one node's forwarding rate on 1..N cores.
//!
//! Each node under test is the first hop of its packets. One load generator ([`super::rig`]),
//! on a thread of its own, writes them (built and framed before the clock starts) and is their
//! second hop: it counts the frames that arrive and drops them unopened. It is a bare libp2p
//! host, not a mix node, so it costs the transport's work per packet (Noise both ways, Yamux,
//! the kernel's TCP) and nothing more. The node for 1 core opens packets on its swarm's thread
//! (no hop workers); the node for n ≥ 2 cores has n hop workers beside that thread. The load
//! generator shares the machine with the node: on a machine with exactly N cores its work is
//! charged to the N-core figure (`rig_cpu_s` says how much, `machine` where the rest of the
//! cores went). On a machine with more than N cores the node's N workers and its swarm's
//! thread could use N + 1 of them (nothing pins them); on this 2-core machine N = 2 is all
//! there is.
//!
//! This machine's speed drifts by tens of percent within seconds (a shared VM), so the nodes
//! take turns in short segments (the order reversed every other segment), and `scaling` is
//! the median over segments of the N-core rate over the 1-core rate of the same segment.
//!
//! Figures per node: packets forwarded per second of wall time; the node's CPU seconds (its
//! swarm's thread and its hop workers), and the ratio of packets per CPU-second to the
//! crypto-only rate of the same hop on one core, measured between segments.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p_mix::{MixNode, framing};
use mix_sphinx::{Hop, NodeSecretKey, Packet, Route, WireFormat};
use serde::Serialize;

use super::node::{Path, build_packets, spec};
use super::rig::{Batch, Pumped, Rig};
use super::turns::{self, ScalingFigures, Turns, add, cpu_of, round3};
use crate::cpu::{MachineTimes, process_cpu_time};
use crate::runtime::{self, NodeHandle};

/// Packets in flight between the load generator's send and its receipt.
const WINDOW: usize = 1000;
/// Packets the load generator writes at a time.
const BATCH: usize = 64;
/// Packets sent before the clock starts (connections, caches).
const WARM_UP: usize = 500;
/// Packets per crypto-only window.
const CRYPTO_SAMPLES: usize = 1000;

#[derive(Debug, Serialize)]
pub(crate) struct CoreRun {
    pub(crate) cores: usize,
    /// Hop worker threads (0: packets are opened on the swarm's thread).
    hop_workers: usize,
    packets: usize,
    /// Packets over the wall time of this node's segments.
    forward_pps: f64,
    /// Each segment's rate.
    segment_pps: Vec<f64>,
    /// CPU seconds of the node's threads (swarm's thread and hop workers).
    node_cpu_s: Option<f64>,
    /// Cores the node kept busy on average: its CPU seconds over the wall time.
    node_cores_busy: Option<f64>,
    /// Packets forwarded per CPU-second of the node.
    forward_pps_per_cpu_s: Option<f64>,
    /// `forward_pps_per_cpu_s` over the crypto-only rate of the hop.
    ratio_per_core: Option<f64>,
    /// CPU seconds of the load generator's thread during this node's segments.
    rig_cpu_s: Option<f64>,
    /// Packets opened on the swarm's thread because every worker was busy.
    opened_inline: u64,
    lost: usize,
    /// Where the machine's cores went during this node's segments, in cores on average
    /// (`None` where /proc cannot be read).
    machine: Option<MachineShare>,
}

/// How the machine's cores were spent during one node's segments, in cores on average: the
/// share that neither the node nor the load generator took, and why.
#[derive(Debug, Serialize)]
pub(crate) struct MachineShare {
    /// This process's threads other than the node and the load generator (the benchmark's
    /// own driver, the other nodes idling).
    bench_other: f64,
    /// Other processes on the machine.
    other_processes: f64,
    /// Interrupts and soft interrupts.
    interrupts: f64,
    /// Taken by the hypervisor for other guests.
    steal: f64,
    /// Left idle.
    idle: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Scaling {
    /// One hop's Sphinx processing on one core with nothing else running, µs (fastest window).
    pub(crate) crypto_hop_us: f64,
    pub(crate) crypto_hop_pps: f64,
    pub(crate) crypto_windows_us: Vec<f64>,
    pub(crate) segments: usize,
    pub(crate) runs: Vec<CoreRun>,
    #[serde(flatten)]
    pub(crate) figures: ScalingFigures,
}

/// A node under test on a thread of its own, with the packets for it.
struct Tested {
    cores: usize,
    workers: usize,
    node: NodeHandle,
    /// Its swarm's thread and its hop workers, for CPU accounting.
    threads: Option<Vec<u32>>,
    path: Path,
    packets: std::vec::IntoIter<Packet>,
    turns: Turns,
    rig_cpu: Option<Duration>,
    lost: usize,
    machine: Option<MachineTimes>,
    process_cpu: Option<Duration>,
}

async fn tested(
    cores: usize,
    sink: &Rig,
    sink_key: &NodeSecretKey,
    packets: usize,
) -> anyhow::Result<Tested> {
    let workers = if cores == 1 { 0 } else { cores };
    let mut node_spec = spec(packets)?;
    node_spec.config.hop_workers = workers;
    let node_key = node_spec.mix_secret.clone();
    let before = crate::cpu::threads_named("mix-hop-");
    let (node, node_thread) = runtime::start_on_thread(node_spec)?;
    let threads = turns::node_threads(&before, node_thread);
    let hop = |n: &NodeHandle| -> anyhow::Result<Hop> {
        Ok(Hop { public_key: n.mix_key, address: *n.entry()?.address() })
    };
    let sink = Hop {
        public_key: sink_key.public_key(),
        address: *MixNode::new(sink.peer_id, sink.addr.clone(), sink_key.public_key(), false)?
            .address(),
    };
    // Three hops, as every packet has; the sink counts it at the second.
    let hops = vec![hop(&node)?, sink.clone(), sink];
    let path = Path {
        keys: vec![node_key, sink_key.clone(), sink_key.clone()],
        route: Route::new(hops, vec![1, 1])?,
        format: WireFormat::default(),
    };
    Ok(Tested {
        cores,
        workers,
        node,
        threads,
        path,
        packets: Vec::new().into_iter(),
        turns: Turns::new(),
        rig_cpu: Some(Duration::ZERO),
        lost: 0,
        machine: Some(MachineTimes::default()),
        process_cpu: Some(Duration::ZERO),
    })
}

/// One hop's processing time on this thread, in µs.
fn crypto_hop_us(key: &NodeSecretKey, format: &WireFormat, samples: &[Packet]) -> f64 {
    let start = Instant::now();
    for packet in samples {
        let mut p = packet.clone();
        key.process(format, &mut p).expect("valid packet");
    }
    start.elapsed().as_secs_f64() * 1e6 / samples.len() as f64
}

impl Tested {
    /// The next `count` packets, framed and batched for the load generator to write (before
    /// the clock starts: the copies are not the node's work).
    fn next_batches(&mut self, count: usize) -> Vec<Batch> {
        let frames = self.packets.by_ref().take(count).map(|p| framing::encode(p.as_bytes()));
        Batch::split(frames, BATCH)
    }

    /// Sends `batches` through this node, at most [`WINDOW`] packets ahead of what came back;
    /// returns how many came back and when the last did.
    async fn pump(&self, rig: &Rig, batches: Vec<Batch>) -> anyhow::Result<Pumped> {
        rig.pump(self.node.peer_id, self.node.addr.clone(), batches, WINDOW).await
    }
}

pub(crate) async fn run(
    max_cores: usize,
    packets: usize,
    segments: usize,
) -> anyhow::Result<Scaling> {
    let builders = std::thread::available_parallelism().map_or(1, |n| n.get());
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    if max_cores > available {
        eprintln!(
            "warning: --cores {max_cores} on a machine with {available}: the node gets N hop \
             workers, but they share {available} cores"
        );
    }
    let max_cores = max_cores.max(1);
    let segments = segments.max(1);
    let per_segment = packets.div_ceil(segments);
    // The injector is the sink too: one thread for the load generator, which shares the
    // machine with the node under test. It counts what it receives and drops it; it never
    // opens a packet, so its mix key is only for building the packets' second and third hops.
    let rig = Rig::start()?;
    let sink_key = NodeSecretKey::generate(&mut rand::rng());
    let rig_threads: Option<Vec<u32>> = rig.thread.map(|t| vec![t]);
    let mut nodes = Vec::new();
    for cores in 1..=max_cores {
        nodes.push(tested(cores, &rig, &sink_key, WARM_UP + per_segment * segments).await?);
    }
    let mut windows = Vec::new();
    for node in &mut nodes {
        let count = WARM_UP + per_segment * segments;
        eprintln!("{} core(s): building {count} packets …", node.cores);
        let built = tokio::task::block_in_place(|| build_packets(&node.path, count, builders));
        windows.push(tokio::task::block_in_place(|| {
            crypto_hop_us(&node.path.keys[0], &node.path.format, &built[..CRYPTO_SAMPLES])
        }));
        node.packets = built.into_iter();
        let batches = node.next_batches(WARM_UP);
        let warm = node.pump(&rig, batches).await?.arrived;
        anyhow::ensure!(warm == WARM_UP, "warm-up: {warm} of {WARM_UP} packets arrived");
    }
    let inline_before: Vec<u64> = nodes.iter().map(|n| n.node.metrics.hop_jobs_inline()).collect();
    eprintln!("{segments} segments of {per_segment} packets per node …");
    for segment in 0..segments {
        for i in turns::order(segment, nodes.len()) {
            let node = &mut nodes[i];
            let batches = node.next_batches(per_segment);
            let cpu_before = cpu_of(node.threads.as_deref());
            let rig_before = cpu_of(rig_threads.as_deref());
            let machine_before = MachineTimes::read();
            let process_before = process_cpu_time();
            let started = Instant::now();
            let Pumped { arrived, last } = node.pump(&rig, batches).await?;
            let elapsed = last.saturating_duration_since(started);
            let cpu_after = cpu_of(node.threads.as_deref());
            node.turns.record(arrived, elapsed, cpu_before, cpu_after);
            add(&mut node.rig_cpu, rig_before, cpu_of(rig_threads.as_deref()));
            add(&mut node.process_cpu, process_before, process_cpu_time());
            node.machine = node.machine.zip(machine_before.zip(MachineTimes::read())).map(
                |(mut total, (before, after))| {
                    total.add(&after.since(&before));
                    total
                },
            );
            node.lost += per_segment - arrived;
        }
        let samples = &nodes[0];
        let sample_packets: Vec<Packet> =
            samples.packets.as_slice()[..CRYPTO_SAMPLES.min(samples.packets.len())].to_vec();
        if !sample_packets.is_empty() {
            windows.push(tokio::task::block_in_place(|| {
                crypto_hop_us(&samples.path.keys[0], &samples.path.format, &sample_packets)
            }));
        }
    }
    windows.sort_by(f64::total_cmp);
    let crypto_hop_us = *windows.first().context("no crypto window")?;
    let crypto_hop_pps = 1e6 / crypto_hop_us;
    let runs: Vec<CoreRun> = nodes
        .iter()
        .zip(inline_before)
        .map(|(n, inline_before)| {
            let per_cpu = n.turns.per_cpu_s();
            CoreRun {
                cores: n.cores,
                hop_workers: n.workers,
                packets: per_segment * segments,
                forward_pps: n.turns.pps(),
                segment_pps: n.turns.segment_pps.clone(),
                node_cpu_s: n.turns.cpu_s(),
                node_cores_busy: n.turns.cores_busy(),
                forward_pps_per_cpu_s: per_cpu,
                ratio_per_core: per_cpu.map(|pps| round3(pps / crypto_hop_pps)),
                rig_cpu_s: n.rig_cpu.map(|c| round3(c.as_secs_f64())),
                opened_inline: n.node.metrics.hop_jobs_inline() - inline_before,
                lost: n.lost,
                machine: machine_share(n),
            }
        })
        .collect();
    let figures = turns::scaling(&nodes[0].turns, &nodes[nodes.len() - 1].turns);
    for node in &nodes {
        node.node.stop();
    }
    rig.stop();
    Ok(Scaling {
        crypto_hop_us: round3(crypto_hop_us),
        crypto_hop_pps: crypto_hop_pps.round(),
        crypto_windows_us: windows.into_iter().map(round3).collect(),
        segments,
        runs,
        figures,
    })
}

fn machine_share(n: &Tested) -> Option<MachineShare> {
    let wall = n.turns.busy.as_secs_f64();
    let machine = n.machine?;
    let process = n.process_cpu?.as_secs_f64();
    let ours = n.turns.cpu?.as_secs_f64() + n.rig_cpu?.as_secs_f64();
    let cores = |d: f64| round3(d / wall);
    Some(MachineShare {
        bench_other: cores((process - ours).max(0.0)),
        other_processes: cores((machine.processes.as_secs_f64() - process).max(0.0)),
        interrupts: cores(machine.interrupts.as_secs_f64()),
        steal: cores(machine.steal.as_secs_f64()),
        idle: cores(machine.idle.as_secs_f64()),
    })
}

pub(crate) fn print(s: &Scaling) {
    let cores = s.runs.last().map_or(1, |r| r.cores);
    println!(
        "One node on 1..{cores} cores, {} alternating segments: crypto only (one core, fastest of {} windows): {:.1} µs per hop -> {:.0}/s",
        s.segments,
        s.crypto_windows_us.len(),
        s.crypto_hop_us,
        s.crypto_hop_pps
    );
    let show = |x: Option<f64>, digits: usize| x.map_or("?".into(), |x| format!("{x:.digits$}"));
    for r in &s.runs {
        println!(
            "  {} core(s), {} hop workers: {:.0} packets/s forwarded (segments {:?}); node CPU {} s ({} cores busy), load generator {} s; {} per CPU-second (ratio {}); {} opened inline; {} lost",
            r.cores,
            r.hop_workers,
            r.forward_pps,
            r.segment_pps,
            show(r.node_cpu_s, 2),
            show(r.node_cores_busy, 2),
            show(r.rig_cpu_s, 2),
            show(r.forward_pps_per_cpu_s, 0),
            show(r.ratio_per_core, 2),
            r.opened_inline,
            r.lost
        );
        if let Some(m) = &r.machine {
            println!(
                "    the rest of the machine, in cores: benchmark's other threads {:.2}, other processes {:.2}, interrupts {:.2}, stolen {:.2}, idle {:.2}",
                m.bench_other, m.other_processes, m.interrupts, m.steal, m.idle
            );
        }
    }
    println!(
        "scaling ({cores} cores / 1): median of segments {:?}: {:.2} (target >= 1.7: {}); over all segments {:.2}; parallel efficiency {}",
        s.figures.per_segment,
        s.figures.median,
        if s.figures.median >= 1.7 { "met" } else { "MISSED" },
        s.figures.overall,
        show(s.figures.parallel_efficiency, 2)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The load generator and a node with hop workers, over real swarms on loopback: every
    /// packet the generator writes comes back to it from the node, in windows smaller than
    /// the packets sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_with_hop_workers_forwards_every_packet_back_to_the_load_generator() {
        let rig = Rig::start().expect("load generator");
        let key = NodeSecretKey::generate(&mut rand::rng());
        let mut node = tested(2, &rig, &key, 600).await.expect("node");
        node.packets = build_packets(&node.path, 600, 2).into_iter();
        for _ in 0..2 {
            let batches = node.next_batches(300);
            let pumped = rig.pump(node.node.peer_id, node.node.addr.clone(), batches, 100);
            assert_eq!(pumped.await.expect("pumped").arrived, 300);
        }
        assert_eq!(node.packets.len(), 0);
        node.node.stop();
        rig.stop();
    }
}
