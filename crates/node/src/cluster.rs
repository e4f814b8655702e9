//! `mixnode testnet --processes`: a testnet whose mix nodes are separate `mixnode run`
//! processes, one of which is killed with SIGKILL mid-run and restarted from its config and
//! state directory.
//!
//! Each node gets a directory written by `mixnode init` (fresh keys, `state/`), with the echo
//! destination service on, its own Prometheus endpoint, and the first node as discovery
//! bootstrap. This program runs a client node and a destination in-process: the client finds
//! the mix nodes through discovery and sends anonymous messages (to the destination's echo
//! protocol) and requests (answered through SURBs) at a steady rate. The timeline:
//!
//! * before: the workload runs on all nodes;
//! * a node other than the bootstrap node is killed (SIGKILL: no save, no goodbye);
//! * during: the workload goes on without it; after `--down-ms` it is started again with the
//!   same config and state directory;
//! * after: from the moment its metrics show it forwarding again (`back_after_ms`), for as
//!   long again as before.
//!
//! Messages sent shortly before the kill may have been inside the killed node, or on their way
//! to it, and so may those sent after it until the client's pool stops offering the node (the
//! client learns of the death when its connection to the node breaks): those lost are
//! `lost_in_flight`. Everything sent outside that window is expected.
//! At the end every node gets SIGTERM and must exit 0 (a graceful stop).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p::{Multiaddr, PeerId};
use libp2p_mix::core::SendOptions;
use libp2p_mix::{Destination, Event, RequestId, discovery};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::echo::{ECHO, length_prefixed};
use crate::runtime::{self, DiscoverySpec, NodeEvent, NodeSpec};
use crate::testnet::{body, parse_body};

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) nodes: usize,
    /// Messages plus requests per second.
    pub(crate) rate: f64,
    pub(crate) delay_ms: u16,
    /// How long the workload runs before the kill, and again after the node is back.
    pub(crate) phase: Duration,
    /// How long the killed node stays down.
    pub(crate) down: Duration,
    pub(crate) progress: bool,
}

/// Messages sent this long before the kill may have been in the killed node's hands (a path
/// takes a few hundred milliseconds at most; replies come back through two paths).
const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(2);
/// The longest the client's failure detector is given after the kill before losses count as
/// its failure rather than as packets in flight.
const MAX_DETECTION: Duration = Duration::from_secs(1);
/// How long a restarted node may take to carry traffic again before the run gives up on it.
const BACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Every fourth item of the workload is a request.
const REQUEST_EVERY: u64 = 4;

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(crate) struct Phase {
    sent: usize,
    delivered: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct Restart {
    /// The killed node: its index and peer id.
    killed: usize,
    killed_peer: String,
    killed_at_s: f64,
    /// Packets it held (delayed or unsent) in its last metrics before the kill.
    held_at_kill: Option<f64>,
    down_ms: f64,
    /// From the kill until the client's pool stopped offering it for paths.
    suspended_after_ms: Option<f64>,
    /// From the restart until the client's pool offered it again.
    readmitted_after_ms: Option<f64>,
    /// From the restart until its metrics showed it forwarding a packet again.
    back_after_ms: Option<f64>,
    /// The client's pool offered it for paths again at the end: its new discovery record
    /// (same peer id and mix key: both come from its unchanged config, and the cluster's nodes
    /// keep one mix key, `[rotation] enabled = false`) re-admitted it after its death had
    /// suspended it.
    rediscovered: bool,
    /// The restarted node found a saved replay state (written by its periodic saves: SIGKILL
    /// allows no final one).
    replay_state_loaded: bool,
    /// Replay filters (one per mix key) it restored from that state.
    replay_filters_restored: Option<u64>,
    /// Paths through it again: packets it forwarded after the restart.
    forwarded_after_restart: u64,
    /// Sent in the last seconds before the kill or after it until the client's pool dropped
    /// the node (paths chosen then may lead into it), and lost.
    lost_in_flight: usize,
    in_flight_window: Phase,
    before: Phase,
    during: Phase,
    after: Phase,
    /// Delivered over sent outside the in-flight window (the target is 1.0).
    delivery_outside_in_flight: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    nodes: usize,
    processes: bool,
    transport: &'static str,
    mean_delay_ms: u16,
    startup_ms: f64,
    /// Until the client's pool held every mix node.
    discovery_ms: f64,
    duration_s: f64,
    sent: usize,
    delivered: usize,
    lost: usize,
    replies_expected: usize,
    replies_received: usize,
    latency_ms: crate::testnet::Percentiles,
    reply_rtt_ms: crate::testnet::Percentiles,
    forwarded_per_node: Vec<u64>,
    metrics_endpoints: Vec<String>,
    restart: Restart,
    /// Nodes that exited 0 after SIGTERM at the end.
    clean_exits: usize,
    node_dirs: String,
}

/// One `mixnode run` process and where it keeps things.
struct NodeProcess {
    dir: PathBuf,
    config: PathBuf,
    peer_id: PeerId,
    addr: Multiaddr,
    metrics: SocketAddr,
    child: Option<Child>,
    runs: usize,
}

impl NodeProcess {
    fn log(&self) -> PathBuf {
        self.dir.join(format!("run-{}.log", self.runs))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.runs += 1;
        let log = std::fs::File::create(self.log())?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a node process")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; `true` if it exited 0 within `timeout`.
    fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + timeout;
        while signalled && Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on now, and not handed out before by this process. The
/// listener that found it is closed at once, so the kernel may offer the same port again:
/// a node's swarm and its metrics endpoint were once given one port, and the second bind
/// failed.
fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..64 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no loopback port left that was not handed out already")
}

/// Sets `key` in `[section]` of a config written by `init`.
fn set(text: &str, section: &str, key: &str, value: &str) -> anyhow::Result<String> {
    let mut current = "";
    let mut done = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            current = trimmed.split_whitespace().next().unwrap_or_default();
        }
        let is = trimmed.starts_with(key) && trimmed[key.len()..].trim_start().starts_with('=');
        if current == section && is && !done {
            out.push_str(&format!("{key} = {value}"));
            done = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    anyhow::ensure!(done, "no {key} in {section} of the generated config");
    Ok(out)
}

fn write_node(
    root: &Path,
    i: usize,
    bootstrap: Option<&Multiaddr>,
    delay_ms: u16,
) -> anyhow::Result<NodeProcess> {
    let port = free_port()?;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse()?;
    let dir = root.join(format!("node-{i}"));
    let written = crate::init::write(&crate::init::Options {
        dir: dir.clone(),
        listen: vec![addr.clone()],
        advertise: None,
        bootstrap: bootstrap.into_iter().cloned().collect(),
        force: true,
    })?;
    let mut text = std::fs::read_to_string(&written.config)?;
    text = set(&text, "[network]", "echo", "true")?;
    text = set(&text, "[metrics]", "listen", &format!("\"{metrics}\""))?;
    let delay = if delay_ms == 0 {
        "{ kind = \"none\" }".to_owned()
    } else {
        format!("{{ kind = \"exponential\", mean_ms = {delay_ms} }}")
    };
    text = set(&text, "[mix]", "delay", &delay)?;
    // A short run: replay filters sized for it, saved every second, so that the node killed
    // with SIGKILL finds the tags of all but its last second when it comes back.
    text = set(&text, "[mix]", "expected_packets_per_second", "200")?;
    text = set(&text, "[mix]", "key_lifetime_s", "600")?;
    text = set(&text, "[network]", "state_save_interval_ms", "1000")?;
    // One mix key for ever, as reference nodes do: the restarted node comes back with the same
    // key, so its saved replay state is what keeps captured packets from being replayed to it.
    // (With rotation, the default where discovery runs, it would start with fresh keys.)
    text.push_str("\n[rotation]\nenabled = false\n");
    crate::config::parse(&text).context("the cluster's node config does not load (a bug)")?;
    std::fs::write(&written.config, text)?;
    Ok(NodeProcess {
        dir: written.config.parent().context("config dir")?.to_path_buf(),
        config: written.config,
        peer_id: written.peer_id,
        addr,
        metrics,
        child: None,
        runs: 0,
    })
}

/// The node's metrics, by series (name and labels).
async fn scrape(addr: SocketAddr) -> anyhow::Result<HashMap<String, f64>> {
    let mut socket =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await??;
    socket.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
    let mut text = String::new();
    // A node's metrics are tens of kilobytes; more is not a metrics page.
    let mut page = socket.take(4 << 20);
    tokio::time::timeout(Duration::from_secs(2), page.read_to_string(&mut text)).await??;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect())
}

fn forwarded(metrics: &HashMap<String, f64>) -> u64 {
    metrics.get("mix_packets_sent_total{kind=\"forward\"}").copied().unwrap_or(0.0) as u64
}

fn client_spec(bootstrap: (PeerId, Multiaddr), delay_ms: u16) -> anyhow::Result<NodeSpec> {
    let mut config = libp2p_mix::Config::default();
    config.core.request_timeout = Duration::from_secs(5);
    config.core.pre_send_delay = Duration::from_millis(5);
    config.probe_interval = Some(Duration::from_secs(1));
    config.probes_per_interval = 8;
    let discovery = DiscoverySpec {
        config: discovery::Config {
            // A restarted node is re-admitted by its new record: fetch records often.
            refetch_interval: Duration::from_secs(1),
            initial_walks: 20,
            initial_walk_interval: Duration::from_millis(250),
            walk_interval: Duration::from_secs(2),
            retry_missing: Duration::from_millis(500),
            ..discovery::Config::default()
        },
        bootstrap: vec![bootstrap],
    };
    // The sender writes the network's delay parameter into each hop (what node.toml's
    // `mix.delay` does for the processes).
    let delay = if delay_ms == 0 {
        crate::config::DelayConfig::None
    } else {
        crate::config::DelayConfig::Exponential { mean_ms: delay_ms }
    };
    Ok(NodeSpec {
        discovery: Some(discovery),
        delay: delay.strategy(),
        exit: false,
        ..NodeSpec::new("/ip4/127.0.0.1/tcp/0".parse()?, config)
    })
}

/// One message or request of the workload.
struct Item {
    sent: Instant,
    delivered: Option<Instant>,
    request: bool,
}

fn tally(items: &[Item], from: Instant, to: Instant) -> Phase {
    let mut phase = Phase::default();
    for item in items.iter().filter(|i| i.sent >= from && i.sent < to) {
        phase.sent += 1;
        phase.delivered += usize::from(item.delivered.is_some());
    }
    phase
}

/// The node processes, and the client and destination running in this process.
struct Cluster {
    procs: Vec<NodeProcess>,
    client: runtime::NodeHandle,
    dest: runtime::NodeHandle,
    root: PathBuf,
    startup_ms: f64,
    discovery_ms: f64,
}

pub(crate) async fn run(options: Options) -> anyhow::Result<Report> {
    anyhow::ensure!(options.nodes >= 4, "--processes needs at least 4 nodes (3 hops and a spare)");
    let mut cluster = start(&options).await?;
    let workload = Workload::run(&mut cluster, &options).await?;
    finish(cluster, workload, &options).await
}

/// Writes and starts the node processes, starts the client and the destination, and waits
/// until the client's pool holds every node.
async fn start(options: &Options) -> anyhow::Result<Cluster> {
    let started = Instant::now();
    let root = std::env::temp_dir().join(format!("mixnode-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut procs = vec![write_node(&root, 0, None, options.delay_ms)?];
    let bootstrap = procs[0].addr.clone().with(libp2p::multiaddr::Protocol::P2p(procs[0].peer_id));
    for i in 1..options.nodes {
        procs.push(write_node(&root, i, Some(&bootstrap), options.delay_ms)?);
    }
    for p in &mut procs {
        p.spawn()?;
    }
    for p in &procs {
        let deadline = Instant::now() + Duration::from_secs(20);
        while scrape(p.metrics).await.is_err() {
            anyhow::ensure!(Instant::now() < deadline, "node {} did not start", p.dir.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let client =
        runtime::start(client_spec((procs[0].peer_id, procs[0].addr.clone()), options.delay_ms)?)
            .await?;
    let dest = runtime::start(NodeSpec {
        echo: true,
        exit: false,
        ..NodeSpec::new("/ip4/127.0.0.1/tcp/0".parse()?, libp2p_mix::Config::default())
    })
    .await?;
    let startup_ms = started.elapsed().as_secs_f64() * 1000.0;
    let all: Vec<PeerId> = procs.iter().map(|p| p.peer_id).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pool = client.pool_peers().await;
        if all.iter().all(|p| pool.contains(p)) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the client found {} of {} nodes",
            all.iter().filter(|p| pool.contains(p)).count(),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let discovery_ms = started.elapsed().as_secs_f64() * 1000.0 - startup_ms;
    Ok(Cluster { procs, client, dest, root, startup_ms, discovery_ms })
}

/// When things happened to the killed node, as the run saw them.
#[derive(Debug, Default)]
struct Timeline {
    /// The kill, and the packets the node held then (from its last metrics).
    killed: Option<(Instant, Option<f64>)>,
    restarted: Option<Instant>,
    /// Its metrics first showed it forwarding after the restart.
    back: Option<Instant>,
    /// Its forwarded count then.
    forwarded_at_restart: u64,
    /// The client's pool stopped offering it.
    suspended: Option<Instant>,
    /// The client's pool offered it again.
    readmitted: Option<Instant>,
}

/// The steady workload through the kill and the restart.
struct Workload {
    started: Instant,
    items: Vec<Item>,
    requests: HashMap<RequestId, usize>,
    rtts: Vec<f64>,
    timeline: Timeline,
    next_send: Instant,
    /// When sending stops (set once the node is back, or has not come back in time).
    stop_sending: Option<Instant>,
    duration_s: f64,
}

impl Workload {
    async fn run(cluster: &mut Cluster, options: &Options) -> anyhow::Result<Self> {
        let victim = options.nodes - 1;
        let destination =
            Destination::Peer { peer_id: cluster.dest.peer_id, addr: cluster.dest.addr.clone() };
        let mut dest_events = cluster.dest.take_events().context("events")?;
        let mut client_events = cluster.client.take_events().context("events")?;
        let gap = Duration::from_secs_f64(1.0 / options.rate.max(0.1));
        let started = Instant::now();
        let mut w = Self {
            started,
            items: Vec::new(),
            requests: HashMap::new(),
            rtts: Vec::new(),
            timeline: Timeline::default(),
            next_send: started,
            stop_sending: None,
            duration_s: 0.0,
        };
        let kill_at = started + options.phase;
        let restart_at = kill_at + options.down;
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        let mut pool_poll = tokio::time::interval(Duration::from_millis(10));
        let victim_peer = cluster.procs[victim].peer_id;
        loop {
            let now = Instant::now();
            w.kill_or_restart(now, kill_at, restart_at, &mut cluster.procs[victim], options)
                .await?;
            if w.done(now) {
                break;
            }
            let sending = w.stop_sending.is_none_or(|end| now < end);
            let watching_pool = w.timeline.killed.is_some() && w.timeline.readmitted.is_none();
            tokio::select! {
                _ = tokio::time::sleep_until(w.next_send.into()), if sending => {
                    w.send_next(&mut cluster.client, &destination).await;
                    w.next_send += gap;
                }
                Some(event) = dest_events.recv() => w.on_destination(event),
                Some(event) = client_events.recv() => w.on_client(event),
                _ = pool_poll.tick(), if watching_pool => {
                    let offered = cluster.client.pool_peers().await.contains(&victim_peer);
                    w.on_pool(offered);
                }
                _ = poll.tick() => {
                    w.watch_restarted(cluster.procs[victim].metrics, victim, options).await;
                }
            }
        }
        w.duration_s = started.elapsed().as_secs_f64();
        Ok(w)
    }

    /// Kills the victim when its time comes, and starts it again after `--down-ms`.
    async fn kill_or_restart(
        &mut self,
        now: Instant,
        kill_at: Instant,
        restart_at: Instant,
        victim: &mut NodeProcess,
        options: &Options,
    ) -> anyhow::Result<()> {
        let t = &mut self.timeline;
        if t.killed.is_none() && now >= kill_at {
            let held = scrape(victim.metrics).await.ok().map(|m| {
                m.get("mix_delay_queue_depth").copied().unwrap_or(0.0)
                    + m.get("mix_unsent_frames").copied().unwrap_or(0.0)
            });
            victim.kill();
            t.killed = Some((Instant::now(), held));
            if options.progress {
                eprintln!("killed node {} (SIGKILL)", options.nodes - 1);
            }
        }
        if t.killed.is_some() && t.restarted.is_none() && now >= restart_at {
            victim.spawn()?;
            t.restarted = Some(Instant::now());
            if options.progress {
                eprintln!("restarted node {}", options.nodes - 1);
            }
        }
        if let Some(at) = t.restarted
            && t.back.is_none()
            && now >= at + BACK_TIMEOUT
        {
            self.stop_sending.get_or_insert(now);
        }
        Ok(())
    }

    /// Sending stopped and the last replies came, or stragglers had their time.
    fn done(&self, now: Instant) -> bool {
        let Some(end) = self.stop_sending else { return false };
        // Stragglers: a message sent last takes a few hundred milliseconds.
        (now >= end + Duration::from_secs(2) && self.requests.is_empty())
            || now >= end + Duration::from_secs(10)
    }

    async fn send_next(&mut self, client: &mut runtime::NodeHandle, destination: &Destination) {
        let id = self.items.len() as u64;
        let request = id % REQUEST_EVERY == REQUEST_EVERY - 1;
        self.items.push(Item { sent: Instant::now(), delivered: None, request });
        let mut rng = rand::rng();
        if request {
            let payload = length_prefixed(&body(b'R', id, &mut rng));
            let sent =
                client.request(destination.clone(), ECHO, payload, 2, SendOptions::default()).await;
            match sent {
                Ok(request) => {
                    self.requests.insert(request, id as usize);
                }
                Err(e) => tracing::warn!(%e, "request refused"),
            }
        } else {
            let payload = length_prefixed(&body(b'M', id, &mut rng));
            let sent =
                client.send(destination.clone(), ECHO, payload, SendOptions::default()).await;
            if let Err(e) = sent {
                tracing::warn!(%e, "send refused");
            }
        }
    }

    fn on_destination(&mut self, event: NodeEvent) {
        if let NodeEvent::Echo { body, at } = event
            && let Some((b'M', id)) = parse_body(&body)
            && let Some(item) = self.items.get_mut(id as usize)
        {
            item.delivered.get_or_insert(at);
        }
    }

    fn on_client(&mut self, event: NodeEvent) {
        match event {
            NodeEvent::Mix(Event::Reply { request, rtt, .. }) => {
                if let Some(i) = self.requests.remove(&request) {
                    self.items[i].delivered.get_or_insert(Instant::now());
                    self.rtts.push(rtt.as_secs_f64() * 1000.0);
                }
            }
            NodeEvent::Mix(Event::RequestFailed { request, .. }) => {
                self.requests.remove(&request);
            }
            _ => {}
        }
    }

    /// Whether the client's pool offers the victim now.
    fn on_pool(&mut self, offered: bool) {
        let t = &mut self.timeline;
        if !offered && t.suspended.is_none() && t.restarted.is_none() {
            t.suspended = Some(Instant::now());
        }
        if offered && t.restarted.is_some() && t.suspended.is_some() {
            t.readmitted = Some(Instant::now());
        }
    }

    /// After the restart: the victim is back once its metrics show it forwarding; the
    /// workload then runs as long again as before the kill.
    async fn watch_restarted(&mut self, metrics: SocketAddr, victim: usize, options: &Options) {
        let Some(at) = self.timeline.restarted else { return };
        if self.timeline.back.is_some() {
            return;
        }
        let Ok(metrics) = scrape(metrics).await else { return };
        let now = forwarded(&metrics);
        if now > 0 {
            self.timeline.back = Some(Instant::now());
            self.timeline.forwarded_at_restart = now;
            self.stop_sending = Some(Instant::now() + options.phase);
            if options.progress {
                let ms = at.elapsed().as_secs_f64() * 1000.0;
                eprintln!("node {victim} forwards again {ms:.0} ms after its restart");
            }
        }
    }
}

/// Reads the nodes' last figures, stops them (SIGTERM), and accounts for every item by the
/// phase it was sent in.
async fn finish(mut cluster: Cluster, w: Workload, options: &Options) -> anyhow::Result<Report> {
    let victim = options.nodes - 1;
    let procs = &mut cluster.procs;
    let mut forwarded_per_node = Vec::new();
    for p in procs.iter() {
        forwarded_per_node.push(scrape(p.metrics).await.map(|m| forwarded(&m)).unwrap_or(0));
    }
    let t = &w.timeline;
    let forwarded_after_restart = forwarded_per_node[victim].max(t.forwarded_at_restart);
    let rediscovered = cluster.client.pool_peers().await.contains(&procs[victim].peer_id);
    let restart_log = std::fs::read_to_string(procs[victim].log()).unwrap_or_default();
    let loaded = restart_log.lines().find(|l| l.contains("replay state loaded"));
    let replay_state_loaded = loaded.is_some();
    let replay_filters_restored = loaded.and_then(|l| {
        let rest = &l[l.find("restored=")? + "restored=".len()..];
        rest.split_whitespace().next()?.parse().ok()
    });
    let mut clean_exits = 0;
    for p in procs.iter_mut() {
        clean_exits += usize::from(p.terminate(Duration::from_secs(10)));
    }

    let (killed_at, held_at_kill) = t.killed.context("the node was never killed")?;
    let end = Instant::now() + Duration::from_secs(3600);
    let back_or_end = t.back.unwrap_or(end);
    let in_flight_from = killed_at.checked_sub(IN_FLIGHT_WINDOW).unwrap_or(w.started);
    // Until the client's pool drops the node, new paths may still lead into it: those
    // packets are in flight towards it as much as the ones sent just before the kill.
    // At most a second after the kill (and never past the restart): a slower failure detector
    // shows as losses `during`, not as a longer window.
    let in_flight_to = t
        .suspended
        .unwrap_or(killed_at)
        .clamp(killed_at, killed_at + MAX_DETECTION)
        .min(t.restarted.unwrap_or(end));
    let items = &w.items;
    let before = tally(items, w.started, in_flight_from);
    let in_flight_window = tally(items, in_flight_from, in_flight_to);
    let during = tally(items, in_flight_to, back_or_end);
    let after = tally(items, back_or_end, end);
    let outside = [before, during, after];
    let (sent_out, delivered_out) =
        outside.iter().fold((0, 0), |(s, d), p| (s + p.sent, d + p.delivered));
    let mut latencies: Vec<f64> = items
        .iter()
        .filter(|i| !i.request)
        .filter_map(|i| Some(i.delivered?.duration_since(i.sent).as_secs_f64() * 1000.0))
        .collect();
    let mut rtts = w.rtts.clone();
    let delivered = items.iter().filter(|i| i.delivered.is_some()).count();
    let replies_expected = items.iter().filter(|i| i.request).count();
    let replies_received = items.iter().filter(|i| i.request && i.delivered.is_some()).count();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Report {
        nodes: options.nodes,
        processes: true,
        transport: "tcp",
        mean_delay_ms: options.delay_ms,
        startup_ms: cluster.startup_ms,
        discovery_ms: cluster.discovery_ms,
        duration_s: w.duration_s,
        sent: items.len(),
        delivered,
        lost: items.len() - delivered,
        replies_expected,
        replies_received,
        latency_ms: crate::testnet::Percentiles::of(&mut latencies),
        reply_rtt_ms: crate::testnet::Percentiles::of(&mut rtts),
        forwarded_per_node,
        metrics_endpoints: procs.iter().map(|p| format!("http://{}/metrics", p.metrics)).collect(),
        restart: Restart {
            killed: victim,
            killed_peer: procs[victim].peer_id.to_string(),
            killed_at_s: killed_at.duration_since(w.started).as_secs_f64(),
            held_at_kill,
            down_ms: t.restarted.map_or(0.0, |r| ms(r.duration_since(killed_at))),
            suspended_after_ms: t.suspended.map(|s| ms(s.duration_since(killed_at))),
            readmitted_after_ms: t
                .restarted
                .zip(t.readmitted)
                .map(|(r, a)| ms(a.duration_since(r))),
            back_after_ms: t.restarted.zip(t.back).map(|(r, b)| ms(b.duration_since(r))),
            rediscovered,
            replay_state_loaded,
            replay_filters_restored,
            forwarded_after_restart,
            lost_in_flight: in_flight_window.sent - in_flight_window.delivered,
            in_flight_window,
            before,
            during,
            after,
            delivery_outside_in_flight: if sent_out == 0 {
                0.0
            } else {
                delivered_out as f64 / sent_out as f64
            },
        },
        clean_exits,
        node_dirs: cluster.root.display().to_string(),
    })
}

pub(crate) fn print(r: &Report) {
    println!(
        "{} mix node processes on loopback TCP, mean delay {} ms per hop; started in {:.0} ms, discovered in {:.0} ms",
        r.nodes, r.mean_delay_ms, r.startup_ms, r.discovery_ms
    );
    println!(
        "workload {:.1} s: {} sent, {} delivered, {} lost; replies {}/{}; latency p50 {:.1} ms, reply rtt p50 {:.1} ms",
        r.duration_s,
        r.sent,
        r.delivered,
        r.lost,
        r.replies_received,
        r.replies_expected,
        r.latency_ms.p50,
        r.reply_rtt_ms.p50
    );
    let s = &r.restart;
    println!(
        "node {} killed (SIGKILL) at {:.1} s holding {:?} packets, down {:.0} ms; back {} after its restart (rediscovered: {}, replay state loaded: {}, filters restored: {:?}); forwarded {} since",
        s.killed,
        s.killed_at_s,
        s.held_at_kill,
        s.down_ms,
        s.back_after_ms.map_or("never".into(), |ms| format!("{ms:.0} ms")),
        s.rediscovered,
        s.replay_state_loaded,
        s.replay_filters_restored,
        s.forwarded_after_restart
    );
    let ms = |x: Option<f64>| x.map_or("never".into(), |ms| format!("{ms:.0} ms"));
    println!(
        "the client stopped offering it for paths {} after the kill, and offered it again {} after the restart",
        ms(s.suspended_after_ms),
        ms(s.readmitted_after_ms)
    );
    let show = |p: &Phase| format!("{}/{}", p.delivered, p.sent);
    println!(
        "delivery before {}, from {} s before the kill until the client dropped the node {} (lost in flight {}), during {}, after {}; outside the in-flight window {:.3}",
        show(&s.before),
        IN_FLIGHT_WINDOW.as_secs(),
        show(&s.in_flight_window),
        s.lost_in_flight,
        show(&s.during),
        show(&s.after),
        s.delivery_outside_in_flight
    );
    println!(
        "forwarded per node: {:?}; clean exits after SIGTERM: {}/{}",
        r.forwarded_per_node, r.clean_exits, r.nodes
    );
    println!("node directories (configs, state, logs): {}", r.node_dirs);
}
