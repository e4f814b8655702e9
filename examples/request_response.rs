//! An application that already speaks a request-response protocol sends one request through
//! the mixnet. The server answers as it always does and never learns who asked; the exit that
//! delivers the request learns the server and the question, not the asker.
//!
//! What mixing adds to the application is marked `// mix:`. Run it with
//! `cargo run -p mix-examples --example request_response`.

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport, json};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use libp2p_mix::{Destination, Event as MixEvent, Mixnet, MixnetConfig, ReadRule};
use mix_examples::{LocalMixnet, keys, listen, swarm};
use serde::{Deserialize, Serialize};

/// The application's own protocol: a key-value lookup, JSON over libp2p request-response.
const LOOKUP: &str = "/example/lookup/1.0.0";

#[derive(Debug, Serialize, Deserialize)]
struct Lookup {
    key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Found {
    value: String,
}

/// The client's behaviour: its protocol, and beside it the mixnet.
#[derive(NetworkBehaviour)]
struct Client {
    lookup: json::Behaviour<Lookup, Found>,
    mixnet: Mixnet, // mix:
}

/// Asks the server anonymously; returns its answer.
pub(crate) async fn run() -> anyhow::Result<String> {
    // Exits learn how the protocol answers: JSON to the end of the stream.
    let mixnet = LocalMixnet::start(4, &[(LOOKUP, ReadRule::ToEnd { max: 64 * 1024 })]).await?;
    let (server, server_addr) = start_server().await?;

    let (identity, mix_key) = keys();
    let lookup = json::Behaviour::new(
        [(StreamProtocol::new(LOOKUP), ProtocolSupport::Outbound)],
        request_response::Config::default(),
    );
    // mix: a mix node of its own, with the network's nodes in its pool (discovery would
    // find them; see `MixnetConfig::discovery`).
    let mix = Mixnet::new(&identity, mix_key, MixnetConfig::default())?
        .with_pool(Box::new(mixnet.pool()));
    let mut client = swarm(identity, Client { lookup, mixnet: mix })?;
    // Replies come back through SURBs to the address the client listens on.
    listen(&mut client).await?;

    // mix: instead of `client.behaviour_mut().lookup.send_request(&server, request)`.
    let request = serde_json::to_vec(&Lookup { key: "answer".into() })?;
    let to = Destination::Peer { peer_id: server, addr: server_addr };
    client.behaviour_mut().mixnet.mix_mut().request(&to, LOOKUP, &request, 2)?;
    loop {
        match client.select_next_some().await {
            SwarmEvent::Behaviour(ClientEvent::Mixnet(MixEvent::Reply { body, rtt, .. })) => {
                let found: Found = serde_json::from_slice(&body)?;
                println!("anonymous lookup answered in {rtt:?}");
                return Ok(found.value);
            }
            SwarmEvent::Behaviour(ClientEvent::Mixnet(MixEvent::RequestFailed {
                error, ..
            })) => {
                anyhow::bail!("no answer: {error}");
            }
            _ => {}
        }
    }
}

/// The server: plain libp2p request-response, nothing of the mixnet.
async fn start_server() -> anyhow::Result<(PeerId, Multiaddr)> {
    let (identity, _) = keys();
    let peer = identity.public().to_peer_id();
    let lookup: json::Behaviour<Lookup, Found> = json::Behaviour::new(
        [(StreamProtocol::new(LOOKUP), ProtocolSupport::Inbound)],
        request_response::Config::default(),
    );
    let mut server = swarm(identity, lookup)?;
    let addr = listen(&mut server).await?;
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            }) = server.select_next_some().await
            {
                let value = format!("42 is the value of {:?}", request.key);
                let _ = server.behaviour_mut().send_response(channel, Found { value });
            }
        }
    });
    Ok((peer, addr))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("{}", run().await?);
    Ok(())
}
