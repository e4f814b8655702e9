//! `mixnode send-file` and `mixnode receive`: files over anonymous streams.
//!
//! Both start a mix node of their own (it serves the network while it runs: users carry their
//! share of the traffic), join the network through a bootstrap peer and find the others
//! through discovery. The receiver prints what a sender needs: its address and its stream key.
//! On the stream, the sender writes a header and the file; the receiver writes the file into
//! its directory and answers on the same stream, through the sender's SURBs, with the SHA-256
//! of what it got; the sender compares.
//!
//! ```text
//! header = name_len u16 | name (UTF-8, a plain file name) | size u64     (big-endian)
//! ```

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use libp2p_mix::core::ExponentialDelay;
use mix_stream::{StreamConfig, StreamPeer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::runtime::{self, DiscoverySpec, NodeHandle, NodeSpec};

/// Longest file name accepted.
const MAX_NAME: usize = 255;

/// A node for a one-off transfer: listens on `listen`, joins through `bootstrap`.
fn spec(listen: Multiaddr, bootstrap: &[Multiaddr]) -> anyhow::Result<NodeSpec> {
    anyhow::ensure!(!bootstrap.is_empty(), "give at least one --bootstrap peer (…/p2p/<peer id>)");
    let peers =
        bootstrap.iter().map(crate::config::bootstrap_peer).collect::<anyhow::Result<Vec<_>>>()?;
    let mut config = libp2p_mix::Config::default();
    // The stream paces its own frames; the node-wide gap would cap it at a few hundred a second.
    config.core.send_jitter = Duration::ZERO;
    Ok(NodeSpec {
        discovery: Some(DiscoverySpec {
            config: libp2p_mix::discovery::Config::default(),
            bootstrap: peers,
        }),
        delay: Box::new(ExponentialDelay::new(Duration::from_millis(20))),
        ..NodeSpec::new(listen, config)
    })
}

/// Waits until the pool can make paths (3 hops besides the two ends).
async fn await_pool(node: &NodeHandle, exclude: Option<PeerId>, show: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let pool = node.pool_peers().await;
        let usable = pool.iter().filter(|p| **p != node.peer_id && Some(**p) != exclude).count();
        if usable >= 3 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("after 60 s the mix pool holds {usable} usable nodes; paths need 3");
        }
        if show {
            eprint!("\r  discovering mix nodes: {usable} of the 3 needed   ");
            let _ = std::io::stderr().flush();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A progress line: bytes, rate, ETA.
struct Progress {
    total: u64,
    started: Instant,
    shown: Instant,
    show: bool,
    label: &'static str,
}

impl Progress {
    fn new(total: u64, label: &'static str) -> Self {
        let now = Instant::now();
        Self { total, started: now, shown: now, show: std::io::stderr().is_terminal(), label }
    }

    fn update(&mut self, done: u64, force: bool) {
        if !self.show || (!force && self.shown.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.shown = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta =
            if rate > 0.0 { (self.total.saturating_sub(done)) as f64 / rate } else { f64::NAN };
        let percent = if self.total == 0 { 100.0 } else { 100.0 * done as f64 / self.total as f64 };
        eprint!(
            "\r  {} {:.1} / {:.1} MB  {:5.1} %  {:.2} MB/s  ETA {:.0} s   ",
            self.label,
            done as f64 / 1e6,
            self.total as f64 / 1e6,
            percent,
            rate / 1e6,
            eta
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&mut self, done: u64) {
        self.update(done, true);
        if self.show {
            eprintln!();
        }
    }
}

/// What a receiver prints for senders, parsed back.
pub(crate) fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(text.trim()).context("the key is not hex")?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("the key must be 32 bytes, got {}", bytes.len()))
}

/// Sends `file` to the acceptor at `to` (a multiaddr ending in `/p2p/<peer id>`) with stream
/// key `key`.
pub(crate) async fn send_file(
    file: &Path,
    to: &Multiaddr,
    key: [u8; 32],
    listen: Multiaddr,
    bootstrap: &[Multiaddr],
    config: StreamConfig,
) -> anyhow::Result<()> {
    let Some(Protocol::P2p(peer_id)) = to.iter().last() else {
        bail!("--to must end in /p2p/<peer id>");
    };
    let addr: Multiaddr = to.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.len() <= MAX_NAME)
        .context("the file needs a UTF-8 name of at most 255 bytes")?
        .to_owned();
    let mut input =
        tokio::fs::File::open(file).await.with_context(|| format!("opening {}", file.display()))?;
    let size = input.metadata().await?.len();

    let show = std::io::stderr().is_terminal();
    let node = runtime::start(spec(listen, bootstrap)?).await?;
    await_pool(&node, Some(peer_id), show).await?;
    if show {
        eprintln!(
            "\r  {} mix nodes known; opening an anonymous stream to {peer_id}",
            node.pool_peers().await.len()
        );
    }
    let mut control = node.streams.clone();
    let mut stream = control
        .open_stream_with(StreamPeer { peer_id, addr, key }, Some(config))
        .await
        .context("opening the stream")?;
    let mut header = Vec::with_capacity(2 + name.len() + 8);
    header.extend_from_slice(&(name.len() as u16).to_be_bytes());
    header.extend_from_slice(name.as_bytes());
    header.extend_from_slice(&size.to_be_bytes());
    stream.write_all(&header).await?;

    let mut progress = Progress::new(size, "sent");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        stream.write_all(&buf[..n]).await?;
        sent += n as u64;
        progress.update(sent, false);
    }
    anyhow::ensure!(sent == size, "{} changed while it was read", file.display());
    progress.finish(sent);
    stream.close().await.context("waiting for every byte to be acknowledged")?;
    let mut digest = Vec::new();
    stream.read_to_end(&mut digest).await.context("reading the receiver's answer")?;
    // Our acknowledgement of the answer goes out before the node stops.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.closed()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = stream.stats();
    tracing::debug!(?stats, "stream statistics");
    let secs = progress.started.elapsed().as_secs_f64();
    anyhow::ensure!(
        digest == hasher.finalize().as_slice(),
        "the receiver's SHA-256 does not match what was sent"
    );
    println!(
        "sent {name}: {size} bytes in {secs:.2} s ({:.2} MB/s), verified by the receiver's SHA-256; {} frames, {} shards resent",
        size as f64 / secs / 1e6,
        stats.frames_sent,
        stats.send.shards_resent
    );
    node.stop();
    Ok(())
}

/// A plain file name, or `None` for anything that could leave the directory.
fn safe_name(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= MAX_NAME;
    ok.then_some(name)
}

/// A path in `dir` for `name` that does not exist yet.
fn free_path(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (1..)
        .map(|i| dir.join(format!("{name}.{i}")))
        .find(|p| !p.exists())
        .expect("some suffix is free")
}

/// Receives files into `dir`: `count` of them, or until interrupted.
pub(crate) async fn receive(
    dir: &Path,
    listen: Multiaddr,
    bootstrap: &[Multiaddr],
    count: Option<usize>,
) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating {}", dir.display()))?;
    let node = runtime::start(spec(listen, bootstrap)?).await?;
    let at = node.addr.clone().with(Protocol::P2p(node.peer_id));
    let key = hex::encode(node.mix_key.as_bytes());
    // Machine-readable, for scripts: the two things a sender needs.
    eprintln!("receiving into {}", dir.display());
    eprintln!("to: {at}");
    eprintln!("key: {key}");
    eprintln!(
        "send with: mixnode send-file FILE --to {at} --key {key} --bootstrap <a node of the network>"
    );
    let incoming = node.streams.clone();
    let mut received = 0;
    while count.is_none_or(|c| received < c) {
        let mut stream = tokio::select! {
            stream = incoming.accept_stream() => stream.context("the node stopped")?,
            _ = tokio::signal::ctrl_c() => break,
        };
        match receive_one(&mut stream, dir).await {
            Ok((path, size, secs)) => {
                tracing::debug!(stats = ?stream.stats(), "stream statistics");
                println!(
                    "received {}: {size} bytes in {secs:.2} s ({:.2} MB/s)",
                    path.display(),
                    size as f64 / secs.max(1e-3) / 1e6
                );
                received += 1;
            }
            Err(e) => {
                eprintln!("a transfer failed: {e:#}");
                stream.reset(mix_stream::RESET_ABANDONED);
            }
        }
    }
    node.stop();
    Ok(())
}

async fn receive_one(
    stream: &mut mix_stream::MixStream,
    dir: &Path,
) -> anyhow::Result<(PathBuf, u64, f64)> {
    let started = Instant::now();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.context("reading the header")?;
    let len = usize::from(u16::from_be_bytes(len));
    anyhow::ensure!(len <= MAX_NAME, "file name of {len} bytes");
    let mut name = vec![0u8; len];
    stream.read_exact(&mut name).await?;
    let name = String::from_utf8(name).context("the file name is not UTF-8")?;
    let name = safe_name(&name).with_context(|| format!("refusing file name {name:?}"))?.to_owned();
    let mut size = [0u8; 8];
    stream.read_exact(&mut size).await?;
    let size = u64::from_be_bytes(size);
    let path = free_path(dir, &name);
    let partial = path.with_extension("partial");
    let mut out = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut progress = Progress::new(size, "received");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < size {
        let want = buf.len().min(usize::try_from(size - got).unwrap_or(usize::MAX));
        let n = stream.read(&mut buf[..want]).await?;
        anyhow::ensure!(n > 0, "the stream ended after {got} of {size} bytes");
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).await?;
        got += n as u64;
        progress.update(got, false);
    }
    out.flush().await?;
    drop(out);
    progress.finish(got);
    tokio::fs::rename(&partial, &path).await?;
    let secs = started.elapsed().as_secs_f64();
    // The answer is a courtesy: the file is complete whether or not the sender hears it.
    stream.write_all(&hasher.finalize()).await?;
    if tokio::time::timeout(Duration::from_secs(30), stream.close()).await.is_err() {
        tracing::warn!("the sender did not acknowledge the digest");
    }
    Ok((path, size, secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_directory() {
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "x\0y"] {
            assert_eq!(safe_name(bad), None, "{bad:?}");
        }
        assert_eq!(safe_name("report.pdf"), Some("report.pdf"));
        assert!(parse_key("00").is_err());
        assert!(parse_key(&"ab".repeat(32)).is_ok());
    }
}
