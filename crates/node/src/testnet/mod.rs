//! `mixnode testnet`: a local mixnet of real nodes in one process, a workload of anonymous
//! messages and SURB request/replies through it, and what came out.
//!
//! Every node is a full mix node (TCP or QUIC on 127.0.0.1, Noise, Yamux) that also serves a
//! small echo protocol, so any node can be another's destination: the exit dials it with the
//! echo protocol like any libp2p peer, without mix involvement. By default the nodes know only
//! the first node's address and find each other through discovery. With `--copies` above 1,
//! messages go to mix-node destinations, which deliver the first copy. With `--churn`, a
//! share of the nodes is killed halfway through the workload.

//!
//! One file per workload: [`messages`] (one-way messages and requests, with churn),
//! [`streams`] and [`gossip`]; [`report`] holds what they measured and prints it.

mod gossip;
mod messages;
mod report;
mod streams;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p::{Multiaddr, PeerId};
use libp2p_mix::core::{CoverConfig, CoverMode, PathSelection, RotationConfig};
use libp2p_mix::spam::{Placement, PowConfig, ProofError, ProofOfWork, SpamConfig};
use libp2p_mix::{DropReason, Wire, discovery};
use mix_sphinx::ProcessError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tokio::sync::mpsc;

use crate::config::DelayConfig;
use crate::runtime::{self, DiscoverySpec, GossipSpec, NodeEvent, NodeHandle, NodeSpec};

use gossip::{gossip_run, gossip_topic};
use report::{ChurnReport, DiscoveryReport, HardeningReport};
pub(crate) use report::{Percentiles, Report, print};
use streams::stream_run;

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
            config: mix_gossip::Config::default(),
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
        Some(addr) => Some(serve_metrics(&nodes, addr).await?),
        None => None,
    };
    let mut events = merge_events(&mut nodes)?;

    let mut rng = match options.seed {
        Some(seed) => ChaCha20Rng::seed_from_u64(seed),
        None => ChaCha20Rng::from_rng(&mut rand::rng()),
    };
    let messages::Outcome { mut tally, started, killed_at, window, mut victims, survivors, copies } =
        messages::run(&options, &nodes, &mut events, &mut rng, show).await;
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
        copies,
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

/// Serves every node's metrics on `addr`, each labelled with its index.
async fn serve_metrics(nodes: &[NodeHandle], addr: SocketAddr) -> anyhow::Result<String> {
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
    Ok(crate::metrics_http::serve(addr, registry).await?.to_string())
}

/// Every node's events on one channel, with the node's index.
fn merge_events(
    nodes: &mut [NodeHandle],
) -> anyhow::Result<mpsc::UnboundedReceiver<(usize, NodeEvent)>> {
    let (event_tx, events) = mpsc::unbounded_channel();
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
    Ok(events)
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
