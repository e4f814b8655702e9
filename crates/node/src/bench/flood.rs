//! `mixnode bench flood`: one peer floods a mix node while honest traffic crosses it.
//!
//! Path nodes n0 → n1 → n2 (n2 the exit and destination) run on threads of their own; n0 is
//! the target. An honest injector sends pre-built packets through the path at a steady rate;
//! a flooder connects to n0 and offers ten times n0's capacity, measured in the same run as
//! the single-core rate of hop processing (`capacity_pps`). Its frames are of the two kinds
//! that cost a node the most: random 4608-byte frames (a Diffie-Hellman, then a MAC failure)
//! and replays of one valid packet (a Diffie-Hellman and a MAC, then the replay filter).
//!
//! Phases: `baseline` (honest only), `flood` (honest + flood), `recovery` (honest only). The
//! node protects itself by reading at most `inbound_frame_rate` frames per second from one
//! peer and then not reading at all: the flood backs up into the flooder's own send
//! queue, whose overflow the flooder drops (counted as `offered - written`). Resident memory of
//! this whole process (all nodes, injector and flooder) is sampled every 100 ms.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use mix_sphinx::{Hop, Packet, Route, WireFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use super::node::{Path, build_packets, crypto_only, next_delivery, spec, start_path};
use crate::runtime::{self, NodeHandle};

/// The documented bound on the resident memory of the whole benchmark process.
const RSS_BOUND_MB: f64 = 512.0;
const TICK: Duration = Duration::from_millis(10);
/// The flooder's send queue (its `max_queued_frames`).
const FLOOD_QUEUE: i64 = 4096;

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    capacity_pps: f64,
    hop_us: f64,
    inbound_frame_rate: Option<f64>,
    honest_pps: f64,
    flood_offered_pps: f64,
    flood_written_pps: f64,
    flood_processed_pps: f64,
    phases: Vec<Phase>,
    honest_rate_kept: f64,
    recovered: bool,
    rss_mb_max: f64,
    rss_mb_bound: f64,
    target_drops: Vec<(String, u64)>,
    target_delay_queue_after: i64,
    target_outbound_queue_after: i64,
    met: bool,
}

#[derive(Debug, Serialize)]
struct Phase {
    name: &'static str,
    secs: f64,
    honest_sent: usize,
    honest_delivered: usize,
    delivered_pps: f64,
    /// Frames the target processed per second in the phase (honest and flood).
    target_received_pps: f64,
    /// The target's CPU time over the phase's wall time (1.0 = one core busy).
    target_cpu_share: Option<f64>,
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) async fn run(
    honest_pps: f64,
    baseline_s: u64,
    flood_s: u64,
    recovery_s: u64,
    read_limit: bool,
) -> anyhow::Result<Report> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut limits = libp2p_mix::Config::default();
    if !read_limit {
        limits.inbound_frame_rate = None;
    }
    let phase_secs = [baseline_s, flood_s, recovery_s];
    let honest_total: usize = phase_secs.iter().map(|s| (honest_pps * *s as f64) as usize).sum();
    let path_nodes = start_path(honest_total + 1000, |spec| {
        // The target defends itself with the default limits.
        spec.config.inbound_frame_rate = limits.inbound_frame_rate;
        spec.config.inbound_burst = limits.inbound_burst;
    })?;
    let mut nodes = path_nodes.nodes;
    let target_thread = path_nodes.threads[0];
    let target_cpu = || target_thread.and_then(crate::cpu::thread_cpu_time);
    let injector = runtime::start(spec(0)?).await?;
    let (flooder, _) = runtime::start_on_thread(spec(0)?)?;
    let hops = nodes
        .iter()
        .map(|n| Hop { public_key: n.mix_key, address: *n.entry().expect("entry").address() })
        .collect();
    let path = Path {
        keys: path_nodes.keys,
        route: Route::new(hops, vec![1, 1])?,
        format: WireFormat::default(),
    };
    let target: &NodeHandle = &nodes[0];
    let first = (target.peer_id, target.addr.clone());

    eprintln!("building {honest_total} honest packets …");
    let honest = tokio::task::block_in_place(|| build_packets(&path, honest_total + 1000, cores));
    let (samples, honest) = honest.split_at(1000);
    let (hop_us, ..) = tokio::task::block_in_place(|| crypto_only(&path, samples));
    let capacity_pps = 1e6 / hop_us;
    let flood_offered_pps = 10.0 * capacity_pps;

    // The flood: random frames and replays of one valid packet, half each.
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let mut garbage: Vec<Packet> = (0..128)
        .map(|_| {
            let mut p = Packet::zeroed();
            rng.fill_bytes(p.as_bytes_mut());
            p
        })
        .collect();
    garbage.extend(std::iter::repeat_n(samples[0].clone(), 128));

    let mut deliveries = nodes[2].take_events().context("events")?;
    let delivered_task = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while let Some((seq, _)) = next_delivery(&mut deliveries).await {
            seqs.push(seq);
        }
        seqs
    });

    let target_metrics = nodes[0].metrics.clone();
    let flood_metrics = flooder.metrics.clone();
    let mut honest_iter = honest.iter().cloned();
    let mut phases = Vec::new();
    let mut seq_ranges = Vec::new();
    let mut rss_max = rss_mb();
    let (mut offered, mut written) = (0u64, 0u64);
    let mut next_seq = 1000usize;
    let mut flood_received = 0u64;
    for (i, secs) in phase_secs.iter().enumerate() {
        let name = ["baseline", "flood", "recovery"][i];
        eprintln!("{name} phase, {secs} s …");
        let flooding = i == 1;
        let start = Instant::now();
        let received_before = target_metrics.packets_received();
        let cpu_before = target_cpu();
        let first_seq = next_seq;
        let mut honest_due = 0.0;
        let mut flood_due = 0.0;
        let mut tick = tokio::time::interval(TICK);
        let mut ticks = 0u32;
        while start.elapsed() < Duration::from_secs(*secs) {
            tick.tick().await;
            ticks += 1;
            honest_due += honest_pps * TICK.as_secs_f64();
            while honest_due >= 1.0 {
                let Some(p) = honest_iter.next() else { break };
                injector.send_packet(first.0, first.1.clone(), p);
                next_seq += 1;
                honest_due -= 1.0;
            }
            if flooding {
                flood_due += flood_offered_pps * TICK.as_secs_f64();
                let attempts = flood_due as u64;
                flood_due -= attempts as f64;
                offered += attempts;
                // The flooder writes all it can: its send queue stays full.
                let room = (FLOOD_QUEUE - flood_metrics.outbound_queue()).max(0) as u64;
                for k in 0..attempts.min(room) {
                    let p = garbage[(written + k) as usize % garbage.len()].clone();
                    flooder.send_packet(first.0, first.1.clone(), p);
                }
                written += attempts.min(room);
            }
            if ticks.is_multiple_of(10) {
                rss_max = rss_max.max(rss_mb());
            }
        }
        let secs_taken = start.elapsed().as_secs_f64();
        let received = target_metrics.packets_received() - received_before;
        let cpu_share = cpu_before.zip(target_cpu()).map(|(b, a)| {
            ((a.saturating_sub(b).as_secs_f64() / secs_taken) * 100.0).round() / 100.0
        });
        if flooding {
            flood_received = received;
        }
        seq_ranges.push((first_seq, next_seq));
        phases.push(Phase {
            name,
            secs: secs_taken,
            honest_sent: next_seq - first_seq,
            honest_delivered: 0,
            delivered_pps: 0.0,
            target_received_pps: received as f64 / secs_taken,
            target_cpu_share: cpu_share,
        });
    }
    // Let the last packets arrive, then count deliveries by phase.
    tokio::time::sleep(Duration::from_secs(2)).await;
    rss_max = rss_max.max(rss_mb());
    let delay_after = target_metrics.delay_queue();
    let outbound_after = target_metrics.outbound_queue();
    flooder.stop();
    injector.stop();
    for n in &nodes {
        n.stop();
    }
    let seqs = delivered_task.await.unwrap_or_default();
    for (phase, (lo, hi)) in phases.iter_mut().zip(&seq_ranges) {
        phase.honest_delivered =
            seqs.iter().filter(|s| (*lo as u64..*hi as u64).contains(s)).count();
        phase.delivered_pps = phase.honest_delivered as f64 / phase.secs;
    }
    let share = |p: &Phase| p.honest_delivered as f64 / p.honest_sent.max(1) as f64;
    let honest_rate_kept = (phases[1].delivered_pps / phases[0].delivered_pps.max(1e-9))
        .min(share(&phases[1]) / share(&phases[0]).max(1e-9));
    let recovered = share(&phases[2]) >= 0.99 * share(&phases[0]) && delay_after == 0;
    let flood_secs = phases[1].secs;
    let honest_in_flood = phases[1].honest_sent as f64;
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let met = honest_rate_kept >= 0.9 && recovered && rss_max <= RSS_BOUND_MB;
    Ok(Report {
        capacity_pps: capacity_pps.round(),
        hop_us: round(hop_us),
        inbound_frame_rate: limits.inbound_frame_rate,
        honest_pps,
        flood_offered_pps: (offered as f64 / flood_secs).round(),
        flood_written_pps: (written as f64 / flood_secs).round(),
        flood_processed_pps: ((flood_received as f64 - honest_in_flood) / flood_secs).round(),
        phases,
        honest_rate_kept: round(honest_rate_kept),
        recovered,
        rss_mb_max: round(rss_max),
        rss_mb_bound: RSS_BOUND_MB,
        target_drops: target_metrics.drops_by_reason(),
        target_delay_queue_after: delay_after,
        target_outbound_queue_after: outbound_after,
        met,
    })
}

impl Report {
    pub(crate) fn met(&self) -> bool {
        self.met
    }
}

pub(crate) fn print(r: &Report) {
    println!(
        "target capacity (one core, hop processing {:.1} µs): {:.0} packets/s; read limit {:?} frames/s per peer",
        r.hop_us, r.capacity_pps, r.inbound_frame_rate
    );
    println!(
        "flood: offered {:.0}/s (10x capacity), written into the connection {:.0}/s, processed by the target {:.0}/s",
        r.flood_offered_pps, r.flood_written_pps, r.flood_processed_pps
    );
    println!(
        "{:>9} {:>6} {:>12} {:>16} {:>14} {:>16} {:>11}",
        "phase",
        "secs",
        "honest sent",
        "honest delivered",
        "delivered/s",
        "target frames/s",
        "target CPU"
    );
    for p in &r.phases {
        println!(
            "{:>9} {:>6.1} {:>12} {:>16} {:>14.0} {:>16.0} {:>11}",
            p.name,
            p.secs,
            p.honest_sent,
            p.honest_delivered,
            p.delivered_pps,
            p.target_received_pps,
            p.target_cpu_share.map_or("n/a".to_owned(), |c| format!("{c:.2}"))
        );
    }
    println!(
        "honest rate kept under flood: {:.2} (target >= 0.9); recovered: {}; max RSS {:.1} MB (bound {:.0} MB)",
        r.honest_rate_kept, r.recovered, r.rss_mb_max, r.rss_mb_bound
    );
    println!("target drops by reason: {:?}", r.target_drops);
    println!(
        "after: target delay queue {}, outbound queue {}; {}",
        r.target_delay_queue_after,
        r.target_outbound_queue_after,
        if r.met { "all targets met" } else { "TARGETS MISSED" }
    );
}
