//! The pipeline end to end: blocks through shards, with loss, reordering, duplicates and
//! forgeries.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::{Duration, Instant};

use mix_stream::{
    CodingConfig, Delivered, EncodeError, Reassembler, ReassemblyConfig, ReassemblyError,
    ReceiverKey, ShardError, StreamSender,
};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn receiver(seed: u8) -> ReceiverKey {
    ReceiverKey::from_bytes([seed; 32])
}

/// Sends `data` in blocks; `keep(block, shard)` decides which shards arrive; shards arrive
/// shuffled. Returns the rebuilt bytes in block order (missing blocks are skipped).
fn transfer(
    data: &[u8],
    config: CodingConfig,
    rng: &mut ChaCha20Rng,
    mut keep: impl FnMut(&mut ChaCha20Rng, u32, usize) -> bool,
) -> (Vec<Delivered>, usize) {
    let key = receiver(7);
    let mut sender = StreamSender::new(&key.public(), config, rng).unwrap();
    let mut shards = Vec::new();
    for chunk in data.chunks(config.max_block_len()) {
        let block = sender.encode(chunk).unwrap();
        for (i, s) in block.shards.into_iter().enumerate() {
            if keep(rng, block.number, i) {
                shards.push(s);
            }
        }
    }
    shards.shuffle(rng);
    // All shards of the transfer arrive shuffled together: allow every block in progress.
    let config = ReassemblyConfig { max_blocks_per_stream: 100_000, ..ReassemblyConfig::default() };
    let mut rx = Reassembler::new(key, config);
    let now = Instant::now();
    let mut out = Vec::new();
    for s in &shards {
        if let Some(d) = rx.accept(now, s).unwrap() {
            out.push(d);
        }
    }
    out.sort_by_key(|d| d.block);
    (out, rx.partial_blocks())
}

fn random_bytes(rng: &mut ChaCha20Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

#[test]
fn a_megabyte_arrives_bit_exact_in_any_order() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let data = random_bytes(&mut rng, 1 << 20);
    let (blocks, partial) = transfer(&data, CodingConfig::default(), &mut rng, |_, _, _| true);
    let rebuilt: Vec<u8> = blocks.iter().flat_map(|d| d.data.iter().copied()).collect();
    assert_eq!(rebuilt, data);
    assert_eq!(partial, 0);
}

#[test]
fn any_k_of_n_shards_rebuild_a_block_and_fewer_do_not() {
    let config = CodingConfig::default();
    let (k, m) = (config.data_shards as usize, config.parity_shards as usize);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let data = random_bytes(&mut rng, 20 * config.max_block_len());
    // Exactly m shards lost per block, chosen at random: everything arrives.
    let mut lost: Vec<Vec<usize>> = Vec::new();
    let (blocks, _) = transfer(&data, config, &mut rng, |rng, block, i| {
        while lost.len() <= block as usize {
            let mut idx: Vec<usize> = (0..k + m).collect();
            idx.shuffle(rng);
            lost.push(idx[..m].to_vec());
        }
        !lost[block as usize].contains(&i)
    });
    let rebuilt: Vec<u8> = blocks.iter().flat_map(|d| d.data.iter().copied()).collect();
    assert_eq!(rebuilt, data);
    // One more lost: no block, and it waits (bounded) until it times out.
    let (blocks, partial) = transfer(&data, config, &mut rng, |_, _, i| i > m);
    assert!(blocks.is_empty());
    assert_eq!(partial, 20);
}

#[test]
fn duplicates_forgeries_and_strangers_are_handled() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let key = receiver(9);
    let config = CodingConfig::default();
    let mut sender = StreamSender::new(&key.public(), config, &mut rng).unwrap();
    let block = sender.encode(b"hello, anonymous world").unwrap();
    let mut rx = Reassembler::new(key, ReassemblyConfig::default());
    let now = Instant::now();

    // A forged shard is refused on its own MAC; the block still rebuilds from the others.
    let mut forged = block.shards[0].clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(rx.accept(now, &forged), Err(ReassemblyError::Shard(ShardError::Mac)));
    assert_eq!(rx.accept(now, &block.shards[1]), Ok(None));
    assert_eq!(rx.accept(now, &block.shards[1]), Ok(None), "duplicate");
    let mut delivered = None;
    for s in &block.shards[2..] {
        if let Some(d) = rx.accept(now, s).unwrap() {
            delivered = Some(d);
        }
    }
    let d = delivered.unwrap();
    assert_eq!(d.data, b"hello, anonymous world");
    assert_eq!(d.stream, sender.stream_id());
    // Late shards of a finished block are ignored.
    assert_eq!(rx.accept(now, &block.shards[0]), Ok(None));

    // A receiver with another key cannot authenticate (or read) the stream.
    let mut other = Reassembler::new(receiver(10), ReassemblyConfig::default());
    assert_eq!(other.accept(now, &block.shards[0]), Err(ReassemblyError::Shard(ShardError::Mac)));
    assert_eq!(other.streams(), 0, "nothing kept for a stranger's shard");
    // Truncated and malformed shards.
    assert_eq!(rx.accept(now, &block.shards[0][..40]), Err(ShardError::Length.into()));
    let mut bad = block.shards[0].clone();
    bad[0] = 9;
    assert_eq!(rx.accept(now, &bad), Err(ShardError::Version.into()));
}

#[test]
fn streams_are_unlinkable_and_compression_is_used_when_it_helps() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let key = receiver(11);
    let config = CodingConfig::default();
    let mut a = StreamSender::new(&key.public(), config, &mut rng).unwrap();
    let mut b = StreamSender::new(&key.public(), config, &mut rng).unwrap();
    assert_ne!(a.stream_id(), b.stream_id());
    let text = "a log line that repeats; ".repeat(1000);
    let compressed = a.encode(text.as_bytes()).unwrap();
    let random = b.encode(&random_bytes(&mut rng, text.len())).unwrap();
    let size = |blk: &mix_stream::Block| blk.shards.iter().map(Vec::len).sum::<usize>();
    assert!(size(&compressed) * 10 < size(&random), "{} vs {}", size(&compressed), size(&random));
    let mut rx = Reassembler::new(key, ReassemblyConfig::default());
    let out = compressed.shards.iter().find_map(|s| rx.accept(Instant::now(), s).unwrap());
    assert_eq!(out.unwrap().data, text.as_bytes());
    // Incompressible and too large for one block; compressible input may be larger.
    let err = a.encode(&random_bytes(&mut rng, config.max_block_len() + 1)).unwrap_err();
    assert!(matches!(err, EncodeError::TooLarge { .. }));
    let zeros = vec![0; 4 * config.max_block_len()];
    assert_eq!(a.encode(&zeros).unwrap().shards.len(), 14);
}

#[test]
fn memory_is_bounded_by_streams_blocks_and_timeouts() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let key = receiver(12);
    let public = key.public();
    let config = ReassemblyConfig {
        max_streams: 2,
        max_blocks_per_stream: 3,
        block_timeout: Duration::from_secs(10),
        ..ReassemblyConfig::default()
    };
    let mut rx = Reassembler::new(key, config);
    let t0 = Instant::now();
    let mut senders: Vec<StreamSender> = (0..3)
        .map(|_| StreamSender::new(&public, CodingConfig::default(), &mut rng).unwrap())
        .collect();
    for s in &mut senders[..2] {
        for _ in 0..3 {
            let block = s.encode(b"x").unwrap();
            assert_eq!(rx.accept(t0, &block.shards[0]), Ok(None));
        }
        let block = s.encode(b"x").unwrap();
        assert_eq!(rx.accept(t0, &block.shards[0]), Err(ReassemblyError::TooManyBlocks));
    }
    let block = senders[2].encode(b"x").unwrap();
    assert_eq!(rx.accept(t0, &block.shards[0]), Err(ReassemblyError::TooManyStreams));
    assert_eq!(rx.partial_blocks(), 6);
    assert_eq!(rx.expire(t0 + Duration::from_secs(11)), 6);
    assert_eq!(rx.partial_blocks(), 0);
    assert_eq!(rx.expire(t0 + Duration::from_secs(601)), 0);
    assert_eq!(rx.streams(), 0);
}

/// Delivery ratio of blocks under independent random shard loss, default coding (10 + 4).
#[test]
fn delivery_ratio_against_random_loss() {
    let config = CodingConfig::default();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let data = random_bytes(&mut rng, 400 * config.max_block_len());
    let mut table = Vec::new();
    for loss in [0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30] {
        let (blocks, _) =
            transfer(&data, config, &mut rng, |rng, _, _| rng.random::<f64>() >= loss);
        table.push((loss, blocks.len() as f64 / 400.0));
    }
    eprintln!("shard loss -> blocks delivered (10 + 4 shards, 400 blocks each):");
    for (loss, ratio) in &table {
        eprintln!("  {:>4.0} % -> {:.4}", loss * 100.0, ratio);
    }
    assert_eq!(table[0].1, 1.0);
    assert!(table[2].1 >= 0.97, "10 % loss: {}", table[2].1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_k_shards_in_any_order_rebuild_any_block(
        len in 0usize..20_000,
        seed in any::<u64>(),
        k in 1u8..12,
        m in 0u8..6,
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let config = CodingConfig { data_shards: k, parity_shards: m, max_shard_len: 3_800, compression: Some(1) };
        let data = random_bytes(&mut rng, len.min(config.max_block_len()));
        let key = receiver(13);
        let mut sender = StreamSender::new(&key.public(), config, &mut rng).unwrap();
        let mut shards = sender.encode(&data).unwrap().shards;
        shards.shuffle(&mut rng);
        shards.truncate(usize::from(k));
        let mut rx = Reassembler::new(key, ReassemblyConfig::default());
        let out = shards.iter().find_map(|s| rx.accept(Instant::now(), s).unwrap());
        prop_assert_eq!(out.unwrap().data, data);
    }
}
