//! What the testnet measured, and how it is printed.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    pub(crate) fn of(samples: &mut [f64]) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            (samples[i] * 100.0).round() / 100.0
        };
        Self { p50: at(0.50), p95: at(0.95), p99: at(0.99), max: at(1.0) }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct DiscoveryReport {
    /// Until every node's pool held at least 95 % of the other nodes.
    pub(super) ms_to_95_percent: f64,
    /// Until every node's pool held all other nodes (if that happened).
    pub(super) ms_to_all: Option<f64>,
    /// The smallest pool when the workload started, out of `nodes - 1`.
    pub(super) min_pool: usize,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Phase {
    pub(super) sent: usize,
    pub(super) delivered: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChurnReport {
    pub(super) killed: usize,
    /// Seconds into the workload.
    pub(super) at_s: f64,
    /// Until no survivor's pool offered a killed node for new paths.
    pub(super) liveness_window_ms: Option<f64>,
    pub(super) before: Phase,
    pub(super) after: Phase,
    /// Delivered / sent over the whole run, messages between survivors.
    pub(super) delivery_ratio: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(super) nodes: usize,
    pub(super) transport: &'static str,
    /// The wire generation, and what its written delays mean.
    pub(super) wire: &'static str,
    pub(super) delay_semantics: &'static str,
    pub(super) path_len: usize,
    pub(super) mean_delay_ms: u16,
    pub(super) paths: String,
    pub(super) copies: usize,
    pub(super) startup_ms: f64,
    pub(super) discovery: Option<DiscoveryReport>,
    pub(super) duration_s: f64,
    pub(super) sent: usize,
    pub(super) delivered: usize,
    pub(super) lost: usize,
    pub(super) duplicates: usize,
    pub(super) replies_expected: usize,
    pub(super) replies_received: usize,
    pub(super) request_failures: usize,
    /// One-way: send call to arrival at the destination.
    pub(super) latency_ms: Percentiles,
    /// Request to reply.
    pub(super) reply_rtt_ms: Percentiles,
    pub(super) forwarded_per_node: Vec<u64>,
    pub(super) churn: Option<ChurnReport>,
    pub(super) hardening: HardeningReport,
    pub(super) stream: Option<StreamRun>,
    pub(super) gossip: Option<GossipRun>,
    pub(super) metrics_endpoint: Option<String>,
}

/// The gossip workload: publications on one topic every node joined.
#[derive(Debug, Serialize)]
pub(crate) struct GossipRun {
    pub(super) members: usize,
    pub(super) forwarding: String,
    /// Seconds until every member had a neighbour.
    pub(super) settle_s: f64,
    pub(super) routes: Vec<GossipRoute>,
}

#[derive(Debug, Serialize)]
pub(crate) struct GossipRoute {
    pub(super) route: &'static str,
    pub(super) published: usize,
    /// Publications every other live member delivered.
    pub(super) delivered_to_all: usize,
    /// Deliveries over (publications × other members).
    pub(super) delivery_ratio: f64,
    /// Publish call to the last member's delivery.
    pub(super) completion_ms: Percentiles,
    /// Own stem and mix publications seen coming back.
    pub(super) confirmed: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct StreamRun {
    pub(super) bytes: usize,
    pub(super) received: usize,
    pub(super) bit_exact: bool,
    /// The acceptor's SHA-256 of what it read came back on the stream's reverse direction
    /// (through the opener's SURBs) and matched.
    pub(super) reply_verified: bool,
    pub(super) seconds: f64,
    pub(super) goodput_mbps: f64,
    /// Frames (mix messages) the opener sent, shards among them sent again, SURBs sent ahead.
    pub(super) frames_sent: u64,
    pub(super) shards_resent: u64,
    pub(super) surbs_sent: u64,
    /// A message of a quarter of the stream's size, sent with `send`.
    pub(super) message_bytes: usize,
    pub(super) message_delivered: bool,
    pub(super) message_seconds: f64,
    pub(super) error: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct HardeningReport {
    pub(super) cover_slots_per_s: Option<f64>,
    pub(super) loops_sent: u64,
    pub(super) loops_returned: u64,
    pub(super) loops_lost: u64,
    pub(super) epoch_s: Option<u64>,
    /// Rotations each node went through.
    pub(super) key_rotations: Vec<u64>,
    /// Packets no key opened (lost to rotation, or forged), over all nodes.
    pub(super) mac_failures: u64,
    pub(super) pow_bits: Option<u32>,
    /// Messages refused at exits for their proof, over all nodes.
    pub(super) proofs_refused: u64,
}

pub(crate) fn print(report: &Report) {
    print_network(report);
    print_messages(report);
    if let Some(c) = &report.churn {
        print_churn(c);
    }
    print_hardening(&report.hardening);
    if let Some(s) = &report.stream {
        print_stream(s);
    }
    if let Some(g) = &report.gossip {
        print_gossip(g);
    }
    println!("ran {:.2} s", report.duration_s);
    if let Some(endpoint) = &report.metrics_endpoint {
        println!("metrics were served on http://{endpoint}/metrics");
    }
}

/// The network and how it started.
fn print_network(r: &Report) {
    println!(
        "testnet: {} mix nodes on 127.0.0.1 ({}, wire {}), {} hops, exponential delay mean {} ms per hop (drawn by {}), {} paths, {} cop{}; started in {:.0} ms",
        r.nodes,
        r.transport,
        r.wire,
        r.path_len,
        r.mean_delay_ms,
        if r.delay_semantics == "exact" { "the sender" } else { "each hop" },
        r.paths.to_lowercase(),
        r.copies,
        if r.copies == 1 { "y" } else { "ies" },
        r.startup_ms
    );
    if let Some(d) = &r.discovery {
        let all = d
            .ms_to_all
            .map_or("not all within 60 s".to_owned(), |ms| format!("all after {ms:.0} ms"));
        println!(
            "discovery: one bootstrap address; every pool held 95 % of the nodes after {:.0} ms, {all}",
            d.ms_to_95_percent
        );
    }
}

/// Messages, requests and latencies.
fn print_messages(r: &Report) {
    println!(
        "messages  sent {}  delivered {}  lost {}  duplicated {}",
        r.sent, r.delivered, r.lost, r.duplicates
    );
    let success = if r.replies_expected == 0 {
        100.0
    } else {
        100.0 * r.replies_received as f64 / r.replies_expected as f64
    };
    println!(
        "requests  sent {}  replies {} ({success:.1} %)  failed {}",
        r.replies_expected, r.replies_received, r.request_failures
    );
    let l = &r.latency_ms;
    println!(
        "latency   p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  (send to destination)",
        l.p50, l.p95, l.p99
    );
    let t = &r.reply_rtt_ms;
    println!("reply rtt p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms", t.p50, t.p95, t.p99);
    let per_node: Vec<String> =
        r.forwarded_per_node.iter().enumerate().map(|(i, n)| format!("n{i} {n}")).collect();
    println!("forwarded per node: {}", per_node.join("  "));
}

/// What the churn killed and what was delivered around it.
fn print_churn(c: &ChurnReport) {
    let window = c.liveness_window_ms.map_or("over 30 s".to_owned(), |ms| format!("{ms:.0} ms"));
    println!(
        "churn: killed {} nodes at {:.1} s; survivors stopped offering them for paths after {window}",
        c.killed, c.at_s
    );
    println!(
        "       delivered before {}/{}, after {}/{}; overall {:.2} %",
        c.before.delivered,
        c.before.sent,
        c.after.delivered,
        c.after.sent,
        100.0 * c.delivery_ratio
    );
}

/// Cover, key rotation and proofs of work, where they ran.
fn print_hardening(h: &HardeningReport) {
    if let Some(rate) = h.cover_slots_per_s {
        println!(
            "cover: {rate} Loopix slots/s per node; loops sent {}, returned {}, lost {}",
            h.loops_sent, h.loops_returned, h.loops_lost
        );
    }
    if let Some(epoch) = h.epoch_s {
        println!(
            "keys: rotated every {epoch} s; rotations per node {:?}; packets no key opened {}",
            h.key_rotations, h.mac_failures
        );
    }
    if let Some(bits) = h.pow_bits {
        println!(
            "spam: {bits}-bit proof of work per message; refused at exits {}",
            h.proofs_refused
        );
    }
}

/// The stream and the large message.
fn print_stream(s: &StreamRun) {
    println!(
        "stream: {} of {} bytes arrived{} in {:.2} s ({:.2} Mbit/s goodput); digest back through SURBs {}",
        s.received,
        s.bytes,
        if s.bit_exact { " bit-exact" } else { " NOT bit-exact" },
        s.seconds,
        s.goodput_mbps,
        if s.reply_verified { "matched" } else { "MISSING" },
    );
    println!(
        "        {} frames, {} shards resent, {} SURBs sent ahead",
        s.frames_sent, s.shards_resent, s.surbs_sent,
    );
    println!(
        "message: {} bytes {} in {:.2} s{}",
        s.message_bytes,
        if s.message_delivered { "delivered whole" } else { "NOT delivered" },
        s.message_seconds,
        s.error.as_deref().map(|e| format!("; error: {e}")).unwrap_or_default()
    );
}

/// Gossip, per route.
fn print_gossip(g: &GossipRun) {
    println!(
        "gossip: {} members on one topic, forwarding {}; every member had a neighbour after {:.2} s",
        g.members, g.forwarding, g.settle_s
    );
    for route in &g.routes {
        println!(
            "        {:<6} published {}  delivered to every member {}  ({:.2} % of deliveries)  completion p50 {:.0} ms p95 {:.0} ms  confirmed {}",
            route.route,
            route.published,
            route.delivered_to_all,
            100.0 * route.delivery_ratio,
            route.completion_ms.p50,
            route.completion_ms.p95,
            route.confirmed,
        );
    }
}
