//! The gossip workload: publications on one topic by each route.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use rand::{Rng, RngExt};
use rand_chacha::ChaCha20Rng;
use tokio::sync::mpsc;

use crate::runtime::{NodeEvent, NodeHandle};

use super::report::{GossipRoute, GossipRun, Percentiles};

pub(super) fn gossip_topic() -> mix_gossip::TopicId {
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

const ROUTES: [(mix_gossip::Route, &str); 3] = [
    (mix_gossip::Route::Direct, "direct"),
    (mix_gossip::Route::Stem, "stem"),
    (mix_gossip::Route::Mix, "mix"),
];

/// Waits (at most 20 s) until every survivor has a neighbour on the topic; returns the seconds.
async fn settle(nodes: &[NodeHandle], survivors: &[usize]) -> f64 {
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
    settle.elapsed().as_secs_f64()
}

/// The publications so far, and what became of them.
struct Tally {
    published: HashMap<mix_gossip::MessageId, Publication>,
    confirmed: [usize; 3],
    /// Deliveries that make a publication complete: every survivor but its publisher.
    want: usize,
}

impl Tally {
    fn on_event(&mut self, node: usize, event: NodeEvent) {
        use mix_gossip::Event as GossipEvent;
        match event {
            NodeEvent::Gossip(GossipEvent::Message { id, .. }) => {
                if let Some(p) = self.published.get_mut(&id)
                    && node != p.publisher
                    && p.delivered.insert(node)
                    && p.delivered.len() == self.want
                {
                    p.done = Some(p.at.elapsed().as_secs_f64() * 1000.0);
                }
            }
            NodeEvent::Gossip(GossipEvent::PublishConfirmed { id, .. }) => {
                if let Some(p) = self.published.get_mut(&id)
                    && !std::mem::replace(&mut p.confirmed, true)
                {
                    self.confirmed[p.route] += 1;
                }
            }
            _ => {}
        }
    }

    /// Every publication reached every member, and (stem and mix) came back to its publisher.
    fn complete(&self) -> bool {
        self.published.values().all(|p| p.done.is_some() && (p.route == 0 || p.confirmed))
    }

    fn routes(&self) -> Vec<GossipRoute> {
        ROUTES
            .iter()
            .enumerate()
            .map(|(r, (_, name))| {
                let mine: Vec<&Publication> =
                    self.published.values().filter(|p| p.route == r).collect();
                let deliveries: usize = mine.iter().map(|p| p.delivered.len()).sum();
                let mut times: Vec<f64> = mine.iter().filter_map(|p| p.done).collect();
                GossipRoute {
                    route: name,
                    published: mine.len(),
                    delivered_to_all: times.len(),
                    delivery_ratio: deliveries as f64 / (mine.len() * self.want).max(1) as f64,
                    completion_ms: Percentiles::of(&mut times),
                    confirmed: self.confirmed[r],
                }
            })
            .collect()
    }
}

/// Publishes one message of random length from a random survivor by `route`.
async fn publish(
    nodes: &[NodeHandle],
    survivors: &[usize],
    route: usize,
    rng: &mut ChaCha20Rng,
    tally: &mut Tally,
) {
    let publisher = survivors[rng.random_range(0..survivors.len())];
    let len = rng.random_range(16..3000);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    match nodes[publisher].gossip_publish(gossip_topic(), data, ROUTES[route].0).await {
        Ok(id) => {
            let at = Instant::now();
            let publication = Publication {
                publisher,
                route,
                at,
                delivered: HashSet::new(),
                done: None,
                confirmed: false,
            };
            tally.published.insert(id, publication);
        }
        Err(e) => tracing::warn!(%e, "gossip publication refused"),
    }
}

/// Publishes `count` gossip messages from random survivors, cycling through the routes
/// (direct, stem, through the mixnet), and waits until every other survivor delivered each.
pub(super) async fn gossip_run(
    nodes: &[NodeHandle],
    survivors: &[usize],
    count: usize,
    events: &mut mpsc::UnboundedReceiver<(usize, NodeEvent)>,
    rng: &mut ChaCha20Rng,
    show: bool,
) -> GossipRun {
    let settle_s = settle(nodes, survivors).await;
    let mut tally =
        Tally { published: HashMap::new(), confirmed: [0; 3], want: survivors.len() - 1 };
    let mut next = 0;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut deadline = None;
    loop {
        tokio::select! {
            _ = pace.tick(), if next < count => {
                publish(nodes, survivors, next % ROUTES.len(), rng, &mut tally).await;
                next += 1;
                if next == count {
                    deadline = Some(tokio::time::Instant::now() + Duration::from_secs(30));
                }
            }
            Some((node, event)) = events.recv() => tally.on_event(node, event),
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => break,
        }
        // A confirmation can come after the last member delivered: wait for those too.
        if next == count && tally.complete() {
            break;
        }
        if show {
            let done = tally.published.values().filter(|p| p.done.is_some()).count();
            eprint!("\r  gossip: published {next}/{count}, delivered to all {done}   ");
            let _ = std::io::stderr().flush();
        }
    }
    if show {
        eprintln!();
    }
    GossipRun {
        members: survivors.len(),
        forwarding: "window 150 ms, batches up to 64, shuffled".into(),
        settle_s: (settle_s * 100.0).round() / 100.0,
        routes: tally.routes(),
    }
}
