//! `node.toml`: a real node's configuration, validated on load.
//!
//! See `crates/node/node.example.toml` for a documented example.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, identity};
use libp2p_mix::StaticPool;
use libp2p_mix::core::{
    DelaySemantics, DelayStrategy, ExponentialDelay, MixNode, NoDelay, ReplayConfig, UniformDelay,
    Wire,
};
use mix_sphinx::{NodePublicKey, NodeSecretKey, Padding, PayloadCipher, WireFormat};
use serde::Deserialize;

use crate::runtime::{DiscoverySpec, NodeSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    identity: IdentityConfig,
    network: NetworkConfig,
    #[serde(default)]
    mix: MixConfig,
    #[serde(default)]
    pool: Vec<PoolEntry>,
    discovery: Option<DiscoveryConfig>,
    metrics: Option<MetricsConfig>,
    #[serde(default)]
    cover: CoverSection,
    spam: Option<SpamSection>,
    rotation: Option<RotationSection>,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    streams: StreamsSection,
    gossip: Option<GossipSection>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum ForwardingName {
    Immediate,
    Window,
    Poisson,
}

/// Privacy-hardened gossip (`mix-gossip`); on when the section is present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GossipSection {
    topics: Vec<String>,
    bootstrap: Vec<Multiaddr>,
    forwarding: ForwardingName,
    window_ms: u64,
    max_batch: usize,
    poisson_mean_ms: u64,
    poisson_cap_ms: u64,
    rotation: bool,
    rotation_interval_s: u64,
    rotation_jitter_s: u64,
    rotation_count: usize,
    active_view: usize,
    passive_view: usize,
    liveness_timeout_ms: u64,
}

impl Default for GossipSection {
    fn default() -> Self {
        let gossip = mix_gossip::proto::Config::default();
        let rotation = mix_gossip::RotationConfig::default();
        Self {
            topics: Vec::new(),
            bootstrap: Vec::new(),
            forwarding: ForwardingName::Window,
            window_ms: 150,
            max_batch: 64,
            poisson_mean_ms: 50,
            poisson_cap_ms: 500,
            rotation: true,
            rotation_interval_s: rotation.interval.as_secs(),
            rotation_jitter_s: rotation.jitter.as_secs(),
            rotation_count: rotation.count,
            active_view: gossip.membership.active_view,
            passive_view: gossip.membership.passive_view,
            liveness_timeout_ms: mix_gossip::LIVENESS_TIMEOUT.as_millis() as u64,
        }
    }
}

impl GossipSection {
    fn spec(&self) -> anyhow::Result<crate::runtime::GossipSpec> {
        use mix_gossip::Forwarding;
        let ms = Duration::from_millis;
        let forwarding = match self.forwarding {
            ForwardingName::Immediate => Forwarding::Immediate,
            ForwardingName::Window => {
                anyhow::ensure!(
                    (10..=5000).contains(&self.window_ms),
                    "gossip.window_ms must be 10 to 5000 (100 to 200 recommended)"
                );
                anyhow::ensure!(
                    (1..=1024).contains(&self.max_batch),
                    "gossip.max_batch must be 1 to 1024 (16 to 256 recommended)"
                );
                Forwarding::Window {
                    window: ms(self.window_ms),
                    min_batch: 1,
                    max_batch: self.max_batch,
                }
            }
            ForwardingName::Poisson => {
                anyhow::ensure!(
                    self.poisson_mean_ms > 0 && self.poisson_cap_ms >= self.poisson_mean_ms,
                    "gossip: poisson_mean_ms must be > 0 and poisson_cap_ms at least the mean"
                );
                Forwarding::Poisson { mean: ms(self.poisson_mean_ms), cap: ms(self.poisson_cap_ms) }
            }
        };
        let rotation = if self.rotation {
            anyhow::ensure!(
                self.rotation_interval_s >= 10 && self.rotation_jitter_s < self.rotation_interval_s,
                "gossip: rotation_interval_s must be at least 10 and above rotation_jitter_s"
            );
            anyhow::ensure!(
                (1..=2).contains(&self.rotation_count),
                "gossip.rotation_count must be 1 or 2"
            );
            Some(mix_gossip::RotationConfig {
                interval: Duration::from_secs(self.rotation_interval_s),
                jitter: Duration::from_secs(self.rotation_jitter_s),
                count: self.rotation_count,
            })
        } else {
            None
        };
        anyhow::ensure!(
            (2..=16).contains(&self.active_view) && self.passive_view >= self.active_view,
            "gossip: active_view must be 2 to 16 and passive_view at least as large"
        );
        let mut proto = mix_gossip::proto::Config {
            forwarding,
            rotation,
            ..mix_gossip::proto::Config::default()
        };
        proto.membership.active_view = self.active_view;
        proto.membership.passive_view = self.passive_view.min(256);
        proto.validate().context("[gossip]")?;
        for topic in &self.topics {
            anyhow::ensure!(!topic.is_empty(), "gossip.topics: a topic name is empty");
        }
        let bootstrap = self
            .bootstrap
            .iter()
            .map(bootstrap_peer)
            .collect::<anyhow::Result<Vec<_>>>()
            .context("gossip.bootstrap")?;
        anyhow::ensure!(
            self.liveness_timeout_ms == 0 || (500..=600_000).contains(&self.liveness_timeout_ms),
            "gossip.liveness_timeout_ms must be 0 (off) or 500 to 600000"
        );
        let liveness_timeout = (self.liveness_timeout_ms > 0).then(|| ms(self.liveness_timeout_ms));
        Ok(crate::runtime::GossipSpec {
            config: mix_gossip::Config { proto, liveness_timeout, ..mix_gossip::Config::default() },
            topics: self.topics.clone(),
            bootstrap,
        })
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum PresetName {
    Interactive,
    HighAnonymity,
}

/// Anonymous streams and messages (`mix-stream`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StreamsSection {
    accept: bool,
    preset: PresetName,
    hops: Option<usize>,
    hop_delay_ms: Option<u64>,
    jitter_ms: Option<f64>,
    data_shards: Option<u8>,
    parity: Option<u8>,
    tolerance: Option<f64>,
    compression: Option<bool>,
    window: Option<u32>,
    max_message_mb: Option<usize>,
    max_accepted: Option<usize>,
    max_accepted_mb: Option<usize>,
    opening_deadline_s: Option<u64>,
    peer_frame_rate: Option<f64>,
    peer_accept_rate: Option<f64>,
    stranger_accept_rate: Option<f64>,
    max_accepted_from_strangers: Option<usize>,
    stalled_after_s: Option<u64>,
}

impl Default for StreamsSection {
    fn default() -> Self {
        Self {
            accept: true,
            preset: PresetName::Interactive,
            hops: None,
            hop_delay_ms: None,
            jitter_ms: None,
            data_shards: None,
            parity: None,
            tolerance: None,
            compression: None,
            window: None,
            max_message_mb: None,
            max_accepted: None,
            max_accepted_mb: None,
            opening_deadline_s: None,
            peer_frame_rate: None,
            peer_accept_rate: None,
            stranger_accept_rate: None,
            max_accepted_from_strangers: None,
            stalled_after_s: None,
        }
    }
}

impl StreamsSection {
    fn config(&self) -> anyhow::Result<mix_stream::Config> {
        let mut stream = match self.preset {
            PresetName::Interactive => mix_stream::StreamConfig::interactive(),
            PresetName::HighAnonymity => mix_stream::StreamConfig::high_anonymity(),
        };
        if let Some(hops) = self.hops {
            stream.hops = hops;
        }
        if let Some(ms) = self.hop_delay_ms {
            stream.hop_delay = Some(Duration::from_millis(ms));
        }
        if let Some(ms) = self.jitter_ms {
            anyhow::ensure!(ms.is_finite() && ms >= 0.0, "streams.jitter_ms must be >= 0");
            stream.jitter = Duration::from_secs_f64(ms / 1000.0);
        }
        if let Some(k) = self.data_shards {
            stream.data_shards = k;
        }
        match (self.parity, self.tolerance) {
            (Some(_), Some(_)) => bail!("streams: give parity or tolerance, not both"),
            (Some(m), None) => stream.redundancy = mix_stream::Redundancy::Parity(m),
            (None, Some(t)) => stream.redundancy = mix_stream::Redundancy::Tolerance(t),
            (None, None) => {}
        }
        if let Some(on) = self.compression {
            stream.compression = on.then_some(1);
        }
        if let Some(window) = self.window {
            stream.window = window;
        }
        stream.validate().context("[streams]")?;
        let mut config = mix_stream::Config { stream, ..mix_stream::Config::default() };
        if let Some(mb) = self.max_message_mb {
            config.max_message_len = mb.saturating_mul(1 << 20);
        }
        if let Some(n) = self.max_accepted {
            config.max_accepted = n;
        }
        if let Some(mb) = self.max_accepted_mb {
            config.max_accepted_bytes = mb.saturating_mul(1 << 20);
        }
        if let Some(s) = self.opening_deadline_s {
            config.opening_deadline = Duration::from_secs(s.max(1));
        }
        for (name, rate) in [
            ("peer_frame_rate", self.peer_frame_rate),
            ("peer_accept_rate", self.peer_accept_rate),
            ("stranger_accept_rate", self.stranger_accept_rate),
        ] {
            if let Some(r) = rate {
                anyhow::ensure!(r.is_finite() && r >= 1.0, "streams.{name} must be at least 1");
            }
        }
        if let Some(r) = self.peer_frame_rate {
            config.peer_frame_rate = Some(r);
        }
        if let Some(r) = self.peer_accept_rate {
            config.peer_accept_rate = r;
        }
        if let Some(r) = self.stranger_accept_rate {
            config.stranger_accept_rate = r;
        }
        if let Some(n) = self.max_accepted_from_strangers {
            config.max_accepted_from_strangers = n;
        }
        if let Some(s) = self.stalled_after_s {
            config.stalled_after = Duration::from_secs(s.max(1));
        }
        Ok(config)
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum CoverModeName {
    Off,
    Loops,
    Loopix,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CoverSection {
    mode: CoverModeName,
    rate: f64,
    loop_rate: Option<f64>,
    loop_timeout_s: u64,
    rate_budget: Option<f64>,
}

impl Default for CoverSection {
    fn default() -> Self {
        Self {
            mode: CoverModeName::Off,
            rate: 2.0,
            loop_rate: None,
            loop_timeout_s: 20,
            rate_budget: None,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum PlacementName {
    Exit,
    PerHop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpamSection {
    placement: PlacementName,
    #[serde(default = "default_difficulty")]
    difficulty: u32,
}

fn default_difficulty() -> u32 {
    18
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(default)]
struct RotationSection {
    /// On by default wherever discovery runs (which spreads the new keys); a node with only a
    /// static pool cannot rotate, since its peers know one key for it.
    enabled: bool,
    epoch_s: u64,
    overlap_s: u64,
}

impl Default for RotationSection {
    fn default() -> Self {
        let r = libp2p_mix::core::RotationConfig::default();
        Self { enabled: true, epoch_s: r.epoch.as_secs(), overlap_s: r.overlap.as_secs() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsSection {
    inbound_frame_rate: Option<f64>,
    inbound_burst: u32,
    max_inbound_streams: usize,
    max_connections_per_peer: usize,
    max_delayed_packets: usize,
    penalty_frame_rate: Option<f64>,
    penalty_s: u64,
    max_exit_jobs: usize,
    max_exit_jobs_per_destination: usize,
    exit_dial_rate: f64,
    exit_dial_burst: u32,
    pool_per_24: usize,
    pool_per_16: usize,
    pool_max_nodes: usize,
    pool_max_unreached: usize,
    /// Unset: exempt only when the node is local itself (see [`local_rules`]).
    pool_exempt_local: Option<bool>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = libp2p_mix::Config::default();
        let p = libp2p_mix::core::SubnetLimits::default();
        Self {
            inbound_frame_rate: d.inbound_frame_rate,
            inbound_burst: d.inbound_burst,
            max_inbound_streams: d.max_inbound_streams,
            max_connections_per_peer: d.max_connections_per_peer,
            max_delayed_packets: d.core.max_delayed_packets,
            penalty_frame_rate: d.penalty_frame_rate,
            penalty_s: d.penalty.as_secs(),
            max_exit_jobs: d.max_exit_jobs,
            max_exit_jobs_per_destination: d.max_exit_jobs_per_destination,
            exit_dial_rate: d.exit_dial_rate,
            exit_dial_burst: d.exit_dial_burst,
            pool_per_24: p.per_24,
            pool_per_16: p.per_16,
            pool_max_nodes: p.max_nodes,
            pool_max_unreached: p.max_unreached,
            pool_exempt_local: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoveryConfig {
    /// Peers to join the DHT through: multiaddrs ending in /p2p/<peer id>.
    #[serde(default)]
    bootstrap: Vec<Multiaddr>,
    #[serde(default = "default_republish")]
    republish_interval_s: u64,
    #[serde(default = "default_walk")]
    walk_interval_s: u64,
}

fn default_republish() -> u64 {
    300
}

fn default_walk() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityConfig {
    /// The libp2p identity: a protobuf-encoded secp256k1 keypair, hex.
    libp2p_key: String,
    /// The X25519 mix private key, 32 bytes hex.
    mix_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkConfig {
    listen: Vec<Multiaddr>,
    advertise: Option<Multiaddr>,
    #[serde(default = "yes")]
    exit: bool,
    #[serde(default)]
    echo: bool,
    /// Serve as a mix node (forward for others). With tit-for-tat on, a node that does not
    /// may not send either.
    #[serde(default = "yes")]
    serve: bool,
    /// Where the node keeps its replay state across restarts (created if missing).
    #[serde(default)]
    state_dir: Option<std::path::PathBuf>,
    /// On SIGTERM or SIGINT, how long held packets may take to leave before the rest are
    /// dropped (counted).
    #[serde(default = "default_stop_drain_ms")]
    stop_drain_ms: u64,
    /// Threads that open received packets and build own messages; absent: one per core (none
    /// on one core).
    #[serde(default)]
    hop_workers: Option<usize>,
    /// How often the replay state is saved while running (also at start and at a clean stop).
    #[serde(default = "default_state_save_interval_ms")]
    state_save_interval_ms: u64,
}

fn default_state_save_interval_ms() -> u64 {
    10_000
}

fn default_stop_drain_ms() -> u64 {
    5000
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum CipherName {
    Lioness,
    AesCtr,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum PaddingName {
    Plain,
    Seqno,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum SemanticsName {
    Mean,
    Exact,
}

/// The network's mixing-delay policy.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum DelayConfig {
    Exponential { mean_ms: u16 },
    Uniform { max_ms: u16 },
    None,
}

impl DelayConfig {
    pub(crate) fn strategy(self) -> Box<dyn DelayStrategy> {
        match self {
            Self::Exponential { mean_ms } => {
                Box::new(ExponentialDelay::new(Duration::from_millis(mean_ms.into())))
            }
            Self::Uniform { max_ms } => {
                Box::new(UniformDelay::new(Duration::from_millis(max_ms.into())))
            }
            Self::None => Box::new(NoDelay),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MixConfig {
    path_len: usize,
    /// The network's wire generation, "lip-183" or "v1".
    wire: String,
    /// Advanced overrides of `wire`'s parts.
    payload_cipher: Option<CipherName>,
    padding: Option<PaddingName>,
    delay_semantics: Option<SemanticsName>,
    delay: DelayConfig,
    pre_send_delay_ms: u64,
    request_timeout_ms: u64,
    expected_packets_per_second: u32,
    key_lifetime_s: u64,
    tit_for_tat: bool,
}

impl Default for MixConfig {
    fn default() -> Self {
        Self {
            path_len: 3,
            wire: Wire::default().name().to_owned(),
            payload_cipher: None,
            padding: None,
            delay_semantics: None,
            delay: DelayConfig::Exponential { mean_ms: 50 },
            pre_send_delay_ms: 5,
            request_timeout_ms: 30_000,
            expected_packets_per_second: 1000,
            key_lifetime_s: 3600,
            tit_for_tat: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolEntry {
    peer_id: String,
    multiaddr: Multiaddr,
    mix_key: String,
    #[serde(default = "yes")]
    exit: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsConfig {
    listen: SocketAddr,
}

/// The longest duration a setting may give: ten years. Anything longer is a typo, and below it
/// every `Instant + Duration` the node computes from a setting stays in range.
const MAX_DURATION_S: u64 = 10 * 365 * 24 * 3600;

/// Refuses any setting named `*_s` (seconds) or `*_ms` (milliseconds), wherever it is, that is
/// negative, not a number, or longer than [`MAX_DURATION_S`].
fn check_durations(table: &toml::Table, at: &str) -> anyhow::Result<()> {
    for (key, value) in table {
        let at = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
        let per_second = if key.ends_with("_ms") {
            Some(1000.0)
        } else if key.ends_with("_s") {
            Some(1.0)
        } else {
            None
        };
        let seconds = match value {
            toml::Value::Integer(n) => per_second.map(|p| *n as f64 / p),
            toml::Value::Float(x) => per_second.map(|p| x / p),
            _ => None,
        };
        if let Some(seconds) = seconds {
            let max = MAX_DURATION_S as f64;
            anyhow::ensure!(
                (0.0..=max).contains(&seconds),
                "{at} = {value}: a duration must be between 0 and {} days",
                MAX_DURATION_S / 86_400
            );
        }
        match value {
            toml::Value::Table(inner) => check_durations(inner, &at)?,
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(inner) = item {
                        check_durations(inner, &format!("{at}[{i}]"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A validated configuration.
pub(crate) struct Loaded {
    pub(crate) spec: NodeSpec,
    pub(crate) metrics: Option<SocketAddr>,
    /// How long a stopping node sends on what it holds.
    pub(crate) stop_drain: Duration,
}

/// The largest config file read: the commented example is about 12 KB, and a path given by
/// mistake (a log, a device) is refused before it is read into memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

pub(crate) fn load(path: &Path) -> anyhow::Result<Loaded> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        bail!("{} is larger than {MAX_CONFIG_BYTES} bytes: not a node config", path.display());
    }
    parse(&text).with_context(|| format!("in {}", path.display()))
}

pub(crate) fn parse(text: &str) -> anyhow::Result<Loaded> {
    let file: FileConfig = toml::from_str(text)?;
    check_durations(&toml::from_str(text)?, "")?;
    let (identity, mix_secret) = identity_of(&file.identity)?;
    let nodes = file
        .pool
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            pool_entry(entry).with_context(|| format!("pool[{i}] (peer {})", entry.peer_id))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Refuse duplicates the same way a static pool does.
    StaticPool::new(nodes.clone())?;
    let mut discovery = discovery_of(file.discovery.as_ref())?;
    if discovery.is_none() && nodes.is_empty() {
        bail!("with no [[pool]] entries the node needs [discovery] to find mix nodes");
    }

    let m = &file.mix;
    if !(mix_sphinx::MIN_PATH_LEN..=mix_sphinx::MAX_PATH_LEN).contains(&m.path_len) {
        bail!("mix.path_len must be 3..=5, got {}", m.path_len);
    }
    let mut config = wire_config(m)?;
    config.core.path_len = m.path_len;
    config.core.pre_send_delay = Duration::from_millis(m.pre_send_delay_ms);
    config.core.request_timeout = Duration::from_millis(m.request_timeout_ms);
    config.core.replay = ReplayConfig {
        packets_per_second: m.expected_packets_per_second,
        key_lifetime: Duration::from_secs(m.key_lifetime_s),
        ..ReplayConfig::default()
    };
    config.core.tit_for_tat = m.tit_for_tat;
    config.serve = file.network.serve;
    config.core.cover = cover_config(&file.cover)?;
    apply_rotation(file.rotation.as_ref(), &mut config, discovery.as_mut())?;
    apply_limits(&file.limits, &file.network, &mut config)?;
    let l = &file.limits;
    let (exempt_local, local_addresses) = local_rules(l.pool_exempt_local, &file.network);
    // Packets may name any address for a next hop or a destination: the same rule.
    config.local_addresses = local_addresses;
    let pool_limits = libp2p_mix::core::SubnetLimits {
        per_24: l.pool_per_24.max(1),
        per_16: l.pool_per_16.max(1),
        max_nodes: l.pool_max_nodes.max(1),
        max_unreached: l.pool_max_unreached.max(1),
        exempt_local,
        local_addresses,
    };
    let streams = file.streams.config()?;
    let gossip = file.gossip.as_ref().map(GossipSection::spec).transpose()?;
    let spam = spam_config(file.spam.as_ref())?;
    if file.network.listen.is_empty() {
        bail!("network.listen must name at least one address");
    }
    Ok(Loaded {
        spec: NodeSpec {
            identity,
            mix_secret,
            listen: file.network.listen,
            advertise: file.network.advertise,
            exit: file.network.exit,
            static_nodes: nodes,
            discovery,
            delay: m.delay.strategy(),
            config,
            echo: file.network.echo,
            spam,
            streams,
            accept_streams: file.streams.accept,
            gossip,
            pool_limits,
        },
        metrics: file.metrics.map(|m| m.listen),
        stop_drain: Duration::from_millis(file.network.stop_drain_ms),
    })
}

/// The node's libp2p identity (secp256k1) and mix key.
fn identity_of(section: &IdentityConfig) -> anyhow::Result<(identity::Keypair, NodeSecretKey)> {
    let key_bytes =
        hex::decode(section.libp2p_key.trim()).context("identity.libp2p_key is not hex")?;
    let identity = identity::Keypair::from_protobuf_encoding(&key_bytes)
        .context("identity.libp2p_key is not a protobuf-encoded libp2p keypair")?;
    if identity.key_type() != identity::KeyType::Secp256k1 {
        bail!(
            "identity.libp2p_key is a {:?} key; mix address blocks need secp256k1 identities (39-byte peer ids)",
            identity.key_type()
        );
    }
    let mix_secret =
        NodeSecretKey::from_bytes(hex32(&section.mix_key).context("identity.mix_key")?);

    Ok((identity, mix_secret))
}

/// Discovery settings and bootstrap peers, if the section is there.
fn discovery_of(section: Option<&DiscoveryConfig>) -> anyhow::Result<Option<DiscoverySpec>> {
    Ok(match section {
        Some(d) => {
            let bootstrap = d
                .bootstrap
                .iter()
                .map(bootstrap_peer)
                .collect::<anyhow::Result<Vec<_>>>()
                .context("discovery.bootstrap")?;
            Some(DiscoverySpec {
                config: libp2p_mix::discovery::Config {
                    republish_interval: Duration::from_secs(d.republish_interval_s.max(1)),
                    walk_interval: Duration::from_secs(d.walk_interval_s.max(1)),
                    ..libp2p_mix::discovery::Config::default()
                },
                bootstrap,
            })
        }
        None => None,
    })
}

/// The mix settings for the wire generation the file names, with its format overrides.
fn wire_config(m: &MixConfig) -> anyhow::Result<libp2p_mix::Config> {
    let wire: Wire = m.wire.parse().context("mix.wire")?;
    let mut config = libp2p_mix::Config::default().with_wire(wire);
    if m.payload_cipher.is_some() || m.padding.is_some() {
        let cipher = match m.payload_cipher {
            None => wire.format().cipher(),
            Some(CipherName::Lioness) => PayloadCipher::Lioness,
            Some(CipherName::AesCtr) => PayloadCipher::AesCtr,
        };
        let padding = match m.padding {
            None => wire.format().padding(),
            Some(PaddingName::Plain) => Padding::Plain,
            Some(PaddingName::Seqno) => Padding::SeqNo,
        };
        config.core.format_override = Some(WireFormat::new(cipher, padding));
    }
    config.core.delay_semantics_override = m.delay_semantics.map(|s| match s {
        SemanticsName::Mean => DelaySemantics::Mean,
        SemanticsName::Exact => DelaySemantics::Exact,
    });
    if let Some(format) = config.core.format_override {
        // Before `wire`, these two knobs were the only setting, and a v1 network set both; such a
        // file now speaks v1's format with lip-183's delay semantics unless it names the wire.
        match Wire::of_format(&format) {
            Some(named) if named != wire => tracing::warn!(
                "mix.payload_cipher and mix.padding spell the format of wire = \"{named}\", but \
                 mix.wire is \"{wire}\": delays are written as {} values. If the network runs \
                 \"{named}\", set wire = \"{named}\" and drop the two overrides.",
                config.core.delay_semantics().name()
            ),
            Some(_) => {}
            None => tracing::warn!(
                "mix.payload_cipher and mix.padding make a format that no wire generation speaks; \
                 only nodes with the same overrides can exchange traffic with this one"
            ),
        }
    }
    Ok(config)
}

/// Cover traffic.
fn cover_config(c: &CoverSection) -> anyhow::Result<libp2p_mix::core::CoverConfig> {
    if !(c.rate.is_finite() && c.rate >= 0.0) {
        bail!("cover.rate must be a non-negative number of packets per second");
    }
    if c.loop_rate.is_some_and(|r| !(r.is_finite() && r >= 0.0)) {
        bail!("cover.loop_rate must be a non-negative number of packets per second");
    }
    Ok(libp2p_mix::core::CoverConfig {
        mode: match c.mode {
            CoverModeName::Off => libp2p_mix::core::CoverMode::Off,
            CoverModeName::Loops => libp2p_mix::core::CoverMode::Loops,
            CoverModeName::Loopix => libp2p_mix::core::CoverMode::Loopix,
        },
        rate: c.rate,
        loop_rate: c.loop_rate.unwrap_or(c.rate),
        loop_timeout: Duration::from_secs(c.loop_timeout_s.max(1)),
        rate_budget: c.rate_budget,
        ..libp2p_mix::core::CoverConfig::default()
    })
}

/// Key rotation: on by default wherever discovery runs.
fn apply_rotation(
    section: Option<&RotationSection>,
    config: &mut libp2p_mix::Config,
    discovery: Option<&mut DiscoverySpec>,
) -> anyhow::Result<()> {
    let default_rotation = RotationSection::default();
    // Rotation is on by default wherever discovery runs: each key's replay filter then lives
    // one epoch, and a restarted node starts with fresh keys, so nothing captured before
    // replays. `[rotation] enabled = false` keeps one key (as reference nodes do).
    let rotation = match (section, &discovery) {
        (Some(r), _) if r.enabled => Some(r),
        (Some(_), _) => None,
        (None, Some(_)) => Some(&default_rotation),
        (None, None) => None,
    };
    if section.is_some_and(|r| r.enabled) && discovery.is_none() {
        bail!(
            "rotation needs [discovery] to spread the new keys (or set rotation.enabled = false)"
        );
    }
    if let Some(r) = rotation {
        if r.epoch_s == 0 || r.overlap_s >= r.epoch_s {
            bail!("rotation: epoch_s must be > 0 and overlap_s < epoch_s");
        }
        config.core.rotation = Some(libp2p_mix::core::RotationConfig {
            epoch: Duration::from_secs(r.epoch_s),
            overlap: Duration::from_secs(r.overlap_s),
        });
        // One replay filter per key: size it for the key's life.
        config.core.replay.key_lifetime = Duration::from_secs(r.epoch_s + r.overlap_s);
        // Records carry the next key, so peers must see each new record within an epoch.
        if let Some(d) = discovery {
            let quarter = Duration::from_secs((r.epoch_s / 4).max(1));
            d.config.refetch_interval = d.config.refetch_interval.min(quarter);
            d.config.republish_interval = d.config.republish_interval.min(quarter);
        }
    }
    Ok(())
}

/// Resource limits and the network settings the mix behaviour takes.
/// Whether local addresses are exempt from the pool's subnet caps. Set, as set; unset, only
/// for a node that is local itself: its advertised address, if it has one, is loopback or
/// private (a testnet in containers listens on `0.0.0.0` and advertises a private address),
/// and otherwise every listen address is (a local testnet on 127.0.0.1). On a public node,
/// records claiming private addresses would otherwise fill the pool with no cap, for free.
/// Whether local addresses are exempt from the pool's subnet caps, and which addresses that
/// are not public the node dials for others (at records' addresses, or at packets'): by the
/// node's own addresses, unless `pool_exempt_local` says otherwise (a public node that sets it
/// takes private addresses, uncapped, and is warned).
fn local_rules(
    set: Option<bool>,
    network: &NetworkConfig,
) -> (bool, libp2p_mix::core::LocalAddresses) {
    use libp2p_mix::core::LocalAddresses;
    let own: Vec<&Multiaddr> = match &network.advertise {
        Some(addr) => vec![addr],
        None => network.listen.iter().collect(),
    };
    let local = own.iter().all(|a| is_local_addr(a));
    let loopback = own.iter().all(|a| {
        a.iter().next().is_some_and(|p| match p {
            Protocol::Ip4(ip) => ip.is_loopback(),
            Protocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
    });
    let exempt = set.unwrap_or(local);
    if exempt && !local {
        tracing::warn!(
            "limits.pool_exempt_local is on for a node that may be public: records claiming \
             private addresses are taken and not capped per subnet"
        );
    }
    let dials = if loopback {
        LocalAddresses::All
    } else if local || exempt {
        LocalAddresses::Private
    } else {
        LocalAddresses::None
    };
    (exempt, dials)
}

/// Loopback or private: an IPv4 address [`libp2p_mix::core::is_local`] counts, or IPv6
/// loopback. Unspecified addresses (`0.0.0.0`) and names are not.
fn is_local_addr(addr: &Multiaddr) -> bool {
    addr.iter().next().is_some_and(|p| match p {
        Protocol::Ip4(ip) => !ip.is_unspecified() && libp2p_mix::core::is_local(ip),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

fn apply_limits(
    l: &LimitsSection,
    network: &NetworkConfig,
    config: &mut libp2p_mix::Config,
) -> anyhow::Result<()> {
    config.inbound_frame_rate = l.inbound_frame_rate;
    config.inbound_burst = l.inbound_burst;
    config.max_inbound_streams = l.max_inbound_streams;
    config.max_connections_per_peer = l.max_connections_per_peer.max(1);
    config.core.max_delayed_packets = l.max_delayed_packets;
    if !(l.exit_dial_rate.is_finite() && l.exit_dial_rate > 0.0) {
        bail!("limits.exit_dial_rate must be a positive number of dials per second");
    }
    if l.penalty_frame_rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("limits.penalty_frame_rate must be a positive number of frames per second");
    }
    config.penalty_frame_rate = l.penalty_frame_rate;
    config.penalty = Duration::from_secs(l.penalty_s);
    config.max_exit_jobs = l.max_exit_jobs.max(1);
    config.max_exit_jobs_per_destination = l.max_exit_jobs_per_destination.max(1);
    config.exit_dial_rate = l.exit_dial_rate;
    config.exit_dial_burst = l.exit_dial_burst;
    config.state_dir = network.state_dir.clone();
    if network.state_save_interval_ms < 100 {
        bail!("network.state_save_interval_ms must be at least 100");
    }
    config.state_save_interval = Duration::from_millis(network.state_save_interval_ms);
    if let Some(workers) = network.hop_workers {
        if workers > libp2p_mix::MAX_HOP_WORKERS {
            bail!(
                "network.hop_workers must be at most {} (one per core is the default)",
                libp2p_mix::MAX_HOP_WORKERS
            );
        }
        config.hop_workers = workers;
    }
    Ok(())
}

/// Spam protection, if the section is there.
fn spam_config(
    section: Option<&SpamSection>,
) -> anyhow::Result<Option<libp2p_mix::spam::SpamConfig>> {
    Ok(match section {
        Some(s) => {
            if s.difficulty > 32 {
                bail!("spam.difficulty must be at most 32 bits");
            }
            Some(libp2p_mix::spam::SpamConfig {
                placement: match s.placement {
                    PlacementName::Exit => libp2p_mix::spam::Placement::Exit,
                    PlacementName::PerHop => libp2p_mix::spam::Placement::PerHop,
                },
                protection: Box::new(libp2p_mix::spam::ProofOfWork::new(
                    libp2p_mix::spam::PowConfig {
                        difficulty: s.difficulty,
                        ..libp2p_mix::spam::PowConfig::default()
                    },
                )),
            })
        }
        None => None,
    })
}

/// `(peer, address)` of a bootstrap multiaddr, which must end in `/p2p/<peer id>`.
pub(crate) fn bootstrap_peer(addr: &Multiaddr) -> anyhow::Result<(PeerId, Multiaddr)> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr.clone())),
        _ => Err(anyhow::anyhow!("bootstrap address {addr} must end in /p2p/<peer id>")),
    }
}

/// Adds command-line bootstrap peers, turning discovery on if the file left it off.
pub(crate) fn add_bootstrap(spec: &mut NodeSpec, addrs: &[Multiaddr]) -> anyhow::Result<()> {
    if addrs.is_empty() {
        return Ok(());
    }
    let peers = addrs.iter().map(bootstrap_peer).collect::<anyhow::Result<Vec<_>>>()?;
    spec.discovery
        .get_or_insert_with(|| DiscoverySpec {
            config: libp2p_mix::discovery::Config::default(),
            bootstrap: Vec::new(),
        })
        .bootstrap
        .extend(peers);
    Ok(())
}

fn pool_entry(entry: &PoolEntry) -> anyhow::Result<MixNode> {
    let peer: PeerId = entry.peer_id.parse().context("peer_id is not a libp2p peer id")?;
    let key =
        NodePublicKey::from_bytes(hex32(&entry.mix_key).context("mix_key")?).context("mix_key")?;
    Ok(MixNode::new(peer, entry.multiaddr.clone(), key, entry.exit)?)
}

fn hex32(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text.trim()).context("not hex")?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("must be 32 bytes, got {}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../node.example.toml");

    fn example_with(section: &str) -> String {
        format!("{EXAMPLE}\n{section}")
    }

    #[test]
    fn hop_workers_are_bounded() {
        let text = EXAMPLE.replace("# hop_workers = 2", "hop_workers = 1000000");
        let Err(err) = parse(&text) else { panic!("a million hop workers were accepted") };
        assert!(format!("{err:#}").contains("hop_workers must be at most"), "{err:#}");
        let text = EXAMPLE.replace("# hop_workers = 2", "hop_workers = 3");
        assert_eq!(parse(&text).unwrap().spec.config.hop_workers, 3);
    }

    /// Each of these used to load and then panic, at once (`Duration::from_secs_f64`) or when
    /// the setting was first used (`Instant + Duration`, e.g. on the first penalty).
    #[test]
    fn durations_past_ten_years_are_refused_by_name() {
        let forever = "9223372036854775807";
        for (from, to, key) in [
            ("penalty_s = 60", format!("penalty_s = {forever}"), "limits.penalty_s"),
            ("# jitter_ms = 0.2", "jitter_ms = 1e30".into(), "streams.jitter_ms"),
            ("# jitter_ms = 0.2", "jitter_ms = -1.0".into(), "streams.jitter_ms"),
            ("# jitter_ms = 0.2", "jitter_ms = nan".into(), "streams.jitter_ms"),
            (
                "# opening_deadline_s = 10",
                format!("opening_deadline_s = {forever}"),
                "streams.opening_deadline_s",
            ),
            (
                "rotation_interval_s = 180",
                format!("rotation_interval_s = {forever}"),
                "gossip.rotation_interval_s",
            ),
            ("stop_drain_ms = 5000", format!("stop_drain_ms = {forever}"), "network.stop_drain_ms"),
        ] {
            let text = EXAMPLE.replacen(from, &to, 1);
            assert_ne!(text, EXAMPLE, "{from}");
            let Err(err) = parse(&text) else { panic!("{to} was accepted") };
            let err = format!("{err:#}");
            assert!(err.contains(key) && err.contains("a duration must be"), "{err}");
        }
        let ten_years = EXAMPLE.replacen("penalty_s = 60", "penalty_s = 315360000", 1);
        assert!(parse(&ten_years).is_ok());
    }

    #[test]
    fn a_file_too_large_to_be_a_config_is_refused_unread() {
        let dir = std::env::temp_dir().join(format!("mixnode-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("huge.toml");
        let padding = "#".repeat(MAX_CONFIG_BYTES as usize);
        std::fs::write(&path, format!("{EXAMPLE}\n{padding}\n")).unwrap();
        let err = format!("{:#}", load(&path).err().unwrap());
        assert!(err.contains("not a node config"), "{err}");
        std::fs::write(&path, EXAMPLE).unwrap();
        assert!(load(&path).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_example_config_loads() {
        let loaded = parse(EXAMPLE).unwrap();
        assert_eq!(loaded.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(loaded.spec.listen.len(), 1);
        assert!(loaded.spec.exit);
    }

    #[test]
    fn discovery_bootstrap_needs_peer_ids_and_some_source_of_nodes_is_required() {
        let loaded = parse(EXAMPLE).unwrap();
        let discovery = loaded.spec.discovery.expect("[discovery] in the example");
        assert_eq!(discovery.bootstrap.len(), 1);
        let no_peer =
            EXAMPLE.replace("/p2p/16Uiu2HAmKA5rCEZp7un72XWk76QGcwFe6StyvdRwkcwA8DP7N3pQ\"]", "\"]");
        let err = format!("{:#}", parse(&no_peer).err().unwrap());
        assert!(err.contains("must end in /p2p/"), "{err}");
        let start = EXAMPLE.find("[discovery]").unwrap();
        let end = EXAMPLE.find("# Mix nodes to route through").unwrap();
        let pool_start = EXAMPLE.find("[[pool]]").unwrap();
        let neither = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..pool_start]);
        let err = format!("{:#}", parse(&neither).err().unwrap());
        assert!(err.contains("needs [discovery]"), "{err}");
    }

    #[test]
    fn the_gossip_section_turns_gossip_on_and_refuses_bad_settings() {
        assert!(parse(&EXAMPLE.replace("\n[gossip]", "\n[unused-gossip]")).is_err());
        let loaded = parse(EXAMPLE).unwrap();
        let g = loaded.spec.gossip.expect("[gossip] in the example");
        assert_eq!(g.topics, vec!["chat".to_owned()]);
        assert_eq!(g.bootstrap.len(), 1);
        assert!(matches!(
            g.config.proto.forwarding,
            mix_gossip::Forwarding::Window { max_batch: 64, .. }
        ));
        assert!(g.config.proto.rotation.is_some());
        let start = EXAMPLE.find("[gossip]").unwrap();
        let end = start + EXAMPLE[start..].find("\n\n").unwrap();
        let without = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
        assert!(parse(&without).unwrap().spec.gossip.is_none(), "off without the section");
        for (from, to, why) in [
            ("window_ms = 150", "window_ms = 1", "window_ms must be"),
            ("forwarding = \"window\"", "forwarding = \"later\"", "unknown variant"),
            ("rotation_count = 1", "rotation_count = 3", "rotation_count must be"),
            (
                "/p2p/16Uiu2HAmKA5rCEZp7un72XWk76QGcwFe6StyvdRwkcwA8DP7N3pQ\"] # gossip",
                "\"] # gossip",
                "must end in /p2p/",
            ),
        ] {
            let bad = EXAMPLE.replace(from, to);
            assert_ne!(bad, EXAMPLE, "{from}");
            let err = format!("{:#}", parse(&bad).err().unwrap());
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn hardening_sections_load_and_bad_values_are_refused() {
        let loaded = parse(&example_with(
            "[spam]\nplacement = \"per-hop\"\ndifficulty = 16\n[rotation]\nepoch_s = 600\noverlap_s = 60\n",
        ))
        .unwrap();
        let spam = loaded.spec.spam.expect("spam");
        assert_eq!(spam.placement, libp2p_mix::spam::Placement::PerHop);
        let rotation = loaded.spec.config.core.rotation.expect("rotation");
        assert_eq!(rotation.epoch, Duration::from_secs(600));
        // Records must be fetched within an epoch.
        let d = loaded.spec.discovery.expect("discovery");
        assert!(d.config.refetch_interval <= Duration::from_secs(150));
        assert_eq!(loaded.spec.config.inbound_frame_rate, Some(4000.0));

        let loopix = EXAMPLE.replace("mode = \"off\"", "mode = \"loopix\"");
        let loaded = parse(&loopix).unwrap();
        assert_eq!(loaded.spec.config.core.cover.mode, libp2p_mix::core::CoverMode::Loopix);

        for (bad, why) in [
            ("[rotation]\nepoch_s = 60\noverlap_s = 60\n", "overlap_s < epoch_s"),
            ("[spam]\nplacement = \"exit\"\ndifficulty = 40\n", "at most 32"),
            ("[spam]\nplacement = \"everywhere\"\n", "unknown variant"),
        ] {
            let err = format!("{:#}", parse(&example_with(bad)).err().unwrap());
            assert!(err.contains(why), "{err}");
        }
        let negative = EXAMPLE.replace("rate = 2.0", "rate = -1.0");
        assert!(format!("{:#}", parse(&negative).err().unwrap()).contains("cover.rate"));
    }

    #[test]
    fn the_streams_section_picks_a_preset_and_refuses_impossible_settings() {
        let loaded = parse(EXAMPLE).unwrap();
        assert!(loaded.spec.accept_streams);
        assert_eq!(loaded.spec.streams.stream, mix_stream::StreamConfig::interactive());
        let anonymous = EXAMPLE.replace(
            "preset = \"interactive\"",
            "preset = \"high-anonymity\"\nhops = 5\nparity = 6",
        );
        let loaded = parse(&anonymous).unwrap();
        let s = &loaded.spec.streams.stream;
        assert_eq!((s.hops, s.hop_delay), (5, Some(Duration::from_millis(500))));
        assert_eq!(s.redundancy, mix_stream::Redundancy::Parity(6));
        let off = EXAMPLE.replace("accept = true", "accept = false");
        assert!(!parse(&off).unwrap().spec.accept_streams);
        let budgets = EXAMPLE
            .replace("# stranger_accept_rate = 200", "stranger_accept_rate = 50")
            .replace("# stalled_after_s = 30", "stalled_after_s = 90");
        let config = parse(&budgets).unwrap().spec.streams;
        assert_eq!(config.stranger_accept_rate, 50.0);
        assert_eq!(config.stalled_after, Duration::from_secs(90));
        for (edit, why) in [
            ("hops = 7", "3 to 5"),
            ("parity = 2\ntolerance = 0.1", "not both"),
            ("data_shards = 40", "data shards"),
            ("window = 0", "must be positive"),
        ] {
            let bad = EXAMPLE
                .replace("preset = \"interactive\"", &format!("preset = \"interactive\"\n{edit}"));
            let err = format!("{:#}", parse(&bad).err().unwrap());
            assert!(err.contains(why), "{edit}: {err}");
        }
    }

    #[test]
    fn one_wire_setting_names_the_format_and_overrides_are_advanced() {
        let loaded = parse(EXAMPLE).unwrap();
        let core = &loaded.spec.config.core;
        assert_eq!(core.wire, Wire::Lip183);
        assert_eq!(core.format(), WireFormat::LIP_183);
        assert_eq!(core.delay_semantics(), DelaySemantics::Mean);

        let v1 = parse(&EXAMPLE.replace("wire = \"lip-183\"", "wire = \"v1\"")).unwrap();
        let core = &v1.spec.config.core;
        assert_eq!(core.format(), WireFormat::LIBP2P_MIX_V1);
        assert_eq!(core.delay_semantics(), DelaySemantics::Exact);

        let custom = EXAMPLE
            .replace("# padding = \"plain\"", "padding = \"seqno\"")
            .replace("# delay_semantics = \"mean\"", "delay_semantics = \"exact\"");
        let loaded = parse(&custom).unwrap();
        let core = &loaded.spec.config.core;
        assert_eq!(core.format(), WireFormat::new(PayloadCipher::Lioness, Padding::SeqNo));
        assert_eq!(core.delay_semantics(), DelaySemantics::Exact);

        let bad = EXAMPLE.replace("wire = \"lip-183\"", "wire = \"v2\"");
        let err = format!("{:#}", parse(&bad).err().unwrap());
        assert!(err.contains("mix.wire") && err.contains("\"lip-183\" or \"v1\""), "{err}");
    }

    #[test]
    fn bad_pool_entries_are_named() {
        let small_order = example_with(
            "[[pool]]\npeer_id = \"16Uiu2HAmKA5rCEZp7un72XWk76QGcwFe6StyvdRwkcwA8DP7N3pQ\"\nmultiaddr = \"/ip4/127.0.0.1/tcp/1\"\nmix_key = \"0100000000000000000000000000000000000000000000000000000000000000\"\n",
        );
        let err = format!("{:#}", parse(&small_order).err().unwrap());
        assert!(err.contains("pool[1]") && err.contains("small order"), "{err}");

        let ipv6 = example_with(
            "[[pool]]\npeer_id = \"16Uiu2HAmKA5rCEZp7un72XWk76QGcwFe6StyvdRwkcwA8DP7N3pQ\"\nmultiaddr = \"/ip6/::1/tcp/1\"\nmix_key = \"c8feca81be196cdf2cadeabf13c4903d7632dce4955aa68b6e5d9adef54e2616\"\n",
        );
        let err = format!("{:#}", parse(&ipv6).err().unwrap());
        assert!(err.contains("pool[1]") && err.contains("ip4"), "{err}");

        let unknown = EXAMPLE.replace("[network]", "[network]\nlisten_on = []");
        assert!(parse(&unknown).is_err());
    }

    /// Found by review: the example set `pool_exempt_local = true`, so a public node took any
    /// number of records claiming private addresses, uncapped. Unset, only a node that is
    /// local itself exempts local addresses.
    #[test]
    fn only_a_local_node_exempts_local_addresses_from_the_subnet_caps() {
        let exempt = |text: &str| parse(text).unwrap().spec.pool_limits.exempt_local;
        use libp2p_mix::core::LocalAddresses;
        let takes = |text: &str| parse(text).unwrap().spec.pool_limits.local_addresses;
        assert!(exempt(EXAMPLE), "the example listens on 127.0.0.1");
        assert_eq!(takes(EXAMPLE), LocalAddresses::All);
        let public = EXAMPLE.replacen(
            "listen = [\"/ip4/127.0.0.1/tcp/4242\"]",
            "listen = [\"/ip4/0.0.0.0/tcp/4242\"]\nadvertise = \"/ip4/203.0.113.7/tcp/4242\"",
            1,
        );
        assert_ne!(public, EXAMPLE);
        assert!(!exempt(&public));
        assert_eq!(takes(&public), LocalAddresses::None, "a public node dials no record's");
        let packets = parse(&public).unwrap().spec.config.local_addresses;
        assert_eq!(packets, LocalAddresses::None, "nor any a packet names");
        let unspecified = EXAMPLE.replacen("/ip4/127.0.0.1/tcp/4242", "/ip4/0.0.0.0/tcp/4242", 1);
        assert!(!exempt(&unspecified), "a node listening everywhere may be public");
        let containers = unspecified.replacen(
            "# advertise = \"/ip4/203.0.113.7/tcp/4242\"",
            "advertise = \"/ip4/172.17.0.2/tcp/4242\"",
            1,
        );
        assert_ne!(containers, unspecified);
        assert!(exempt(&containers), "listening everywhere, advertising a private address");
        assert_eq!(takes(&containers), LocalAddresses::Private, "never loopback or link-local");
        let set = "# pool_exempt_local = false";
        let capped = EXAMPLE.replacen(set, "pool_exempt_local = false", 1);
        assert!(!exempt(&capped));
        assert_eq!(takes(&capped), LocalAddresses::All, "a loopback node capping them takes them");
        let closed = public.replacen(set, "pool_exempt_local = true", 1);
        assert!(exempt(&closed));
        assert_eq!(takes(&closed), LocalAddresses::Private);
    }
}
