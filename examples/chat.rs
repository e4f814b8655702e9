//! A chat over private gossip. Each participant runs a mix node and gossip side by side;
//! messages sent on the `Mix` route go through the mixnet to a random member, which
//! broadcasts them: no member can tell who wrote a line, not even the neighbours of its
//! author. Gossip's mix route is wired by [`mix_gossip::MixRoute`] (feature `mix`).
//!
//! Run it with `cargo run -p mix-examples --example chat`.

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{PeerId, Swarm};
use libp2p_mix::core::{ExponentialDelay, MixNode};
use libp2p_mix::{Mixnet, MixnetConfig, StaticPool};
use mix_examples::{keys, listen, swarm};
use mix_gossip::{Config as GossipConfig, Event as GossipEvent, MixRoute, Route, TopicId};
use mix_sphinx::NodePublicKey;
use tokio::sync::mpsc;

/// A participant: a mix node, and gossip whose mix route goes through it.
#[derive(NetworkBehaviour)]
struct Participant {
    mixnet: Mixnet,
    gossip: mix_gossip::Behaviour,
}

/// What the participants' tasks report.
enum Heard {
    /// Participant `who` has a neighbour on the topic.
    Joined(usize),
    /// Participant `who` read a line.
    Line(usize, String),
}

fn participant() -> anyhow::Result<(Swarm<Participant>, PeerId, NodePublicKey)> {
    let (identity, mix_key) = keys();
    let peer = identity.public().to_peer_id();
    let public = mix_key.public_key();
    let mut mixnet = Mixnet::new(&identity, mix_key, MixnetConfig::default())?
        .with_delay(Box::new(ExponentialDelay::new(Duration::from_millis(5))));
    let gossip = mix_gossip::Behaviour::new(peer, GossipConfig::default())
        .with_mix_route(MixRoute::attach(mixnet.mix_mut()));
    Ok((swarm(identity, Participant { mixnet, gossip })?, peer, public))
}

/// `n` participants chat; the first writes `lines`. Returns every line each other
/// participant read, in the order read.
pub(crate) async fn chat(n: usize, lines: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
    let topic = TopicId::from_name("example-chat");
    let mut swarms = Vec::new();
    let mut members = Vec::new();
    for _ in 0..n {
        let (mut swarm, peer, mix_key) = participant()?;
        let addr = listen(&mut swarm).await?;
        members.push(MixNode::new(peer, addr, mix_key, true)?);
        swarms.push(swarm);
    }
    // Every participant is a mix node of the chat's mixnet (discovery would find them).
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let mut writers = Vec::new();
    for (who, mut swarm) in swarms.into_iter().enumerate() {
        swarm
            .behaviour_mut()
            .mixnet
            .mix_mut()
            .set_pool(Box::new(StaticPool::new(members.clone())?));
        let bootstrap = if who == 0 { vec![] } else { vec![*members[0].peer_id()] };
        swarm.behaviour_mut().gossip.join(topic, bootstrap);
        let (write, mut to_write) = mpsc::unbounded_channel::<String>();
        writers.push(write);
        let heard = heard_tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(line) = to_write.recv() => {
                        let sent = swarm.behaviour_mut().gossip.publish(&topic, line.into_bytes(), Route::Mix);
                        if let Err(error) = sent {
                            eprintln!("participant {who}: not sent: {error}");
                        }
                    }
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(ParticipantEvent::Gossip(GossipEvent::NeighborUp { .. })) => {
                            let _ = heard.send(Heard::Joined(who));
                        }
                        SwarmEvent::Behaviour(ParticipantEvent::Gossip(GossipEvent::Message { data, .. })) => {
                            let _ = heard.send(Heard::Line(who, String::from_utf8_lossy(&data).into_owned()));
                        }
                        _ => {}
                    },
                }
            }
        });
    }

    // Write once everyone is in the topic.
    let mut joined = vec![false; n];
    while joined.contains(&false) {
        if let Some(Heard::Joined(who)) = heard.recv().await {
            joined[who] = true;
        }
    }
    for line in lines {
        writers[0].send(line.to_string())?;
    }
    let mut read = vec![Vec::new(); n];
    while read[1..].iter().any(|r| r.len() < lines.len()) {
        match heard.recv().await {
            Some(Heard::Line(who, line)) => read[who].push(line),
            Some(Heard::Joined(_)) => {}
            None => anyhow::bail!("the participants stopped"),
        }
    }
    Ok(read.split_off(1))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let lines = ["hello from someone", "nobody knows who wrote this"];
    for (who, read) in chat(5, &lines).await?.iter().enumerate() {
        println!("participant {} read {read:?}", who + 1);
    }
    Ok(())
}
