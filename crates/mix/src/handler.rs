//! One connection's side of the Mix Protocol: inbound `/mix/1.0.0` streams read as frames,
//! one pooled outbound stream that writes queued packets, and the exit's streams to
//! destinations.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, SelectAll};
use futures::{AsyncWriteExt, FutureExt, StreamExt};
use futures_timer::Delay;
use libp2p_core::upgrade::ReadyUpgrade;
use libp2p_swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, StreamUpgradeError,
    SubstreamProtocol,
};

use crate::core::DropReason;
use crate::framing::{self, FrameError};
use crate::metrics::Metrics;
use crate::protocol::{self, PROTOCOL, ReadRule};

/// Frames written per flush on the pooled stream.
const WRITE_BATCH: usize = 64;

type HandlerEvent = ConnectionHandlerEvent<ReadyUpgrade<StreamProtocol>, OutboundInfo, OutEvent>;

/// Identifies one delivery of the exit to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExitId(pub(crate) u64);

/// Why the exit could not deliver to a destination or read its reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExitError {
    /// The destination does not speak the origin protocol.
    #[error("destination does not support the protocol")]
    Unsupported,
    /// The origin protocol id is not a valid libp2p protocol id.
    #[error("invalid protocol id {0:?}")]
    InvalidProtocol(String),
    /// The destination could not be reached.
    #[error("destination unreachable")]
    Unreachable,
    /// The delivery or reply took too long.
    #[error("timed out")]
    Timeout,
    /// Too many deliveries in flight on the connection.
    #[error("too many deliveries in flight")]
    Busy,
    /// The stream failed or the reply broke its read rule.
    #[error("stream: {0}")]
    Stream(String),
    /// The destination answered after the answer's SURBs expired (or were not kept).
    #[error("the answer came after its SURBs expired")]
    AnswerExpired,
    /// The exit was full, and this delivery had waited longest at the destination holding
    /// the most deliveries: it gave its slot to a new delivery to a less busy destination.
    #[error("evicted to make room for a delivery to a less busy destination")]
    Evicted,
}

#[derive(Debug, Clone)]
pub(crate) struct HandlerConfig {
    pub(crate) frame_timeout: Duration,
    pub(crate) max_inbound_streams: usize,
    pub(crate) max_queued_frames: usize,
    pub(crate) exit_timeout: Duration,
    pub(crate) max_concurrent_exits: usize,
    /// A packet plus the per-hop proof, if the network uses one.
    pub(crate) frame_len: usize,
    pub(crate) serve: bool,
}

/// What the behaviour asks of a connection.
#[derive(Debug)]
pub enum InEvent {
    /// Send one packet on the pooled stream.
    Send(Vec<u8>),
    /// As the exit, write `body` to the destination with `protocol` and read the reply.
    Exit {
        /// The delivery.
        id: ExitId,
        /// The origin protocol id.
        protocol: String,
        /// The message, written as it is.
        body: Vec<u8>,
        /// How to read the reply, if one is expected.
        read: Option<ReadRule>,
        /// Deliver once more if the destination resets the stream before replying.
        retry: bool,
        /// Write it length-prefixed on the protocol's pooled stream (no reply is read).
        pooled: bool,
    },
    /// Forget an exit delivery the behaviour gave up on (evicted to make room): it is not
    /// written if it has not been, and its stream is dropped if it has one of its own.
    CancelExit(ExitId),
}

/// What a connection reports to the behaviour.
#[derive(Debug)]
pub enum OutEvent {
    /// A received packet (exactly [`mix_sphinx::PACKET_SIZE`] bytes).
    Packet(Vec<u8>),
    /// The pooled stream failed twice in a row: the peer does not accept packets.
    Unreachable,
    /// This many frames handed over with [`InEvent::Send`] were written out, or dropped
    /// (counted): the connection no longer holds them.
    Settled(usize),
    /// The outcome of an exit delivery: the reply if a read rule was given.
    Exit {
        /// The delivery.
        id: ExitId,
        /// The reply, if a read rule was given.
        result: Result<Option<Vec<u8>>, ExitError>,
    },
}

/// Which kind of outbound stream was opened.
#[derive(Debug, Clone)]
pub enum OutboundInfo {
    /// The pooled `/mix/1.0.0` stream.
    Mix,
    /// An exit delivery's stream to its destination.
    Exit(ExitId),
    /// The pooled stream of an origin protocol whose messages are delivered framed.
    Pooled(StreamProtocol),
}

/// The exit's pooled stream of one origin protocol: messages queue, go out in batches of
/// length-prefixed frames, and are reported delivered once written.
struct ExitPool {
    writer: Writer,
    queue: VecDeque<(ExitId, Vec<u8>)>,
    /// Ids of the batch being written.
    writing: Vec<ExitId>,
    /// Ids of that batch the behaviour gave up on meanwhile: not queued again if it fails.
    cancelled: HashSet<ExitId>,
    retried: bool,
}

/// A batch written, or the frames of it not written (in order), why, and how many were.
type WriteResult = Result<Stream, (Vec<Vec<u8>>, io::Error, usize)>;

/// One delivery of the exit to a destination.
#[derive(Debug, Clone)]
struct ExitJob {
    protocol: StreamProtocol,
    body: Vec<u8>,
    read: Option<ReadRule>,
    retry: bool,
}

enum Writer {
    /// No stream.
    Closed,
    /// A stream was requested.
    Opening,
    Idle(Stream),
    Writing(BoxFuture<'static, WriteResult>),
}

/// The connection handler of [`crate::Behaviour`].
pub struct Handler {
    config: HandlerConfig,
    metrics: Metrics,
    inbound: SelectAll<BoxStream<'static, Result<Vec<u8>, FrameError>>>,
    queue: VecDeque<Vec<u8>>,
    writer: Writer,
    /// Frames of the batch being written on the pooled stream.
    writing: usize,
    /// Whether the pooled stream already failed once since its last success.
    retried: bool,
    exits_to_open: VecDeque<ExitId>,
    /// Deliveries waiting for their stream.
    exits_opening: HashMap<ExitId, ExitJob>,
    /// Deliveries in flight that may be retried once.
    exits_retryable: HashMap<ExitId, ExitJob>,
    exits: futures_bounded::FuturesMap<ExitId, Result<Option<Vec<u8>>, ExitError>>,
    pools: HashMap<StreamProtocol, ExitPool>,
    events: VecDeque<OutEvent>,
    limiter: Option<Limiter>,
}

/// Frames a peer may still deliver, shared by all its connections: refilled at `rate` per
/// second up to `burst`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: rate.max(1e-3), burst, tokens: burst, refilled: Instant::now() }
    }

    /// Takes a token, or says how long until the next one.
    pub(crate) fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + (now - self.refilled).as_secs_f64() * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Limits the bucket to `rate` frames per second with bursts of `burst` from now on.
    pub(crate) fn throttle(&mut self, rate: f64, burst: u32) {
        self.rate = rate.max(1e-3);
        self.burst = f64::from(burst.max(1));
        self.tokens = self.tokens.min(self.burst);
    }
}

/// A connection's handle on its peer's bucket, with its own wake-up timer.
struct Limiter {
    bucket: Arc<Mutex<TokenBucket>>,
    wait: Option<Delay>,
}

impl Limiter {
    fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let taken = self.bucket.lock().map_or(Ok(()), |mut b| b.take());
        match taken {
            Ok(()) => {
                self.wait = None;
                Poll::Ready(())
            }
            Err(missing) => {
                let wait = self.wait.get_or_insert_with(|| Delay::new(missing));
                if wait.poll_unpin(cx).is_ready() {
                    // Fired: the token is due; look again on the next poll.
                    self.wait = None;
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    fn give_back(&self) {
        if let Ok(mut b) = self.bucket.lock() {
            b.give_back();
        }
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("inbound_streams", &self.inbound.len())
            .field("queued", &self.queue.len())
            .field("exits", &self.exits.len())
            .finish_non_exhaustive()
    }
}

impl Handler {
    pub(crate) fn new(
        config: HandlerConfig,
        metrics: Metrics,
        bucket: Option<Arc<Mutex<TokenBucket>>>,
    ) -> Self {
        let timeout = config.exit_timeout;
        Self {
            exits: futures_bounded::FuturesMap::new(
                move || futures_bounded::Delay::futures_timer(timeout),
                config.max_concurrent_exits,
            ),
            metrics,
            inbound: SelectAll::new(),
            queue: VecDeque::new(),
            writer: Writer::Closed,
            writing: 0,
            retried: false,
            exits_to_open: VecDeque::new(),
            exits_opening: HashMap::new(),
            exits_retryable: HashMap::new(),
            pools: HashMap::new(),
            events: VecDeque::new(),
            limiter: bucket.map(|bucket| Limiter { bucket, wait: None }),
            config,
        }
    }

    fn drop_queue(&mut self, reason: DropReason) {
        for _ in 0..self.queue.len() {
            self.metrics.dropped(reason);
        }
        self.metrics.add_outbound_queue(-(self.queue.len() as i64));
        if !self.queue.is_empty() {
            self.events.push_back(OutEvent::Settled(self.queue.len()));
        }
        self.queue.clear();
    }

    /// The pooled stream failed (to open or to write): retry once, then give up on the queue.
    fn writer_failed(&mut self, error: &dyn std::fmt::Display) {
        self.writer = Writer::Closed;
        if self.retried {
            tracing::debug!(%error, "mix stream failed twice; dropping queued packets");
            self.retried = false;
            self.drop_queue(DropReason::Unreachable);
            self.events.push_back(OutEvent::Unreachable);
        } else {
            tracing::debug!(%error, "mix stream failed; reopening once");
            self.retried = true;
        }
    }

    fn on_exit_negotiated(&mut self, id: ExitId, mut stream: Stream) {
        let Some(job) = self.exits_opening.remove(&id) else { return };
        let (body, read) = if job.retry {
            let copy = (job.body.clone(), job.read);
            self.exits_retryable.insert(id, ExitJob { retry: false, ..job });
            copy
        } else {
            (job.body, job.read)
        };
        let deliver = async move {
            let io = |e: io::Error| ExitError::Stream(e.to_string());
            stream.write_all(&body).await.map_err(io)?;
            // Half-close: protocols that read their request to the end of the stream need it.
            stream.close().await.map_err(io)?;
            match read {
                None => Ok(None),
                Some(rule) => protocol::read_reply(&mut stream, rule)
                    .await
                    .map(Some)
                    .map_err(|e| ExitError::Stream(e.to_string())),
            }
        };
        if self.exits.try_push(id, deliver).is_err() {
            self.events.push_back(OutEvent::Exit { id, result: Err(ExitError::Busy) });
        }
    }
}

impl Handler {
    /// A pooled stream failed to open or to write: try once more, then fail its messages.
    fn pool_failed(&mut self, protocol: &StreamProtocol, error: ExitError) {
        let Some(pool) = self.pools.get_mut(protocol) else { return };
        pool.writer = Writer::Closed;
        if pool.retried {
            pool.retried = false;
            tracing::debug!(%error, %protocol, "pooled exit stream failed twice; dropping its messages");
            let timed_out = matches!(error, ExitError::Timeout);
            for (id, _) in pool.queue.drain(..) {
                let error = if timed_out { ExitError::Timeout } else { ExitError::Unreachable };
                self.events.push_back(OutEvent::Exit { id, result: Err(error) });
            }
        } else {
            tracing::debug!(%error, %protocol, "pooled exit stream failed; reopening once");
            pool.retried = true;
        }
    }

    /// The next inbound packet, as fast as the rate limit allows. Frames not read stay in the
    /// muxer's window and then in the peer's send buffer: the flood slows its own sender.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Option<OutEvent> {
        loop {
            if self.inbound.is_empty() {
                break;
            }
            if let Some(limiter) = self.limiter.as_mut()
                && limiter.poll_take(cx).is_pending()
            {
                break;
            }
            match self.inbound.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => return Some(OutEvent::Packet(frame)),
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!(%error, "closing inbound mix stream");
                    let reason = match error {
                        FrameError::Oversized(_) | FrameError::BadPrefix => {
                            DropReason::OversizedFrame
                        }
                        FrameError::Timeout => DropReason::FrameTimeout,
                        FrameError::WrongLength(_) => DropReason::BadLength,
                        FrameError::Io(_) => DropReason::StreamError,
                    };
                    self.metrics.dropped(reason);
                }
                Poll::Ready(None) | Poll::Pending => {
                    // The token was not used.
                    if let Some(limiter) = &self.limiter {
                        limiter.give_back();
                    }
                    break;
                }
            }
        }
        None
    }

    /// Exit deliveries that ended (or are delivered once more), and streams to open for them.
    fn poll_exits(&mut self, cx: &mut Context<'_>) -> Option<HandlerEvent> {
        while let Poll::Ready((id, result)) = self.exits.poll_unpin(cx) {
            let retry = self.exits_retryable.remove(&id);
            let result = result.unwrap_or(Err(ExitError::Timeout));
            if let (Err(ExitError::Stream(error)), Some(job)) = (&result, retry) {
                tracing::debug!(%error, protocol = %job.protocol, "destination reset the stream; delivering once more");
                self.exits_opening.insert(id, job);
                self.exits_to_open.push_back(id);
                continue;
            }
            return Some(ConnectionHandlerEvent::NotifyBehaviour(OutEvent::Exit { id, result }));
        }
        while let Some(id) = self.exits_to_open.pop_front() {
            let Some(job) = self.exits_opening.get(&id) else { continue };
            return Some(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(
                    ReadyUpgrade::new(job.protocol.clone()),
                    OutboundInfo::Exit(id),
                ),
            });
        }
        None
    }

    /// Writes queued frames on the pooled outbound stream, opening it when needed.
    fn poll_writer(&mut self, cx: &mut Context<'_>) -> Option<HandlerEvent> {
        loop {
            match std::mem::replace(&mut self.writer, Writer::Closed) {
                Writer::Writing(mut write) => match write.poll_unpin(cx) {
                    Poll::Pending => {
                        self.writer = Writer::Writing(write);
                        break;
                    }
                    Poll::Ready(Ok(stream)) => {
                        self.retried = false;
                        let written = std::mem::take(&mut self.writing);
                        self.events.push_back(OutEvent::Settled(written));
                        self.writer = Writer::Idle(stream);
                    }
                    Poll::Ready(Err((unsent, error, written))) => {
                        self.writing = 0;
                        if written > 0 {
                            self.events.push_back(OutEvent::Settled(written));
                        }
                        // Put back in front, in order, only what was not written: a frame
                        // sent twice is a replay to the next hop, which counts it against us.
                        self.metrics.add_outbound_queue(unsent.len() as i64);
                        for frame in unsent.into_iter().rev() {
                            self.queue.push_front(frame);
                        }
                        self.writer_failed(&error);
                    }
                },
                Writer::Idle(stream) if !self.queue.is_empty() => {
                    let n = self.queue.len().min(WRITE_BATCH);
                    let batch: Vec<Vec<u8>> = self.queue.drain(..n).collect();
                    self.metrics.add_outbound_queue(-(n as i64));
                    self.writing = n;
                    let timeout = self.config.frame_timeout;
                    self.writer = Writer::Writing(write_batch(stream, batch, timeout).boxed());
                }
                Writer::Closed if !self.queue.is_empty() => {
                    self.writer = Writer::Opening;
                    return Some(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(
                            ReadyUpgrade::new(PROTOCOL),
                            OutboundInfo::Mix,
                        ),
                    });
                }
                other => {
                    self.writer = other;
                    break;
                }
            }
        }
        None
    }

    /// Drives the pooled exit streams; returns an event to report, if any.
    fn poll_pools(&mut self, cx: &mut Context<'_>) -> Option<HandlerEvent> {
        let mut failed = Vec::new();
        let mut open = None;
        for (protocol, pool) in &mut self.pools {
            loop {
                match std::mem::replace(&mut pool.writer, Writer::Closed) {
                    Writer::Writing(mut write) => match write.poll_unpin(cx) {
                        Poll::Pending => {
                            pool.writer = Writer::Writing(write);
                            break;
                        }
                        Poll::Ready(Ok(stream)) => {
                            pool.retried = false;
                            pool.writer = Writer::Idle(stream);
                            pool.cancelled.clear();
                            for id in pool.writing.drain(..) {
                                self.events.push_back(OutEvent::Exit { id, result: Ok(None) });
                            }
                        }
                        Poll::Ready(Err((unsent, error, written))) => {
                            // What was written is delivered; the rest goes back in front, in
                            // order, and is retried once (a destination that stopped reading
                            // gets no second stream).
                            let ids: Vec<ExitId> = pool.writing.drain(..).collect();
                            let (done, rest) = ids.split_at(written.min(ids.len()));
                            for &id in done {
                                self.events.push_back(OutEvent::Exit { id, result: Ok(None) });
                            }
                            for (&id, frame) in rest.iter().zip(unsent).rev() {
                                if !pool.cancelled.contains(&id) {
                                    pool.queue.push_front((id, frame));
                                }
                            }
                            pool.cancelled.clear();
                            let error = if error.kind() == io::ErrorKind::TimedOut {
                                pool.retried = true;
                                ExitError::Timeout
                            } else {
                                ExitError::Stream(error.to_string())
                            };
                            failed.push((protocol.clone(), error));
                            break;
                        }
                    },
                    Writer::Idle(stream) if !pool.queue.is_empty() => {
                        let n = pool.queue.len().min(WRITE_BATCH);
                        let (ids, batch): (Vec<ExitId>, Vec<Vec<u8>>) =
                            pool.queue.drain(..n).unzip();
                        pool.writing = ids;
                        let timeout = self.config.exit_timeout;
                        pool.writer = Writer::Writing(write_batch(stream, batch, timeout).boxed());
                    }
                    Writer::Closed if !pool.queue.is_empty() && open.is_none() => {
                        pool.writer = Writer::Opening;
                        open = Some(protocol.clone());
                        break;
                    }
                    other => {
                        pool.writer = other;
                        break;
                    }
                }
            }
        }
        for (protocol, error) in failed {
            self.pool_failed(&protocol, error);
        }
        if let Some(protocol) = open {
            return Some(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(
                    ReadyUpgrade::new(protocol.clone()),
                    OutboundInfo::Pooled(protocol),
                ),
            });
        }
        self.events.pop_front().map(ConnectionHandlerEvent::NotifyBehaviour)
    }
}

fn frames(
    stream: Stream,
    timeout: Duration,
    len: usize,
) -> BoxStream<'static, Result<Vec<u8>, FrameError>> {
    futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match framing::read(&mut stream, len, timeout).await {
            Ok(Some(frame)) if frame.len() == len => Some((Ok(frame), Some(stream))),
            // Honest peers only send whole packets: anything else ends the stream.
            Ok(Some(frame)) => Some((Err(FrameError::WrongLength(frame.len())), None)),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}

/// Writes `batch` (frames with their length prefix) on `stream` within `timeout`: a peer that
/// stops reading fills its window and would otherwise hold the writer, and what is queued
/// behind it, for ever. On failure, says how many frames were written whole.
async fn write_batch(
    mut stream: Stream,
    mut batch: Vec<Vec<u8>>,
    timeout: Duration,
) -> WriteResult {
    let mut written = 0;
    let outcome =
        framing::within(timeout, framing::write_all(&mut stream, &batch, &mut written)).await;
    let error = match outcome {
        Some(Ok(())) => return Ok(stream),
        Some(Err(e)) => e,
        None => io::Error::new(io::ErrorKind::TimedOut, "the peer did not read a batch in time"),
    };
    let unsent = batch.split_off(written);
    Err((unsent, error, written))
}

impl ConnectionHandler for Handler {
    type FromBehaviour = InEvent;
    type ToBehaviour = OutEvent;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = OutboundInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn on_behaviour_event(&mut self, event: InEvent) {
        match event {
            InEvent::Send(frame) => {
                if self.queue.len() >= self.config.max_queued_frames {
                    self.metrics.dropped(DropReason::PeerQueueFull);
                    self.events.push_back(OutEvent::Settled(1));
                    return;
                }
                self.metrics.add_outbound_queue(1);
                self.queue.push_back(framing::encode(&frame));
            }
            InEvent::Exit { id, protocol, body, read, retry, pooled } => {
                match StreamProtocol::try_from_owned(protocol) {
                    Ok(protocol) if pooled && read.is_none() => {
                        let pool = self.pools.entry(protocol).or_insert_with(|| ExitPool {
                            writer: Writer::Closed,
                            queue: VecDeque::new(),
                            writing: Vec::new(),
                            cancelled: HashSet::new(),
                            retried: false,
                        });
                        if pool.queue.len() >= self.config.max_queued_frames {
                            self.events
                                .push_back(OutEvent::Exit { id, result: Err(ExitError::Busy) });
                            return;
                        }
                        pool.queue.push_back((id, framing::encode(&body)));
                    }
                    Ok(protocol) => {
                        self.exits_opening.insert(id, ExitJob { protocol, body, read, retry });
                        self.exits_to_open.push_back(id);
                    }
                    Err(e) => self.events.push_back(OutEvent::Exit {
                        id,
                        result: Err(ExitError::InvalidProtocol(e.to_string())),
                    }),
                }
            }
            InEvent::CancelExit(id) => {
                self.exits_opening.remove(&id);
                self.exits_retryable.remove(&id);
                self.exits.remove(id);
                // A batch being written cannot give back one frame, but if it fails the frame
                // is not queued again; one still queued leaves the queue.
                for pool in self.pools.values_mut() {
                    pool.queue.retain(|(queued, _)| *queued != id);
                    if pool.writing.contains(&id) {
                        pool.cancelled.insert(id);
                    }
                }
            }
        }
    }

    fn connection_keep_alive(&self) -> bool {
        self.pools
            .values()
            .any(|p| !p.queue.is_empty() || !matches!(p.writer, Writer::Idle(_) | Writer::Closed))
            || !self.queue.is_empty()
            || matches!(self.writer, Writer::Opening | Writer::Writing(_))
            || !self.exits.is_empty()
            || !self.exits_opening.is_empty()
            || !self.exits_retryable.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, OutboundInfo, OutEvent>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        if let Some(packet) = self.poll_inbound(cx) {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(packet));
        }
        if let Some(event) = self.poll_exits(cx) {
            return Poll::Ready(event);
        }
        // The exit's pooled streams to destinations.
        if let Some(event) = self.poll_pools(cx) {
            return Poll::Ready(event);
        }
        match self.poll_writer(cx) {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol, (), OutboundInfo>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => {
                if !self.config.serve {
                    tracing::debug!("not serving as a mix node; closing an inbound mix stream");
                    return;
                }
                if self.inbound.len() >= self.config.max_inbound_streams {
                    self.metrics.dropped(DropReason::TooManyStreams);
                    return;
                }
                self.inbound.push(frames(stream, self.config.frame_timeout, self.config.frame_len));
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info,
            }) => match info {
                OutboundInfo::Mix => self.writer = Writer::Idle(stream),
                OutboundInfo::Exit(id) => self.on_exit_negotiated(id, stream),
                OutboundInfo::Pooled(protocol) => {
                    if let Some(pool) = self.pools.get_mut(&protocol) {
                        pool.writer = Writer::Idle(stream);
                    }
                }
            },
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info, error }) => match info {
                OutboundInfo::Mix => self.writer_failed(&error),
                OutboundInfo::Pooled(protocol) => {
                    let error = match error {
                        StreamUpgradeError::NegotiationFailed => ExitError::Unsupported,
                        StreamUpgradeError::Timeout => ExitError::Timeout,
                        other => ExitError::Stream(other.to_string()),
                    };
                    self.pool_failed(&protocol, error);
                }
                OutboundInfo::Exit(id) => {
                    self.exits_opening.remove(&id);
                    let error = match error {
                        StreamUpgradeError::NegotiationFailed => ExitError::Unsupported,
                        StreamUpgradeError::Timeout => ExitError::Timeout,
                        other => ExitError::Stream(other.to_string()),
                    };
                    self.events.push_back(OutEvent::Exit { id, result: Err(error) });
                }
            },
            _ => {}
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        // Packets still queued when the connection goes are lost; keep the gauges honest.
        self.drop_queue(DropReason::Unreachable);
    }
}
