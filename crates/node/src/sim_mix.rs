//! `mixnode sim mix`: the mixnet's anonymity against a global passive adversary with corrupt
//! nodes, on the node's own core in virtual time (first version: see crates/sim/MIXNET.md).

use std::time::{Duration, Instant};

use mix_sim::mixnet::{MixSimConfig, MixSimReport};
use serde::Serialize;

/// What the command line sets.
#[derive(Debug, clap::Args)]
pub(crate) struct MixArgs {
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    /// Mix nodes; each also sends and receives.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Messages sent in all.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Messages per second per node (Poisson).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Mean exponential delay per hop, in milliseconds.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// Share of the nodes that are corrupt (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    corrupt: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Serialize)]
struct Json {
    nodes: usize,
    senders: usize,
    messages: usize,
    delivered: usize,
    mode: &'static str,
    corrupt_share: f64,
    hop_delay_ms: u64,
    rate_per_node: f64,
    entropy_bits_mean: f64,
    entropy_normalised_mean: f64,
    entropy_normalised_p5: f64,
    top1_linkage: f64,
    receiver_entropy_normalised_mean: f64,
    latency_ms_p50: f64,
    seconds: f64,
}

/// Runs the simulation and prints what the adversary learned.
pub(crate) fn run(args: &MixArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 2, "--nodes must be at least 2");
    anyhow::ensure!((0.0..=1.0).contains(&args.corrupt), "--corrupt is a share from 0 to 1");
    anyhow::ensure!(args.rate > 0.0 && args.rate.is_finite(), "--rate must be positive");
    let config = MixSimConfig {
        nodes: args.nodes,
        messages: args.messages,
        rate: args.rate,
        hop_delay: Duration::from_millis(args.delay_ms),
        corrupt: args.corrupt,
        seed: args.seed,
        ..MixSimConfig::default()
    };
    let started = Instant::now();
    let r: MixSimReport = mix_sim::mixnet::run(&config);
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let json = Json {
            nodes: r.nodes,
            senders: r.senders,
            messages: r.messages,
            delivered: r.delivered,
            mode: "random",
            corrupt_share: r.corrupt as f64 / r.nodes as f64,
            hop_delay_ms: args.delay_ms,
            rate_per_node: args.rate,
            entropy_bits_mean: r.entropy_bits_mean,
            entropy_normalised_mean: r.entropy_normalised_mean,
            entropy_normalised_p5: r.entropy_normalised_p5,
            top1_linkage: r.top1_linkage,
            receiver_entropy_normalised_mean: r.receiver_entropy_normalised_mean,
            latency_ms_p50: r.latency_ms_p50,
            seconds,
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "mix simulation: {} nodes ({} corrupt), {} messages at {} per second per node, {} ms mean delay per hop, random paths",
        r.nodes, r.corrupt, r.messages, args.rate, args.delay_ms
    );
    println!(
        "senders: entropy {:.2} bits, normalised mean {:.3} (p5 {:.3}) over {} senders; most likely sender is the true one for {:.1} % of messages",
        r.entropy_bits_mean,
        r.entropy_normalised_mean,
        r.entropy_normalised_p5,
        r.senders,
        r.top1_linkage * 100.0
    );
    println!(
        "receivers: normalised entropy mean {:.3}; delivered {} of {}, latency p50 {:.1} ms; ran {seconds:.2} s",
        r.receiver_entropy_normalised_mean, r.delivered, r.messages, r.latency_ms_p50
    );
    Ok(())
}
