//! The stream workload: bytes over an anonymous stream and an answer on it.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng;
use rand_chacha::ChaCha20Rng;

use crate::runtime::NodeHandle;

use super::report::StreamRun;

/// Accepts one stream, reads it to its end (counting into `received`), answers with the
/// digest of what it read, and returns that.
async fn accept_and_answer(
    acceptor: mix_stream::Control,
    received: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<u8>> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use sha2::Digest;

    let mut stream = acceptor.accept_stream().await.context("no stream")?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = stream.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        got.extend_from_slice(&buf[..k]);
        received.store(got.len(), Ordering::Relaxed);
    }
    stream.write_all(&sha2::Sha256::digest(&got)).await?;
    stream.close().await?;
    Ok(got)
}

/// Sends `message` whole to `to` and waits (at most 60 s) for it there: whether it arrived
/// intact, and what the send returned.
async fn send_message(
    control: &mut mix_stream::Control,
    to: &NodeHandle,
    message: &[u8],
) -> (bool, Result<(), mix_stream::TransferError>) {
    let inbox = to.streams.clone();
    let delivery = tokio::spawn(async move { inbox.next_message().await });
    let sent = control.send(to.peer_id, message.to_vec()).await;
    let arrived = tokio::time::timeout(Duration::from_secs(60), delivery).await;
    (matches!(&arrived, Ok(Ok(Some(m))) if *m == message) && sent.is_ok(), sent)
}

/// Streams `n` random bytes between two survivors, has the acceptor answer with their digest
/// on the same stream, then sends a message, and checks what arrived.
pub(super) async fn stream_run(
    nodes: &[NodeHandle],
    survivors: &[usize],
    n: usize,
    rng: &mut ChaCha20Rng,
    show: bool,
) -> StreamRun {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use sha2::Digest;

    let (from, to) = (survivors[1], survivors[2]);
    let mut data = vec![0u8; n];
    rng.fill_bytes(&mut data);
    if show {
        eprintln!("  streaming {n} bytes from n{from} to n{to} …");
    }
    let received = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn(accept_and_answer(nodes[to].streams.clone(), received.clone()));
    let started = Instant::now();
    let mut control = nodes[from].streams.clone();
    let mut opener_control = control.clone();
    let opener = async {
        let mut stream = opener_control.open_stream(nodes[to].peer_id).await?;
        stream.write_all(&data).await?;
        stream.close().await?;
        let mut digest = Vec::new();
        stream.read_to_end(&mut digest).await?;
        anyhow::Ok((digest, stream.stats()))
    };
    futures::pin_mut!(opener);
    let mut progress = tokio::time::interval(Duration::from_millis(200));
    let outcome = loop {
        tokio::select! {
            result = &mut opener => break Some(result),
            _ = progress.tick() => {
                if show {
                    let got = received.load(Ordering::Relaxed);
                    eprint!("\r  stream: {got}/{n} bytes  {:.1} s   ", started.elapsed().as_secs_f64());
                    let _ = std::io::stderr().flush();
                }
                if started.elapsed() > Duration::from_secs(600) {
                    break None;
                }
            }
        }
    };
    if show {
        eprintln!();
    }
    let seconds = started.elapsed().as_secs_f64();
    let got = match tokio::time::timeout(Duration::from_secs(10), reader).await {
        Ok(Ok(Ok(got))) => got,
        _ => Vec::new(),
    };
    let (reply_verified, stats, mut error) = match outcome {
        Some(Ok((digest, stats))) => {
            (digest == sha2::Sha256::digest(&data).as_slice(), Some(stats), None)
        }
        Some(Err(e)) => (false, None, Some(format!("{e:#}"))),
        None => (false, None, Some("timed out".to_owned())),
    };

    // A message, whole, with `send`.
    let message = data[..n / 4].to_vec();
    let sent_at = Instant::now();
    let (message_delivered, sent) = send_message(&mut control, &nodes[to], &message).await;
    if let Err(e) = sent {
        error.get_or_insert(format!("message: {e}"));
    }
    StreamRun {
        bytes: n,
        received: got.len(),
        bit_exact: got == data,
        reply_verified,
        seconds: (seconds * 100.0).round() / 100.0,
        goodput_mbps: ((got.len() as f64 * 8.0 / seconds / 1e6) * 100.0).round() / 100.0,
        frames_sent: stats.map_or(0, |s| s.frames_sent),
        shards_resent: stats.map_or(0, |s| s.send.shards_resent),
        surbs_sent: stats.map_or(0, |s| s.surbs),
        message_bytes: message.len(),
        message_delivered,
        message_seconds: (sent_at.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        error,
    }
}
