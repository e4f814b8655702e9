//! Gossip scenarios (TOML files or command-line settings) and their reports.
//!
//! A run builds the network, lets membership settle, then measures in order: steady-state
//! broadcasts; the spy experiment (if spies are set); a crash of a share of the nodes and the
//! broadcasts after it (if a crash is set); and a long run with rotation (if `day` is set).

use std::time::Duration;

use std::collections::HashMap;

use mix_gossip::proto::{BroadcastConfig, Config, Forwarding, RotationConfig};
use mix_gossip::{Rebroadcasters, Route};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::adversary;
use crate::gossip::{Attack, CrashModel, Latency, Network, Peer, Role};

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

/// Which attacker the spy experiment plays (see [`crate::adversary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AdversaryName {
    /// Passive spies; the first spy's sender is named.
    #[default]
    FirstSpy,
    /// Passive spies that know the latency model and use every spy's reception time; on
    /// the mix route, spies chosen as rebroadcasters also weigh who could have chosen them.
    Timing,
    /// The timing attacker watching one publisher over many messages
    /// (`repeated_messages` each, `repeated_publishers` of them), accumulating evidence.
    Repeated,
    /// Timing attackers whose nodes make themselves neighbours of as many nodes as they can
    /// (accept everyone, high-priority neighbour requests, never leave).
    Placed,
    /// [`AdversaryName::Placed`] plus view poisoning: every contact they hand out names one
    /// of them. Their nodes are in place from the start, before publications.
    Sybil,
}

/// Where publishers draw mix rebroadcasters from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RebroadcasterSource {
    /// A directory every node shares (the mixnet's signed discovery records; here, every
    /// node).
    #[default]
    Directory,
    /// The publisher's own views (the rule before the directory).
    Views,
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
    /// The attacker the spy experiment plays.
    pub adversary: AdversaryName,
    /// Where mix rebroadcasters come from.
    pub rebroadcasters: RebroadcasterSource,
    /// Membership with this project's defences against Sybils (per-source contact caps,
    /// request budgets, one walk eviction per interval); `false` lifts those limits, as the
    /// code was before them (shuffle replies are still checked against their shuffle).
    pub hardened: bool,
    /// Neighbourhood size ([`mix_gossip::proto::MembershipConfig::neighbourhood`]) if not the
    /// default; 0 lets any peer be a neighbour.
    pub neighbourhood: Option<usize>,
    /// Publishers the repeated-publisher attacker watches.
    pub repeated_publishers: usize,
    /// Messages each of them publishes.
    pub repeated_messages: usize,
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
            adversary: AdversaryName::FirstSpy,
            rebroadcasters: RebroadcasterSource::Directory,
            hardened: true,
            neighbourhood: None,
            repeated_publishers: 10,
            repeated_messages: 100,
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
    /// The attacker of the spy experiment.
    pub adversary: AdversaryName,
    /// Where mix rebroadcasters came from.
    pub rebroadcasters: RebroadcasterSource,
    /// Whether membership ran with its defences against Sybils.
    pub hardened: bool,
    /// Share of spy-experiment messages whose publisher the attacker named (credited
    /// `1/k` for a tie of `k` candidates that holds it).
    pub spy_success: Option<f64>,
    /// The first-spy estimator's success on the same messages (for comparison).
    pub first_spy_success: Option<f64>,
    /// The spies' share of the nodes.
    pub spy_fraction: Option<f64>,
    /// Mean share of the attacker's nodes in honest nodes' active views, when the spy
    /// experiment starts.
    pub sybil_share_active: Option<f64>,
    /// The same in passive views.
    pub sybil_share_passive: Option<f64>,
    /// The repeated-publisher attacker's result.
    pub repeated: Option<RepeatedReport>,
    /// Mean forwarding batch size (window mode).
    pub batch_mean: Option<f64>,
    /// The long run with rotation.
    pub day: Option<DayReport>,
}

/// What the attacker watching single publishers over many messages concluded.
#[derive(Debug, Clone, Serialize)]
pub struct RepeatedReport {
    /// Publishers watched.
    pub publishers: usize,
    /// Messages each published.
    pub messages: usize,
    /// Share of publishers named (credited `1/k` for a tie of `k`).
    pub named: f64,
    /// Mean rank of the publisher among all honest nodes by the evidence (1: first).
    pub rank_mean: f64,
    /// Median rank.
    pub rank_median: f64,
    /// Honest candidates.
    pub candidates: usize,
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
        if self.repeated_publishers > 1000 || self.repeated_messages > 10_000 {
            return Err(ScenarioError::Invalid(
                "repeated_publishers at most 1000, repeated_messages at most 10000",
            ));
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
        let mut config = Config {
            broadcast,
            forwarding: self.forwarding.into(),
            rotation: self.rotation.map(|r| RotationConfig {
                interval: Duration::from_secs(r.interval_s),
                jitter: Duration::from_secs(r.jitter_s),
                count: r.count,
            }),
            ..Config::default()
        };
        config.mix.rebroadcasters = match self.rebroadcasters {
            RebroadcasterSource::Directory => Rebroadcasters::Directory,
            RebroadcasterSource::Views => Rebroadcasters::Views,
        };
        if let Some(n) = self.neighbourhood {
            config.membership.neighbourhood = n;
        }
        if !self.hardened {
            let m = &mut config.membership;
            m.contacts_per_source = m.passive_view;
            m.request_burst = u32::MAX;
            m.request_interval = Duration::from_millis(1);
            m.walk_eviction_interval = Duration::ZERO;
            m.neighbourhood = 0;
        }
        config
    }

    /// The attacker's nodes and conduct, for the adversaries that act from the start.
    fn attack(&self) -> Attack {
        let role = match self.adversary {
            AdversaryName::Placed => Role::Placed,
            AdversaryName::Sybil => Role::Sybil,
            _ => return Attack::default(),
        };
        let share = self.spies.unwrap_or(0.1);
        let mut rng = ChaCha20Rng::seed_from_u64(self.seed ^ 0xa77ac4);
        let mut all: Vec<Peer> = (0..self.nodes as Peer).collect();
        let n = ((self.nodes as f64) * share).round() as usize;
        for i in 0..n.min(all.len()) {
            let j = rng.random_range(i..all.len());
            all.swap(i, j);
        }
        all.truncate(n);
        // As many neighbours as they can hold, contacts to hand out, shuffles often, and no
        // rotation: they never let go.
        let mut config = self.config();
        config.membership.active_view = 30;
        config.membership.passive_view = 100;
        config.membership.shuffle_interval = Duration::from_secs(5);
        config.membership.neighbourhood = 0;
        config.rotation = None;
        Attack { nodes: all.into_iter().collect(), role, config: Some(config) }
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
        let mut net = Network::with_attack(
            self.nodes,
            &self.config(),
            Box::new(|_| Network::allow_all()),
            self.latency(),
            self.bootstrap,
            self.seed,
            self.attack(),
            self.rebroadcasters == RebroadcasterSource::Directory,
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

        let active_attack = net.attackers().len();
        let spies = self.spies.or((active_attack > 0).then_some(0.1));
        let mut shares = None;
        let mut repeated = None;
        let mut first_spy = None;
        let spy_success = spies.map(|share| {
            if active_attack == 0 {
                net.pick_spies(share);
            }
            shares = Some(view_shares(&net));
            if self.adversary == AdversaryName::Repeated {
                repeated = Some(self.watch_publishers(&mut net, route, limit, gap));
            }
            let (mut named, mut first) = (0.0, 0.0);
            let mut total = 0;
            for _ in 0..self.spy_broadcasts {
                let Some(publisher) = honest_publisher(&mut net) else { break };
                if let Some(id) = net.broadcast(publisher, route, limit) {
                    total += 1;
                    let by_first = net.traces[&id].first_spy;
                    let by_first =
                        f64::from(u8::from(by_first.is_some_and(|(_, _, from)| from == publisher)));
                    first += by_first;
                    named += if self.adversary == AdversaryName::FirstSpy {
                        by_first
                    } else {
                        adversary::credit(&name_publisher(&net, &id), publisher)
                    };
                    net.traces.remove(&id);
                }
                net.run_for(gap);
            }
            first_spy = Some(first / f64::from(total.max(1)));
            named / f64::from(total.max(1))
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
            adversary: self.adversary,
            rebroadcasters: self.rebroadcasters,
            hardened: self.hardened,
            spy_success,
            first_spy_success: first_spy,
            spy_fraction: spies,
            sybil_share_active: shares.map(|s| s.0),
            sybil_share_passive: shares.map(|s| s.1),
            repeated,
            batch_mean: (!batch_sizes.is_empty())
                .then(|| batch_sizes.iter().sum::<usize>() as f64 / batch_sizes.len() as f64),
            day,
        }
    }
}

impl Scenario {
    /// The repeated-publisher experiment: each watched publisher publishes its messages, the
    /// attacker adds up its evidence per candidate, then names the best.
    fn watch_publishers(
        &self,
        net: &mut Network,
        route: Route,
        limit: Duration,
        gap: Duration,
    ) -> RepeatedReport {
        let candidates = honest_candidates(net);
        let (mut named, mut ranks) = (0.0, Vec::new());
        for _ in 0..self.repeated_publishers {
            let Some(publisher) = honest_publisher(net) else { break };
            let mut scores: HashMap<Peer, f64> = candidates.iter().map(|c| (*c, 0.0)).collect();
            for _ in 0..self.repeated_messages {
                if let Some(id) = net.broadcast(publisher, route, limit) {
                    let t = &net.traces[&id];
                    if route == Route::Mix {
                        // Every attempt is evidence, whoever it was handed to.
                        let views = candidate_views(net);
                        adversary::mix_likelihood(
                            &mut scores,
                            &t.rebroadcasters,
                            net.attackers_or_spies(),
                            &pools(net, &views),
                        );
                    } else {
                        let guess = name_publisher(net, &id);
                        for g in &guess {
                            if let Some(s) = scores.get_mut(g) {
                                *s += 1.0 / guess.len() as f64;
                            }
                        }
                    }
                    net.traces.remove(&id);
                }
                net.run_for(gap);
            }
            named += adversary::credit(&adversary::best(&scores), publisher);
            ranks.push(adversary::rank(&scores, publisher));
        }
        let watched = ranks.len();
        let rank_mean = ranks.iter().sum::<f64>() / watched.max(1) as f64;
        RepeatedReport {
            publishers: watched,
            messages: self.repeated_messages,
            named: named / watched.max(1) as f64,
            rank_mean,
            rank_median: percentile(&mut ranks, 0.5),
            candidates: candidates.len(),
        }
    }
}

/// A random live node that is neither a spy nor the attacker's.
fn honest_publisher(net: &mut Network) -> Option<Peer> {
    for _ in 0..10_000 {
        let p = net.random_alive()?;
        if !net.attackers_or_spies().contains(&p) {
            return Some(p);
        }
    }
    None
}

/// Live nodes that are not the attacker's, sorted.
fn honest_candidates(net: &Network) -> Vec<Peer> {
    let mut v: Vec<Peer> =
        net.alive().into_iter().filter(|p| !net.attackers_or_spies().contains(p)).collect();
    v.sort_unstable();
    v
}

/// Every honest node's views (active and passive), sorted.
fn candidate_views(net: &Network) -> HashMap<Peer, Vec<Peer>> {
    honest_candidates(net).into_iter().map(|c| (c, net.views(c))).collect()
}

fn pools<'a>(net: &Network, views: &'a HashMap<Peer, Vec<Peer>>) -> adversary::Pools<'a> {
    if net.uses_directory() {
        adversary::Pools::Directory { n: net.len() }
    } else {
        adversary::Pools::Views(views)
    }
}

/// Mean share of the attacker's nodes (or spies) in honest nodes' active and passive views.
fn view_shares(net: &Network) -> (f64, f64) {
    let ours = net.attackers_or_spies();
    let topic = net.topic();
    let (mut active, mut passive, mut n) = (0.0, 0.0, 0usize);
    for c in honest_candidates(net) {
        let Some(s) = net.node(c) else { continue };
        let share = |v: &[Peer]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().filter(|p| ours.contains(p)).count() as f64 / v.len() as f64
            }
        };
        active += share(s.neighbors(&topic));
        passive += share(s.contacts(&topic));
        n += 1;
    }
    (active / n.max(1) as f64, passive / n.max(1) as f64)
}

/// The timing attacker's guess for message `id` (see [`crate::adversary`]): on the mix
/// route, when one of its nodes was handed the publication, who could have chosen it;
/// otherwise the timing estimator.
fn name_publisher(net: &Network, id: &mix_gossip::MessageId) -> adversary::Named {
    let t = &net.traces[id];
    let ours = net.attackers_or_spies();
    let candidates = honest_candidates(net);
    if t.rebroadcasters.iter().any(|r| ours.contains(r)) {
        let views = candidate_views(net);
        let mut scores: HashMap<Peer, f64> = candidates.iter().map(|c| (*c, 0.0)).collect();
        adversary::mix_likelihood(&mut scores, &t.rebroadcasters, ours, &pools(net, &views));
        return adversary::best(&scores);
    }
    let l = net.latency_model();
    adversary::timing(&t.observations, ours, (l.min, l.max))
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
