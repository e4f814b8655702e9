//! Twenty real libp2p swarms on loopback TCP (noise, yamux) gossiping with the default
//! settings: batch-and-shuffle forwarding (150 ms windows) and neighbour rotation. Every
//! publication reaches every member, and every frame written has one of the bucket lengths.

#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use common::{listen, swarm};

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm};
use mix_gossip::codec::{CONTROL_BUCKETS, PAYLOAD_BUCKETS};
use mix_gossip::{Behaviour, Config, Event, Forwarding, MessageId, Route, TopicId};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

const NODES: usize = 20;

enum Command {
    Publish(Vec<u8>, Route, oneshot::Sender<MessageId>),
    Neighbors(oneshot::Sender<usize>),
    Metrics(oneshot::Sender<String>),
}

struct Node {
    peer: PeerId,
    commands: mpsc::UnboundedSender<Command>,
}

/// Runs a swarm until the test ends, reporting each delivery as (node, id).
fn spawn(
    index: usize,
    mut swarm: Swarm<Behaviour>,
    topic: TopicId,
    delivered: mpsc::UnboundedSender<(usize, MessageId)>,
) -> mpsc::UnboundedSender<Command> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut registry = Registry::default();
    swarm.behaviour().metrics().register(&mut registry);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Publish(data, route, reply)) => {
                        let id = swarm.behaviour_mut().publish(&topic, data, route).unwrap();
                        let _ = reply.send(id);
                    }
                    Some(Command::Neighbors(reply)) => {
                        let _ = reply.send(swarm.behaviour().neighbors(&topic).len());
                    }
                    Some(Command::Metrics(reply)) => {
                        let mut text = String::new();
                        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
                        let _ = reply.send(text);
                    }
                    None => return,
                },
                event = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(Event::Message { id, .. }) = event {
                        let _ = delivered.send((index, id));
                    }
                }
            }
        }
    });
    tx
}

async fn ask<T>(node: &Node, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> T {
    let (tx, rx) = oneshot::channel();
    node.commands.send(command(tx)).ok().unwrap();
    rx.await.unwrap()
}

/// `(bucket bytes, frames)` from the registry's text.
fn frames_written(metrics: &str) -> Vec<(usize, u64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("mix_gossip_frames_written_total{"))
        .map(|l| {
            let bytes = l.split("bytes=\"").nth(1).unwrap().split('"').next().unwrap();
            let count = l.rsplit(' ').next().unwrap();
            (bytes.parse().unwrap(), count.parse().unwrap())
        })
        .collect()
}

fn counter(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_with_batch_and_shuffle_deliver_everything_in_buckets() {
    let config = Config::default();
    assert!(matches!(config.proto.forwarding, Forwarding::Window { .. }));
    assert!(config.proto.rotation.is_some());
    let topic = TopicId::from_name("loopback");

    let mut swarms = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..NODES {
        let mut s = swarm(&config, Duration::from_secs(30));
        let addr = listen(&mut s).await;
        addrs.push((*s.local_peer_id(), addr));
        swarms.push(s);
    }
    // Addresses come from outside gossip (in a node: Kademlia and identify).
    for s in &mut swarms {
        for (peer, addr) in &addrs {
            if peer != s.local_peer_id() {
                s.behaviour_mut().add_address(*peer, addr.clone());
            }
        }
    }
    let (delivered_tx, mut delivered) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for (i, mut s) in swarms.into_iter().enumerate() {
        // Each joins through up to two earlier nodes.
        let bootstrap: Vec<PeerId> = [i / 2, i.saturating_sub(1)]
            .into_iter()
            .filter(|j| *j < i)
            .map(|j| addrs[j].0)
            .collect();
        s.behaviour_mut().join(topic, bootstrap);
        let peer = *s.local_peer_id();
        nodes.push(Node { peer, commands: spawn(i, s, topic, delivered_tx.clone()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Membership settles.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut lonely = 0;
        for node in &nodes {
            if ask(node, Command::Neighbors).await == 0 {
                lonely += 1;
            }
        }
        if lonely == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{lonely} nodes have no neighbour");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Publications of every payload bucket, from several publishers, some at once.
    let sizes = [1, 300, 700, 1500, 3000, mix_gossip::codec::MAX_PAYLOAD];
    let mut expected: HashMap<MessageId, usize> = HashMap::new();
    for (n, size) in sizes.iter().enumerate() {
        for publisher in [n, n + 7, n + 13] {
            let data: Vec<u8> = (0..*size).map(|i| (i * 31 + n + publisher) as u8).collect();
            let id = ask(&nodes[publisher], |tx| Command::Publish(data, Route::Direct, tx)).await;
            expected.insert(id, publisher);
        }
    }
    // A stem publication too: it is relayed before the broadcast.
    let id = ask(&nodes[5], |tx| Command::Publish(b"stem".to_vec(), Route::Stem, tx)).await;
    expected.insert(id, 5);

    let mut got: HashMap<MessageId, HashSet<usize>> = HashMap::new();
    let want = expected.len() * (NODES - 1);
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count < want {
        let (node, id) = tokio::time::timeout_at(deadline, delivered.recv())
            .await
            .unwrap_or_else(|_| panic!("{count} of {want} deliveries: {got:?}"))
            .unwrap();
        assert_ne!(expected.get(&id), Some(&node), "a publisher does not deliver its own");
        assert!(got.entry(id).or_default().insert(node), "delivered twice");
        count += 1;
    }
    for (id, publisher) in &expected {
        assert_eq!(got[id].len(), NODES - 1, "{id} from {publisher}");
    }

    // Let late control traffic (IHAVE, PRUNE) go out, then read every node's frames.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let buckets: HashSet<usize> = PAYLOAD_BUCKETS.iter().chain(&CONTROL_BUCKETS).copied().collect();
    let mut seen = HashMap::<usize, u64>::new();
    for node in &nodes {
        let metrics = ask(node, Command::Metrics).await;
        for (bytes, frames) in frames_written(&metrics) {
            assert!(buckets.contains(&bytes), "{}: a frame of {bytes} bytes", node.peer);
            *seen.entry(bytes).or_default() += frames;
        }
        assert_eq!(counter(&metrics, "mix_gossip_dropped_total{kind=\"malformed\""), 0);
        assert_eq!(
            counter(&metrics, "mix_gossip_delivered_total"),
            (expected.len() - sent_by(&expected, node, &nodes)) as u64
        );
    }
    let mut by_bucket: Vec<_> = seen.iter().collect();
    by_bucket.sort();
    println!("frames written, by bucket: {by_bucket:?}");
    for bucket in PAYLOAD_BUCKETS.iter().chain(&CONTROL_BUCKETS[..1]) {
        assert!(seen.get(bucket).is_some_and(|n| *n > 0), "no frame of {bucket}: {seen:?}");
    }
}

fn sent_by(expected: &HashMap<MessageId, usize>, node: &Node, nodes: &[Node]) -> usize {
    expected.values().filter(|p| nodes[**p].peer == node.peer).count()
}
