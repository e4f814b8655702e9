//! One connection's side of `/mix-gossip/1.1.0`: inbound streams read as padded frames, and
//! one outbound stream that writes them, several per stream.

use std::collections::VecDeque;
use std::io;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, SelectAll};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use libp2p_core::upgrade::ReadyUpgrade;
use libp2p_identity::PeerId;
use libp2p_swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, SubstreamProtocol,
};

use crate::codec::{self, CodecError};
use crate::proto::{Body, Message, TopicId};

/// The gossip protocol. Version 1.1.0: shuffles and their replies carry a nonce, which 1.0.0
/// peers cannot parse.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mix-gossip/1.1.0");

/// Frames written per flush.
const WRITE_BATCH: usize = 32;

/// What the behaviour asks of a connection.
#[derive(Debug)]
pub enum InEvent {
    /// Write one frame (already encoded and padded).
    Send(Vec<u8>),
    /// Whether gossip needs this connection kept open.
    KeepAlive(bool),
}

/// What a connection reports.
#[derive(Debug)]
pub enum OutEvent {
    /// A message.
    Message(Message<PeerId>),
    /// A frame that was not a message; its stream was closed.
    Malformed(CodecError),
    /// A stream failed or stalled.
    StreamError(&'static str),
    /// A frame was written, of this many bytes.
    Written(usize),
    /// The outbound stream failed twice: queued frames were dropped.
    Unreachable(usize),
    /// Gossip needs this connection, and nothing came from the peer for the liveness
    /// timeout, probes included: the peer is taken for dead.
    Dead,
}

type WriteResult = Result<(Stream, Vec<usize>), (Vec<Vec<u8>>, io::Error)>;

enum Writer {
    Closed,
    Opening,
    Idle(Stream),
    Writing(BoxFuture<'static, WriteResult>),
}

/// The connection handler of [`crate::Behaviour`].
pub struct Handler {
    inbound: SelectAll<BoxStream<'static, Result<Message<PeerId>, ReadError>>>,
    queue: VecDeque<Vec<u8>>,
    writer: Writer,
    retried: bool,
    keep_alive: bool,
    events: VecDeque<OutEvent>,
    max_queue: usize,
    max_inbound: usize,
    frame_timeout: Duration,
    liveness: Option<Liveness>,
}

/// Probes a peer that has been quiet, and gives it up when it stays quiet.
struct Liveness {
    timeout: Duration,
    last_heard: Instant,
    last_probe: Option<Instant>,
    tick: futures_timer::Delay,
    reported: bool,
}

impl Liveness {
    /// How often a quiet peer is probed, and the clock checked: a peer answers a probe within
    /// the timeout unless it is gone.
    fn period(&self) -> Duration {
        self.timeout / 4
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").field("queued", &self.queue.len()).finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum ReadError {
    Codec(CodecError),
    Io,
    Timeout,
}

impl Handler {
    pub(crate) fn new(
        max_queue: usize,
        max_inbound: usize,
        frame_timeout: Duration,
        liveness: Option<Duration>,
    ) -> Self {
        let liveness = liveness.map(|timeout| Liveness {
            timeout,
            last_heard: Instant::now(),
            last_probe: None,
            tick: futures_timer::Delay::new(timeout / 4),
            reported: false,
        });
        Self {
            inbound: SelectAll::new(),
            queue: VecDeque::new(),
            writer: Writer::Closed,
            retried: false,
            keep_alive: false,
            events: VecDeque::new(),
            max_queue,
            max_inbound,
            frame_timeout,
            liveness,
        }
    }

    fn ping(&mut self, reply: bool) {
        // A probe looks like any control frame on the wire (same bucket); the topic is unused.
        let message = Message { topic: TopicId([0; 32]), body: Body::Ping { reply } };
        let Ok(frame) = codec::encode(&message) else { return };
        if self.queue.len() < self.max_queue {
            self.queue.push_back(frame);
        } else {
            self.events.push_back(OutEvent::StreamError("ping_queue_full"));
        }
    }

    /// A frame arrived: the peer is alive. Probes are answered here; `true` if `message` is
    /// for the behaviour.
    fn heard(&mut self, message: &Message<PeerId>) -> bool {
        if let Some(l) = self.liveness.as_mut() {
            l.last_heard = Instant::now();
            l.reported = false;
        }
        match message.body {
            Body::Ping { reply: false } => {
                self.ping(true);
                false
            }
            Body::Ping { reply: true } => false,
            _ => true,
        }
    }

    /// Probes a quiet peer, and reports it dead once it was quiet for the whole timeout.
    fn poll_liveness(&mut self, cx: &mut Context<'_>) -> Option<OutEvent> {
        let keep_alive = self.keep_alive;
        let l = self.liveness.as_mut()?;
        let mut probe = false;
        while l.tick.poll_unpin(cx).is_ready() {
            let period = l.period();
            l.tick.reset(period);
            let now = Instant::now();
            if !keep_alive {
                // Not needed: a quiet peer is no concern, and the clock starts when it is.
                l.last_heard = now;
                continue;
            }
            let quiet = now.saturating_duration_since(l.last_heard);
            if quiet >= l.timeout {
                if !l.reported {
                    l.reported = true;
                    return Some(OutEvent::Dead);
                }
                continue;
            }
            let probed_lately =
                l.last_probe.is_some_and(|at| now.saturating_duration_since(at) < period);
            if quiet >= period && !probed_lately {
                l.last_probe = Some(now);
                probe = true;
            }
        }
        if probe {
            self.ping(false);
        }
        None
    }

    fn failed(&mut self) {
        self.writer = Writer::Closed;
        if self.retried {
            self.retried = false;
            let dropped = self.queue.len();
            self.queue.clear();
            self.events.push_back(OutEvent::Unreachable(dropped));
        } else {
            self.retried = true;
        }
    }
}

/// Reads the rest of a frame whose first byte was `first`: the length prefix, the kind, then
/// what its bucket says is left.
async fn read_rest(stream: &mut Stream, first: u8) -> Result<Vec<u8>, ReadError> {
    let mut head = [first, 0, 0];
    stream.read_exact(&mut head[1..]).await.map_err(|_| ReadError::Io)?;
    let len = codec::frame_len([head[0], head[1]], head[2])
        .ok_or(ReadError::Codec(CodecError::Oversized("frame")))?;
    let mut frame = vec![0u8; len];
    frame[..3].copy_from_slice(&head);
    stream.read_exact(&mut frame[3..]).await.map_err(|_| ReadError::Io)?;
    Ok(frame)
}

/// Waiting for a frame to start is unbounded (streams idle between messages); once its first
/// byte has come, the rest must follow within `timeout`.
async fn read_timed(stream: &mut Stream, timeout: Duration) -> Result<Option<Vec<u8>>, ReadError> {
    let mut first = [0u8; 1];
    match stream.read(&mut first).await {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(_) => return Err(ReadError::Io),
    }
    let rest = read_rest(stream, first[0]);
    futures::pin_mut!(rest);
    match futures::future::select(rest, futures_timer::Delay::new(timeout)).await {
        futures::future::Either::Left((r, _)) => r.map(Some),
        futures::future::Either::Right(_) => Err(ReadError::Timeout),
    }
}

fn messages(
    stream: Stream,
    timeout: Duration,
) -> BoxStream<'static, Result<Message<PeerId>, ReadError>> {
    futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        let result = read_timed(&mut stream, timeout).await;
        match result {
            Ok(None) => None,
            Ok(Some(frame)) => match codec::decode(&frame) {
                Ok(message) => Some((Ok(message), Some(stream))),
                Err(e) => Some((Err(ReadError::Codec(e)), None)),
            },
            Err(e) => Some((Err(e), None)),
        }
    })
    .boxed()
}

async fn write_batch(mut stream: Stream, batch: Vec<Vec<u8>>) -> WriteResult {
    let sizes: Vec<usize> = batch.iter().map(Vec::len).collect();
    for frame in &batch {
        if let Err(e) = stream.write_all(frame).await {
            return Err((batch, e));
        }
    }
    match stream.flush().await {
        Ok(()) => Ok((stream, sizes)),
        Err(e) => Err((batch, e)),
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = InEvent;
    type ToBehaviour = OutEvent;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn on_behaviour_event(&mut self, event: InEvent) {
        match event {
            InEvent::Send(frame) => {
                if self.queue.len() >= self.max_queue {
                    self.events.push_back(OutEvent::StreamError("queue_full"));
                    return;
                }
                self.queue.push_back(frame);
            }
            InEvent::KeepAlive(keep) => {
                if keep
                    && !self.keep_alive
                    && let Some(l) = self.liveness.as_mut()
                {
                    // Needed from now on: the quiet time counts from now.
                    l.last_heard = Instant::now();
                }
                self.keep_alive = keep;
            }
        }
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive
            || !self.queue.is_empty()
            || matches!(self.writer, Writer::Opening | Writer::Writing(_))
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), OutEvent>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        loop {
            match self.inbound.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    if self.heard(&message) {
                        return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                            OutEvent::Message(message),
                        ));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let event = match e {
                        ReadError::Codec(e) => OutEvent::Malformed(e),
                        ReadError::Io => OutEvent::StreamError("stream_error"),
                        ReadError::Timeout => OutEvent::StreamError("frame_timeout"),
                    };
                    return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        // After the inbound streams: what already arrived counts as heard.
        if let Some(event) = self.poll_liveness(cx) {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        loop {
            match std::mem::replace(&mut self.writer, Writer::Closed) {
                Writer::Writing(mut write) => match write.poll_unpin(cx) {
                    Poll::Pending => {
                        self.writer = Writer::Writing(write);
                        break;
                    }
                    Poll::Ready(Ok((stream, sizes))) => {
                        self.retried = false;
                        self.writer = Writer::Idle(stream);
                        self.events.extend(sizes.into_iter().map(OutEvent::Written));
                        if let Some(event) = self.events.pop_front() {
                            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
                        }
                    }
                    Poll::Ready(Err((batch, _))) => {
                        for frame in batch.into_iter().rev() {
                            self.queue.push_front(frame);
                        }
                        self.failed();
                    }
                },
                Writer::Idle(stream) if !self.queue.is_empty() => {
                    let n = self.queue.len().min(WRITE_BATCH);
                    let batch: Vec<Vec<u8>> = self.queue.drain(..n).collect();
                    self.writer = Writer::Writing(write_batch(stream, batch).boxed());
                }
                Writer::Closed if !self.queue.is_empty() => {
                    self.writer = Writer::Opening;
                    return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ()),
                    });
                }
                other => {
                    self.writer = other;
                    break;
                }
            }
        }
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol, (), ()>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => {
                if self.inbound.len() >= self.max_inbound {
                    self.events.push_back(OutEvent::StreamError("too_many_streams"));
                    return;
                }
                self.inbound.push(messages(stream, self.frame_timeout));
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => {
                self.writer = Writer::Idle(stream);
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { .. }) => self.failed(),
            _ => {}
        }
    }
}
