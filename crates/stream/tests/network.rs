//! Streams and messages over real swarms on loopback: six mix nodes (TCP, Noise, Yamux), each
//! shard a Sphinx packet on a 3-hop path of its own, delivered by an exit to the acceptor.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::time::{Duration, Instant};

use common::{Options, network, random};
use futures::{AsyncReadExt, AsyncWriteExt};

async fn stream_bytes(nodes: &[common::Node], from: usize, to: usize, data: &[u8]) -> Vec<u8> {
    let mut control = nodes[from].control.clone();
    let acceptor = nodes[to].control.clone();
    let receiver = tokio::spawn(async move {
        let mut stream = acceptor.accept_stream().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        stream.close().await.unwrap();
        got
    });
    let mut stream = control.open_stream(nodes[to].peer_id).await.unwrap();
    stream.write_all(data).await.unwrap();
    stream.close().await.unwrap();
    tokio::time::timeout(Duration::from_secs(300), receiver).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_fifty_megabytes_arrive_bit_exact_over_three_hops() {
    common::init_tracing();
    let nodes = network(Options::default()).await;
    let data = random(1 << 20, 1);
    let started = Instant::now();
    assert!(stream_bytes(&nodes, 0, 5, &data).await == data, "1 MB");
    println!("1 MB in {:?}", started.elapsed());
    let data = random(50 << 20, 2);
    let started = Instant::now();
    assert!(stream_bytes(&nodes, 1, 4, &data).await == data, "50 MB");
    println!("50 MB in {:?}", started.elapsed());
    // Every shard crossed three hops: the first hop, a second one, and an exit that is
    // neither end.
    let forwarded: u64 = nodes.iter().map(|n| n.mix_metrics.packets_forwarded()).sum();
    assert!(forwarded as usize >= 2 * (51 << 20) / 3900, "{forwarded}");
}
