//! The command line: parses it and runs the command.

use crate::{
    bench, cluster, config, init, keygen, metrics_http, runtime, sim, sim_mix, testnet, transfer,
    vectors,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use libp2p::Multiaddr;
use libp2p_mix::core::PathSelection;

#[derive(Debug, Parser)]
#[command(name = "mixnode", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local mixnet of real nodes in this process and send anonymous traffic through it.
    Testnet(TestnetArgs),
    /// Send a file over an anonymous stream to a node running `mixnode receive`; the sender
    /// runs a mix node of its own while it does.
    SendFile {
        /// The file.
        file: PathBuf,
        /// The receiver's address, ending in /p2p/<peer id> (printed by `mixnode receive`).
        #[arg(long)]
        to: Multiaddr,
        /// The receiver's stream key in hex (printed by `mixnode receive`).
        #[arg(long)]
        key: String,
        /// A node of the mixnet to join through (…/p2p/<peer id>); repeatable.
        #[arg(long, required = true)]
        bootstrap: Vec<Multiaddr>,
        /// Where this node listens (it serves as a mix node while it runs).
        #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
        listen: Multiaddr,
        /// Stream settings: interactive (low delay) or high-anonymity (500 ms mixing delay
        /// per hop, more parity).
        #[arg(long, default_value = "interactive", value_parser = parse_preset)]
        preset: mix_stream::StreamConfig,
    },
    /// Receive files over anonymous streams into a directory; prints the address and key
    /// senders need. The node serves as a mix node while it runs.
    Receive {
        /// Where received files go.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A node of the mixnet to join through (…/p2p/<peer id>); repeatable.
        #[arg(long, required = true)]
        bootstrap: Vec<Multiaddr>,
        /// Where this node listens (exits deliver here).
        #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
        listen: Multiaddr,
        /// Stop after this many files (default: run until interrupted).
        #[arg(long)]
        count: Option<usize>,
    },
    /// Run one mix node from a configuration file.
    Run {
        /// The node's configuration (see crates/node/node.example.toml).
        #[arg(long)]
        config: PathBuf,
        /// Serve Prometheus metrics here (overrides the file's [metrics] listen).
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// A peer to join the discovery DHT through (a multiaddr ending in /p2p/<peer id>);
        /// repeatable, added to the file's [discovery] bootstrap (and turns discovery on).
        #[arg(long)]
        bootstrap: Vec<Multiaddr>,
    },
    /// Write a complete, commented node.toml with fresh keys and a state directory; the
    /// node then starts with `mixnode run --config <dir>/node.toml`.
    Init {
        /// Where node.toml and the state directory go (created if missing).
        #[arg(long, default_value = "mixnode")]
        dir: PathBuf,
        /// An address to listen on (repeatable); the example's 127.0.0.1:4242 if none. A
        /// public node listens on e.g. /ip4/0.0.0.0/tcp/4242 and gives --advertise.
        #[arg(long)]
        listen: Vec<Multiaddr>,
        /// The address other nodes dial, if not the first one listened on.
        #[arg(long)]
        advertise: Option<Multiaddr>,
        /// A discovery bootstrap peer (a multiaddr ending in /p2p/<peer id>); repeatable.
        /// None for the first node of a network.
        #[arg(long)]
        bootstrap: Vec<Multiaddr>,
        /// Replace an existing node.toml (its keys are lost).
        #[arg(long)]
        force: bool,
    },
    /// Generate a node identity and mix key, printed as configuration.
    Keygen {
        /// The address the node will be reachable at, for the printed pool entry.
        #[arg(long, default_value = "/ip4/127.0.0.1/tcp/4242")]
        advertise: Multiaddr,
    },
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
    /// Simulations in virtual time of the code the nodes run.
    Sim {
        #[command(subcommand)]
        command: SimCommand,
    },
}

/// The settings of `mixnode testnet`.
#[derive(Debug, clap::Args)]
struct TestnetArgs {
    /// Mix nodes to start.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// One-way anonymous messages to send.
    #[arg(long, default_value_t = 300)]
    messages: usize,
    /// Anonymous requests whose replies come back through SURBs.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Messages plus requests sent per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Mean mixing delay per hop in ms (exponential); 0 for none.
    #[arg(long, default_value_t = 20)]
    delay_ms: u16,
    /// SURBs per request.
    #[arg(long, default_value_t = 2)]
    surbs: usize,
    /// Run over QUIC instead of TCP.
    #[arg(long)]
    quic: bool,
    /// Serve all nodes' Prometheus metrics on this address while running.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Seed of the workload (who sends to whom).
    #[arg(long)]
    seed: Option<u64>,
    /// Give every node the full pool instead of discovering it from one bootstrap node.
    #[arg(long)]
    static_pool: bool,
    /// Copies of each message over independent paths (above 1, messages go to mix-node
    /// destinations, which deliver the first copy).
    #[arg(long, default_value_t = 1)]
    copies: usize,
    /// Kill this share of the nodes halfway through the workload (e.g. 0.3).
    #[arg(long)]
    churn: Option<f64>,
    /// Path selection: random, rtt, hybrid or layered (stratified: two layers, a path's
    /// first hop from one and its second from the other).
    #[arg(long, default_value = "random", value_parser = parse_paths)]
    paths: PathSelection,
    /// The wire generation every node speaks: lip-183 (LIONESS, no trailer, delays are
    /// means; the current specification) or v1 (AES-CTR, sequence-number trailer, delays
    /// are exact; nim-libp2p-mix up to 48c77ad).
    #[arg(long, default_value = "lip-183")]
    wire: libp2p_mix::Wire,
    /// Loopix cover traffic: this many slots per second per node, each carrying an own
    /// packet or else a loop.
    #[arg(long)]
    cover: Option<f64>,
    /// Rotate mix keys every this many seconds (overlap: a third of it). Needs discovery.
    #[arg(long)]
    epoch_secs: Option<u64>,
    /// Proof of work of this many bits on every message, checked by the exit.
    #[arg(long)]
    pow: Option<u32>,
    /// After the messages, stream this many random bytes from one node to another over
    /// the mixnet (compressed, encrypted end to end, erasure-coded, acknowledged), have
    /// the acceptor send their digest back on the stream, and send a message of a quarter
    /// of the size; 0 skips it.
    #[arg(long, default_value_t = 2_000_000)]
    stream_bytes: usize,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// After the workload, keep the nodes running (until interrupted) and print a
    /// bootstrap address, for `mixnode send-file` and `mixnode receive`.
    #[arg(long)]
    keep_running: bool,
    /// After the streams, publish this many gossip messages on a topic every node joined
    /// (batch-and-shuffle forwarding), cycling through the direct, stem and mix routes;
    /// 0 turns gossip off.
    #[arg(long, default_value_t = 30)]
    gossip_messages: usize,
    /// Run each mix node as its own `mixnode run` process (own config, state directory
    /// and metrics endpoint), kill one with SIGKILL mid-run and restart it; reports a
    /// `restart` object. Uses --nodes, --rate and --delay-ms.
    #[arg(long)]
    processes: bool,
    /// With --processes: seconds of workload before the kill, and again after the node
    /// is back.
    #[arg(long, default_value_t = 5)]
    phase_secs: u64,
    /// With --processes: how long the killed node stays down, in ms.
    #[arg(long, default_value_t = 2000)]
    down_ms: u64,
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Gossip at scale: steady-state delivery, redundancy (RMR), last delivery hop, a mass
    /// crash, publishers named by spies, and a long run with neighbour rotation.
    Gossip(sim::GossipArgs),
    /// The mixnet's anonymity: a global passive adversary with corrupt nodes, on the node's
    /// own core in virtual time; entropy of the sender and receiver distributions.
    Mix(sim_mix::MixArgs),
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
    /// One peer floods a mix node with 10x its capacity of garbage and replayed packets while
    /// honest traffic crosses it: honest rate kept, memory, recovery.
    Flood {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Honest packets per second through the target.
        #[arg(long, default_value_t = 500.0)]
        honest_pps: f64,
        /// Seconds of honest traffic before the flood.
        #[arg(long, default_value_t = 10)]
        baseline_secs: u64,
        /// Seconds of flood.
        #[arg(long, default_value_t = 30)]
        flood_secs: u64,
        /// Seconds of honest traffic after the flood.
        #[arg(long, default_value_t = 10)]
        recovery_secs: u64,
        /// Turn the target's per-connection read limit off, to see what it protects against.
        #[arg(long)]
        no_read_limit: bool,
        /// The flood shapes to run, comma-separated (default: all).
        #[arg(long, value_delimiter = ',', value_enum)]
        shapes: Vec<bench::flood::Shape>,
    },
    /// Proof-of-work solve and verify times at several difficulties, against one SHA-256
    /// attempt measured in the same run.
    Pow {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Difficulties (leading zero bits) to measure.
        #[arg(long, value_delimiter = ',', default_value = "16,18,20")]
        difficulty: Vec<u32>,
    },
    /// The goodput of an anonymous 3-hop stream on loopback with zero mixing delay, against a
    /// direct libp2p stream and the crypto-bound rate measured in the same run.
    Stream {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Bytes to stream.
        #[arg(long, default_value_t = 64 << 20)]
        bytes: usize,
        /// Measure with the settings tuned for throughput (no per-peer read limit, no send or
        /// stream jitter, 1 ms coalescing) instead of the defaults a user gets.
        #[arg(long)]
        tuned: bool,
        /// Streams to measure one after another; the median one is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Delivery of messages against random packet loss (0 to 30 %) for the default stream
    /// settings, in virtual time over a simulated mixnet running the real stream code.
    Loss {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Messages per loss rate.
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 256 * 1024)]
        bytes: usize,
    },
    /// Mix nodes on loopback forwarding 3-hop traffic with zero mixing delay, against the
    /// crypto-only rate of hop processing measured in the same run.
    Node {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Packets pushed through the network in the throughput phase.
        #[arg(long, default_value_t = 30_000)]
        packets: usize,
        /// Also measure one node forwarding on 1..N cores (hop workers) and report `scaling`,
        /// and nodes on 1..N cores building and sending --packets/4 one-packet messages.
        #[arg(long)]
        cores: Option<usize>,
        /// With `--cores`: the nodes on 1..N cores take turns this many times; `scaling` is
        /// the median of the turns.
        #[arg(long, default_value_t = 10)]
        segments: usize,
    },
}

fn parse_preset(text: &str) -> Result<mix_stream::StreamConfig, String> {
    match text {
        "interactive" => Ok(mix_stream::StreamConfig::interactive()),
        "high-anonymity" => Ok(mix_stream::StreamConfig::high_anonymity()),
        other => Err(format!("unknown preset {other:?}: interactive or high-anonymity")),
    }
}

fn parse_paths(text: &str) -> Result<PathSelection, String> {
    match text {
        "random" => Ok(PathSelection::Random),
        "rtt" => Ok(PathSelection::Rtt),
        "hybrid" => Ok(PathSelection::Hybrid { candidates: 8, randomness: 0.5 }),
        // The testnet's paths have 3 hops: two that delay, then the exit.
        "layered" => Ok(PathSelection::Layered { layers: 2 }),
        other => Err(format!("unknown path selection {other:?}: random, rtt, hybrid or layered")),
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Runs the command on the command line.
pub fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Testnet(args) => testnet(args),
        Command::SendFile { file, to, key, bootstrap, listen, preset } => {
            init_tracing("warn");
            let key = transfer::parse_key(&key)?;
            runtime()?
                .block_on(transfer::send_file(&file, &to, key, listen, &bootstrap, preset))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Receive { dir, bootstrap, listen, count } => {
            init_tracing("warn");
            runtime()?.block_on(transfer::receive(&dir, listen, &bootstrap, count))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config, metrics, bootstrap } => {
            init_tracing("info");
            let mut loaded = config::load(&config)?;
            config::add_bootstrap(&mut loaded.spec, &bootstrap)?;
            runtime()?.block_on(run_node(loaded, metrics))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { dir, listen, advertise, bootstrap, force } => {
            let written = init::write(&init::Options { dir, listen, advertise, bootstrap, force })?;
            let config = written.config.display();
            println!("wrote {config} (peer id {})", written.peer_id);
            println!("start the node: mixnode run --config {config}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { advertise } => {
            print!("{}", keygen::generate(&advertise)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Vectors { command: VectorsCommand::Verify { files } } => vectors::verify(&files),
        Command::Sim { command: SimCommand::Gossip(args) } => {
            sim::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim { command: SimCommand::Mix(args) } => {
            sim_mix::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { command } => bench(command),
    }
}

/// `mixnode testnet`: in one process, or one process per node (`--processes`).
fn testnet(args: TestnetArgs) -> anyhow::Result<ExitCode> {
    let TestnetArgs {
        nodes,
        messages,
        requests,
        rate,
        delay_ms,
        surbs,
        quic,
        metrics,
        seed,
        static_pool,
        copies,
        churn,
        paths,
        wire,
        cover,
        epoch_secs,
        pow,
        stream_bytes,
        json,
        keep_running,
        gossip_messages,
        processes,
        phase_secs,
        down_ms,
    } = args;
    init_tracing("warn");
    if processes {
        let options = cluster::Options {
            nodes,
            rate: rate.min(200.0),
            delay_ms,
            phase: Duration::from_secs(phase_secs.max(1)),
            down: Duration::from_millis(down_ms),
            progress: !json,
        };
        let report = runtime()?.block_on(cluster::run(options))?;
        emit(json, &report, cluster::print)?;
        return Ok(ExitCode::SUCCESS);
    }
    let options = testnet::Options {
        nodes,
        messages,
        requests,
        rate,
        delay_ms,
        quic,
        surbs: surbs.max(1),
        request_timeout: Duration::from_secs(10),
        progress: !json,
        metrics,
        seed,
        discovery: !static_pool,
        copies: copies.max(1),
        churn: churn.filter(|f| *f > 0.0 && *f < 1.0),
        paths,
        wire,
        cover: cover.filter(|r| r.is_finite() && *r > 0.0),
        epoch: epoch_secs.map(|s| Duration::from_secs(s.max(3))),
        pow: pow.map(|d| d.min(28)),
        stream_bytes: Some(stream_bytes).filter(|n| *n > 0),
        keep_running,
        gossip_messages,
    };
    let rt = runtime()?;
    let (report, nodes) = rt.block_on(testnet::run(options))?;
    emit(json, &report, testnet::print)?;
    if let Some(first) = nodes.first() {
        let at = first.addr.clone().with(libp2p::multiaddr::Protocol::P2p(first.peer_id));
        eprintln!("the testnet keeps running until interrupted (Ctrl-C)");
        eprintln!("bootstrap: {at}");
        rt.block_on(tokio::signal::ctrl_c())?;
    }
    drop(nodes);
    Ok(ExitCode::SUCCESS)
}

/// Prints `report` as pretty JSON, or for people with `print`.
fn emit<T: serde::Serialize>(json: bool, report: &T, print: impl FnOnce(&T)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print(report);
    }
    Ok(())
}

/// `mixnode bench …`: each benchmark, its report printed or as JSON.
fn bench(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Sphinx { json, rounds, batch_ms } => {
            let report = bench::sphinx::run(rounds.max(1), Duration::from_millis(batch_ms.max(1)));
            emit(json, &report, bench::sphinx::print)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Flood {
            json,
            honest_pps,
            baseline_secs,
            flood_secs,
            recovery_secs,
            no_read_limit,
            shapes,
        } => {
            init_tracing("warn");
            if !(honest_pps.is_finite() && honest_pps > 0.0) {
                anyhow::bail!("--honest-pps must be positive");
            }
            let shapes = if shapes.is_empty() { bench::flood::Shape::ALL.to_vec() } else { shapes };
            let report = runtime()?.block_on(bench::flood::run(bench::flood::Options {
                honest_pps,
                baseline_s: baseline_secs.max(1),
                flood_s: flood_secs.max(1),
                recovery_s: recovery_secs.max(1),
                read_limit: !no_read_limit,
                shapes,
            }))?;
            emit(json, &report, bench::flood::print)?;
            Ok(if report.met() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        BenchCommand::Pow { json, difficulty } => {
            if let Some(d) = difficulty.iter().find(|d| **d > 28) {
                anyhow::bail!("difficulty {d} would take hours; measure at most 28 bits");
            }
            let report = bench::pow::run(&difficulty);
            emit(json, &report, bench::pow::print)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Stream { json, bytes, tuned, runs } => {
            init_tracing("warn");
            let report =
                runtime()?.block_on(bench::stream::run(bytes.max(1 << 20), tuned, runs))?;
            emit(json, &report, bench::stream::print)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Loss { json, messages, bytes } => {
            let report = bench::loss::run(messages.max(1), bytes);
            emit(json, &report, bench::loss::print)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Node { json, packets, cores, segments } => {
            init_tracing("warn");
            let report = runtime()?.block_on(bench::node::run(packets, cores, segments))?;
            emit(json, &report, bench::node::print)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_node(loaded: config::Loaded, metrics: Option<SocketAddr>) -> anyhow::Result<()> {
    let core = &loaded.spec.config.core;
    let (wire, overridden) =
        (core.wire, core.format_override.is_some() || core.delay_semantics_override.is_some());
    // Listening for the stop signals before the node starts: one that comes while it starts
    // must stop it cleanly too.
    let stop = stop_signal()?;
    tokio::pin!(stop);
    let stop_drain = loaded.stop_drain;
    let mut spec = loaded.spec;
    if spec.config.state_dir.is_none() {
        if spec.config.core.rotation.is_none() {
            tracing::warn!(
                "this node keeps its mix key across restarts (no [rotation]) but has no \
                 network.state_dir: after a restart, every packet it processed before can be \
                 replayed to it. Set network.state_dir, or turn rotation on"
            );
        }
        // Without a state directory a restart looks like a first start, and the stream key
        // (the node's own) survives it: refuse the openings an earlier run may have taken.
        spec.streams.after_restart = true;
    }
    let mut node = runtime::start(spec).await?;
    tracing::info!(peer_id = %node.peer_id, addr = %node.addr, mix_key = %hex::encode(node.mix_key.as_bytes()), %wire, overridden, "mix node running");
    if let Some(addr) = metrics.or(loaded.metrics) {
        let mut registry = prometheus_client::registry::Registry::default();
        node.metrics.register(&mut registry);
        node.stream_metrics.register(&mut registry);
        if let Some(g) = &node.gossip_metrics {
            g.register(&mut registry);
        }
        if let Some(d) = &node.discovery_metrics {
            d.register(&mut registry);
        }
        let bound = metrics_http::serve(addr, registry).await?;
        tracing::info!("metrics on http://{bound}/metrics");
    }
    let mut events = node.take_events().context("events")?;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => tracing::info!(?event, "event"),
                None => anyhow::bail!("the node stopped"),
            },
            signal = &mut stop => {
                // Packets held for mixing leave when due (for at most `stop_drain`), then the
                // swarm goes away and saves the replay state (a clean stop): without it, a
                // restart would forget the packets of the last save interval, and they could
                // be replayed. A second signal stops at once (the state is still saved).
                tracing::info!(signal, ?stop_drain, "shutting down");
                let second = stop_signal()?;
                tokio::select! {
                    report = node.shutdown(stop_drain) => {
                        tracing::info!(held = report.held, sent_on = report.sent_on, dropped = report.dropped, refused = report.refused, took_ms = report.took_ms, "stopped");
                    }
                    signal = second => tracing::warn!(signal, "stopping at once"),
                }
                node.stop();
                return Ok(());
            }
        }
    }
}

/// Resolves with the signal's name at Ctrl-C (SIGINT) or SIGTERM (what service managers send);
/// on Unix both are caught from the moment this is called.
fn stop_signal() -> anyhow::Result<impl Future<Output = &'static str>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    })
}
