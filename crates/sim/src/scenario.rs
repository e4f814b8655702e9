//! Gossip scenarios (TOML files or command-line settings) and their reports.
//!
//! A run builds the network, lets membership settle, then measures in order: steady-state
//! broadcasts; the spy experiment (if spies are set); a crash of a share of the nodes and the
//! broadcasts after it (if a crash is set); and a long run with rotation (if `day` is set).

use std::time::Duration;

use mix_gossip::proto::{BroadcastConfig, Forwarding, RotationConfig};
use mix_gossip::{Config, Route};
use serde::{Deserialize, Serialize};

use crate::gossip::{CrashModel, Latency, Network, Peer};

/// How publications are routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RouteName {
    /// Broadcast from the publisher.
    #[default]
    Direct,
    /// Dandelion++ stem first.
    Stem,
    /// Through the mixnet to a random member.
    Mix,
}

impl From<RouteName> for Route {
    fn from(r: RouteName) -> Self {
        match r {
            RouteName::Direct => Self::Direct,
            RouteName::Stem => Self::Stem,
            RouteName::Mix => Self::Mix,
        }
    }
}

/// How survivors learn of a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CrashModelName {
    /// Connections reset: survivors hear one latency later.
    #[default]
    Reset,
    /// Hosts vanish: messages to them are lost until connections time out.
    Silent,
}

impl From<CrashModelName> for CrashModel {
    fn from(m: CrashModelName) -> Self {
        match m {
            CrashModelName::Reset => Self::Reset,
            CrashModelName::Silent => Self::Silent,
        }
    }
}

/// The forwarding scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum ForwardingSpec {
    /// At once.
    #[default]
    Immediate,
    /// Batch and shuffle.
    Window {
        /// Window in ms.
        window_ms: u64,
        /// Early flush.
        max_batch: usize,
    },
    /// Independent exponential delays.
    Poisson {
        /// Mean in ms.
        mean_ms: u64,
        /// Cap in ms.
        cap_ms: u64,
    },
}

impl From<ForwardingSpec> for Forwarding {
    fn from(f: ForwardingSpec) -> Self {
        match f {
            ForwardingSpec::Immediate => Self::Immediate,
            ForwardingSpec::Window { window_ms, max_batch } => {
                Self::Window { window: Duration::from_millis(window_ms), min_batch: 1, max_batch }
            }
            ForwardingSpec::Poisson { mean_ms, cap_ms } => Self::Poisson {
                mean: Duration::from_millis(mean_ms),
                cap: Duration::from_millis(cap_ms),
            },
        }
    }
}

/// A long run with rotation.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaySpec {
    /// Virtual seconds to run.
    pub duration_s: u64,
    /// A broadcast every this many seconds.
    pub broadcast_every_s: u64,
}

/// Rotation settings.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RotationSpec {
    /// Mean seconds between rotations.
    pub interval_s: u64,
    /// Jitter, ± seconds.
    pub jitter_s: u64,
    /// Neighbours per rotation.
    pub count: usize,
}

/// A scenario.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Nodes.
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Earlier nodes each node joins through.
    pub bootstrap: usize,
    /// Least one-way latency (ms).
    pub latency_min_ms: u64,
    /// Greatest one-way latency (ms).
    pub latency_max_ms: u64,
    /// Virtual seconds for membership to settle before measuring.
    pub warmup_s: u64,
    /// Forwarding scheduler.
    pub forwarding: ForwardingSpec,
    /// The graft timeout in ms (before the forwarding delay is added), if not the default.
    pub graft_timeout_ms: Option<u64>,
    /// Rotation (off if absent).
    pub rotation: Option<RotationSpec>,
    /// Route of publications.
    pub route: RouteName,
    /// Broadcasts before measuring (the first ones flood every link until PlumTree prunes
    /// the duplicates).
    pub warmup_broadcasts: usize,
    /// Steady-state broadcasts.
    pub broadcasts: usize,
    /// Virtual milliseconds between broadcasts.
    pub gap_ms: u64,
    /// A broadcast counts the nodes it reached within this many virtual seconds.
    pub limit_s: u64,
    /// Share of the nodes that crash at once after the steady state.
    pub crash: Option<f64>,
    /// How survivors learn of the crash.
    pub crash_model: CrashModelName,
    /// Under the silent model, how long a connection to a dead node takes to time out (ms);
    /// by default what the gossip driver's liveness check takes at most.
    pub silent_detect_ms: u64,
    /// Broadcasts after the crash (the first right after it).
    pub after_crash: usize,
    /// Share of the nodes that are spies.
    pub spies: Option<f64>,
    /// Broadcasts of the spy experiment.
    pub spy_broadcasts: usize,
    /// A long run with rotation.
    pub day: Option<DaySpec>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            nodes: 1000,
            seed: 1,
            bootstrap: 3,
            latency_min_ms: 10,
            latency_max_ms: 50,
            warmup_s: 130,
            forwarding: ForwardingSpec::Immediate,
            graft_timeout_ms: None,
            rotation: None,
            route: RouteName::Direct,
            warmup_broadcasts: 5,
            broadcasts: 50,
            gap_ms: 1000,
            limit_s: 30,
            crash: None,
            crash_model: CrashModelName::Reset,
            silent_detect_ms: crate::gossip::silent_detect_default().as_millis() as u64,
            after_crash: 5,
            spies: None,
            spy_broadcasts: 300,
            day: None,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// The route used.
    pub route: RouteName,
    /// The scheduler used.
    pub forwarding: ForwardingSpec,
    /// Mean share of live nodes that delivered a steady-state broadcast.
    pub delivery_steady: f64,
    /// The lowest of them.
    pub delivery_steady_min: f64,
    /// Mean relative message redundancy.
    pub rmr: f64,
    /// Greatest relative message redundancy.
    pub rmr_max: f64,
    /// Mean last delivery hop.
    pub ldh_mean: f64,
    /// Greatest last delivery hop.
    pub ldh_max: u32,
    /// Mean time to the last delivery, in ms.
    pub completion_ms_mean: f64,
    /// Grafts per steady-state broadcast.
    pub grafts_per_broadcast: f64,
    /// Share of survivors reached by the first broadcast after the crash.
    pub delivery_first_after_crash: Option<f64>,
    /// Share of survivors reached by each broadcast after the crash, in order.
    pub delivery_after_crash: Vec<f64>,
    /// Time to the last delivery of each broadcast after the crash, in ms.
    pub completion_ms_after_crash: Vec<f64>,
    /// The crash's share of nodes.
    pub crashed: Option<f64>,
    /// Share of spy-experiment messages whose publisher the first-spy estimator named.
    pub spy_success: Option<f64>,
    /// The spies' share of the nodes.
    pub spy_fraction: Option<f64>,
    /// Mean forwarding batch size (window mode).
    pub batch_mean: Option<f64>,
    /// The long run with rotation.
    pub day: Option<DayReport>,
}

/// What the long run measured.
#[derive(Debug, Clone, Serialize)]
pub struct DayReport {
    /// Virtual seconds run.
    pub duration_s: u64,
    /// Broadcasts.
    pub broadcasts: usize,
    /// Mean delivery.
    pub delivery: f64,
    /// Lowest delivery.
    pub delivery_min: f64,
    /// Neighbours rotated out.
    pub rotations: u64,
    /// From a neighbour rotated out to its replacement up, in ms: median and 95th percentile.
    pub repair_ms_p50: f64,
    /// 95th percentile.
    pub repair_ms_p95: f64,
    /// Grafts per broadcast: eager links the tree had to regain while the message spread
    /// (each costs the graft timeout at the node that sent it).
    pub grafts_per_broadcast: f64,
    /// Mean time to the last delivery, in ms.
    pub completion_ms_mean: f64,
    /// Mean RMR.
    pub rmr: f64,
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file does not parse.
    #[error("scenario: {0}")]
    Parse(#[from] toml::de::Error),
    /// A setting is out of range.
    #[error("scenario: {0}")]
    Invalid(&'static str),
    /// The gossip settings it makes cannot work.
    #[error("scenario: {0}")]
    Config(#[from] mix_gossip::ConfigError),
}

impl Scenario {
    /// Parses a TOML scenario.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let s: Self = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let share = |x: Option<f64>| x.is_none_or(|x| (0.0..1.0).contains(&x));
        if self.nodes < 10 || self.nodes > 100_000 {
            return Err(ScenarioError::Invalid("nodes must be 10 to 100000"));
        }
        if !share(self.crash) || !share(self.spies) {
            return Err(ScenarioError::Invalid("crash and spies are shares below 1"));
        }
        if self.latency_min_ms > self.latency_max_ms {
            return Err(ScenarioError::Invalid("latency_min_ms exceeds latency_max_ms"));
        }
        self.config().validate()?;
        Ok(())
    }

    fn config(&self) -> Config {
        let mut broadcast = BroadcastConfig::default();
        if let Some(ms) = self.graft_timeout_ms {
            broadcast.graft_timeout = Duration::from_millis(ms);
        }
        Config {
            broadcast,
            forwarding: self.forwarding.into(),
            rotation: self.rotation.map(|r| RotationConfig {
                interval: Duration::from_secs(r.interval_s),
                jitter: Duration::from_secs(r.jitter_s),
                count: r.count,
            }),
            ..Config::default()
        }
    }

    fn latency(&self) -> Latency {
        Latency {
            min: Duration::from_millis(self.latency_min_ms),
            max: Duration::from_millis(self.latency_max_ms),
            silent_detect: Duration::from_millis(self.silent_detect_ms),
            ..Latency::default()
        }
    }

    /// Runs the scenario.
    pub fn run(&self) -> Report {
        let mut net = Network::new(
            self.nodes,
            &self.config(),
            Network::allow_all(),
            self.latency(),
            self.bootstrap,
            self.seed,
        );
        net.run_for(Duration::from_secs(self.warmup_s));
        let gap = Duration::from_millis(self.gap_ms);
        let limit = Duration::from_secs(self.limit_s.max(1));
        let route: Route = self.route.into();

        for _ in 0..self.warmup_broadcasts {
            if let Some(publisher) = net.random_alive() {
                net.broadcast(publisher, route, limit);
            }
            net.run_for(gap);
        }
        let mut deliveries = Vec::new();
        let (mut rmrs, mut ldhs, mut durations) = (Vec::new(), Vec::new(), Vec::new());
        let mut grafts = Vec::new();
        for _ in 0..self.broadcasts {
            let Some(publisher) = net.random_alive() else { break };
            let alive = net.alive();
            if let Some(id) = net.broadcast(publisher, route, limit) {
                let t = &net.traces[&id];
                deliveries.push(t.delivery(&alive));
                rmrs.push(t.rmr());
                ldhs.push(t.ldh());
                durations.push(t.duration().as_secs_f64() * 1000.0);
                grafts.push(t.grafts as f64);
            }
            net.run_for(gap);
        }
        let batch_sizes = net.take_batch_sizes();

        let spy_success = self.spies.map(|share| {
            net.pick_spies(share);
            let mut named = 0;
            let mut total = 0;
            for _ in 0..self.spy_broadcasts {
                let publisher = loop {
                    let Some(p) = net.random_alive() else { break None };
                    if !net.spies.contains(&p) {
                        break Some(p);
                    }
                };
                let Some(publisher) = publisher else { break };
                if let Some(id) = net.broadcast(publisher, route, limit) {
                    total += 1;
                    if net.traces[&id].first_spy.is_some_and(|(_, _, from)| from == publisher) {
                        named += 1;
                    }
                }
                net.run_for(gap);
            }
            named as f64 / total.max(1) as f64
        });

        let (mut after_crash, mut after_crash_ms) = (Vec::new(), Vec::new());
        if let Some(share) = self.crash {
            net.crash_with(share, &[], self.crash_model.into());
            for i in 0..self.after_crash {
                if i > 0 {
                    net.run_for(gap);
                }
                let Some(publisher) = net.random_alive() else { break };
                let alive = net.alive();
                if let Some(id) = net.broadcast(publisher, route, limit) {
                    let t = &net.traces[&id];
                    after_crash.push(t.delivery(&alive));
                    after_crash_ms.push(t.duration().as_secs_f64() * 1000.0);
                }
            }
        }

        let day = self.day.map(|d| run_day(&mut net, d, route, limit));

        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        Report {
            nodes: self.nodes,
            route: self.route,
            forwarding: self.forwarding,
            delivery_steady: mean(&deliveries),
            delivery_steady_min: deliveries.iter().copied().fold(f64::INFINITY, f64::min).min(1.0),
            rmr: mean(&rmrs),
            rmr_max: rmrs.iter().copied().fold(0.0, f64::max),
            ldh_mean: mean(&ldhs.iter().map(|&h| f64::from(h)).collect::<Vec<_>>()),
            ldh_max: ldhs.iter().copied().max().unwrap_or(0),
            completion_ms_mean: mean(&durations),
            grafts_per_broadcast: mean(&grafts),
            delivery_first_after_crash: after_crash.first().copied(),
            delivery_after_crash: after_crash,
            completion_ms_after_crash: after_crash_ms,
            crashed: self.crash,
            spy_success,
            spy_fraction: self.spies,
            batch_mean: (!batch_sizes.is_empty())
                .then(|| batch_sizes.iter().sum::<usize>() as f64 / batch_sizes.len() as f64),
            day,
        }
    }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

fn run_day(net: &mut Network, d: DaySpec, route: Route, limit: Duration) -> DayReport {
    let end = net.now + Duration::from_secs(d.duration_s);
    let every = Duration::from_secs(d.broadcast_every_s.max(1));
    let limit = every.min(limit);
    let rotations_before = net.counters.rotations;
    net.repair_times.clear();
    let (mut deliveries, mut rmrs) = (Vec::new(), Vec::new());
    let (mut grafts, mut completions) = (Vec::new(), Vec::new());
    while net.now < end {
        let Some(publisher) = net.random_alive() else { break };
        let alive = net.alive();
        let started = net.now;
        if let Some(id) = net.broadcast(publisher, route, limit) {
            let t = &net.traces[&id];
            deliveries.push(t.delivery(&alive));
            rmrs.push(t.rmr());
            completions.push(t.duration().as_secs_f64() * 1000.0);
            grafts.push(t.grafts as f64);
            // Forget old traces: a day is long.
            let old: Vec<_> = net
                .traces
                .iter()
                .filter(|(_, t)| t.started.is_some_and(|s| s < started))
                .map(|(id, _)| *id)
                .collect();
            for id in old {
                net.traces.remove(&id);
            }
        }
        let next = started + every;
        net.run_until(next.max(net.now));
    }
    let mut repair: Vec<f64> = net.repair_times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    DayReport {
        duration_s: d.duration_s,
        broadcasts: deliveries.len(),
        delivery: mean(&deliveries),
        delivery_min: deliveries.iter().copied().fold(f64::INFINITY, f64::min).min(1.0),
        rotations: net.counters.rotations - rotations_before,
        repair_ms_p50: percentile(&mut repair, 0.5),
        repair_ms_p95: percentile(&mut repair, 0.95),
        grafts_per_broadcast: mean(&grafts),
        completion_ms_mean: mean(&completions),
        rmr: mean(&rmrs),
    }
}

/// The spies are drawn among these (kept for tests that fix them).
pub fn non_spies(net: &Network) -> Vec<Peer> {
    let mut v: Vec<Peer> = net.alive().into_iter().filter(|p| !net.spies.contains(p)).collect();
    v.sort_unstable();
    v
}
