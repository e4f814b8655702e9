//! `mixnode testnet`: a local mixnet of real nodes in one process, a workload of anonymous
//! messages and SURB request/replies through it, and what came out.
//!
//! Every node is a full mix node (TCP or QUIC on 127.0.0.1, Noise, Yamux) that also serves a
//! small echo protocol, so any node can be another's destination: the exit dials it with the
//! echo protocol like any libp2p peer, without mix involvement. By default the nodes know only
//! the first node's address and find each other through discovery. With `--copies` above 1,
//! messages go to mix-node destinations, which deliver the first copy. With `--churn`, a
//! share of the nodes is killed halfway through the workload.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p::{Multiaddr, PeerId};
use libp2p_mix::core::{CoverConfig, CoverMode, PathSelection, RotationConfig, SendOptions};
use libp2p_mix::spam::{Placement, PowConfig, ProofError, ProofOfWork, SpamConfig};
use libp2p_mix::{Destination, DropReason, Event, RequestId, Wire, discovery};
use mix_sphinx::ProcessError;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::DelayConfig;
use crate::runtime::{
    self, DiscoverySpec, ECHO, GossipSpec, NodeEvent, NodeHandle, NodeSpec, length_prefixed,
};

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) nodes: usize,
    pub(crate) messages: usize,
    pub(crate) requests: usize,
    pub(crate) rate: f64,
    pub(crate) delay_ms: u16,
    pub(crate) quic: bool,
    pub(crate) surbs: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) progress: bool,
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) seed: Option<u64>,
    /// Find nodes through discovery (one bootstrap address) rather than a static pool.
    pub(crate) discovery: bool,
    /// Copies per message over independent paths.
    pub(crate) copies: usize,
    /// Share of the nodes to kill halfway through.
    pub(crate) churn: Option<f64>,
    pub(crate) paths: PathSelection,
    pub(crate) wire: Wire,
    /// Loopix slots per second per node.
    pub(crate) cover: Option<f64>,
    /// Mix key epoch (the overlap is a third of it).
    pub(crate) epoch: Option<Duration>,
    /// Proof-of-work bits per message (exit placement).
    pub(crate) pow: Option<u32>,
    /// After the messages, stream this many random bytes from one node to another.
    pub(crate) stream_bytes: Option<usize>,
    /// Keep the nodes running after the report, until interrupted.
    pub(crate) keep_running: bool,
    /// Then publish this many gossip messages on a topic every node joined, by each route.
    pub(crate) gossip_messages: usize,
}

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
    ms_to_95_percent: f64,
    /// Until every node's pool held all other nodes (if that happened).
    ms_to_all: Option<f64>,
    /// The smallest pool when the workload started, out of `nodes - 1`.
    min_pool: usize,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Phase {
    sent: usize,
    delivered: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChurnReport {
    killed: usize,
    /// Seconds into the workload.
    at_s: f64,
    /// Until no survivor's pool offered a killed node for new paths.
    liveness_window_ms: Option<f64>,
    before: Phase,
    after: Phase,
    /// Delivered / sent over the whole run, messages between survivors.
    delivery_ratio: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    nodes: usize,
    transport: &'static str,
    /// The wire generation, and what its written delays mean.
    wire: &'static str,
    delay_semantics: &'static str,
    path_len: usize,
    mean_delay_ms: u16,
    paths: String,
    copies: usize,
    startup_ms: f64,
    discovery: Option<DiscoveryReport>,
    duration_s: f64,
    sent: usize,
    delivered: usize,
    lost: usize,
    duplicates: usize,
    replies_expected: usize,
    replies_received: usize,
    request_failures: usize,
    /// One-way: send call to arrival at the destination.
    latency_ms: Percentiles,
    /// Request to reply.
    reply_rtt_ms: Percentiles,
    forwarded_per_node: Vec<u64>,
    churn: Option<ChurnReport>,
    hardening: HardeningReport,
    stream: Option<StreamRun>,
    gossip: Option<GossipRun>,
    metrics_endpoint: Option<String>,
}

/// The gossip workload: publications on one topic every node joined.
#[derive(Debug, Serialize)]
pub(crate) struct GossipRun {
    members: usize,
    forwarding: String,
    /// Seconds until every member had a neighbour.
    settle_s: f64,
    routes: Vec<GossipRoute>,
}

#[derive(Debug, Serialize)]
pub(crate) struct GossipRoute {
    route: &'static str,
    published: usize,
    /// Publications every other live member delivered.
    delivered_to_all: usize,
    /// Deliveries over (publications × other members).
    delivery_ratio: f64,
    /// Publish call to the last member's delivery.
    completion_ms: Percentiles,
    /// Own stem and mix publications seen coming back.
    confirmed: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct StreamRun {
    bytes: usize,
    received: usize,
    bit_exact: bool,
    /// The acceptor's SHA-256 of what it read came back on the stream's reverse direction
    /// (through the opener's SURBs) and matched.
    reply_verified: bool,
    seconds: f64,
    goodput_mbps: f64,
    /// Frames (mix messages) the opener sent, shards among them sent again, SURBs sent ahead.
    frames_sent: u64,
    shards_resent: u64,
    surbs_sent: u64,
    /// A message of a quarter of the stream's size, sent with `send`.
    message_bytes: usize,
    message_delivered: bool,
    message_seconds: f64,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct HardeningReport {
    cover_slots_per_s: Option<f64>,
    loops_sent: u64,
    loops_returned: u64,
    loops_lost: u64,
    epoch_s: Option<u64>,
    /// Rotations each node went through.
    key_rotations: Vec<u64>,
    /// Packets no key opened (lost to rotation, or forged), over all nodes.
    mac_failures: u64,
    pow_bits: Option<u32>,
    /// Messages refused at exits for their proof, over all nodes.
    proofs_refused: u64,
}

/// The `M`/`R` tag and id inside each echo body.
pub(crate) fn body(tag: u8, id: u64, rng: &mut dyn Rng) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&id.to_be_bytes());
    // Some payload so packets are not nearly empty; the size is what an app would send.
    let mut filler = vec![0u8; 200];
    rng.fill_bytes(&mut filler);
    b.extend_from_slice(&filler);
    b
}

pub(crate) fn parse_body(b: &[u8]) -> Option<(u8, u64)> {
    let id = u64::from_be_bytes(b.get(1..9)?.try_into().ok()?);
    Some((*b.first()?, id))
}

fn spec(options: &Options, bootstrap: Option<(PeerId, Multiaddr)>) -> anyhow::Result<NodeSpec> {
    let listen: Multiaddr =
        if options.quic { "/ip4/127.0.0.1/udp/0/quic-v1" } else { "/ip4/127.0.0.1/tcp/0" }
            .parse()?;
    let delay = if options.delay_ms == 0 {
        DelayConfig::None
    } else {
        DelayConfig::Exponential { mean_ms: options.delay_ms }
    };
    let mut config = libp2p_mix::Config::default().with_wire(options.wire);
    if let Some(rate) = options.cover {
        config.core.cover = CoverConfig {
            mode: CoverMode::Loopix,
            rate,
            loop_rate: rate,
            loop_timeout: Duration::from_secs(10),
            ..CoverConfig::default()
        };
    }
    if let Some(epoch) = options.epoch {
        config.core.rotation = Some(RotationConfig { epoch, overlap: epoch / 3 });
    } else if options.discovery {
        // Wherever discovery spreads keys, they rotate (see `[rotation]` in node.toml).
        config.core.rotation = Some(RotationConfig::default());
    }
    let spam = options.pow.map(|difficulty| SpamConfig {
        placement: Placement::Exit,
        protection: Box::new(ProofOfWork::new(PowConfig { difficulty, ..PowConfig::default() })),
    });
    config.core.request_timeout = options.request_timeout;
    if options.stream_bytes.is_some() {
        // Streams pace their own frames; the node-wide gap would cap them at a few hundred a
        // second.
        config.core.send_jitter = Duration::ZERO;
    }
    config.core.pre_send_delay = Duration::from_millis(5);
    config.core.path_selection = options.paths;
    // A testnet is short-lived; size the replay filters accordingly.
    config.core.replay.key_lifetime = Duration::from_secs(600);
    config.probe_interval = Some(Duration::from_secs(2));
    config.probes_per_interval = 8;
    // With rotating keys, records must reach every node within an epoch.
    let refresh = options.epoch.map_or(Duration::from_secs(30), |e| e / 4);
    let discovery = options.discovery.then(|| DiscoverySpec {
        config: discovery::Config {
            refetch_interval: refresh,
            initial_walks: 20,
            initial_walk_interval: Duration::from_millis(250),
            walk_interval: Duration::from_secs(5),
            retry_missing: Duration::from_millis(500),
            republish_interval: refresh,
            ..discovery::Config::default()
        },
        bootstrap: bootstrap.into_iter().collect(),
    });
    let mut streams = mix_stream::Config::default();
    // The workload's message is a quarter of the stream: accept it whatever its size.
    let message = options.stream_bytes.unwrap_or(0) / 4 + 1;
    streams.max_message_len = streams.max_message_len.max(message);
    streams.max_accepted_bytes = streams.max_accepted_bytes.max(2 * message);
    Ok(NodeSpec {
        discovery,
        streams,
        delay: delay.strategy(),
        echo: true,
        spam,
        gossip: (options.gossip_messages > 0).then(|| GossipSpec {
            config: mix_gossip::BehaviourConfig::default(),
            topics: Vec::new(),
            bootstrap: Vec::new(),
        }),
        ..NodeSpec::new(listen, config)
    })
}

async fn start_nodes(options: &Options) -> anyhow::Result<Vec<NodeHandle>> {
    let first = runtime::start(spec(options, None)?).await?;
    let bootstrap = options.discovery.then(|| (first.peer_id, first.addr.clone()));
    let rest = (1..options.nodes)
        .map(|_| spec(options, bootstrap.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut nodes = vec![first];
    nodes.extend(futures::future::try_join_all(rest.into_iter().map(runtime::start)).await?);
    if !options.discovery {
        let entries = nodes.iter().map(NodeHandle::entry).collect::<anyhow::Result<Vec<_>>>()?;
        for node in &nodes {
            node.set_static_nodes(entries.clone()).await;
        }
    }
    if options.gossip_messages > 0 {
        // Each joins through the first node and one more earlier node; the rest of its
        // neighbours come from gossip's own membership protocol.
        let contact = |j: usize| (nodes[j].peer_id, nodes[j].addr.clone());
        for (i, node) in nodes.iter().enumerate() {
            let mut bootstrap: Vec<_> = [0, i / 2].into_iter().filter(|j| *j < i).collect();
            bootstrap.dedup();
            node.gossip_join(gossip_topic(), bootstrap.into_iter().map(contact).collect());
        }
    }
    Ok(nodes)
}

/// Waits until every node's pool holds the other nodes; returns the discovery figures.
async fn await_discovery(
    nodes: &[NodeHandle],
    started: Instant,
    show: bool,
) -> anyhow::Result<DiscoveryReport> {
    let others = nodes.len() - 1;
    let needed = ((others as f64) * 0.95).ceil() as usize;
    let mut at_95 = None;
    loop {
        let sizes: Vec<usize> = futures::future::join_all(nodes.iter().map(|n| n.pool_peers()))
            .await
            .into_iter()
            .map(|p| p.len())
            .collect();
        let min = sizes.iter().copied().min().unwrap_or(0);
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        if show {
            eprint!("\r  discovery: smallest pool {min}/{others}  {:.1} s   ", elapsed / 1000.0);
            let _ = std::io::stderr().flush();
        }
        if min >= needed && at_95.is_none() {
            at_95 = Some(elapsed);
        }
        if min >= others {
            return Ok(DiscoveryReport {
                ms_to_95_percent: at_95.unwrap_or(elapsed),
                ms_to_all: Some(elapsed),
                min_pool: min,
            });
        }
        if started.elapsed() > Duration::from_secs(60) {
            let Some(ms) = at_95 else {
                anyhow::bail!(
                    "discovery: after 60 s the smallest pool holds {min} of {others} nodes"
                );
            };
            return Ok(DiscoveryReport { ms_to_95_percent: ms, ms_to_all: None, min_pool: min });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Default)]
struct Tally {
    sent_messages: usize,
    sent_requests: usize,
    sent_at: HashMap<u64, (Instant, bool)>,
    delivered: HashMap<u64, usize>,
    latencies: Vec<f64>,
    /// Pending requests, by sending node and its request id (ids are per node).
    requests: HashMap<(usize, RequestId), ()>,
    replies: usize,
    failures: usize,
    rtts: Vec<f64>,
    before: Phase,
    after: Phase,
}

impl Tally {
    fn on_event(&mut self, node: usize, event: NodeEvent) {
        match event {
            NodeEvent::Echo { body, at } => {
                if let Some((b'M', id)) = parse_body(&body) {
                    let count = self.delivered.entry(id).or_default();
                    *count += 1;
                    if *count == 1
                        && let Some((sent, after)) = self.sent_at.get(&id)
                    {
                        self.latencies.push(at.duration_since(*sent).as_secs_f64() * 1000.0);
                        if *after { &mut self.after } else { &mut self.before }.delivered += 1;
                    }
                }
            }
            NodeEvent::Mix(Event::Reply { request, rtt, .. })
                if self.requests.contains_key(&(node, request)) =>
            {
                self.requests.remove(&(node, request));
                self.replies += 1;
                self.rtts.push(rtt.as_secs_f64() * 1000.0);
            }
            NodeEvent::Mix(Event::RequestFailed { request, .. })
                if self.requests.contains_key(&(node, request)) =>
            {
                self.requests.remove(&(node, request));
                self.failures += 1;
            }
            NodeEvent::Mix(_) | NodeEvent::Gossip(_) => {}
        }
    }

    fn done(&self, options: &Options) -> bool {
        self.sent_messages == options.messages
            && self.sent_requests == options.requests
            && self.delivered.len() == options.messages
            && self.requests.is_empty()
    }

    fn progress(&self, options: &Options, started: Instant) -> String {
        format!(
            "  sent {}/{}  delivered {}  replies {}/{}  failed {}  {:.1} s",
            self.sent_messages + self.sent_requests,
            options.messages + options.requests,
            self.delivered.len(),
            self.replies,
            options.requests,
            self.failures,
            started.elapsed().as_secs_f64()
        )
    }
}

/// Whether no survivor's pool offers a killed node for paths any more.
async fn offers_none_of(
    nodes: &[NodeHandle],
    survivors: &[usize],
    killed: &HashSet<PeerId>,
) -> bool {
    let pools = futures::future::join_all(survivors.iter().map(|&i| nodes[i].pool_peers())).await;
    pools.iter().all(|pool| pool.iter().all(|p| !killed.contains(p)))
}

/// Runs the testnet; returns its report and, with [`Options::keep_running`], the nodes (still
/// running until dropped).
pub(crate) async fn run(options: Options) -> anyhow::Result<(Report, Vec<NodeHandle>)> {
    anyhow::ensure!(
        options.nodes >= 5,
        "a testnet needs at least 5 nodes (3 hops + sender + destination)"
    );
    anyhow::ensure!(
        options.epoch.is_none() || options.discovery,
        "key rotation needs discovery to spread the new keys (drop --static-pool)"
    );
    let show = options.progress && std::io::stderr().is_terminal();
    let startup = Instant::now();
    let mut nodes = start_nodes(&options).await.context("starting nodes")?;
    let startup_ms = startup.elapsed().as_secs_f64() * 1000.0;
    let discovery_report =
        if options.discovery { Some(await_discovery(&nodes, startup, show).await?) } else { None };
    if show && options.discovery {
        eprintln!();
    }

    let metrics_endpoint = match options.metrics {
        Some(addr) => {
            let mut registry = prometheus_client::registry::Registry::default();
            for (i, node) in nodes.iter().enumerate() {
                let sub = registry.sub_registry_with_label(("node".into(), i.to_string().into()));
                node.metrics.register(sub);
                node.stream_metrics.register(sub);
                if let Some(g) = &node.gossip_metrics {
                    g.register(sub);
                }
                if let Some(d) = &node.discovery_metrics {
                    d.register(sub);
                }
            }
            Some(crate::metrics_http::serve(addr, registry).await?.to_string())
        }
        None => None,
    };

    let (event_tx, mut events) = mpsc::unbounded_channel();
    for (i, node) in nodes.iter_mut().enumerate() {
        let mut rx = node.take_events().context("events taken")?;
        let tx = event_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if tx.send((i, e)).is_err() {
                    break;
                }
            }
        });
    }

    let mut rng = match options.seed {
        Some(seed) => ChaCha20Rng::seed_from_u64(seed),
        None => ChaCha20Rng::from_rng(&mut rand::rng()),
    };
    let mut jobs: Vec<bool> = std::iter::repeat_n(false, options.messages)
        .chain(std::iter::repeat_n(true, options.requests))
        .collect();
    for i in (1..jobs.len()).rev() {
        jobs.swap(i, rng.random_range(0..=i));
    }
    // The nodes to kill (never the bootstrap node); only survivors send and receive.
    let mut victims: Vec<usize> = (1..nodes.len()).collect();
    for i in (1..victims.len()).rev() {
        victims.swap(i, rng.random_range(0..=i));
    }
    let kill_count = options.churn.map_or(0, |f| ((nodes.len() as f64) * f).round() as usize);
    victims.truncate(kill_count.min(nodes.len().saturating_sub(5)));
    let killed: HashSet<PeerId> = victims.iter().map(|&i| nodes[i].peer_id).collect();
    let survivors: Vec<usize> = (0..nodes.len()).filter(|i| !victims.contains(i)).collect();
    let kill_at = if victims.is_empty() { usize::MAX } else { jobs.len() / 2 };
    let options_copies = SendOptions { copies: options.copies.max(1), ..SendOptions::default() };

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate.max(0.1)));
    let mut progress = tokio::time::interval(Duration::from_millis(200));
    let mut next_job = 0;
    let mut last_send = started;
    let grace = options.request_timeout + Duration::from_secs(5);
    let mut killed_at: Option<(Instant, f64)> = None;
    let mut window: Option<f64> = None;
    let mut liveness = tokio::time::interval(Duration::from_millis(25));

    loop {
        tokio::select! {
            _ = pace.tick(), if next_job < jobs.len() => {
                if next_job == kill_at {
                    for &i in &victims {
                        nodes[i].stop();
                    }
                    killed_at = Some((Instant::now(), started.elapsed().as_secs_f64()));
                }
                let is_request = jobs[next_job];
                let id = next_job as u64;
                next_job += 1;
                let sender = survivors[rng.random_range(0..survivors.len())];
                let dest = loop {
                    let d = survivors[rng.random_range(0..survivors.len())];
                    if d != sender {
                        break d;
                    }
                };
                let destination = if options_copies.copies > 1 {
                    Destination::MixNode(nodes[dest].peer_id)
                } else {
                    nodes[dest].destination()
                };
                let after = killed_at.is_some();
                if is_request {
                    let payload = length_prefixed(&body(b'R', id, &mut rng));
                    match nodes[sender].request(destination, ECHO, payload, options.surbs, options_copies).await {
                        Ok(request) => {
                            tally.requests.insert((sender, request), ());
                        }
                        Err(e) => {
                            tracing::warn!(%e, "request refused");
                            tally.failures += 1;
                        }
                    }
                    tally.sent_requests += 1;
                } else {
                    tally.sent_at.insert(id, (Instant::now(), after));
                    let payload = length_prefixed(&body(b'M', id, &mut rng));
                    if let Err(e) = nodes[sender].send(destination, ECHO, payload, options_copies).await {
                        tracing::warn!(%e, "send refused");
                    }
                    tally.sent_messages += 1;
                    if after { &mut tally.after } else { &mut tally.before }.sent += 1;
                }
                last_send = Instant::now();
            }
            Some((node, event)) = events.recv() => tally.on_event(node, event),
            _ = liveness.tick(), if killed_at.is_some() && window.is_none() => {
                if let Some((at, _)) = killed_at
                    && offers_none_of(&nodes, &survivors, &killed).await
                {
                    window = Some(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
            _ = progress.tick() => {
                if show {
                    eprint!("\r{}   ", tally.progress(&options, started));
                    let _ = std::io::stderr().flush();
                }
                if tally.done(&options) || (next_job == jobs.len() && last_send.elapsed() > grace) {
                    break;
                }
            }
        }
    }
    // The workload may end before every survivor noticed: keep watching a while.
    if window.is_none()
        && let Some((at, _)) = killed_at
    {
        while at.elapsed() < Duration::from_secs(30) {
            if offers_none_of(&nodes, &survivors, &killed).await {
                window = Some(at.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // Late copies would be duplicates: listen a little longer.
    let linger = Instant::now() + Duration::from_millis(500);
    while let Ok(Some((node, event))) = tokio::time::timeout_at(linger.into(), events.recv()).await
    {
        tally.on_event(node, event);
    }
    if show {
        eprintln!("\r{}   ", tally.progress(&options, started));
    }
    let stream = match options.stream_bytes {
        Some(n) if survivors.len() >= 3 => {
            Some(stream_run(&nodes, &survivors, n, &mut rng, show).await)
        }
        _ => None,
    };

    let gossip = if options.gossip_messages > 0 && survivors.len() >= 3 {
        Some(
            gossip_run(&nodes, &survivors, options.gossip_messages, &mut events, &mut rng, show)
                .await,
        )
    } else {
        None
    };

    let delivered = tally.delivered.len();
    let duplicates = tally.delivered.values().map(|&n| n - 1).sum();
    let churn = killed_at.map(|(_, at_s)| ChurnReport {
        killed: victims.len(),
        at_s: (at_s * 100.0).round() / 100.0,
        liveness_window_ms: window.map(|w| w.round()),
        delivery_ratio: delivered as f64 / tally.sent_messages.max(1) as f64,
        before: std::mem::take(&mut tally.before),
        after: std::mem::take(&mut tally.after),
    });
    let report = Report {
        nodes: nodes.len(),
        transport: if options.quic { "quic" } else { "tcp" },
        wire: options.wire.name(),
        delay_semantics: options.wire.delay_semantics().name(),
        path_len: 3,
        mean_delay_ms: options.delay_ms,
        paths: format!("{:?}", options.paths),
        copies: options_copies.copies,
        startup_ms: (startup_ms * 10.0).round() / 10.0,
        discovery: discovery_report,
        duration_s: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        sent: tally.sent_messages,
        delivered,
        lost: tally.sent_messages - delivered,
        duplicates,
        replies_expected: tally.sent_requests,
        replies_received: tally.replies,
        request_failures: tally.failures + tally.requests.len(),
        latency_ms: Percentiles::of(&mut tally.latencies),
        reply_rtt_ms: Percentiles::of(&mut tally.rtts),
        forwarded_per_node: nodes.iter().map(|n| n.metrics.packets_forwarded()).collect(),
        churn,
        hardening: hardening(&options, &nodes),
        stream,
        gossip,
        metrics_endpoint,
    };
    let kept = if options.keep_running {
        victims.sort_unstable();
        for &i in victims.iter().rev() {
            nodes.remove(i);
        }
        nodes
    } else {
        Vec::new()
    };
    Ok((report, kept))
}

fn gossip_topic() -> mix_gossip::TopicId {
    mix_gossip::TopicId::from_name("mixnode/testnet")
}

struct Publication {
    publisher: usize,
    route: usize,
    at: Instant,
    delivered: HashSet<usize>,
    done: Option<f64>,
    /// Stem and mix routes: the publisher saw its message come back.
    confirmed: bool,
}

/// Publishes `count` gossip messages from random survivors, cycling through the routes
/// (direct, stem, through the mixnet), and waits until every other survivor delivered each.
async fn gossip_run(
    nodes: &[NodeHandle],
    survivors: &[usize],
    count: usize,
    events: &mut mpsc::UnboundedReceiver<(usize, NodeEvent)>,
    rng: &mut ChaCha20Rng,
    show: bool,
) -> GossipRun {
    use mix_gossip::{Event as GossipEvent, Route};
    const ROUTES: [(Route, &str); 3] =
        [(Route::Direct, "direct"), (Route::Stem, "stem"), (Route::Mix, "mix")];
    let topic = gossip_topic();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(20) {
        let counts =
            futures::future::join_all(survivors.iter().map(|&i| nodes[i].gossip_neighbors(topic)))
                .await;
        if counts.iter().all(|n| *n > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settle_s = settle.elapsed().as_secs_f64();
    let mut published: HashMap<mix_gossip::MessageId, Publication> = HashMap::new();
    let mut confirmed = [0usize; 3];
    let want = survivors.len() - 1;
    let mut next = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut deadline = None;
    loop {
        tokio::select! {
            _ = pace.tick(), if next < count => {
                let publisher = survivors[rng.random_range(0..survivors.len())];
                let route = next % ROUTES.len();
                let len = rng.random_range(16..3000);
                let mut data = vec![0u8; len];
                rng.fill_bytes(&mut data);
                match nodes[publisher].gossip_publish(topic, data, ROUTES[route].0).await {
                    Ok(id) => {
                        published.insert(id, Publication {
                            publisher, route, at: Instant::now(), delivered: HashSet::new(), done: None,
                            confirmed: false,
                        });
                    }
                    Err(e) => tracing::warn!(%e, "gossip publication refused"),
                }
                next += 1;
                if next == count {
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(30));
                }
            }
            Some((node, event)) = events.recv() => match event {
                NodeEvent::Gossip(GossipEvent::Message { id, .. }) => {
                    if let Some(p) = published.get_mut(&id)
                        && node != p.publisher
                        && p.delivered.insert(node)
                        && p.delivered.len() == want
                    {
                        p.done = Some(p.at.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                NodeEvent::Gossip(GossipEvent::PublishConfirmed { id, .. }) => {
                    if let Some(p) = published.get_mut(&id)
                        && !std::mem::replace(&mut p.confirmed, true)
                    {
                        confirmed[p.route] += 1;
                    }
                }
                _ => {}
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => break,
        }
        // A confirmation can come after the last member delivered: wait for those too.
        if next == count
            && published.values().all(|p| p.done.is_some() && (p.route == 0 || p.confirmed))
        {
            break;
        }
        if show {
            let done = published.values().filter(|p| p.done.is_some()).count();
            eprint!("\r  gossip: published {next}/{count}, delivered to all {done}   ");
            let _ = std::io::stderr().flush();
        }
    }
    if show {
        eprintln!();
    }
    let routes = ROUTES
        .iter()
        .enumerate()
        .map(|(r, (_, name))| {
            let mine: Vec<&Publication> = published.values().filter(|p| p.route == r).collect();
            let deliveries: usize = mine.iter().map(|p| p.delivered.len()).sum();
            let mut times: Vec<f64> = mine.iter().filter_map(|p| p.done).collect();
            GossipRoute {
                route: name,
                published: mine.len(),
                delivered_to_all: times.len(),
                delivery_ratio: deliveries as f64 / (mine.len() * want).max(1) as f64,
                completion_ms: Percentiles::of(&mut times),
                confirmed: confirmed[r],
            }
        })
        .collect();
    GossipRun {
        members: survivors.len(),
        forwarding: "window 150 ms, batches up to 64, shuffled".into(),
        settle_s: (settle_s * 100.0).round() / 100.0,
        routes,
    }
}

/// Streams `n` random bytes between two survivors, has the acceptor answer with their digest
/// on the same stream, then sends a message, and checks what arrived.
async fn stream_run(
    nodes: &[NodeHandle],
    survivors: &[usize],
    n: usize,
    rng: &mut ChaCha20Rng,
    show: bool,
) -> StreamRun {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use sha2::Digest;

    let (from, to) = (survivors[1], survivors[2]);
    let mut data = vec![0u8; n];
    rng.fill_bytes(&mut data);
    if show {
        eprintln!("  streaming {n} bytes from n{from} to n{to} …");
    }
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    let acceptor = nodes[to].streams.clone();
    let reader = tokio::spawn(async move {
        let mut stream = acceptor.accept_stream().await.context("no stream")?;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let k = stream.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
            counter.store(got.len(), std::sync::atomic::Ordering::Relaxed);
        }
        stream.write_all(&sha2::Sha256::digest(&got)).await?;
        stream.close().await?;
        anyhow::Ok(got)
    });
    let started = Instant::now();
    let mut control = nodes[from].streams.clone();
    let mut opener_control = control.clone();
    let opener = async {
        let mut stream = opener_control.open_stream(nodes[to].peer_id).await?;
        stream.write_all(&data).await?;
        stream.close().await?;
        let mut digest = Vec::new();
        stream.read_to_end(&mut digest).await?;
        anyhow::Ok((digest, stream.stats()))
    };
    futures::pin_mut!(opener);
    let mut progress = tokio::time::interval(Duration::from_millis(200));
    let outcome = loop {
        tokio::select! {
            result = &mut opener => break Some(result),
            _ = progress.tick() => {
                if show {
                    let got = received.load(std::sync::atomic::Ordering::Relaxed);
                    eprint!("\r  stream: {got}/{n} bytes  {:.1} s   ", started.elapsed().as_secs_f64());
                    let _ = std::io::stderr().flush();
                }
                if started.elapsed() > Duration::from_secs(600) {
                    break None;
                }
            }
        }
    };
    if show {
        eprintln!();
    }
    let seconds = started.elapsed().as_secs_f64();
    let got = match tokio::time::timeout(Duration::from_secs(10), reader).await {
        Ok(Ok(Ok(got))) => got,
        _ => Vec::new(),
    };
    let (reply_verified, stats, mut error) = match outcome {
        Some(Ok((digest, stats))) => {
            (digest == sha2::Sha256::digest(&data).as_slice(), Some(stats), None)
        }
        Some(Err(e)) => (false, None, Some(format!("{e:#}"))),
        None => (false, None, Some("timed out".to_owned())),
    };

    // A message, whole, with `send`.
    let message = data[..n / 4].to_vec();
    let sent_at = Instant::now();
    let inbox = nodes[to].streams.clone();
    let delivery = tokio::spawn(async move { inbox.next_message().await });
    let sent = control.send(nodes[to].peer_id, message.clone()).await;
    let arrived = tokio::time::timeout(Duration::from_secs(60), delivery).await;
    let message_delivered = matches!(&arrived, Ok(Ok(Some(m))) if *m == message) && sent.is_ok();
    if let Err(e) = sent {
        error.get_or_insert(format!("message: {e}"));
    }
    StreamRun {
        bytes: n,
        received: got.len(),
        bit_exact: got == data,
        reply_verified,
        seconds: (seconds * 100.0).round() / 100.0,
        goodput_mbps: ((got.len() as f64 * 8.0 / seconds / 1e6) * 100.0).round() / 100.0,
        frames_sent: stats.map_or(0, |s| s.frames_sent),
        shards_resent: stats.map_or(0, |s| s.send.shards_resent),
        surbs_sent: stats.map_or(0, |s| s.surbs),
        message_bytes: message.len(),
        message_delivered,
        message_seconds: (sent_at.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        error,
    }
}

fn hardening(options: &Options, nodes: &[NodeHandle]) -> HardeningReport {
    let sum = |f: &dyn Fn(&libp2p_mix::Metrics) -> u64| nodes.iter().map(|n| f(&n.metrics)).sum();
    let proof_reasons = [ProofError::Malformed, ProofError::Stale, ProofError::Future]
        .into_iter()
        .chain([ProofError::Insufficient, ProofError::Replayed]);
    let proofs: Vec<DropReason> = proof_reasons.map(DropReason::Proof).collect();
    HardeningReport {
        cover_slots_per_s: options.cover,
        loops_sent: sum(&|m| m.loops_sent()),
        loops_returned: sum(&|m| m.loops(true)),
        loops_lost: sum(&|m| m.loops(false)),
        epoch_s: options.epoch.map(|e| e.as_secs()),
        key_rotations: nodes.iter().map(|n| n.metrics.key_rotations()).collect(),
        mac_failures: sum(&|m| m.packets_dropped(DropReason::Sphinx(ProcessError::MacMismatch))),
        pow_bits: options.pow,
        proofs_refused: sum(&|m| proofs.iter().map(|r| m.packets_dropped(*r)).sum()),
    }
}

pub(crate) fn print(report: &Report) {
    let r = report;
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
    if let Some(c) = &r.churn {
        let window =
            c.liveness_window_ms.map_or("over 30 s".to_owned(), |ms| format!("{ms:.0} ms"));
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
    let h = &r.hardening;
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
    if let Some(s) = &r.stream {
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
    if let Some(g) = &r.gossip {
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
    println!("ran {:.2} s", r.duration_s);
    if let Some(endpoint) = &r.metrics_endpoint {
        println!("metrics were served on http://{endpoint}/metrics");
    }
}
