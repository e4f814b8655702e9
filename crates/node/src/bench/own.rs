//! `mixnode bench node --cores N`, second part: one node building and sending its own
//! messages on 1..N cores.
//!
//! The node sends one-packet messages through three sinks (nodes that drop what they receive
//! unopened, each on a thread of its own): every path is the three sinks in some order, so
//! the node's work per message is a sender's: planning the path, three Diffie-Hellmans and
//! blindings, the layered encryption, and the transport write. The node for 1 core builds on
//! its swarm's thread; the node for n ≥ 2 cores has n hop workers, which build its messages
//! too. Sends are issued at most [`WINDOW`] ahead of the packets that left, and a message
//! counts when its packet leaves (`packets_originated`). The nodes take turns in segments, as
//! in the forwarding measure, for the same reason (this machine's speed drifts).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use libp2p_mix::{Destination, SendOptions};
use mix_sphinx::{AddressBlock, Hop, MESSAGE_SIZE, Route, WireFormat};
use serde::Serialize;

use super::node::spec;
use super::turns::{self, ScalingFigures, Turns, cpu_of, round3};
use crate::runtime::{self, NodeHandle};

/// Messages sent ahead of the packets that left.
const WINDOW: usize = 512;
/// Messages sent before the clock starts (connections, caches).
const WARM_UP: usize = 200;
/// Packets per crypto-only window.
const CRYPTO_SAMPLES: usize = 300;
const CODEC: &str = "/bench/own/1";

#[derive(Debug, Serialize)]
pub(crate) struct OwnRun {
    cores: usize,
    /// Hop worker threads (0: messages are built on the swarm's thread).
    hop_workers: usize,
    messages: usize,
    /// Own packets sent per second of wall time.
    own_pps: f64,
    segment_pps: Vec<f64>,
    /// CPU seconds of the node's threads (swarm's thread and hop workers).
    node_cpu_s: Option<f64>,
    node_cores_busy: Option<f64>,
    own_pps_per_cpu_s: Option<f64>,
    /// `own_pps_per_cpu_s` over the crypto-only rate of building the packet.
    ratio_per_core: Option<f64>,
    /// Messages built on the swarm's thread because every worker was busy.
    built_inline: u64,
    /// Messages the node refused (its queues full); sent again later.
    refused: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct OwnScaling {
    /// Building one packet (three hops) on one core with nothing else running, µs (fastest
    /// window).
    pub(crate) crypto_build_us: f64,
    pub(crate) crypto_build_pps: f64,
    pub(crate) crypto_windows_us: Vec<f64>,
    pub(crate) segments: usize,
    pub(crate) runs: Vec<OwnRun>,
    #[serde(flatten)]
    pub(crate) figures: ScalingFigures,
}

/// A node under test on a thread of its own.
struct Sender {
    cores: usize,
    workers: usize,
    node: NodeHandle,
    threads: Option<Vec<u32>>,
    turns: Turns,
    refused: usize,
}

async fn sender(cores: usize, sinks: &[NodeHandle]) -> anyhow::Result<Sender> {
    let workers = if cores == 1 { 0 } else { cores };
    let mut node_spec = spec(0)?;
    node_spec.config.hop_workers = workers;
    node_spec.config.core.send_jitter = Duration::ZERO;
    let before = crate::cpu::threads_named("mix-hop-");
    let (node, node_thread) = runtime::start_on_thread(node_spec)?;
    let threads = turns::node_threads(&before, node_thread);
    let entries = sinks.iter().map(NodeHandle::entry).collect::<anyhow::Result<Vec<_>>>()?;
    node.set_static_nodes(entries).await;
    Ok(Sender { cores, workers, node, threads, turns: Turns::new(), refused: 0 })
}

/// Sends `total` messages from `node`, at most [`WINDOW`] ahead of the packets that left;
/// returns how many left, when the last did, and how many sends were refused (and repeated).
async fn pump(node: &NodeHandle, dest: &Destination, total: usize) -> (usize, Instant, usize) {
    let base = node.metrics.packets_originated();
    let options = SendOptions::default();
    let mut sends = FuturesUnordered::new();
    let (mut accepted, mut refused) = (0usize, 0usize);
    let mut last_progress = (0usize, Instant::now());
    loop {
        let left = (node.metrics.packets_originated() - base) as usize;
        if left != last_progress.0 {
            last_progress = (left, Instant::now());
        }
        if left >= total || last_progress.1.elapsed() > Duration::from_secs(5) {
            return (last_progress.0, last_progress.1, refused);
        }
        while accepted + sends.len() < total && accepted + sends.len() - left.min(accepted) < WINDOW
        {
            sends.push(node.send(dest.clone(), CODEC, vec![0; 64], options));
        }
        let tick = tokio::time::sleep(Duration::from_micros(500));
        tokio::select! {
            Some(result) = sends.next() => match result {
                Ok(()) => accepted += 1,
                Err(_) => refused += 1,
            },
            () = tick => {}
        }
    }
}

/// Building one packet of the kind the node sends, on this thread, in µs.
fn crypto_build_us(route: &Route, format: &WireFormat) -> f64 {
    let mut rng = rand::rng();
    let message = [0u8; MESSAGE_SIZE];
    let start = Instant::now();
    for _ in 0..CRYPTO_SAMPLES {
        route.forward_packet(format, &AddressBlock::ZERO, &message, &mut rng).expect("valid route");
    }
    start.elapsed().as_secs_f64() * 1e6 / CRYPTO_SAMPLES as f64
}

pub(crate) async fn run(
    max_cores: usize,
    messages: usize,
    segments: usize,
) -> anyhow::Result<OwnScaling> {
    let segments = segments.max(1);
    let per_segment = messages.div_ceil(segments);
    let mut sinks = Vec::new();
    for _ in 0..3 {
        let mut sink_spec = spec(0)?;
        sink_spec.config.core.drop_rate = 1.0;
        sinks.push(runtime::start_on_thread(sink_spec)?.0);
    }
    let hops = sinks
        .iter()
        .map(|s| Ok(Hop { public_key: s.mix_key, address: *s.entry()?.address() }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let route = Route::new(hops, vec![1, 1])?;
    let format = WireFormat::default();
    // Behind the exit, out of every path; the packets never get that far.
    let peer_id = libp2p::identity::Keypair::generate_secp256k1().public().to_peer_id();
    let dest = Destination::Peer { peer_id, addr: "/ip4/127.0.0.1/tcp/9".parse()? };
    let mut nodes = Vec::new();
    for cores in 1..=max_cores.max(1) {
        nodes.push(sender(cores, &sinks).await?);
    }
    let mut windows = vec![tokio::task::block_in_place(|| crypto_build_us(&route, &format))];
    for node in &nodes {
        let (warm, _, _) = pump(&node.node, &dest, WARM_UP).await;
        anyhow::ensure!(warm == WARM_UP, "warm-up: {warm} of {WARM_UP} own packets left");
    }
    let inline_before: Vec<u64> =
        nodes.iter().map(|n| n.node.metrics.build_jobs_inline()).collect();
    eprintln!("own packets: {segments} segments of {per_segment} messages per node …");
    for segment in 0..segments {
        for i in turns::order(segment, nodes.len()) {
            let node = &mut nodes[i];
            let cpu_before = cpu_of(node.threads.as_deref());
            let started = Instant::now();
            let (left, last, refused) = pump(&node.node, &dest, per_segment).await;
            let elapsed = last.duration_since(started);
            let cpu_after = cpu_of(node.threads.as_deref());
            node.turns.record(left, elapsed, cpu_before, cpu_after);
            node.refused += refused;
        }
        windows.push(tokio::task::block_in_place(|| crypto_build_us(&route, &format)));
    }
    windows.sort_by(f64::total_cmp);
    let crypto_build_us = *windows.first().context("no crypto window")?;
    let crypto_build_pps = 1e6 / crypto_build_us;
    let runs: Vec<OwnRun> = nodes
        .iter()
        .zip(inline_before)
        .map(|(n, inline_before)| {
            let per_cpu = n.turns.per_cpu_s();
            OwnRun {
                cores: n.cores,
                hop_workers: n.workers,
                messages: per_segment * segments,
                own_pps: n.turns.pps(),
                segment_pps: n.turns.segment_pps.clone(),
                node_cpu_s: n.turns.cpu_s(),
                node_cores_busy: n.turns.cores_busy(),
                own_pps_per_cpu_s: per_cpu,
                ratio_per_core: per_cpu.map(|pps| round3(pps / crypto_build_pps)),
                built_inline: n.node.metrics.build_jobs_inline() - inline_before,
                refused: n.refused,
            }
        })
        .collect();
    let figures = turns::scaling(&nodes[0].turns, &nodes[nodes.len() - 1].turns);
    for node in nodes.iter().map(|n| &n.node).chain(&sinks) {
        node.stop();
    }
    Ok(OwnScaling {
        crypto_build_us: round3(crypto_build_us),
        crypto_build_pps: crypto_build_pps.round(),
        crypto_windows_us: windows.into_iter().map(round3).collect(),
        segments,
        runs,
        figures,
    })
}

pub(crate) fn print(s: &OwnScaling) {
    let cores = s.runs.last().map_or(1, |r| r.cores);
    println!(
        "Own packets, one node on 1..{cores} cores: crypto only (one core, fastest of {} windows): {:.1} µs per packet -> {:.0}/s",
        s.crypto_windows_us.len(),
        s.crypto_build_us,
        s.crypto_build_pps
    );
    let show = |x: Option<f64>, digits: usize| x.map_or("?".into(), |x| format!("{x:.digits$}"));
    for r in &s.runs {
        println!(
            "  {} core(s), {} hop workers: {:.0} own packets/s (segments {:?}); node CPU {} s ({} cores busy); {} per CPU-second (ratio {}); {} built inline; {} refused",
            r.cores,
            r.hop_workers,
            r.own_pps,
            r.segment_pps,
            show(r.node_cpu_s, 2),
            show(r.node_cores_busy, 2),
            show(r.own_pps_per_cpu_s, 0),
            show(r.ratio_per_core, 2),
            r.built_inline,
            r.refused
        );
    }
    println!(
        "own packets scaling ({cores} cores / 1): median of segments {:?}: {:.2}; over all segments {:.2}; parallel efficiency {}",
        s.figures.per_segment,
        s.figures.median,
        s.figures.overall,
        show(s.figures.parallel_efficiency, 2)
    );
}
