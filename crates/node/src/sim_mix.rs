//! `mixnode sim mix`: the mixnet's anonymity against a global passive adversary with corrupt
//! nodes, on the node's own core in virtual time (method and limits: crates/sim/MIXNET.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use mix_sim::mixnet::{MixScenario, MixSimReport};
use serde::Serialize;

use crate::sim_plot;

/// What the command line sets.
#[derive(Debug, clap::Args)]
pub(crate) struct MixArgs {
    /// Print JSON (one object, or one per sweep row) instead of a summary.
    #[arg(long)]
    json: bool,
    /// A scenario file (crates/sim/scenarios/mix-*.toml); every setting has a default.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Change one setting, `name=value` (repeatable), e.g. `--set paths=rtt`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Run once per value, `name=v1,v2,...`, and print one row per setting; repeat for a
    /// grid.
    #[arg(long, value_name = "NAME=V1,V2,...")]
    sweep: Vec<String>,
    /// Mix nodes (shorthand for --set nodes=N).
    #[arg(long)]
    nodes: Option<usize>,
    /// Messages sent in all (shorthand).
    #[arg(long)]
    messages: Option<usize>,
    /// Messages per second per sender (shorthand).
    #[arg(long)]
    rate: Option<f64>,
    /// Mean exponential delay per hop in ms (shorthand).
    #[arg(long)]
    delay_ms: Option<f64>,
    /// Share of the nodes that are corrupt, 0 to 1 (shorthand).
    #[arg(long)]
    corrupt: Option<f64>,
    /// Seed of every random choice (shorthand).
    #[arg(long)]
    seed: Option<u64>,
    /// Write what the observer saw (links.csv) and the ground truth (truth.csv, nodes.csv)
    /// into this directory; format in crates/sim/MIXNET.md. Single runs only.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Write SVG charts into this directory: normalised entropy and latency against the mean
    /// delay, the cover rate and the path mode, each a sweep around the scenario.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Runs at once in a sweep (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Row {
    /// The swept settings of this row.
    setting: Vec<(String, String)>,
    corrupt_share: f64,
    hop_delay_ms: f64,
    path_len: usize,
    copies: usize,
    cover: String,
    cover_rate: f64,
    traffic: String,
    seconds: f64,
    #[serde(flatten)]
    report: MixSimReport,
}

impl Row {
    pub(crate) fn report(&self) -> &MixSimReport {
        &self.report
    }
}

/// The settings a sweep changed (name, value) and the scenario they make.
pub(crate) type Point = (Vec<(String, String)>, MixScenario);

/// The scenario the arguments describe.
fn base(args: &MixArgs) -> anyhow::Result<MixScenario> {
    let mut s = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            MixScenario::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => MixScenario::default(),
    };
    let shorthand = [
        args.nodes.map(|v| format!("nodes={v}")),
        args.messages.map(|v| format!("messages={v}")),
        args.rate.map(|v| format!("rate={v}")),
        args.delay_ms.map(|v| format!("hop_delay_ms={v}")),
        args.corrupt.map(|v| format!("corrupt={v}")),
        args.seed.map(|v| format!("seed={v}")),
    ];
    for assignment in shorthand.into_iter().flatten().chain(args.set.iter().cloned()) {
        s = s.with_assignment(&assignment)?;
    }
    Ok(s)
}

/// Every combination of the sweeps' values, each with its settings.
fn grid(base: &MixScenario, sweeps: &[String]) -> anyhow::Result<Vec<Point>> {
    let mut rows = vec![(Vec::new(), base.clone())];
    for sweep in sweeps {
        let (name, values) = sweep
            .split_once('=')
            .with_context(|| format!("--sweep {sweep:?} is not name=v1,v2,..."))?;
        let mut next = Vec::new();
        for (setting, scenario) in &rows {
            for value in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                let s = scenario.with_setting(name.trim(), value)?;
                let mut setting = setting.clone();
                setting.push((name.trim().to_owned(), value.to_owned()));
                next.push((setting, s));
            }
        }
        rows = next;
    }
    Ok(rows)
}

/// Runs every scenario, `threads` at a time, and keeps their order.
pub(crate) fn run_all(scenarios: Vec<Point>, threads: usize) -> Vec<Row> {
    let total = scenarios.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let rows = std::sync::Mutex::new(Vec::with_capacity(total));
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, total.max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((setting, s)) = scenarios.get(i) else { break };
                    let started = Instant::now();
                    let report = mix_sim::mixnet::run(s);
                    let row = row(setting.clone(), s, report, started.elapsed().as_secs_f64());
                    rows.lock().unwrap_or_else(|e| e.into_inner()).push((i, row));
                }
            });
        }
    });
    let mut rows = rows.into_inner().unwrap_or_else(|e| e.into_inner());
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, r)| r).collect()
}

fn row(setting: Vec<(String, String)>, s: &MixScenario, report: MixSimReport, seconds: f64) -> Row {
    Row {
        setting,
        corrupt_share: report.corrupt as f64 / report.nodes as f64,
        hop_delay_ms: s.hop_delay_ms,
        path_len: s.path_len,
        copies: s.copies,
        cover: spelled(&s.cover),
        cover_rate: s.cover_rate,
        traffic: spelled(&s.traffic),
        seconds,
        report,
    }
}

/// A setting's value as a scenario file spells it.
fn spelled<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Runs the simulation and prints what the adversary learned.
pub(crate) fn run(args: &MixArgs) -> anyhow::Result<()> {
    let base = base(args)?;
    let threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if let Some(dir) = &args.plot {
        let written = sim_plot::write_charts(&base, dir, threads)?;
        for path in written {
            eprintln!("wrote {}", path.display());
        }
    }
    let scenarios = grid(&base, &args.sweep)?;
    if let Some(dir) = &args.trace {
        anyhow::ensure!(scenarios.len() == 1, "--trace writes one run: drop --sweep");
        let started = Instant::now();
        let (report, trace) = mix_sim::mixnet::run_traced(&base, true);
        let trace = trace.context("the run kept no trace")?;
        trace.write(dir).with_context(|| format!("writing the trace into {}", dir.display()))?;
        eprintln!("wrote {} link rows into {}", trace.links.len(), dir.display());
        print_rows(args.json, &[row(Vec::new(), &base, report, started.elapsed().as_secs_f64())])?;
        return Ok(());
    }
    let rows = run_all(scenarios, threads);
    print_rows(args.json, &rows)
}

fn print_rows(json: bool, rows: &[Row]) -> anyhow::Result<()> {
    if json {
        let text = match rows {
            [one] if one.setting.is_empty() => serde_json::to_string_pretty(one)?,
            _ => serde_json::to_string_pretty(rows)?,
        };
        println!("{text}");
        return Ok(());
    }
    for row in rows {
        let r = &row.report;
        if !row.setting.is_empty() {
            let setting: Vec<String> =
                row.setting.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("[{}]", setting.join(" "));
        }
        println!(
            "  {} nodes ({} corrupt), {} clients, {} traffic: {} sent, {} delivered ({} refused); {} ms mean delay per hop, {} hops, {} paths, {} cop{}, cover {} ({}/s); {} packets on links ({} cover) over {:.1} virtual s, ran {:.2} s",
            r.nodes,
            r.corrupt,
            r.clients,
            row.traffic,
            r.messages,
            r.delivered,
            r.refused,
            row.hop_delay_ms,
            row.path_len,
            r.mode,
            row.copies,
            if row.copies == 1 { "y" } else { "ies" },
            row.cover,
            row.cover_rate,
            r.packets,
            r.cover_packets,
            r.virtual_seconds,
            row.seconds
        );
        println!(
            "  senders: {:.2} bits, normalised mean {:.3} (p5 {:.3}) over {} senders; top-1 linkage {:.1} %",
            r.entropy_bits_mean,
            r.entropy_normalised_mean,
            r.entropy_normalised_p5,
            r.senders,
            r.top1_linkage * 100.0
        );
        println!(
            "  an adversary who also knows the latency map and how paths are chosen: normalised mean {:.3}, top-1 {:.1} %",
            r.path_aware_entropy_normalised_mean,
            r.path_aware_top1_linkage * 100.0
        );
        println!(
            "  an adversary who weighs held packets by how fast they leave: normalised mean {:.3}, top-1 {:.1} %",
            r.rate_aware_entropy_normalised_mean,
            r.rate_aware_top1_linkage * 100.0
        );
        println!(
            "  the strongest of these by top-1: {} at {:.1} %; the lowest mean entropy of them {:.3}",
            r.strongest_adversary,
            r.strongest_top1_linkage * 100.0,
            r.lowest_entropy_normalised_mean
        );
        println!(
            "  receivers: normalised mean {:.3}, top-1 {:.1} %; latency p50 {:.1} ms, p95 {:.1} ms",
            r.receiver_entropy_normalised_mean,
            r.receiver_top1_linkage * 100.0,
            r.latency_ms_p50,
            r.latency_ms_p95
        );
        if let Some(l) = &r.linked {
            println!(
                "  a receiver linking {} groups (streams, bursts, copies): normalised mean {:.3}, top-1 {:.1} %",
                l.groups,
                l.entropy_normalised_mean,
                l.top1_linkage * 100.0
            );
        }
        if let Some(p) = &r.replies {
            println!(
                "  replies: {} of {} back; requester hidden at normalised {:.3}, top-1 {:.1} %; the destination linking reply and request: {:.3}, top-1 {:.1} %; round trip p50 {:.1} ms",
                p.delivered,
                p.sent,
                p.receiver_entropy_normalised_mean,
                p.receiver_top1_linkage * 100.0,
                p.linked_entropy_normalised_mean,
                p.linked_top1_linkage * 100.0,
                p.round_trip_ms_p50
            );
        }
    }
    Ok(())
}
