//! A neighbour that goes silent without closing its connections (a host that froze or lost
//! its network; its kernel sends no reset) among real swarms on loopback TCP. Without a
//! liveness check nothing would notice: TCP has no keepalive here and yamux sends nothing.
//! With it, every neighbour gives the silent node up within the configured timeout (and one
//! probe period), and publications reach every live node again.

#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use common::{listen, swarm};

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use mix_gossip::{Config, Event, Route, TopicId};
use tokio::sync::{mpsc, oneshot};

const NODES: usize = 7;
const TIMEOUT: Duration = Duration::from_secs(2);

/// What a node reports.
#[derive(Debug, PartialEq)]
enum Seen {
    Down(PeerId),
    Message,
}

enum Command {
    AddAddress(PeerId, Multiaddr),
    Join(Vec<PeerId>),
    Neighbors(oneshot::Sender<Vec<PeerId>>),
    Publish(Vec<u8>),
    /// Block the node's thread, which runs its swarm and every connection task: the sockets
    /// stay open and the kernel keeps acknowledging, but nothing is read or answered.
    Freeze,
}

fn config() -> Config {
    let mut config = Config { liveness_timeout: Some(TIMEOUT), ..Default::default() };
    config.proto.rotation = None;
    config.proto.membership.active_view = 3;
    config.proto.membership.passive_view = 6;
    config
}

/// A node on a thread of its own (a current-thread runtime, so that its listener and every
/// connection task its swarm spawns run there too), reporting every neighbour lost as (node,
/// peer, when). Returns its commands, its peer id and its address.
fn spawn(
    index: usize,
    topic: TopicId,
    down: mpsc::UnboundedSender<(usize, Seen, Instant)>,
) -> (mpsc::UnboundedSender<Command>, PeerId, Multiaddr) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let mut swarm = swarm(&config(), Duration::from_secs(60));
            let addr = listen(&mut swarm).await;
            ready_tx.send((*swarm.local_peer_id(), addr)).unwrap();
            loop {
                tokio::select! {
                    command = rx.recv() => match command {
                        Some(Command::AddAddress(peer, addr)) => {
                            swarm.behaviour_mut().add_address(peer, addr);
                        }
                        Some(Command::Join(bootstrap)) => {
                            swarm.behaviour_mut().join(topic, bootstrap);
                        }
                        Some(Command::Neighbors(reply)) => {
                            let _ = reply.send(swarm.behaviour().neighbors(&topic).to_vec());
                        }
                        Some(Command::Publish(data)) => {
                            swarm.behaviour_mut().publish(&topic, data, Route::Direct).unwrap();
                        }
                        Some(Command::Freeze) => std::thread::sleep(Duration::from_secs(3600)),
                        None => return,
                    },
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(Event::NeighborDown { peer, .. }) => {
                            let _ = down.send((index, Seen::Down(peer), Instant::now()));
                        }
                        SwarmEvent::Behaviour(Event::Message { .. }) => {
                            let _ = down.send((index, Seen::Message, Instant::now()));
                        }
                        _ => {}
                    }
                }
            }
        });
    });
    let (peer, addr) = ready.recv().unwrap();
    (tx, peer, addr)
}

async fn neighbors(node: &mpsc::UnboundedSender<Command>) -> Vec<PeerId> {
    let (tx, rx) = oneshot::channel();
    node.send(Command::Neighbors(tx)).ok().unwrap();
    rx.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_neighbour_is_given_up_within_the_liveness_timeout_and_replaced() {
    let topic = TopicId::from_name("liveness");
    let (down_tx, mut down) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..NODES {
        let (node, peer, addr) = spawn(i, topic, down_tx.clone());
        nodes.push(node);
        addrs.push((peer, addr));
    }
    for (i, node) in nodes.iter().enumerate() {
        for (j, (peer, addr)) in addrs.iter().enumerate() {
            if i != j {
                node.send(Command::AddAddress(*peer, addr.clone())).ok().unwrap();
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let bootstrap = if i == 0 { vec![] } else { vec![addrs[0].0, addrs[i - 1].0] };
        node.send(Command::Join(bootstrap)).ok().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The views settle, and quiet connections stay up meanwhile (probes are answered).
    tokio::time::sleep(TIMEOUT * 2).await;

    // The last joiner may have been refused: views that are full take a joiner in place of a
    // neighbour only once per eviction interval (the Sybil defence), so it may wait for its
    // rejoin timer, or two, before anyone has it.
    let silent = NODES - 1;
    let silent_peer = addrs[silent].0;
    let settled = tokio::time::Instant::now() + Duration::from_secs(25);
    let had_it = loop {
        // Drained before asking, never after: a node that gives the peer up between the
        // question and the freeze reports it, and that report must still be read.
        while down.try_recv().is_ok() {}
        let mut had_it = Vec::new();
        for (i, node) in nodes.iter().enumerate().take(silent) {
            if neighbors(node).await.contains(&silent_peer) {
                had_it.push(i);
            }
        }
        if !had_it.is_empty() || tokio::time::Instant::now() > settled {
            break had_it;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(!had_it.is_empty(), "nobody has the node to silence as a neighbour");
    let frozen_at = Instant::now();
    nodes[silent].send(Command::Freeze).ok().unwrap();

    // Every node that had it gives it up, within the timeout and one probe period (and a
    // little scheduling slack).
    let bound = TIMEOUT + TIMEOUT / 4 + Duration::from_millis(750);
    let mut noticed: HashMap<usize, Duration> = HashMap::new();
    let deadline = tokio::time::Instant::now() + bound * 3;
    while noticed.len() < had_it.len() {
        let event = tokio::time::timeout_at(deadline, down.recv()).await;
        let Ok(Some((node, seen, at))) = event else { break };
        if seen == Seen::Down(silent_peer) && had_it.contains(&node) {
            noticed.entry(node).or_insert(at - frozen_at);
        }
    }
    assert_eq!(noticed.len(), had_it.len(), "noticed by {noticed:?} of {had_it:?}");
    for (node, after) in &noticed {
        assert!(*after <= bound, "node {node} noticed after {after:?} (bound {bound:?})");
    }

    // The overlay works without it: a publication reaches every live node.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for &i in &had_it {
        assert!(!neighbors(&nodes[i]).await.contains(&silent_peer), "node {i} still has it");
    }
    // Nodes left without a neighbour find new ones (a full view may refuse them until its
    // next eviction interval, so allow for a rejoin or two on a loaded machine).
    let reformed = tokio::time::Instant::now() + Duration::from_secs(25);
    loop {
        let mut lonely = Vec::new();
        for (i, node) in nodes.iter().enumerate().take(silent) {
            if neighbors(node).await.is_empty() {
                lonely.push(i);
            }
        }
        if lonely.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < reformed, "{lonely:?} have no neighbour");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    while down.try_recv().is_ok() {}
    nodes[had_it[0]].send(Command::Publish(b"after".to_vec())).ok().unwrap();
    let mut got = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < silent - 1 {
        let event = tokio::time::timeout_at(deadline, down.recv()).await;
        let Ok(Some((node, seen, _))) = event else { break };
        if seen == Seen::Message {
            got.insert(node);
        }
    }
    assert_eq!(got.len(), silent - 1, "delivered to {got:?}");
}
