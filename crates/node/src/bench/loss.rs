//! `mixnode bench loss`: delivery against random packet loss for the default stream settings,
//! over many messages, in virtual time.
//!
//! Each message is a stream of its own through `mix_stream::sim`: the same connection code as
//! a node runs, over a simulated mixnet (5 ms latency plus three exponential mixing delays of
//! 10 ms mean per direction, each frame lost with the given probability, either way). As on a
//! node, each message starts from the loss the previous ones measured. Reported per loss rate:
//! the share of blocks that arrived from their first transmission (erasure coding alone), the
//! share of messages that needed no retransmission at all, the share delivered in full within
//! the deadline (with acknowledgements and retransmission), and what it cost.

use std::time::Duration;

use mix_stream::sim::{Channel, transfer};
use mix_stream::{Mode, NetworkLoss, StreamConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    messages_per_rate: usize,
    message_bytes: usize,
    deadline_s: f64,
    rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Row {
    loss: f64,
    /// Blocks rebuilt from their first transmission.
    blocks_first_try: f64,
    /// Messages that needed no retransmission.
    messages_first_try: f64,
    /// Messages delivered whole and bit-exact within the deadline.
    delivered: f64,
    /// Frames sent (both ways) per frame of payload.
    frames_per_payload_frame: f64,
    /// The loss the node had learned, over the second half of the messages.
    loss_learned: f64,
    /// Parity shards sent per data shard.
    parity_per_data: f64,
    completion_ms_mean: f64,
    completion_ms_p95: f64,
}

pub(crate) fn run(messages: usize, bytes: usize) -> Report {
    let deadline = Duration::from_secs(60);
    let mut data = vec![0u8; bytes];
    ChaCha20Rng::seed_from_u64(7).fill_bytes(&mut data);
    let payload = mix_stream::sim::MIX_LIMITS.forward - 98;
    let rows = [0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30]
        .into_iter()
        .map(|loss| {
            let mut network = NetworkLoss::new(StreamConfig::default().initial_loss);
            let (mut blocks, mut first, mut clean, mut delivered, mut frames) = (0, 0, 0, 0, 0);
            let mut times = Vec::new();
            let mut learned = Vec::new();
            let (mut parity, mut data_shards) = (0u64, 0u64);
            for i in 0..messages {
                let estimate = network.estimate();
                let config = StreamConfig { initial_loss: estimate, ..StreamConfig::default() };
                learned.push(estimate);
                let channel = Channel { loss, ..Channel::default() };
                let t = transfer(Mode::Message, &data, config, channel, i as u64, deadline);
                blocks += t.blocks.0;
                first += t.blocks.0 - t.blocks.1;
                clean += usize::from(t.blocks.1 == 0);
                if t.complete && t.bit_exact {
                    delivered += 1;
                    times.push(t.elapsed.as_secs_f64() * 1000.0);
                }
                frames += t.frames.0 + t.frames.1;
                let first_sends = t.shards_sent - t.shards_resent;
                parity += t.stats.send.parity_shards;
                data_shards += first_sends - t.stats.send.parity_shards;
                // As a node does: each finished stream teaches the next.
                network.learn(&t.stats);
            }
            times.sort_by(f64::total_cmp);
            let minimum = (bytes.div_ceil(payload) * messages) as f64;
            Row {
                loss,
                blocks_first_try: first as f64 / blocks.max(1) as f64,
                messages_first_try: clean as f64 / messages as f64,
                delivered: delivered as f64 / messages as f64,
                frames_per_payload_frame: frames as f64 / minimum,
                loss_learned: learned.iter().skip(messages / 2).sum::<f64>()
                    / (messages - messages / 2).max(1) as f64,
                parity_per_data: parity as f64 / data_shards.max(1) as f64,
                completion_ms_mean: times.iter().sum::<f64>() / times.len().max(1) as f64,
                completion_ms_p95: times.get(times.len() * 95 / 100).copied().unwrap_or(f64::NAN),
            }
        })
        .collect();
    Report {
        messages_per_rate: messages,
        message_bytes: bytes,
        deadline_s: deadline.as_secs_f64(),
        rows,
    }
}

pub(crate) fn print(r: &Report) {
    println!(
        "{} messages of {} bytes per loss rate, default stream settings (adaptive parity, blocks of up to 31 data shards), deadline {:.0} s",
        r.messages_per_rate, r.message_bytes, r.deadline_s
    );
    println!(
        "| loss | blocks first try | messages first try | delivered | frames / payload frame | loss learned | parity / data | completion mean | p95 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &r.rows {
        println!(
            "| {:.0} % | {:.4} | {:.3} | {:.3} | {:.2} | {:.3} | {:.2} | {:.0} ms | {:.0} ms |",
            row.loss * 100.0,
            row.blocks_first_try,
            row.messages_first_try,
            row.delivered,
            row.frames_per_payload_frame,
            row.loss_learned,
            row.parity_per_data,
            row.completion_ms_mean,
            row.completion_ms_p95
        );
    }
}
