//! A stream's two sides over a simulated mixnet, in virtual time.
//!
//! The same [`Connection`] code as on a node, with the mixnet replaced by a [`Channel`]:
//! every frame is delayed (a fixed latency plus an exponential mixing delay per hop, so frames
//! overtake each other), lost with some probability, sometimes duplicated. SURBs are tokens
//! the simulated opener hands out; the acceptor's frames travel only through a token it
//! holds, once, before the token expires. Used by the tests and by `mixnode bench
//! stream-loss`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mix_sphinx::SURB_SIZE;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use crate::{Connection, FrameLimits, Mode, ReceiverKey, StreamConfig, SurbBytes, SurbSource};

/// What the simulated mixnet does to frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// Each frame is lost with this probability (either direction).
    pub loss: f64,
    /// Each delivered frame arrives twice with this probability.
    pub duplicate: f64,
    /// Fixed one-way latency.
    pub latency: Duration,
    /// Mean of the exponential mixing delay added at each of `hops` hops.
    pub hop_delay: Duration,
    /// Hops per path.
    pub hops: u32,
    /// During `(from, until)` after the start, frames are lost with probability `.2`
    /// instead (an exit that died and was not yet avoided, say).
    pub outage: Option<(Duration, Duration, f64)>,
    /// SURB lifetime.
    pub surb_lifetime: Duration,
    /// Each side puts at most one frame on the network per interval (building a Sphinx
    /// packet takes time); frames queue behind each other.
    pub send_interval: Duration,
    /// The time the mixnet needs per frame, shared by both directions: frames wait in one
    /// queue behind each other before their mixing delays start. Zero for a mixnet with
    /// capacity to spare; more than `send_interval` for mix nodes that are busy (a testnet
    /// on a small machine), where a full window of frames builds a queue.
    pub service_time: Duration,
}

impl Default for Channel {
    fn default() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            latency: Duration::from_millis(5),
            hop_delay: Duration::from_millis(10),
            hops: 3,
            outage: None,
            surb_lifetime: Duration::from_secs(60),
            send_interval: Duration::from_micros(150),
            service_time: Duration::ZERO,
        }
    }
}

/// The frame limits of the LIBP2P-MIX format for the stream codec, without spam proofs.
pub const MIX_LIMITS: FrameLimits = FrameLimits { forward: 3943, reverse: 3961 };

struct Tokens {
    next: u64,
    expiry: HashMap<u64, Instant>,
    lifetime: Duration,
    now: Instant,
}

impl SurbSource for Tokens {
    fn make_surbs(&mut self, count: usize) -> Option<(Vec<SurbBytes>, Duration)> {
        let surbs = (0..count)
            .map(|_| {
                let id = self.next;
                self.next += 1;
                self.expiry.insert(id, self.now + self.lifetime);
                let mut bytes = vec![0u8; SURB_SIZE];
                bytes[..8].copy_from_slice(&id.to_be_bytes());
                Zeroizing::new(bytes)
            })
            .collect();
        Some((surbs, self.lifetime))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum To {
    Acceptor,
    Opener,
}

/// Both sides of one stream and the frames between them.
pub struct Link {
    /// The opener.
    pub opener: Connection,
    /// The acceptor, once the first frame reached it.
    pub acceptor: Option<Connection>,
    acceptor_config: StreamConfig,
    key: ReceiverKey,
    channel: Channel,
    rng: ChaCha20Rng,
    start: Instant,
    /// Virtual now.
    pub now: Instant,
    in_flight: BTreeMap<(Instant, u64), (To, Vec<u8>)>,
    seq: u64,
    /// When each side's network queue is free again.
    free_at: [Instant; 2],
    /// When the mixnet's shared queue is free again.
    mixnet_free_at: Instant,
    tokens: Tokens,
    /// Frames sent opener to acceptor, and back.
    pub frames: (u64, u64),
    /// Frames dropped by the channel.
    pub lost: u64,
    /// Reverse frames refused for an expired, unknown or reused SURB.
    pub bad_surbs: u64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("opener", &self.opener)
            .field("acceptor", &self.acceptor)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A stream opened now over `channel`; the RNG is seeded with `seed`.
    pub fn new(
        mode: Mode,
        opener: StreamConfig,
        acceptor: StreamConfig,
        channel: Channel,
        seed: u64,
    ) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let key = ReceiverKey::generate(&mut rng);
        let now = Instant::now();
        let opener = Connection::open(&key.public(), mode, opener, MIX_LIMITS, now, &mut rng)
            .expect("valid settings");
        let tokens =
            Tokens { next: 0, expiry: HashMap::new(), lifetime: channel.surb_lifetime, now };
        Self {
            opener,
            acceptor: None,
            acceptor_config: acceptor,
            key,
            channel,
            rng,
            start: now,
            now,
            in_flight: BTreeMap::new(),
            seq: 0,
            free_at: [now; 2],
            mixnet_free_at: now,
            tokens,
            frames: (0, 0),
            lost: 0,
            bad_surbs: 0,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn loss_now(&self) -> f64 {
        match self.channel.outage {
            Some((from, until, p)) if (from..until).contains(&self.elapsed()) => p,
            _ => self.channel.loss,
        }
    }

    fn delay(&mut self) -> Duration {
        let mean = self.channel.hop_delay.as_secs_f64();
        let mixing: f64 =
            (0..self.channel.hops).map(|_| -mean * (1.0 - self.rng.random::<f64>()).ln()).sum();
        self.channel.latency + Duration::from_secs_f64(mixing)
    }

    fn send(&mut self, to: To, frame: Vec<u8>) {
        let side = usize::from(to == To::Opener);
        let mut leaves = self.free_at[side].max(self.now);
        self.free_at[side] = leaves + self.channel.send_interval;
        if self.rng.random::<f64>() < self.loss_now() {
            self.lost += 1;
            return;
        }
        if !self.channel.service_time.is_zero() {
            leaves = self.mixnet_free_at.max(leaves) + self.channel.service_time;
            self.mixnet_free_at = leaves;
        }
        let copies = if self.rng.random::<f64>() < self.channel.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            let at = leaves + self.delay();
            self.seq += 1;
            self.in_flight.insert((at, self.seq), (to, frame.clone()));
        }
    }

    /// Sends everything due on both sides.
    fn transmit(&mut self) {
        self.tokens.now = self.now;
        while let Some(frame) = self.opener.poll_transmit(self.now, &mut self.tokens) {
            self.frames.0 += 1;
            self.send(To::Acceptor, frame);
        }
        let Some(acceptor) = self.acceptor.as_mut() else { return };
        let mut out = Vec::new();
        while let Some((surb, frame)) = acceptor.poll_transmit_reply(self.now) {
            out.push((surb, frame));
        }
        for (surb, frame) in out {
            self.frames.1 += 1;
            let id = u64::from_be_bytes(surb[..8].try_into().expect("8 bytes"));
            match self.tokens.expiry.remove(&id) {
                Some(expires) if expires > self.now => self.send(To::Opener, frame),
                _ => self.bad_surbs += 1,
            }
        }
    }

    fn deliver(&mut self, to: To, frame: &[u8]) {
        match (to, self.acceptor.as_mut()) {
            (To::Opener, _) => {
                let _ = self.opener.handle_frame(self.now, frame);
            }
            (To::Acceptor, Some(acceptor)) => {
                if acceptor.handle_frame(self.now, frame) == Err(crate::FrameDrop::UnknownLabel) {
                    // Beyond the labels it expects: an opening says which stream it is.
                    let keys = std::slice::from_ref(&self.key);
                    let _ = acceptor.handle_stray_opening(keys, self.now, frame);
                }
            }
            (To::Acceptor, None) => {
                let keys = std::slice::from_ref(&self.key);
                let config = self.acceptor_config.clone();
                if let Ok(c) =
                    Connection::accept(keys, frame, config, MIX_LIMITS, self.now, &mut self.rng)
                {
                    self.acceptor = Some(c);
                }
            }
        }
    }

    /// Hands `frame` to the acceptor (or to the opener) now, as if the mixnet delivered it:
    /// for frames nobody on the link sent (a peer's forgeries, a replay).
    pub fn inject(&mut self, to_acceptor: bool, frame: &[u8]) {
        let to = if to_acceptor { To::Acceptor } else { To::Opener };
        self.deliver(to, frame);
    }

    /// The acceptor's long-term key.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn receiver_key(&self) -> &ReceiverKey {
        &self.key
    }

    /// Moves virtual time to the next event and handles it; `false` when nothing is left to
    /// happen before `limit` (time since the start).
    pub fn step(&mut self, limit: Duration) -> bool {
        self.transmit();
        let end = self.start + limit;
        let next_frame = self.in_flight.keys().next().map(|k| k.0);
        let timers = [
            self.opener.poll_timeout(self.now),
            self.acceptor.as_ref().and_then(|a| a.poll_timeout(self.now)),
        ];
        let Some(next) = timers.into_iter().chain([next_frame]).flatten().min() else {
            return false;
        };
        if next > end {
            self.now = end;
            return false;
        }
        // A timer at `now` that changed nothing would spin; virtual time always moves on.
        self.now = next.max(self.now);
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (to, frame) = entry.remove();
            self.deliver(to, &frame);
        }
        self.opener.handle_timeout(self.now);
        if let Some(a) = self.acceptor.as_mut() {
            a.handle_timeout(self.now);
        }
        // What is due now goes out now: a side whose last frame this is then reads as closed
        // at this time, not at the next event (which may be a timer tens of seconds away).
        self.transmit();
        true
    }
}

/// How one transfer went.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// Every byte arrived, in order, and the stream closed cleanly.
    pub complete: bool,
    /// The bytes that arrived are the bytes sent.
    pub bit_exact: bool,
    /// Virtual time from open to the last acknowledgement.
    pub elapsed: Duration,
    /// Frames each way.
    pub frames: (u64, u64),
    /// Blocks sent, and blocks that needed a retransmission.
    pub blocks: (u64, u64),
    /// Shards sent, first sends and resends.
    pub shards_sent: u64,
    /// Shards sent again.
    pub shards_resent: u64,
    /// The opener's figures at the end.
    pub stats: crate::ConnectionStats,
}

/// Sends `data` from opener to acceptor (as a message or on a stream closed after it) and
/// runs until both sides are done or `limit` of virtual time passed.
pub fn transfer(
    mode: Mode,
    data: &[u8],
    config: StreamConfig,
    channel: Channel,
    seed: u64,
    limit: Duration,
) -> Transfer {
    let mut link = Link::new(mode, config.clone(), config, channel, seed);
    let mut written = 0;
    let mut received = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if written < data.len() {
            written += link.opener.write(link.now, &data[written..]).unwrap_or(0);
            if written == data.len() {
                link.opener.finish();
            }
        } else if data.is_empty() {
            link.opener.finish();
        }
        if let Some(acceptor) = link.acceptor.as_mut() {
            if mode == Mode::Stream && acceptor.is_eof() {
                acceptor.finish();
            }
            while let Ok(n) = acceptor.read(&mut buf) {
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
            }
        }
        let done =
            link.opener.is_closed() && link.acceptor.as_ref().is_some_and(Connection::is_closed);
        if done || link.opener.error().is_some() || !link.step(limit) {
            break;
        }
    }
    let stats = link.opener.stats();
    let complete = link.opener.is_finished()
        && link.opener.error().is_none()
        && link.acceptor.as_ref().is_some_and(Connection::is_eof);
    Transfer {
        complete,
        bit_exact: received == data,
        elapsed: link.elapsed(),
        frames: link.frames,
        blocks: (stats.send.blocks, stats.send.blocks_retransmitted),
        shards_sent: stats.send.shards_sent,
        shards_resent: stats.send.shards_resent,
        stats,
    }
}
