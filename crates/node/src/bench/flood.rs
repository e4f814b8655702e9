//! `mixnode bench flood`: a mix node under floods of several shapes while honest traffic
//! crosses it.
//!
//! Path nodes n0 → n1 → n2 (n2 the exit and destination) run on threads of their own; n0 is
//! the target. An honest injector sends pre-built packets through the path at a steady rate.
//! The target's capacity is measured in the same run as the single-core rate of hop
//! processing (`capacity_fps`). Phases: `baseline` (honest only), `flood` (honest + flood),
//! `recovery` (honest only). The shapes:
//!
//! - `single`: one peer offers ten times the capacity of the two kinds of frame that cost a
//!   node the most: random 4608-byte frames (a Diffie-Hellman, then a MAC failure) and replays
//!   of one valid packet (a Diffie-Hellman and a MAC, then the replay filter).
//! - `sybil`: the same total from 50 identities, each a peer of its own.
//! - `upstream` and `upstream-pow`: the attacker sends *valid* packets through two honest
//!   upstream mix nodes, whose next hop is the target: the target gets them from honest
//!   nodes, valid, fresh, indistinguishable from honest traffic. The attacker builds them as
//!   it goes, so its own CPU bounds the flood; `upstream-pow` runs every node with per-hop
//!   proofs of work, which every sender and every hop pays per packet.
//!
//! For each shape the report gives what was *written* into the target's connections (not
//! offered): for the junk shapes, what the flooders' connections took (what they handed to
//! their send queues minus what was still queued when the flood stopped); for the upstream
//! shapes, the frames the target received from the upstream nodes. The node protects itself
//! by reading at most `inbound_frame_rate` frames per second from one peer, by cutting the
//! budget of a peer that sends mostly junk (`penalty_frame_rate`), and otherwise by not
//! reading: a flood backs up into the flooder's own send queue. Resident memory of this whole
//! process (all nodes, injector and flooders) is sampled every 100 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p::{Multiaddr, PeerId};
use mix_sphinx::{AddressBlock, Hop, MESSAGE_SIZE, Packet, Route, WireFormat, message};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use super::node::{CODEC, Path, build_packets, crypto_only, next_delivery, spec, start_path};
use crate::runtime::{self, NodeHandle, NodeSpec};

/// The documented bound on the resident memory of the whole benchmark process.
const RSS_BOUND_MB: f64 = 512.0;
const TICK: Duration = Duration::from_millis(10);
/// A flooder's send queue (its `max_queued_frames`).
const FLOOD_QUEUE: i64 = 4096;
/// Identities of the `sybil` shape.
const SYBILS: usize = 50;
/// Honest upstream nodes of the `upstream` shapes.
const UPSTREAMS: usize = 2;
/// Per-hop proof-of-work difficulty of `upstream-pow`.
const POW_BITS: u32 = 12;
/// Sequence numbers of the attacker's valid packets start here (honest ones are below).
const FLOOD_SEQ: u64 = 1 << 40;

/// The shapes a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Shape {
    Single,
    Sybil,
    Upstream,
    UpstreamPow,
    /// Strangers flooding an acceptor's stream layer (see `flood_stream`).
    Stream,
}

impl Shape {
    pub(crate) const ALL: [Self; 4] =
        [Self::Single, Self::Sybil, Self::Upstream, Self::UpstreamPow];

    fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Sybil => "sybil",
            Self::Upstream => "upstream",
            Self::UpstreamPow => "upstream-pow",
            Self::Stream => "stream",
        }
    }

    fn is_upstream(self) -> bool {
        matches!(self, Self::Upstream | Self::UpstreamPow)
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) honest_pps: f64,
    pub(crate) baseline_s: u64,
    pub(crate) flood_s: u64,
    pub(crate) recovery_s: u64,
    pub(crate) read_limit: bool,
    pub(crate) shapes: Vec<Shape>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    honest_pps: f64,
    inbound_frame_rate: Option<f64>,
    penalty_frame_rate: Option<f64>,
    rss_mb_bound: f64,
    shapes: Vec<ShapeReport>,
    /// The `stream` shape, when run.
    stream: Option<super::flood_stream::StreamFloodReport>,
    met: bool,
}

#[derive(Debug, Serialize)]
struct ShapeReport {
    shape: &'static str,
    /// Peers that sent the flood to the target.
    flooders: usize,
    /// The target's single-core rate of hop processing, measured in the same run.
    capacity_fps: f64,
    hop_us: f64,
    offered_fps: f64,
    written_fps: f64,
    /// Flood frames the target read and processed per second.
    processed_fps: f64,
    honest_rate_kept: f64,
    recovered: bool,
    rss_mb_peak: f64,
    /// Peers the target penalized for junk.
    penalties: u64,
    phases: Vec<Phase>,
    target_drops: Vec<(String, u64)>,
    target_delay_queue_after: i64,
    target_outbound_queue_after: i64,
    /// Whether the shape met its target (`None`: reported, no target).
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Phase {
    name: &'static str,
    secs: f64,
    honest_sent: usize,
    honest_delivered: usize,
    delivered_pps: f64,
    /// Frames the target read per second in the phase (honest and flood).
    target_received_pps: f64,
    /// The target's CPU time over the phase's wall time (1.0 = one core busy).
    target_cpu_share: Option<f64>,
}

pub(crate) fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) async fn run(options: Options) -> anyhow::Result<Report> {
    let defaults = libp2p_mix::Config::default();
    let mut shapes = Vec::new();
    let mut stream = None;
    for shape in &options.shapes {
        eprintln!("== shape {} ==", shape.name());
        if *shape == Shape::Stream {
            stream = Some(super::flood_stream::run(options.flood_s).await?);
            continue;
        }
        shapes.push(run_shape(*shape, &options).await?);
    }
    let met = shapes.iter().all(|s| s.met != Some(false))
        && stream.as_ref().is_none_or(super::flood_stream::StreamFloodReport::met);
    Ok(Report {
        honest_pps: options.honest_pps,
        inbound_frame_rate: if options.read_limit { defaults.inbound_frame_rate } else { None },
        penalty_frame_rate: defaults.penalty_frame_rate,
        rss_mb_bound: RSS_BOUND_MB,
        shapes,
        stream,
        met,
    })
}

/// Settings every node of a shape's network shares.
fn network_spec(packets: usize, shape: Shape) -> anyhow::Result<NodeSpec> {
    let mut spec = spec(packets)?;
    // Valid flood packets are fresh: every one is a tag in the replay filter.
    spec.config.core.replay.packets_per_second = 2_000_000;
    if shape == Shape::UpstreamPow {
        spec.spam = Some(libp2p_mix::spam::SpamConfig {
            placement: libp2p_mix::spam::Placement::PerHop,
            protection: Box::new(libp2p_mix::spam::ProofOfWork::new(libp2p_mix::spam::PowConfig {
                difficulty: POW_BITS,
                ..libp2p_mix::spam::PowConfig::default()
            })),
        });
    }
    Ok(spec)
}

/// The smallest replay filter, for nodes that only send.
fn spec_replay_small() -> libp2p_mix::core::ReplayConfig {
    libp2p_mix::core::ReplayConfig {
        packets_per_second: 1,
        key_lifetime: Duration::from_secs(1),
        ..libp2p_mix::core::ReplayConfig::default()
    }
}

/// Builds the attacker's valid packets through `upstreams` and the target's path on a thread
/// of its own, as fast as one core allows, until `stop`.
fn valid_packets(
    routes: Vec<(PeerId, Multiaddr, Route)>,
    stop: Arc<AtomicBool>,
) -> std::sync::mpsc::Receiver<(PeerId, Multiaddr, Packet)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(2048);
    std::thread::spawn(move || {
        let format = WireFormat::default();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut seq = FLOOD_SEQ;
        while !stop.load(Ordering::Relaxed) {
            let (peer, addr, route) = &routes[seq as usize % routes.len()];
            let mut m = [0u8; MESSAGE_SIZE];
            if message::encode_forward(format.padding(), 0, CODEC, &[], &seq.to_be_bytes(), &mut m)
                .is_err()
            {
                return;
            }
            let Ok(packet) = route.forward_packet(&format, &AddressBlock::ZERO, &m, &mut rng)
            else {
                return;
            };
            seq += 1;
            if tx.send((*peer, addr.clone(), packet)).is_err() {
                return;
            }
        }
    });
    rx
}

/// The target's path, the honest injector, and the honest packets, built before the clock.
struct FloodNet {
    /// n0 (the target), n1, n2 (the exit and destination).
    nodes: Vec<NodeHandle>,
    target_thread: Option<u32>,
    injector: NodeHandle,
    hops: Vec<Hop>,
    template: NodeSpec,
    /// Packets through the path; the first 1,000 are samples for the crypto-only rate.
    packets: Vec<Packet>,
    /// The target's single-core time per hop, µs.
    hop_us: f64,
}

impl FloodNet {
    async fn start(shape: Shape, o: &Options, honest_total: usize) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let defaults = libp2p_mix::Config::default();
        let read_limit = if o.read_limit { defaults.inbound_frame_rate } else { None };
        let template = network_spec(honest_total + 1000, shape)?;
        let path_nodes = start_path(honest_total + 1000, |spec| {
            spec.config = template.config.clone();
            spec.spam = network_spec(0, shape).ok().and_then(|s| s.spam);
            // The target defends itself with the default limits.
            spec.config.inbound_frame_rate = read_limit;
            spec.config.inbound_burst = defaults.inbound_burst;
        })
        .await?;
        let nodes = path_nodes.nodes;
        let injector = runtime::start(network_spec(0, shape)?).await?;
        let hops: Vec<Hop> = nodes
            .iter()
            .map(|n| Ok(Hop { public_key: n.mix_key, address: *n.entry()?.address() }))
            .collect::<anyhow::Result<_>>()?;
        let path = Path {
            keys: path_nodes.keys,
            route: Route::new(hops.clone(), vec![1, 1])?,
            format: WireFormat::default(),
        };
        eprintln!("building {honest_total} honest packets …");
        let packets =
            tokio::task::block_in_place(|| build_packets(&path, honest_total + 1000, cores));
        let (hop_us, ..) = tokio::task::block_in_place(|| crypto_only(&path, &packets[..1000]));
        Ok(Self {
            nodes,
            target_thread: path_nodes.threads[0],
            injector,
            hops,
            template,
            packets,
            hop_us,
        })
    }
}

/// What the phases counted, beside each phase's own figures.
struct Counted {
    phases: Vec<Phase>,
    offered: u64,
    handed: u64,
    queued_at_end: i64,
    flood_received: u64,
    rss_peak: f64,
    delay_after: i64,
    outbound_after: i64,
}

async fn run_shape(shape: Shape, o: &Options) -> anyhow::Result<ShapeReport> {
    let phase_secs = [o.baseline_s, o.flood_s, o.recovery_s];
    let honest_total: usize = phase_secs.iter().map(|s| (o.honest_pps * *s as f64) as usize).sum();
    let mut net = FloodNet::start(shape, o, honest_total).await?;
    let target_cpu = || net.target_thread.and_then(crate::cpu::thread_cpu_time);
    let (samples, honest) = net.packets.split_at(1000);
    let capacity_fps = 1e6 / net.hop_us;
    let Attackers { flooders, upstreams, valid, stop_building, junk, queue } =
        attackers(shape, &net.nodes, &net.hops, &net.template, &samples[0]).await?;

    let mut deliveries = net.nodes[2].take_events().context("events")?;
    let delivered_task = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while let Some((seq, _)) = next_delivery(&mut deliveries).await {
            seqs.push(seq);
        }
        seqs
    });

    let first = (net.nodes[0].peer_id, net.nodes[0].addr.clone());
    let ctx = PhaseCtx {
        honest_pps: o.honest_pps,
        injector: &net.injector,
        first: &first,
        offered_fps: 10.0 * capacity_fps,
        flooders: &flooders,
        flood_metrics: flooders.iter().map(|f| f.metrics.clone()).collect(),
        queue,
        valid: valid.as_ref(),
        junk: &junk,
        stop_building: &stop_building,
        target_metrics: net.nodes[0].metrics.clone(),
        target_cpu: &target_cpu,
    };
    let target_metrics = ctx.target_metrics.clone();
    let mut st = PhaseState {
        honest: honest.iter().cloned(),
        next_seq: 1000,
        seq_ranges: Vec::new(),
        offered: 0,
        handed: 0,
        queued_at_end: 0,
        flood_received: 0,
        rss_peak: rss_mb(),
    };
    let mut phases = Vec::new();
    for (i, secs) in phase_secs.into_iter().enumerate() {
        let name = ["baseline", "flood", "recovery"][i];
        phases.push(run_phase(name, secs, i == 1, &ctx, &mut st).await);
    }
    drop(ctx);
    // Let the last packets arrive, then count deliveries by phase.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counted = Counted {
        phases: Vec::new(),
        offered: st.offered,
        handed: st.handed,
        queued_at_end: st.queued_at_end,
        flood_received: st.flood_received,
        rss_peak: st.rss_peak.max(rss_mb()),
        delay_after: target_metrics.delay_queue(),
        outbound_after: target_metrics.outbound_queue(),
    };
    for node in flooders.iter().chain(&upstreams).chain(std::iter::once(&net.injector)) {
        node.stop();
    }
    for n in &net.nodes {
        n.stop();
    }
    let seqs = delivered_task.await.unwrap_or_default();
    for (phase, (lo, hi)) in phases.iter_mut().zip(&st.seq_ranges) {
        phase.honest_delivered =
            seqs.iter().filter(|s| (*lo as u64..*hi as u64).contains(s)).count();
        phase.delivered_pps = phase.honest_delivered as f64 / phase.secs;
    }
    net.nodes.clear();
    let flooders = if shape.is_upstream() { UPSTREAMS } else { flooders.len() };
    Ok(score(shape, flooders, net.hop_us, Counted { phases, ..counted }, &target_metrics))
}

/// The shape's figures from what its phases counted.
fn score(
    shape: Shape,
    flooders: usize,
    hop_us: f64,
    counted: Counted,
    target_metrics: &libp2p_mix::Metrics,
) -> ShapeReport {
    let Counted { phases, offered, handed, queued_at_end, flood_received, rss_peak, .. } = counted;
    let share = |p: &Phase| p.honest_delivered as f64 / p.honest_sent.max(1) as f64;
    let honest_rate_kept = (phases[1].delivered_pps / phases[0].delivered_pps.max(1e-9))
        .min(share(&phases[1]) / share(&phases[0]).max(1e-9));
    let recovered = share(&phases[2]) >= 0.99 * share(&phases[0]) && counted.delay_after == 0;
    let flood_secs = phases[1].secs;
    let honest_in_flood = phases[1].honest_sent as f64;
    let processed_fps = (flood_received as f64 - honest_in_flood).max(0.0) / flood_secs;
    let written_fps = if shape.is_upstream() {
        // Everything the upstream nodes forwarded reached the target's connections.
        processed_fps
    } else {
        (handed as f64 - queued_at_end.max(0) as f64) / flood_secs
    };
    let met = (!shape.is_upstream())
        .then_some(honest_rate_kept >= 0.9 && recovered && rss_peak <= RSS_BOUND_MB);
    ShapeReport {
        shape: shape.name(),
        flooders,
        capacity_fps: (1e6 / hop_us).round(),
        hop_us: round(hop_us),
        offered_fps: (offered as f64 / flood_secs).round(),
        written_fps: written_fps.round(),
        processed_fps: processed_fps.round(),
        honest_rate_kept: round(honest_rate_kept),
        recovered,
        rss_mb_peak: round(rss_peak),
        penalties: target_metrics.penalties(),
        phases,
        target_drops: target_metrics.drops_by_reason(),
        target_delay_queue_after: counted.delay_after,
        target_outbound_queue_after: counted.outbound_after,
        met,
    }
}

/// What every phase of one shape's run uses.
struct PhaseCtx<'a> {
    honest_pps: f64,
    injector: &'a NodeHandle,
    first: &'a (PeerId, Multiaddr),
    offered_fps: f64,
    flooders: &'a [NodeHandle],
    flood_metrics: Vec<libp2p_mix::Metrics>,
    queue: i64,
    valid: Option<&'a std::sync::mpsc::Receiver<(PeerId, Multiaddr, Packet)>>,
    junk: &'a [Packet],
    stop_building: &'a AtomicBool,
    target_metrics: libp2p_mix::Metrics,
    target_cpu: &'a dyn Fn() -> Option<Duration>,
}

/// What the phases advance.
struct PhaseState<'a> {
    honest: std::iter::Cloned<std::slice::Iter<'a, Packet>>,
    next_seq: usize,
    seq_ranges: Vec<(usize, usize)>,
    offered: u64,
    handed: u64,
    queued_at_end: i64,
    flood_received: u64,
    rss_peak: f64,
}

/// One phase: honest packets at their rate for `secs`, and with `flooding` the flood too.
async fn run_phase(
    name: &'static str,
    secs: u64,
    flooding: bool,
    c: &PhaseCtx<'_>,
    st: &mut PhaseState<'_>,
) -> Phase {
    eprintln!("{name} phase, {secs} s …");
    let start = Instant::now();
    let received_before = c.target_metrics.packets_received();
    let cpu_before = (c.target_cpu)();
    let first_seq = st.next_seq;
    let mut honest_due = 0.0;
    let mut flood_due = 0.0;
    let mut tick = tokio::time::interval(TICK);
    let mut ticks = 0u32;
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        ticks += 1;
        honest_due += c.honest_pps * TICK.as_secs_f64();
        while honest_due >= 1.0 {
            let Some(p) = st.honest.next() else { break };
            c.injector.send_packet(c.first.0, c.first.1.clone(), p);
            st.next_seq += 1;
            honest_due -= 1.0;
        }
        if flooding {
            flood_due += c.offered_fps * TICK.as_secs_f64();
            let attempts = flood_due as u64;
            flood_due -= attempts as f64;
            st.offered += attempts;
            // Each flooder offers its share and writes all its queue takes.
            let share = attempts / c.flooders.len() as u64;
            for (f, (flooder, metrics)) in c.flooders.iter().zip(&c.flood_metrics).enumerate() {
                let mine = share + u64::from((f as u64) < attempts % c.flooders.len() as u64);
                let room = (c.queue - metrics.outbound_queue()).max(0) as u64;
                for _ in 0..mine.min(room) {
                    if let Some(valid) = c.valid {
                        let Ok((peer, addr, p)) = valid.try_recv() else { break };
                        flooder.send_packet(peer, addr, p);
                    } else {
                        let p = c.junk[(st.handed as usize) % c.junk.len()].clone();
                        flooder.send_packet(c.first.0, c.first.1.clone(), p);
                    }
                    st.handed += 1;
                }
            }
        }
        if ticks.is_multiple_of(10) {
            st.rss_peak = st.rss_peak.max(rss_mb());
        }
    }
    if flooding {
        c.stop_building.store(true, Ordering::Relaxed);
        st.queued_at_end = c.flood_metrics.iter().map(|m| m.outbound_queue()).sum();
    }
    let secs_taken = start.elapsed().as_secs_f64();
    let received = c.target_metrics.packets_received() - received_before;
    let cpu_share = cpu_before
        .zip((c.target_cpu)())
        .map(|(b, a)| ((a.saturating_sub(b).as_secs_f64() / secs_taken) * 100.0).round() / 100.0);
    if flooding {
        st.flood_received = received;
    }
    st.seq_ranges.push((first_seq, st.next_seq));
    Phase {
        name,
        secs: secs_taken,
        honest_sent: st.next_seq - first_seq,
        honest_delivered: 0,
        delivered_pps: 0.0,
        target_received_pps: received as f64 / secs_taken,
        target_cpu_share: cpu_share,
    }
}

/// The attack of one shape: its flooders, the honest upstream nodes the upstream shapes send
/// through (and the valid packets they route), and the junk the others send.
struct Attackers {
    flooders: Vec<NodeHandle>,
    upstreams: Vec<NodeHandle>,
    valid: Option<std::sync::mpsc::Receiver<(PeerId, Multiaddr, Packet)>>,
    stop_building: Arc<AtomicBool>,
    junk: Vec<Packet>,
    /// Frames each flooder may have queued.
    queue: i64,
}

async fn attackers(
    shape: Shape,
    nodes: &[NodeHandle],
    hops: &[Hop],
    template: &NodeSpec,
    sample: &Packet,
) -> anyhow::Result<Attackers> {
    // The flooders, and for the upstream shapes the honest nodes they send through.
    let flooder_count = match shape {
        Shape::Sybil => SYBILS,
        _ => 1,
    };
    // The flooders share one send queue's worth of frames, so that every shape holds the same
    // amount of flood in this process (its memory is the attacker's, not the target's).
    let queue = FLOOD_QUEUE / flooder_count as i64;
    let mut flooders = Vec::new();
    for _ in 0..flooder_count {
        let mut spec = network_spec(0, shape)?;
        spec.config.core.replay = spec_replay_small();
        spec.config.max_queued_frames = queue as usize;
        // A flooder that makes proofs of work burns CPU: on a thread of its own, so that it
        // does not also starve the honest injector's task.
        if shape.is_upstream() {
            flooders.push(runtime::start_on_thread(spec)?.0);
        } else {
            flooders.push(runtime::start(spec).await?);
        }
    }
    let mut upstreams = Vec::new();
    if shape.is_upstream() {
        let entries = nodes.iter().map(NodeHandle::entry).collect::<anyhow::Result<Vec<_>>>()?;
        for _ in 0..UPSTREAMS {
            let mut spec = network_spec(0, shape)?;
            spec.config = template.config.clone();
            let (node, _) = runtime::start_on_thread(spec)?;
            node.set_static_nodes(entries.clone()).await;
            upstreams.push(node);
        }
    }
    let stop_building = Arc::new(AtomicBool::new(false));
    let valid = if shape.is_upstream() {
        let mut routes = Vec::new();
        for u in &upstreams {
            let mut route_hops =
                vec![Hop { public_key: u.mix_key, address: *u.entry()?.address() }];
            route_hops.extend(hops.iter().cloned());
            routes.push((u.peer_id, u.addr.clone(), Route::new(route_hops, vec![1, 1, 1])?));
        }
        Some(valid_packets(routes, stop_building.clone()))
    } else {
        None
    };

    // The junk: random frames and replays of one valid packet, half each.
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let mut junk: Vec<Packet> = (0..128)
        .map(|_| {
            let mut p = Packet::zeroed();
            rng.fill_bytes(p.as_bytes_mut());
            p
        })
        .collect();
    junk.extend(std::iter::repeat_n(sample.clone(), 128));

    Ok(Attackers { flooders, upstreams, valid, stop_building, junk, queue })
}

impl Report {
    pub(crate) fn met(&self) -> bool {
        self.met
    }
}

pub(crate) fn print(r: &Report) {
    if let Some(stream) = &r.stream {
        super::flood_stream::print(stream);
        println!();
    }
    println!(
        "honest {:.0} packets/s through the target; read limit {:?} frames/s per peer, {:?} for a peer penalized for junk; RSS bound {:.0} MB",
        r.honest_pps, r.inbound_frame_rate, r.penalty_frame_rate, r.rss_mb_bound
    );
    for s in &r.shapes {
        println!();
        println!(
            "shape {} ({} flooding peers): capacity {:.0} frames/s (hop {:.1} µs); offered {:.0}/s, written {:.0}/s ({:.1}x capacity), processed {:.0}/s; peers penalized {}",
            s.shape,
            s.flooders,
            s.capacity_fps,
            s.hop_us,
            s.offered_fps,
            s.written_fps,
            s.written_fps / s.capacity_fps.max(1.0),
            s.processed_fps,
            s.penalties
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
        for p in &s.phases {
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
            "honest rate kept {:.2}{}; recovered {}; RSS peak {:.1} MB; queues after: delay {}, outbound {}",
            s.honest_rate_kept,
            match s.met {
                Some(true) => " (target >= 0.9: met)",
                Some(false) => " (target >= 0.9: MISSED)",
                None => " (no target: valid packets from honest nodes cannot be told apart)",
            },
            s.recovered,
            s.rss_mb_peak,
            s.target_delay_queue_after,
            s.target_outbound_queue_after
        );
        println!("target drops by reason: {:?}", s.target_drops);
    }
    println!();
    println!("{}", if r.met { "all targets met" } else { "TARGETS MISSED" });
}
