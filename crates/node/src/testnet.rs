//! `mixnode testnet`: a local mixnet of real nodes in one process, a workload of anonymous
//! messages and SURB request/replies through it, and what came out.
//!
//! Every node is a full mix node (TCP or QUIC on 127.0.0.1, Noise, Yamux) that also serves a
//! small echo protocol, so any node can be another's destination: the exit dials it with the
//! echo protocol like any libp2p peer, without mix involvement.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p::{Multiaddr, identity};
use libp2p_mix::{Event, RequestId, StaticPool};
use mix_sphinx::NodeSecretKey;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::DelayConfig;
use crate::runtime::{self, ECHO, NodeEvent, NodeHandle, NodeSpec, length_prefixed};

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
}

#[derive(Debug, Serialize)]
pub(crate) struct Percentiles {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples: &mut [f64]) -> Self {
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
pub(crate) struct Report {
    nodes: usize,
    transport: &'static str,
    path_len: usize,
    mean_delay_ms: u16,
    startup_ms: f64,
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
    metrics_endpoint: Option<String>,
}

/// The `M`/`R` tag and id inside each echo body.
fn body(tag: u8, id: u64, rng: &mut dyn Rng) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&id.to_be_bytes());
    // Some payload so packets are not nearly empty; the size is what an app would send.
    let mut filler = vec![0u8; 200];
    rng.fill_bytes(&mut filler);
    b.extend_from_slice(&filler);
    b
}

fn parse_body(b: &[u8]) -> Option<(u8, u64)> {
    let id = u64::from_be_bytes(b.get(1..9)?.try_into().ok()?);
    Some((*b.first()?, id))
}

async fn start_nodes(options: &Options) -> anyhow::Result<Vec<NodeHandle>> {
    let listen: Multiaddr =
        if options.quic { "/ip4/127.0.0.1/udp/0/quic-v1" } else { "/ip4/127.0.0.1/tcp/0" }
            .parse()?;
    let delay = if options.delay_ms == 0 {
        DelayConfig::None
    } else {
        DelayConfig::Exponential { mean_ms: options.delay_ms }
    };
    let mut config = libp2p_mix::Config::default();
    config.core.request_timeout = options.request_timeout;
    config.core.pre_send_delay = Duration::from_millis(5);
    // A testnet is short-lived; size the replay filters accordingly.
    config.core.replay.key_lifetime = Duration::from_secs(600);
    let starts = (0..options.nodes).map(|_| {
        runtime::start(NodeSpec {
            identity: identity::Keypair::generate_secp256k1(),
            mix_secret: NodeSecretKey::generate(&mut rand::rng()),
            listen: vec![listen.clone()],
            advertise: None,
            exit: true,
            pool: StaticPool::default(),
            delay: delay.strategy(),
            config: config.clone(),
            echo: true,
        })
    });
    let nodes = futures::future::try_join_all(starts).await?;
    let pool =
        StaticPool::new(nodes.iter().map(NodeHandle::entry).collect::<anyhow::Result<Vec<_>>>()?)?;
    for node in &nodes {
        node.set_pool(pool.clone());
    }
    Ok(nodes)
}

#[derive(Default)]
struct Tally {
    sent_messages: usize,
    sent_requests: usize,
    sent_at: HashMap<u64, Instant>,
    delivered: HashMap<u64, usize>,
    latencies: Vec<f64>,
    /// Pending requests, by sending node and its request id (ids are per node).
    requests: HashMap<(usize, RequestId), ()>,
    replies: usize,
    failures: usize,
    rtts: Vec<f64>,
}

impl Tally {
    fn on_event(&mut self, node: usize, event: NodeEvent) {
        match event {
            NodeEvent::Echo { body, at } => {
                if let Some((b'M', id)) = parse_body(&body) {
                    let count = self.delivered.entry(id).or_default();
                    *count += 1;
                    if *count == 1
                        && let Some(sent) = self.sent_at.get(&id)
                    {
                        self.latencies.push(at.duration_since(*sent).as_secs_f64() * 1000.0);
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
            NodeEvent::Mix(_) => {}
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

pub(crate) async fn run(options: Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.nodes >= 5,
        "a testnet needs at least 5 nodes (3 hops + sender + destination)"
    );
    let startup = Instant::now();
    let mut nodes = start_nodes(&options).await.context("starting nodes")?;
    let startup_ms = startup.elapsed().as_secs_f64() * 1000.0;

    let metrics_endpoint = match options.metrics {
        Some(addr) => {
            let mut registry = prometheus_client::registry::Registry::default();
            for (i, node) in nodes.iter().enumerate() {
                let sub = registry.sub_registry_with_label(("node".into(), i.to_string().into()));
                node.metrics.register(sub);
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

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate.max(0.1)));
    let mut progress = tokio::time::interval(Duration::from_millis(200));
    let mut next_job = 0;
    let mut last_send = started;
    let grace = options.request_timeout + Duration::from_secs(5);
    let show = options.progress && std::io::stderr().is_terminal();

    loop {
        tokio::select! {
            _ = pace.tick(), if next_job < jobs.len() => {
                let is_request = jobs[next_job];
                let id = next_job as u64;
                next_job += 1;
                let sender = rng.random_range(0..nodes.len());
                let dest = (sender + rng.random_range(1..nodes.len())) % nodes.len();
                let destination = nodes[dest].destination();
                if is_request {
                    let payload = length_prefixed(&body(b'R', id, &mut rng));
                    let request = nodes[sender].request(destination, ECHO, payload, options.surbs).await?;
                    tally.requests.insert((sender, request), ());
                    tally.sent_requests += 1;
                } else {
                    tally.sent_at.insert(id, Instant::now());
                    nodes[sender].send(destination, ECHO, length_prefixed(&body(b'M', id, &mut rng))).await?;
                    tally.sent_messages += 1;
                }
                last_send = Instant::now();
            }
            Some((node, event)) = events.recv() => tally.on_event(node, event),
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
    // Late copies would be duplicates: listen a little longer.
    let linger = Instant::now() + Duration::from_millis(500);
    while let Ok(Some((node, event))) = tokio::time::timeout_at(linger.into(), events.recv()).await
    {
        tally.on_event(node, event);
    }
    if show {
        eprintln!("\r{}   ", tally.progress(&options, started));
    }

    let delivered = tally.delivered.len();
    let duplicates = tally.delivered.values().map(|&n| n - 1).sum();
    Ok(Report {
        nodes: nodes.len(),
        transport: if options.quic { "quic" } else { "tcp" },
        path_len: 3,
        mean_delay_ms: options.delay_ms,
        startup_ms: (startup_ms * 10.0).round() / 10.0,
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
        metrics_endpoint,
    })
}

pub(crate) fn print(report: &Report) {
    let r = report;
    println!(
        "testnet: {} mix nodes on 127.0.0.1 ({}), {} hops, exponential delay mean {} ms per hop; started in {:.0} ms",
        r.nodes, r.transport, r.path_len, r.mean_delay_ms, r.startup_ms
    );
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
    println!("ran {:.2} s", r.duration_s);
    if let Some(endpoint) = &r.metrics_endpoint {
        println!("metrics were served on http://{endpoint}/metrics");
    }
}
