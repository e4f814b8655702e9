//! Reliable streams over a lossy, reordering channel in virtual time.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mix_stream::{Ack, Incoming, Outgoing, ReassemblyConfig, ReceiverKey, SessionConfig};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

enum Msg {
    Shard(Vec<u8>),
    Ack(Vec<u8>),
}

struct Run {
    delivered: Vec<u8>,
    shards_sent: u64,
    virtual_secs: f64,
}

/// Streams `data` through a channel that drops shards with probability `loss`, drops acks
/// with `ack_loss`, and delays everything by 5–80 ms (so it reorders).
fn stream(data: &[u8], loss: f64, ack_loss: f64, seed: u64) -> Run {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let key = ReceiverKey::from_bytes([42; 32]);
    let config = SessionConfig::default();
    let mut tx = Outgoing::new(&key.public(), config, &mut rng).unwrap();
    let mut rx = Incoming::new(key, ReassemblyConfig::default(), 4 * config.window);
    let t0 = Instant::now();
    let mut now = t0;
    let mut wire: BTreeMap<(Instant, u64), Msg> = BTreeMap::new();
    let mut seq = 0u64;
    let mut written = 0;
    let mut delivered = Vec::new();
    let mut flushed = false;
    while !(flushed && tx.is_done()) {
        assert!(now - t0 < Duration::from_secs(3600), "stalled");
        assert!(tx.error().is_none(), "{:?}", tx.error());
        if written < data.len() {
            written += tx.write(now, &data[written..]).unwrap();
        } else if !flushed {
            flushed = tx.flush(now).unwrap();
        }
        while let Some(shard) = tx.poll_transmit() {
            if rng.random::<f64>() >= loss {
                let at = now + Duration::from_millis(rng.random_range(5..80));
                seq += 1;
                wire.insert((at, seq), Msg::Shard(shard));
            }
        }
        // Next event: a message on the wire or the sender's timer.
        let next = [wire.keys().next().map(|k| k.0), tx.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_millis(10));
        now = now.max(next);
        while let Some(entry) = wire.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Msg::Shard(shard) => {
                    let r = rx.accept(now, &shard);
                    if let Some(readable) = r.unwrap() {
                        delivered.extend_from_slice(&readable.bytes);
                        let ack = rx.ack(&readable.stream).unwrap().encode();
                        if rng.random::<f64>() >= ack_loss {
                            let at = now + Duration::from_millis(rng.random_range(5..80));
                            seq += 1;
                            wire.insert((at, seq), Msg::Ack(ack));
                        }
                    }
                }
                Msg::Ack(bytes) => tx.on_ack(now, &Ack::decode(&bytes).unwrap()),
            }
        }
        tx.handle_timeout(now);
    }
    Run { delivered, shards_sent: tx.shards_sent(), virtual_secs: (now - t0).as_secs_f64() }
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

#[test]
fn a_megabyte_arrives_exactly_despite_loss_of_shards_and_acks() {
    let data = random(1 << 20, 1);
    for (loss, ack_loss) in [(0.0, 0.0), (0.10, 0.10), (0.30, 0.20)] {
        let run = stream(&data, loss, ack_loss, 2);
        assert!(run.delivered == data, "loss {loss}: not bit-exact");
        let minimum = (data.len() as f64 / 36_000.0).ceil() * 14.0;
        eprintln!(
            "1 MiB, shard loss {:.0} %, ack loss {:.0} %: {} shards sent ({:.2}× the minimum), {:.1} s virtual",
            loss * 100.0,
            ack_loss * 100.0,
            run.shards_sent,
            run.shards_sent as f64 / minimum,
            run.virtual_secs
        );
    }
}

#[test]
fn eight_megabytes_of_text_arrive_compressed_and_exact() {
    let line = "2026-11-22T12:00:00Z INFO mixnode: forwarded packet to peer 16Uiu2HAm…\n";
    let data: Vec<u8> = line.repeat((8 << 20) / line.len()).into_bytes();
    let run = stream(&data, 0.05, 0.05, 3);
    assert!(run.delivered == data);
    // zstd shrinks log lines a lot: far fewer shards than the raw size needs.
    let raw_shards = (data.len() as f64 / 36_000.0).ceil() * 14.0;
    assert!((run.shards_sent as f64) < raw_shards / 5.0, "{} shards", run.shards_sent);
}

#[test]
fn acks_round_trip_and_malformed_ones_are_refused() {
    let ack = Ack { next: 7, missing: vec![9, 12], highest: Some(15) };
    assert_eq!(Ack::decode(&ack.encode()), Some(ack));
    let none = Ack { next: 0, missing: vec![], highest: None };
    assert_eq!(Ack::decode(&none.encode()), Some(none));
    assert_eq!(Ack::decode(&[0; 8]), None);
    assert_eq!(Ack::decode(&[0, 0, 0, 1, 0, 0, 0, 2, 1, 0]), None);
}
