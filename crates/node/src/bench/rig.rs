//! The load generator of `bench node --cores`: a bare libp2p host (TCP, Noise and Yamux, as a
//! node's; no mix behaviour) on a thread of its own.
//!
//! It writes packets built before the clock starts on one `/mix/1.0.0` stream per node under
//! test, many frames per write, and it is their next hop: it accepts the node's streams and
//! counts the frames on them without keeping them. Per packet it costs the transport's work
//! (Noise both ways, Yamux, the kernel's TCP) and nothing a mix node does besides: no swarm
//! event per packet, no metrics, no channel between tasks. On a machine with exactly as many
//! cores as the node under test is given, what the generator takes is taken from the node, so
//! it should take as little as it can.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Stream};
use tokio::sync::{Notify, mpsc, oneshot};

/// How long the generator waits for the next frame to arrive before it gives up on the rest.
const NO_PROGRESS: Duration = Duration::from_secs(5);
/// Bytes read from a stream at a time.
const READ_BUFFER: usize = 256 * 1024;

/// The load generator, running on its own thread until [`Rig::stop`] or drop.
pub(crate) struct Rig {
    pub(crate) peer_id: PeerId,
    pub(crate) addr: Multiaddr,
    /// The generator's thread, for CPU accounting.
    pub(crate) thread: Option<u32>,
    commands: mpsc::UnboundedSender<Pump>,
}

/// Write `batches` (frames with their length prefix, several to a batch) to `to`, keeping at
/// most `window` packets between the write and their arrival back here.
struct Pump {
    to: PeerId,
    addr: Multiaddr,
    batches: Vec<Batch>,
    window: usize,
    reply: oneshot::Sender<anyhow::Result<Pumped>>,
}

/// Frames written with one write: `bytes` holds `packets` frames back to back.
pub(crate) struct Batch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) packets: usize,
}

impl Batch {
    /// `frames` (each with its length prefix) in batches of at most `per_batch`.
    pub(crate) fn split(frames: impl IntoIterator<Item = Vec<u8>>, per_batch: usize) -> Vec<Self> {
        let mut batches = Vec::new();
        let mut current = Self { bytes: Vec::new(), packets: 0 };
        for frame in frames {
            current.bytes.extend_from_slice(&frame);
            current.packets += 1;
            if current.packets == per_batch.max(1) {
                batches
                    .push(std::mem::replace(&mut current, Self { bytes: Vec::new(), packets: 0 }));
            }
        }
        if current.packets > 0 {
            batches.push(current);
        }
        batches
    }
}

/// What one [`Rig::pump`] saw come back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pumped {
    /// Frames that arrived back (from any node) since the pump started.
    pub(crate) arrived: usize,
    /// When the last of them arrived.
    pub(crate) last: Instant,
}

/// Frames that arrived on any accepted stream, and when the last did.
struct Arrivals {
    frames: AtomicU64,
    /// Nanoseconds after `epoch` of the last arrival.
    last_ns: AtomicU64,
    epoch: Instant,
    notify: Notify,
}

impl Arrivals {
    fn add(&self, frames: u64) {
        let ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_ns.store(ns, Ordering::Relaxed);
        self.frames.fetch_add(frames, Ordering::Release);
        self.notify.notify_one();
    }

    fn frames(&self) -> u64 {
        self.frames.load(Ordering::Acquire)
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed))
    }
}

/// Counts length-prefixed frames in a byte stream read in pieces of any size.
#[derive(Debug, Default)]
struct FrameCounter {
    /// Bytes of the current frame's body still to come.
    remaining: usize,
    /// The length prefix read so far (unsigned varint).
    prefix: usize,
    prefix_shift: u32,
}

impl FrameCounter {
    /// Consumes `bytes`; returns how many frames ended in them.
    fn feed(&mut self, mut bytes: &[u8]) -> anyhow::Result<u64> {
        let mut frames = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(bytes.len());
                self.remaining -= take;
                bytes = &bytes[take..];
                if self.remaining == 0 {
                    frames += 1;
                }
                continue;
            }
            let byte = bytes[0];
            bytes = &bytes[1..];
            anyhow::ensure!(self.prefix_shift < 21, "length prefix longer than 3 bytes");
            self.prefix |= usize::from(byte & 0x7f) << self.prefix_shift;
            self.prefix_shift += 7;
            if byte & 0x80 == 0 {
                self.remaining = std::mem::take(&mut self.prefix);
                self.prefix_shift = 0;
                if self.remaining == 0 {
                    frames += 1;
                }
            }
        }
        Ok(frames)
    }
}

impl Rig {
    /// Starts the generator on a thread of its own, listening on loopback.
    pub(crate) fn start() -> anyhow::Result<Self> {
        crate::runtime::on_own_thread("mix-rig", |started| async move {
            if let Err(e) = serve(&started).await {
                let _ = started.send(Err(e));
            }
        })
    }

    /// Writes `batches` to the node `to` at `addr` (dialed the first time), at most `window`
    /// packets ahead of what came back; returns once as many came back as were written, or no
    /// frame came back for [`NO_PROGRESS`].
    pub(crate) async fn pump(
        &self,
        to: PeerId,
        addr: Multiaddr,
        batches: Vec<Batch>,
        window: usize,
    ) -> anyhow::Result<Pumped> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Pump { to, addr, batches, window, reply })
            .map_err(|_| anyhow::anyhow!("load generator stopped"))?;
        answer.await.context("load generator stopped")?
    }

    pub(crate) fn stop(self) {}
}

type Started = std::sync::mpsc::Sender<anyhow::Result<Rig>>;

async fn serve(started: &Started) -> anyhow::Result<()> {
    let mut swarm = super::bare_host()?;
    let peer_id = *swarm.local_peer_id();
    let mut control = swarm.behaviour().new_control();
    let mut incoming = control.accept(libp2p_mix::PROTOCOL)?;
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    // libp2p-stream dials by peer id alone, so the swarm is told the address first.
    let (dials, mut to_dial) = mpsc::unbounded_channel::<Multiaddr>();
    let driver = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                Some(addr) = to_dial.recv() => {
                    let _ = swarm.dial(addr);
                }
            }
        }
    });
    let arrivals = Arc::new(Arrivals {
        frames: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        epoch: Instant::now(),
        notify: Notify::new(),
    });
    let reader = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some((_, stream)) = incoming.next().await {
                tokio::spawn(count_frames(stream, arrivals.clone()));
            }
        })
    };
    let (commands, mut pumps) = mpsc::unbounded_channel();
    let thread = crate::cpu::current_thread_id();
    let _ = started.send(Ok(Rig { peer_id, addr, thread, commands }));
    let mut streams: HashMap<PeerId, Stream> = HashMap::new();
    while let Some(pump) = pumps.recv().await {
        let result = run_pump(&mut control, &dials, &mut streams, &arrivals, &pump).await;
        if result.is_err() {
            streams.remove(&pump.to);
        }
        let _ = pump.reply.send(result);
    }
    driver.abort();
    reader.abort();
    Ok(())
}

async fn count_frames(mut stream: Stream, arrivals: Arc<Arrivals>) {
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut counter = FrameCounter::default();
    loop {
        let n = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match counter.feed(&buffer[..n]) {
            Ok(0) => {}
            Ok(frames) => arrivals.add(frames),
            Err(_) => return,
        }
    }
}

/// Dials `to` at `addr` and opens a `/mix/1.0.0` stream to it.
async fn open(
    control: &mut libp2p_stream::Control,
    dials: &mpsc::UnboundedSender<Multiaddr>,
    to: PeerId,
    addr: &Multiaddr,
) -> anyhow::Result<Stream> {
    let addr = addr.clone().with(libp2p::multiaddr::Protocol::P2p(to));
    dials.send(addr.clone()).map_err(|_| anyhow::anyhow!("load generator's swarm stopped"))?;
    let started = Instant::now();
    loop {
        let open = control.open_stream(to, libp2p_mix::PROTOCOL);
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(1), open).await {
            return Ok(stream);
        }
        anyhow::ensure!(
            started.elapsed() < NO_PROGRESS,
            "could not open a stream to {to} at {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_pump(
    control: &mut libp2p_stream::Control,
    dials: &mpsc::UnboundedSender<Multiaddr>,
    streams: &mut HashMap<PeerId, Stream>,
    arrivals: &Arrivals,
    pump: &Pump,
) -> anyhow::Result<Pumped> {
    let stream = match streams.entry(pump.to) {
        Entry::Occupied(entry) => entry.into_mut(),
        Entry::Vacant(entry) => entry.insert(open(control, dials, pump.to, &pump.addr).await?),
    };
    let base = arrivals.frames();
    let total: usize = pump.batches.iter().map(|b| b.packets).sum();
    let arrived = || usize::try_from(arrivals.frames() - base).unwrap_or(usize::MAX);
    let mut progress = (0, Instant::now());
    let mut sent = 0;
    let mut batches = pump.batches.iter().peekable();
    loop {
        let now_arrived = arrived();
        if now_arrived != progress.0 {
            progress = (now_arrived, Instant::now());
        }
        if now_arrived >= total || progress.1.elapsed() > NO_PROGRESS {
            return Ok(Pumped { arrived: now_arrived.min(total), last: arrivals.last() });
        }
        let mut wrote = false;
        while let Some(batch) = batches.peek() {
            if sent - now_arrived.min(sent) + batch.packets > pump.window.max(batch.packets) {
                break;
            }
            // A node that stops reading would hold the write for ever.
            tokio::time::timeout(NO_PROGRESS, stream.write_all(&batch.bytes))
                .await
                .context("the node stopped reading")??;
            sent += batch.packets;
            wrote = true;
            batches.next();
        }
        if wrote {
            tokio::time::timeout(NO_PROGRESS, stream.flush())
                .await
                .context("the node stopped reading")??;
        } else {
            let _ = tokio::time::timeout(NO_PROGRESS, arrivals.notify.notified()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(lens: &[usize]) -> Vec<u8> {
        lens.iter().flat_map(|&n| libp2p_mix::framing::encode(&vec![7u8; n])).collect()
    }

    #[test]
    fn frames_are_counted_however_the_bytes_are_split() {
        let bytes = framed(&[4608, 0, 1, 200, 4608, 127, 128]);
        for piece in [1, 2, 3, 100, 4609, bytes.len()] {
            let mut counter = FrameCounter::default();
            let frames: u64 =
                bytes.chunks(piece).map(|c| counter.feed(c).expect("valid prefixes")).sum();
            assert_eq!(frames, 7, "pieces of {piece}");
        }
    }

    #[test]
    fn a_prefix_longer_than_a_frame_can_be_is_refused() {
        let mut counter = FrameCounter::default();
        assert!(counter.feed(&[0x80, 0x80, 0x80, 0x01]).is_err());
    }

    #[test]
    fn batches_hold_at_most_their_share_of_frames() {
        let batches = Batch::split((0..130).map(|_| framed(&[10])), 64);
        let counts: Vec<usize> = batches.iter().map(|b| b.packets).collect();
        assert_eq!(counts, [64, 64, 2]);
        assert_eq!(batches[0].bytes.len(), 64 * 11);
    }
}
