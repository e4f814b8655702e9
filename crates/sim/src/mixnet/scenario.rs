//! What a mixnet simulation runs: a TOML scenario (`crates/sim/scenarios/mix-*.toml`), every
//! field optional, and single settings changed by name for sweeps (`--set`, `--sweep`).

use serde::{Deserialize, Serialize};

/// How senders send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficKind {
    /// One-way messages at Poisson times.
    Poisson,
    /// Requests at Poisson times, each answered at once by its destination through the SURBs
    /// it carries.
    RequestReply,
    /// Bursts of `burst` messages to one destination at Poisson times (the node's send jitter
    /// spaces a burst's packets).
    Bursts,
    /// Streams of `stream_bytes` at Poisson times: the stream's shards, one packet each, to one
    /// destination, spaced by `stream_jitter_ms` as the stream layer spaces them.
    Stream,
}

/// Path selection, as the node offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathMode {
    /// Uniform.
    Random,
    /// Weighted by 1 / RTT from the sender.
    Rtt,
    /// Uniform candidates, then RTT weights mixed with a uniform share.
    Hybrid,
    /// Stratified: `path_len` − 1 layers, the i-th delaying hop from layer i (Loopix, Nym).
    Layered,
}

impl PathMode {
    /// The name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Rtt => "rtt",
            Self::Hybrid => "hybrid",
            Self::Layered => "layered",
        }
    }
}

/// Cover traffic, as the node offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoverKind {
    /// None.
    Off,
    /// Poisson loops at `cover_rate`, on top of real traffic.
    Loops,
    /// Loopix: Poisson slots at `cover_rate` carrying a real packet or a drop, and Poisson
    /// loops at `loop_rate`.
    Loopix,
}

/// A mixnet simulation's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixScenario {
    /// Mix nodes; every node forwards, and a share `senders` of them also send.
    pub nodes: usize,
    /// Clients: they send (with the same cover traffic as the nodes) but do not forward,
    /// as `mixnode` with `serve = false`. A mixnet's anonymity grows with its traffic, and
    /// a network with many users per mix node gets its traffic from clients.
    pub clients: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Messages (requests, bursts' messages, streams' shards) sent in all.
    pub messages: usize,
    /// Share of the nodes that send real traffic.
    pub senders: f64,
    /// How they send.
    pub traffic: TrafficKind,
    /// Messages, requests, bursts or streams per second per sender (Poisson).
    pub rate: f64,
    /// Messages per burst.
    pub burst: usize,
    /// SURBs per request.
    pub surbs: usize,
    /// Bytes per stream.
    pub stream_bytes: usize,
    /// Longest random gap between two shards of a stream.
    pub stream_jitter_ms: f64,
    /// Mean of the exponential delay at each hop.
    pub hop_delay_ms: f64,
    /// Mean of the exponential delay before a node's own packet leaves it.
    pub pre_send_delay_ms: f64,
    /// Longest random gap between two own packets of a node (`Config::send_jitter`).
    pub send_jitter_ms: f64,
    /// Mix hops per path (3 to 5).
    pub path_len: usize,
    /// Copies of each message over independent paths (1 to 3).
    pub copies: usize,
    /// Path selection.
    pub paths: PathMode,
    /// Hybrid selection: the size of the uniform candidate set.
    pub hybrid_candidates: usize,
    /// Hybrid selection: the share of uniform choice (1 is uniform).
    pub hybrid_randomness: f64,
    /// Cover traffic.
    pub cover: CoverKind,
    /// Loops (`loops`) or slots (`loopix`) per second per node.
    pub cover_rate: f64,
    /// Loops per second per node (`loopix`).
    pub loop_rate: f64,
    /// Whether mix nodes run cover traffic too (clients always do when `cover` is on).
    pub node_cover: bool,
    /// One-way latency between the two closest nodes.
    pub latency_min_ms: f64,
    /// One-way latency between the two farthest nodes.
    pub latency_max_ms: f64,
    /// Share of the nodes that are corrupt.
    pub corrupt: f64,
    /// Virtual seconds of cover traffic before the first real message.
    pub warmup_s: f64,
}

impl Default for MixScenario {
    fn default() -> Self {
        Self {
            nodes: 50,
            clients: 0,
            seed: 1,
            messages: 2_000,
            senders: 1.0,
            traffic: TrafficKind::Poisson,
            rate: 5.0,
            burst: 10,
            surbs: 2,
            stream_bytes: 1_000_000,
            stream_jitter_ms: 0.2,
            hop_delay_ms: 20.0,
            pre_send_delay_ms: 5.0,
            send_jitter_ms: 0.0,
            path_len: 3,
            copies: 1,
            paths: PathMode::Random,
            hybrid_candidates: 8,
            hybrid_randomness: 0.5,
            cover: CoverKind::Off,
            cover_rate: 2.0,
            loop_rate: 2.0,
            node_cover: true,
            latency_min_ms: 5.0,
            latency_max_ms: 60.0,
            corrupt: 0.0,
            warmup_s: 1.0,
        }
    }
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MixScenarioError {
    /// The file or a setting does not parse.
    #[error("scenario: {0}")]
    Parse(#[from] toml::de::Error),
    /// `--set` or `--sweep` names no setting, or is not `name=value`.
    #[error("scenario: {0}")]
    Setting(String),
    /// A setting is out of range.
    #[error("scenario: {0}")]
    Invalid(&'static str),
}

/// Frames of a 1 MB stream with the stream layer's defaults, measured on real swarms
/// (`crates/stream/tests/network.rs`: 683 frames for 1 MB of stream and 1 MB of message):
/// data shards of about 3.9 kB, parity for the assumed initial loss, acknowledgements not
/// counted (they travel back through SURBs).
const STREAM_FRAMES_PER_MB: f64 = 341.5;

impl MixScenario {
    /// Parses a TOML scenario and checks it.
    pub fn from_toml(text: &str) -> Result<Self, MixScenarioError> {
        let s: Self = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// The same scenario with `name` set to `value` (a TOML value: `50`, `0.2`, `"rtt"`; a
    /// bare word is read as a string).
    pub fn with_setting(&self, name: &str, value: &str) -> Result<Self, MixScenarioError> {
        let mut table = toml::Table::try_from(self)
            .map_err(|e| MixScenarioError::Setting(format!("cannot encode the scenario: {e}")))?;
        if !table.contains_key(name) {
            return Err(MixScenarioError::Setting(format!(
                "no setting named {name:?} (settings: {})",
                table.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.to_owned())),
            Err(_) => toml::Value::String(value.to_owned()),
        };
        // An integer setting given as 20.0, or a float given as 20, is what the user meant.
        let parsed = match (&table[name], parsed) {
            (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
            (toml::Value::Integer(_), toml::Value::Float(f)) if f.fract() == 0.0 => {
                toml::Value::Integer(f as i64)
            }
            (_, v) => v,
        };
        table.insert(name.to_owned(), parsed);
        let s: Self = table.try_into()?;
        s.validate()?;
        Ok(s)
    }

    /// Applies `name=value`.
    pub fn with_assignment(&self, assignment: &str) -> Result<Self, MixScenarioError> {
        let (name, value) = assignment.split_once('=').ok_or_else(|| {
            MixScenarioError::Setting(format!("{assignment:?} is not name=value"))
        })?;
        self.with_setting(name.trim(), value.trim())
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), MixScenarioError> {
        use MixScenarioError::Invalid;
        let share = |x: f64| (0.0..=1.0).contains(&x);
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !(3..=5).contains(&self.path_len) {
            return Err(Invalid("path_len must be 3 to 5"));
        }
        if !(4..=5_000).contains(&self.nodes) {
            return Err(Invalid("nodes must be 4 to 5000"));
        }
        if self.clients > 5_000 || self.nodes + self.clients > 6_000 {
            // Every honest pool holds a probability per participant.
            return Err(Invalid("clients must be at most 5000, nodes and clients at most 6000"));
        }
        if self.nodes < self.path_len + 2 {
            return Err(Invalid("a path needs path_len nodes besides its two ends"));
        }
        if !(1..=3).contains(&self.copies) {
            return Err(Invalid("copies must be 1 to 3"));
        }
        if !share(self.senders) || !share(self.corrupt) || !share(self.hybrid_randomness) {
            return Err(Invalid("senders, corrupt and hybrid_randomness are shares from 0 to 1"));
        }
        if !(0.001..=10_000.0).contains(&self.rate) {
            return Err(Invalid("rate must be 0.001 to 10000 per second"));
        }
        if !(1..=5_000_000).contains(&self.messages) {
            return Err(Invalid("messages must be 1 to 5000000"));
        }
        if (self.senders * self.nodes as f64).round() < 1.0 && self.clients == 0 {
            return Err(Invalid("nobody sends: raise senders or add clients"));
        }
        if self.cover_rate > 10_000.0 || self.loop_rate > 10_000.0 {
            return Err(Invalid("cover_rate and loop_rate must be at most 10000 per second"));
        }
        for x in [
            self.stream_jitter_ms,
            self.hop_delay_ms,
            self.pre_send_delay_ms,
            self.send_jitter_ms,
            self.cover_rate,
            self.loop_rate,
            self.latency_min_ms,
            self.warmup_s,
        ] {
            if !non_negative(x) {
                return Err(Invalid("delays, rates and latencies must be non-negative numbers"));
            }
        }
        if !(self.latency_max_ms.is_finite() && self.latency_max_ms >= self.latency_min_ms) {
            return Err(Invalid("latency_max_ms must be at least latency_min_ms"));
        }
        let delays = [
            self.hop_delay_ms,
            self.pre_send_delay_ms,
            self.send_jitter_ms,
            self.stream_jitter_ms,
            self.latency_max_ms,
        ];
        if delays.iter().any(|&d| d > 60_000.0) || self.warmup_s > 3_600.0 {
            return Err(Invalid("delays and latencies at most 60000 ms, warmup_s at most 3600"));
        }
        if self.traffic == TrafficKind::RequestReply && !(1..=8).contains(&self.surbs) {
            return Err(Invalid("surbs must be 1 to 8"));
        }
        if self.traffic == TrafficKind::Bursts && !(1..=1_000).contains(&self.burst) {
            return Err(Invalid("burst must be 1 to 1000"));
        }
        if self.traffic == TrafficKind::Stream && !(1..=100_000_000).contains(&self.stream_bytes) {
            return Err(Invalid("stream_bytes must be 1 to 100000000"));
        }
        if self.cover != CoverKind::Off && self.cover_rate <= 0.0 {
            return Err(Invalid("cover needs a positive cover_rate"));
        }
        if self.hybrid_candidates < self.path_len {
            return Err(Invalid("hybrid_candidates must be at least path_len"));
        }
        Ok(())
    }

    /// Messages a sender sends at each of its Poisson times.
    pub fn group_size(&self) -> usize {
        match self.traffic {
            TrafficKind::Poisson | TrafficKind::RequestReply => 1,
            TrafficKind::Bursts => self.burst,
            TrafficKind::Stream => {
                ((self.stream_bytes as f64 / 1e6 * STREAM_FRAMES_PER_MB).ceil() as usize).max(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_change_by_name_and_bad_ones_are_named() {
        let s = MixScenario::default();
        let t = s.with_assignment("hop_delay_ms=100").unwrap();
        assert_eq!(t.hop_delay_ms, 100.0);
        let t = t.with_assignment("paths=rtt").unwrap();
        assert_eq!(t.paths, PathMode::Rtt);
        let t = t.with_assignment("copies = 2").unwrap();
        assert_eq!(t.copies, 2);
        let err = s.with_assignment("delay=3").unwrap_err().to_string();
        assert!(err.contains("no setting named \"delay\""), "{err}");
        let err = s.with_assignment("copies=9").unwrap_err().to_string();
        assert!(err.contains("copies must be 1 to 3"), "{err}");
        assert!(s.with_assignment("paths=sideways").is_err());
        assert!(s.with_assignment("nonsense").is_err());
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        for (name, text) in [
            ("mix-testnet-defaults", include_str!("../../scenarios/mix-testnet-defaults.toml")),
            ("mix-nym-like", include_str!("../../scenarios/mix-nym-like.toml")),
        ] {
            MixScenario::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let stream = MixScenario { traffic: TrafficKind::Stream, ..MixScenario::default() };
        assert_eq!(stream.group_size(), 342);
    }
}
