//! A file sent over an anonymous stream. The receiver publishes a stream key (its mix key)
//! and an address; the sender opens a [`mix_stream::MixStream`] to it and writes. Every piece
//! takes its own random path through the mixnet, the receiver answers through SURBs the
//! sender sent ahead, and nothing it receives names the sender.
//!
//! Run it with `cargo run -p mix-examples --example file_transfer`.

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::Swarm;
use libp2p_mix::{Mixnet, MixnetConfig};
use mix_examples::{LocalMixnet, keys, listen, swarm};
use mix_stream::{Behaviour, Config, Control, StreamPeer};
use sha2::{Digest, Sha256};

/// Sends `file` from one node to another; returns what the receiver read.
pub(crate) async fn transfer(file: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mixnet = LocalMixnet::start(4, &[]).await?;

    // The receiver accepts streams under its mix key.
    let (identity, mix_key) = keys();
    let receiver_key = *mix_key.to_bytes();
    let net = Mixnet::new(&identity, mix_key, MixnetConfig::default())?
        .with_pool(Box::new(mixnet.pool()));
    let receiver_peer = identity.public().to_peer_id();
    let mut receiver = swarm(identity, Behaviour::new(net, Some(receiver_key), Config::default()))?;
    let receiver_addr = listen(&mut receiver).await?;
    let receiving = receiver.behaviour().control();
    let to = StreamPeer {
        peer_id: receiver_peer,
        addr: receiver_addr,
        key: receiver.behaviour().receiver_key().expect("it accepts streams"),
    };
    let _receiver = run_swarm(receiver);

    // The sender only opens streams (no receiver key).
    let (identity, mix_key) = keys();
    let net = Mixnet::new(&identity, mix_key, MixnetConfig::default())?
        .with_pool(Box::new(mixnet.pool()));
    let mut sender = swarm(identity, Behaviour::new(net, None, Config::default()))?;
    listen(&mut sender).await?; // acknowledgements come back through SURBs
    let mut sending: Control = sender.behaviour().control();
    let _sender = run_swarm(sender);

    let send = async move {
        let mut stream = sending.open_stream(to).await?;
        stream.write_all(&file).await?;
        // Returns once the receiver acknowledged every byte.
        stream.close().await?;
        anyhow::Ok(())
    };
    let receive = async {
        let mut stream = receiving.accept_stream().await.expect("the receiver runs");
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await?;
        anyhow::Ok(received)
    };
    let ((), received) = futures::try_join!(send, receive)?;
    Ok(received)
}

/// Drives a swarm on a task of its own (its `Control` talks to it) until the handle drops.
fn run_swarm(mut swarm: Swarm<Behaviour>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let file: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let received = transfer(file.clone()).await?;
    anyhow::ensure!(Sha256::digest(&received) == Sha256::digest(&file), "the file differs");
    println!("{} bytes arrived intact", received.len());
    Ok(())
}
