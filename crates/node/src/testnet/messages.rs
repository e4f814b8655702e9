//! The main workload: one-way anonymous messages and SURB requests between random nodes,
//! with churn.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p_mix::core::SendOptions;
use libp2p_mix::{Destination, Event, RequestId};
use rand::RngExt;
use rand_chacha::ChaCha20Rng;
use tokio::sync::mpsc;

use crate::echo::{ECHO, length_prefixed};
use crate::runtime::{NodeEvent, NodeHandle};

use super::report::Phase;
use super::{Options, body, parse_body};

#[derive(Default)]
pub(super) struct Tally {
    pub(super) sent_messages: usize,
    pub(super) sent_requests: usize,
    pub(super) sent_at: HashMap<u64, (Instant, bool)>,
    pub(super) delivered: HashMap<u64, usize>,
    pub(super) latencies: Vec<f64>,
    /// Pending requests, by sending node and its request id (ids are per node).
    pub(super) requests: HashMap<(usize, RequestId), ()>,
    pub(super) replies: usize,
    pub(super) failures: usize,
    pub(super) rtts: Vec<f64>,
    pub(super) before: Phase,
    pub(super) after: Phase,
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
pub(super) async fn offers_none_of(
    nodes: &[NodeHandle],
    survivors: &[usize],
    killed: &HashSet<PeerId>,
) -> bool {
    let pools = futures::future::join_all(survivors.iter().map(|&i| nodes[i].pool_peers())).await;
    pools.iter().all(|pool| pool.iter().all(|p| !killed.contains(p)))
}

/// What the message and request workload left behind.
pub(super) struct Outcome {
    pub(super) tally: Tally,
    pub(super) started: Instant,
    /// When the victims were killed (instant, seconds into the workload).
    pub(super) killed_at: Option<(Instant, f64)>,
    /// How long until no survivor offered a killed node for paths.
    pub(super) window: Option<f64>,
    pub(super) victims: Vec<usize>,
    pub(super) survivors: Vec<usize>,
    pub(super) copies: usize,
}

/// Who does what: the jobs in a random order (`true`: a request), and the churn's victims.
struct Plan {
    jobs: Vec<bool>,
    /// The nodes to kill (never the bootstrap node); only survivors send and receive.
    victims: Vec<usize>,
    killed: HashSet<PeerId>,
    survivors: Vec<usize>,
    /// The job before which the victims are killed.
    kill_at: usize,
}

impl Plan {
    fn new(options: &Options, nodes: &[NodeHandle], rng: &mut ChaCha20Rng) -> Self {
        let mut jobs: Vec<bool> = std::iter::repeat_n(false, options.messages)
            .chain(std::iter::repeat_n(true, options.requests))
            .collect();
        for i in (1..jobs.len()).rev() {
            jobs.swap(i, rng.random_range(0..=i));
        }
        let mut victims: Vec<usize> = (1..nodes.len()).collect();
        for i in (1..victims.len()).rev() {
            victims.swap(i, rng.random_range(0..=i));
        }
        let kill_count = options.churn.map_or(0, |f| ((nodes.len() as f64) * f).round() as usize);
        victims.truncate(kill_count.min(nodes.len().saturating_sub(5)));
        let killed = victims.iter().map(|&i| nodes[i].peer_id).collect();
        let survivors = (0..nodes.len()).filter(|i| !victims.contains(i)).collect();
        let kill_at = if victims.is_empty() { usize::MAX } else { jobs.len() / 2 };
        Self { jobs, victims, killed, survivors, kill_at }
    }

    /// Two different survivors: a sender and a destination.
    fn pair(&self, rng: &mut ChaCha20Rng) -> (usize, usize) {
        let sender = self.survivors[rng.random_range(0..self.survivors.len())];
        loop {
            let d = self.survivors[rng.random_range(0..self.survivors.len())];
            if d != sender {
                return (sender, d);
            }
        }
    }
}

/// Sends job `id` (a message, or a request when `is_request`) between two random survivors.
/// `after`: the churn's victims are dead.
#[allow(clippy::too_many_arguments, reason = "one call site, each argument a different role")]
async fn send_job(
    options: &Options,
    nodes: &[NodeHandle],
    plan: &Plan,
    id: u64,
    is_request: bool,
    after: bool,
    rng: &mut ChaCha20Rng,
    tally: &mut Tally,
) {
    let copies = SendOptions { copies: options.copies.max(1), ..SendOptions::default() };
    let (sender, dest) = plan.pair(rng);
    let destination = if copies.copies > 1 {
        Destination::MixNode(nodes[dest].peer_id)
    } else {
        nodes[dest].destination()
    };
    if is_request {
        let payload = length_prefixed(&body(b'R', id, rng));
        match nodes[sender].request(destination, ECHO, payload, options.surbs, copies).await {
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
        let payload = length_prefixed(&body(b'M', id, rng));
        if let Err(e) = nodes[sender].send(destination, ECHO, payload, copies).await {
            tracing::warn!(%e, "send refused");
        }
        tally.sent_messages += 1;
        if after { &mut tally.after } else { &mut tally.before }.sent += 1;
    }
}

/// How long after `at` (ms) no survivor offered a killed node any more, watching up to 30 s
/// after the kill.
async fn forgotten_after(nodes: &[NodeHandle], plan: &Plan, at: Instant) -> Option<f64> {
    while at.elapsed() < Duration::from_secs(30) {
        if offers_none_of(nodes, &plan.survivors, &plan.killed).await {
            return Some(at.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

/// Sends the one-way messages and requests at the configured rate between random survivors,
/// kills the churn victims halfway, and tallies what arrived.
pub(super) async fn run(
    options: &Options,
    nodes: &[NodeHandle],
    events: &mut mpsc::UnboundedReceiver<(usize, NodeEvent)>,
    rng: &mut ChaCha20Rng,
    show: bool,
) -> Outcome {
    let plan = Plan::new(options, nodes, rng);
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
            _ = pace.tick(), if next_job < plan.jobs.len() => {
                if next_job == plan.kill_at {
                    for &i in &plan.victims {
                        nodes[i].stop();
                    }
                    killed_at = Some((Instant::now(), started.elapsed().as_secs_f64()));
                }
                let (id, is_request) = (next_job as u64, plan.jobs[next_job]);
                next_job += 1;
                send_job(options, nodes, &plan, id, is_request, killed_at.is_some(), rng, &mut tally).await;
                last_send = Instant::now();
            }
            Some((node, event)) = events.recv() => tally.on_event(node, event),
            _ = liveness.tick(), if killed_at.is_some() && window.is_none() => {
                if let Some((at, _)) = killed_at
                    && offers_none_of(nodes, &plan.survivors, &plan.killed).await
                {
                    window = Some(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
            _ = progress.tick() => {
                if show {
                    eprint!("\r{}   ", tally.progress(options, started));
                    let _ = std::io::stderr().flush();
                }
                if tally.done(options) || (next_job == plan.jobs.len() && last_send.elapsed() > grace) {
                    break;
                }
            }
        }
    }
    // The workload may end before every survivor noticed: keep watching a while.
    if window.is_none()
        && let Some((at, _)) = killed_at
    {
        window = forgotten_after(nodes, &plan, at).await;
    }
    // Late copies would be duplicates: listen a little longer.
    let linger = Instant::now() + Duration::from_millis(500);
    while let Ok(Some((node, event))) = tokio::time::timeout_at(linger.into(), events.recv()).await
    {
        tally.on_event(node, event);
    }
    if show {
        eprintln!("\r{}   ", tally.progress(options, started));
    }
    let Plan { victims, survivors, .. } = plan;
    Outcome { tally, started, killed_at, window, victims, survivors, copies: options.copies.max(1) }
}
