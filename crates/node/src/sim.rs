//! `mixnode sim gossip`: the gossip layer's simulator, driven from the command line or a
//! scenario file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use mix_sim::scenario::{
    AdversaryName, CrashModelName, DaySpec, ForwardingSpec, RebroadcasterSource, RotationSpec,
    RouteName,
};
use mix_sim::{Report, Scenario};
use serde::Serialize;

/// What the command line sets; anything left out comes from the scenario file, or else the
/// defaults (1,000 nodes, 50 % crash, 10 % spies, direct route, immediate forwarding).
#[derive(Debug, clap::Args)]
pub(crate) struct GossipArgs {
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    /// A TOML scenario (see crates/sim/scenarios/); flags override its settings.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Nodes.
    #[arg(long)]
    nodes: Option<usize>,
    /// Share of the nodes that crash at once after the steady state; 0 for none.
    #[arg(long)]
    crash: Option<f64>,
    /// How survivors learn of the crash: reset (connections reset at once) or silent
    /// (messages to the dead are lost until connections time out after 5 s).
    #[arg(long, value_parser = parse_crash_model)]
    crash_model: Option<CrashModelName>,
    /// Share of the nodes that are spies (first-spy estimator); 0 for none.
    #[arg(long)]
    spies: Option<f64>,
    /// Route of publications: direct, stem or mix.
    #[arg(long, value_parser = parse_route)]
    route: Option<RouteName>,
    /// Forwarding: immediate, window (150 ms, batches up to 64) or poisson (mean 50 ms, cap
    /// 500 ms).
    #[arg(long, value_parser = parse_forwarding)]
    forwarding: Option<ForwardingSpec>,
    /// Rotate one neighbour every 180 ± 60 s.
    #[arg(long)]
    rotation: bool,
    /// Then run this many virtual seconds with rotation and a broadcast every 30 s (86400
    /// for a day); implies --rotation.
    #[arg(long)]
    day_secs: Option<u64>,
    /// Steady-state broadcasts.
    #[arg(long)]
    broadcasts: Option<usize>,
    /// Broadcasts of the spy experiment (each by a random honest node).
    #[arg(long)]
    spy_broadcasts: Option<usize>,
    /// Seed of everything random.
    #[arg(long)]
    seed: Option<u64>,
    /// The attacker of the spy experiment: first-spy, timing, repeated, placed or sybil
    /// (the share of its identities is --spies, 10 % by default for placed and sybil).
    #[arg(long, value_parser = parse_adversary)]
    adversary: Option<AdversaryName>,
    /// Where mix publishers draw rebroadcasters from: directory (shared by every node) or
    /// views (their own views, the rule before the directory).
    #[arg(long, value_parser = parse_rebroadcasters)]
    rebroadcasters: Option<RebroadcasterSource>,
    /// Lift membership's defences against Sybils (per-source contact caps, request
    /// budgets, one walk eviction per interval), as the code was before them.
    #[arg(long)]
    unhardened: bool,
    /// Neighbourhood size: with a directory, neighbours only among the nearest this many
    /// members by a pairwise pseudo-random distance (either end's); 0 lets any peer in.
    #[arg(long)]
    neighbourhood: Option<usize>,
    /// Messages per watched publisher (repeated adversary).
    #[arg(long)]
    repeated_messages: Option<usize>,
    /// Publishers watched (repeated adversary).
    #[arg(long)]
    repeated_publishers: Option<usize>,
}

fn parse_adversary(text: &str) -> Result<AdversaryName, String> {
    match text {
        "first-spy" => Ok(AdversaryName::FirstSpy),
        "timing" => Ok(AdversaryName::Timing),
        "repeated" => Ok(AdversaryName::Repeated),
        "placed" => Ok(AdversaryName::Placed),
        "sybil" => Ok(AdversaryName::Sybil),
        other => Err(format!(
            "unknown adversary {other:?}: first-spy, timing, repeated, placed or sybil"
        )),
    }
}

fn parse_rebroadcasters(text: &str) -> Result<RebroadcasterSource, String> {
    match text {
        "directory" => Ok(RebroadcasterSource::Directory),
        "views" => Ok(RebroadcasterSource::Views),
        other => Err(format!("unknown rebroadcasters {other:?}: directory or views")),
    }
}

fn parse_route(text: &str) -> Result<RouteName, String> {
    match text {
        "direct" => Ok(RouteName::Direct),
        "stem" => Ok(RouteName::Stem),
        "mix" => Ok(RouteName::Mix),
        other => Err(format!("unknown route {other:?}: direct, stem or mix")),
    }
}

fn parse_crash_model(text: &str) -> Result<CrashModelName, String> {
    match text {
        "reset" => Ok(CrashModelName::Reset),
        "silent" => Ok(CrashModelName::Silent),
        other => Err(format!("unknown crash model {other:?}: reset or silent")),
    }
}

fn parse_forwarding(text: &str) -> Result<ForwardingSpec, String> {
    match text {
        "immediate" => Ok(ForwardingSpec::Immediate),
        "window" => Ok(ForwardingSpec::Window { window_ms: 150, max_batch: 64 }),
        "poisson" => Ok(ForwardingSpec::Poisson { mean_ms: 50, cap_ms: 500 }),
        other => Err(format!("unknown forwarding {other:?}: immediate, window or poisson")),
    }
}

const ROTATION: RotationSpec = RotationSpec { interval_s: 180, jitter_s: 60, count: 1 };

/// The scenario the arguments describe.
pub(crate) fn scenario(args: &GossipArgs) -> anyhow::Result<Scenario> {
    let mut s = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Scenario::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Scenario { crash: Some(0.5), spies: Some(0.1), ..Scenario::default() },
    };
    let share = |x: f64| (x > 0.0).then_some(x);
    if let Some(n) = args.nodes {
        s.nodes = n;
    }
    if let Some(c) = args.crash {
        s.crash = share(c);
    }
    if let Some(m) = args.crash_model {
        s.crash_model = m;
    }
    if let Some(f) = args.spies {
        s.spies = share(f);
    }
    if let Some(r) = args.route {
        s.route = r;
    }
    if let Some(f) = args.forwarding {
        s.forwarding = f;
    }
    if let Some(b) = args.broadcasts {
        s.broadcasts = b;
    }
    if let Some(b) = args.spy_broadcasts {
        s.spy_broadcasts = b;
    }
    if let Some(seed) = args.seed {
        s.seed = seed;
    }
    if let Some(a) = args.adversary {
        s.adversary = a;
    }
    if let Some(r) = args.rebroadcasters {
        s.rebroadcasters = r;
    }
    if args.unhardened {
        s.hardened = false;
    }
    if let Some(n) = args.neighbourhood {
        s.neighbourhood = Some(n);
    }
    if let Some(m) = args.repeated_messages {
        s.repeated_messages = m;
    }
    if let Some(p) = args.repeated_publishers {
        s.repeated_publishers = p;
    }
    if args.rotation || args.day_secs.is_some() {
        s.rotation = s.rotation.or(Some(ROTATION));
    }
    if let Some(secs) = args.day_secs {
        s.day = Some(DaySpec { duration_s: secs, broadcast_every_s: 30 });
    }
    s.validate()?;
    Ok(s)
}

#[derive(Debug, Serialize)]
struct Output<'a> {
    scenario: &'a Scenario,
    #[serde(flatten)]
    report: &'a Report,
    wall_secs: f64,
}

/// Runs the simulation and prints what it measured.
pub(crate) fn run(args: &GossipArgs) -> anyhow::Result<()> {
    let scenario = scenario(args)?;
    let started = Instant::now();
    let report = scenario.run();
    let wall_secs = started.elapsed().as_secs_f64();
    if args.json {
        let out = Output { scenario: &scenario, report: &report, wall_secs };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print(&scenario, &report, wall_secs);
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn print(s: &Scenario, r: &Report, wall_secs: f64) {
    println!(
        "gossip simulation: {} nodes, route {:?}, forwarding {:?}, rotation {}, seed {}",
        r.nodes,
        r.route,
        r.forwarding,
        s.rotation
            .map_or("off".to_owned(), |r| format!("every {} ± {} s", r.interval_s, r.jitter_s)),
        s.seed,
    );
    println!("  steady state ({} broadcasts)", s.broadcasts);
    println!(
        "    delivery            {} (lowest {})",
        pct(r.delivery_steady),
        pct(r.delivery_steady_min)
    );
    println!("    RMR                 {:.3} (highest {:.3})", r.rmr, r.rmr_max);
    println!("    last delivery hop   {:.1} (highest {})", r.ldh_mean, r.ldh_max);
    println!(
        "    completion          {:.0} ms mean, {:.1} grafts per broadcast",
        r.completion_ms_mean, r.grafts_per_broadcast
    );
    if let Some(b) = r.batch_mean {
        println!("    forwarding batch    {b:.2} messages mean");
    }
    if let (Some(share), Some(success)) = (r.spy_fraction, r.spy_success) {
        println!(
            "  attacker {:?} ({} of the nodes, {} broadcasts; rebroadcasters from {:?}; membership {})",
            r.adversary,
            pct(share),
            s.spy_broadcasts,
            r.rebroadcasters,
            if r.hardened { "hardened" } else { "unhardened" }
        );
        if let (Some(a), Some(p)) = (r.sybil_share_active, r.sybil_share_passive) {
            println!("    its share of views  {} active, {} passive", pct(a), pct(p));
        }
        println!("    publisher named     {}", pct(success));
        if let Some(rep) = &r.repeated {
            println!(
                "    one publisher, {} messages: named {} ({} publishers), rank {:.1} mean, {:.1} median of {}",
                rep.messages,
                pct(rep.named),
                rep.publishers,
                rep.rank_mean,
                rep.rank_median,
                rep.candidates
            );
        }
    }
    if let Some(share) = r.crashed {
        println!("  crash of {} of the nodes at once ({:?})", pct(share), s.crash_model);
        let rest: Vec<String> = r.delivery_after_crash.iter().map(|d| pct(*d)).collect();
        println!(
            "    first broadcast     {}",
            r.delivery_first_after_crash.map_or("-".into(), pct)
        );
        println!("    broadcasts after    {}", rest.join(", "));
        let ms: Vec<String> =
            r.completion_ms_after_crash.iter().map(|m| format!("{m:.0}")).collect();
        println!("    their completion    {} ms", ms.join(", "));
    }
    if let Some(d) = &r.day {
        println!("  {} virtual seconds with rotation ({} broadcasts)", d.duration_s, d.broadcasts);
        println!("    delivery            {} (lowest {})", pct(d.delivery), pct(d.delivery_min));
        println!("    rotations           {}", d.rotations);
        println!(
            "    neighbour repair    {:.0} ms median, {:.0} ms 95th percentile",
            d.repair_ms_p50, d.repair_ms_p95
        );
        println!(
            "    completion          {:.0} ms mean, {:.1} grafts per broadcast, RMR {:.3}",
            d.completion_ms_mean, d.grafts_per_broadcast, d.rmr
        );
    }
    println!("  ({wall_secs:.1} s of wall time)");
}
