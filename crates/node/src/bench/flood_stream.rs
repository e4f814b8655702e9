//! `mixnode bench flood --shapes stream`: an accepting node under a flood of stream frames
//! from strangers, while an honest stream reaches it through the mixnet.
//!
//! `/mix/stream/1.0.0` is open to any connected peer: exits deliver on it. Eight hostile
//! peers dial the acceptor and write frames as fast as their connections take them, each
//! a fresh opening of a message (valid: it costs the acceptor a Diffie-Hellman and, accepted,
//! a slot and memory) or random bytes shaped like a frame. Meanwhile an honest opener
//! streams 4 MB to the acceptor over three hops; it did the same before the flood, for
//! comparison. The process's resident memory is sampled throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use mix_stream::{Connection, FrameLimits, Mode, StreamConfig, SurbBytes, SurbSource};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::node::spec;
use crate::runtime::{self, NodeHandle};

const FLOODERS: usize = 8;
const HONEST_BYTES: usize = 4 << 20;
/// Every fourth frame is a valid opening; the rest are random bytes.
const OPENING_EVERY: u64 = 4;

/// What the stream flood did to the acceptor.
#[derive(Debug, Serialize)]
pub(crate) struct StreamFloodReport {
    flooders: usize,
    flood_s: f64,
    /// Frames the flooders' connections took (valid openings among them).
    frames_written: u64,
    openings_written: u64,
    /// The honest 4 MB stream before the flood and during it (both checked by SHA-256).
    honest_before_s: f64,
    honest_during_s: f64,
    honest_verified: bool,
    rss_mb_before: f64,
    rss_mb_peak: f64,
    /// What the acceptor's stream layer may hold for accepted streams and messages (its
    /// byte budget), which the flood cannot push it past.
    accepted_bytes_budget_mb: f64,
    acceptor_drops: Vec<(String, u64)>,
    acceptor_accepted: u64,
    /// Streams the acceptor held when the flood stopped (accepted, or opened).
    acceptor_active_after: i64,
}

struct NoSurbs;

impl SurbSource for NoSurbs {
    fn make_surbs(&mut self, _: usize) -> Option<(Vec<SurbBytes>, Duration)> {
        None
    }
}

async fn honest_stream(
    opener: &NodeHandle,
    acceptor: &NodeHandle,
    data: &[u8],
) -> anyhow::Result<(f64, bool)> {
    use sha2::Digest;
    let incoming = acceptor.streams.clone();
    let reader = tokio::spawn(async move {
        let mut stream = incoming.accept_stream().await?;
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.ok()?;
        Some(got)
    });
    let started = Instant::now();
    let mut stream = opener.streams.clone().open_stream(acceptor.peer_id).await?;
    stream.write_all(data).await?;
    stream.close().await?;
    let got = tokio::time::timeout(Duration::from_secs(300), reader).await??.unwrap_or_default();
    let same = sha2::Sha256::digest(&got) == sha2::Sha256::digest(data);
    Ok((started.elapsed().as_secs_f64(), same))
}

/// One hostile peer: dials `target`, then writes frames on `/mix/stream/1.0.0` until `stop`.
async fn flooder(
    target: TargetInfo,
    seed: u64,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    openings: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut swarm = super::bare_host()?;
    let mut control = swarm.behaviour().new_control();
    swarm.dial(target.addr.clone().with(libp2p::multiaddr::Protocol::P2p(target.peer_id)))?;
    let driver = tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { .. } = swarm.select_next_some().await {}
        }
    });
    let key = target.key;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let limits = FrameLimits { forward: 3943, reverse: 3961 };
    let body = vec![0x5au8; 3800 * 8];
    let result = async {
        let mut stream = control.open_stream(target.peer_id, mix_stream::PROTOCOL).await?;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let frame = if n.is_multiple_of(OPENING_EVERY) {
                let now = Instant::now();
                let mut opener = Connection::open(
                    &key,
                    Mode::Message,
                    StreamConfig::default(),
                    limits,
                    now,
                    &mut rng,
                )?;
                opener.set_wall_clock(now, SystemTime::now().duration_since(UNIX_EPOCH)?);
                opener.write(now, &body)?;
                opener.flush();
                let at = now + Duration::from_millis(10);
                opener.handle_timeout(at);
                match opener.poll_transmit(at, &mut NoSurbs) {
                    Some(frame) => {
                        openings.fetch_add(1, Ordering::Relaxed);
                        frame
                    }
                    None => continue,
                }
            } else {
                let mut frame = vec![0u8; limits.forward];
                rng.fill_bytes(&mut frame);
                frame[0] = mix_stream::frame::VERSION;
                frame
            };
            stream.write_all(&libp2p_mix::framing::encode(&frame)).await?;
            written.fetch_add(1, Ordering::Relaxed);
            n += 1;
            if n.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        }
        anyhow::Ok(())
    }
    .await;
    driver.abort();
    // A flooder whose stream the acceptor closed has done what it could.
    let _ = result;
    Ok(())
}

pub(crate) async fn run(flood_s: u64) -> anyhow::Result<StreamFloodReport> {
    let mut data = vec![0u8; HONEST_BYTES];
    rand_chacha::ChaCha20Rng::seed_from_u64(9).fill_bytes(&mut data);
    let mut nodes = Vec::new();
    for _ in 0..5 {
        let mut spec = spec(200_000)?;
        // The defaults a user gets, but for the mixing delay.
        spec.config.inbound_frame_rate = libp2p_mix::Config::default().inbound_frame_rate;
        spec.streams.stream.hop_delay = None;
        nodes.push(runtime::start(spec).await?);
    }
    let entries = nodes.iter().map(NodeHandle::entry).collect::<anyhow::Result<Vec<_>>>()?;
    for node in &nodes {
        node.set_static_nodes(entries.clone()).await;
    }
    let (opener, acceptor) = (&nodes[0], &nodes[1]);
    let budget = mix_stream::Config::default().max_accepted_bytes;
    eprintln!("honest stream before the flood …");
    let (before_s, before_ok) = honest_stream(opener, acceptor, &data).await?;
    let rss_before = super::flood::rss_mb();

    eprintln!("flood: {FLOODERS} peers for {flood_s} s, honest stream meanwhile …");
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let openings = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let target = TargetInfo {
        peer_id: acceptor.peer_id,
        addr: acceptor.addr.clone(),
        key: *acceptor.mix_key.as_bytes(),
    };
    for i in 0..FLOODERS {
        let (stop, written, openings) = (stop.clone(), written.clone(), openings.clone());
        tasks.push(tokio::spawn(flooder(target.clone(), i as u64, stop, written, openings)));
    }
    let peak = Arc::new(std::sync::Mutex::new(rss_before));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let rss = super::flood::rss_mb();
                {
                    let mut p = peak.lock().expect("not poisoned");
                    *p = p.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Under the flood the honest stream may stall: report it rather than wait for its idle
    // timeout.
    let limit = Duration::from_secs(flood_s + 30);
    let (during_s, during_ok) =
        match tokio::time::timeout(limit, honest_stream(opener, acceptor, &data)).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                eprintln!("honest stream during the flood failed: {e}");
                (f64::NAN, false)
            }
            Err(_) => {
                eprintln!("honest stream during the flood did not finish in {limit:?}");
                (f64::NAN, false)
            }
        };
    let rest = Duration::from_secs(flood_s).saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    stop.store(true, Ordering::Relaxed);
    let flood_secs = started.elapsed().as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    let _ = sampler.await;
    let m = &acceptor.stream_metrics;
    let acceptor_active = m.active_total();
    let reasons = [
        "peer_frame_rate",
        "peer_accept_rate",
        "accept_rate",
        "unknown_label",
        "too_many_streams",
        "peer_streams",
        "stranger_streams",
        "memory_budget",
        "opening_idle",
        "message_too_large",
        "replayed_opening",
        "stale_opening",
    ];
    let acceptor_drops = reasons
        .iter()
        .map(|r| (r.to_string(), m.frames_dropped(r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let rss_mb_peak = *peak.lock().expect("not poisoned");
    Ok(StreamFloodReport {
        flooders: FLOODERS,
        flood_s: (flood_secs * 100.0).round() / 100.0,
        frames_written: written.load(Ordering::Relaxed),
        openings_written: openings.load(Ordering::Relaxed),
        honest_before_s: (before_s * 1000.0).round() / 1000.0,
        honest_during_s: (during_s * 1000.0).round() / 1000.0,
        acceptor_active_after: acceptor_active,
        honest_verified: before_ok && during_ok,
        rss_mb_before: (rss_before * 10.0).round() / 10.0,
        rss_mb_peak: (rss_mb_peak * 10.0).round() / 10.0,
        accepted_bytes_budget_mb: budget as f64 / f64::from(1 << 20),
        acceptor_drops,
        acceptor_accepted: m.accepted_total(),
    })
}

/// What a flooder knows of its target.
#[derive(Clone)]
struct TargetInfo {
    peer_id: libp2p::PeerId,
    addr: libp2p::Multiaddr,
    key: [u8; 32],
}

impl StreamFloodReport {
    /// The honest stream arrived intact, and memory stayed within the budget's reach.
    pub(crate) fn met(&self) -> bool {
        self.honest_verified
            && self.rss_mb_peak - self.rss_mb_before <= self.accepted_bytes_budget_mb
    }
}

pub(crate) fn print(r: &StreamFloodReport) {
    println!(
        "stream flood: {} peers for {:.1} s wrote {} frames ({} valid openings) on /mix/stream/1.0.0",
        r.flooders, r.flood_s, r.frames_written, r.openings_written
    );
    println!(
        "honest 4 MB stream: {:.2} s before, {:.2} s during the flood, SHA-256 verified: {}",
        r.honest_before_s, r.honest_during_s, r.honest_verified
    );
    println!(
        "resident memory: {:.1} MB before, {:.1} MB peak (accepted-bytes budget {:.0} MB); accepted {}",
        r.rss_mb_before, r.rss_mb_peak, r.accepted_bytes_budget_mb, r.acceptor_accepted
    );
    for (reason, n) in &r.acceptor_drops {
        println!("  dropped {reason}: {n}");
    }
}
