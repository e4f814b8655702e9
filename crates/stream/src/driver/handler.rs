//! The acceptor's side of a connection: exits deliver each frame on an inbound
//! `/mix/stream/1.0.0` stream of its own (written, then closed), as the mix exit layer does for
//! any origin protocol.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{AsyncReadExt, StreamExt};
use libp2p_core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p_swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p_swarm::handler::{DialUpgradeError, FullyNegotiatedOutbound};
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, SubstreamProtocol,
};

use crate::frame::{self, MAX_FRAME_LEN};
use libp2p_mix::framing::{self, FrameError};

/// The protocol exits deliver frames with.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mix/stream/1.0.0");

/// Why an inbound frame stream was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFailure {
    Oversized,
    Timeout,
    Io,
    TooManyStreams,
}

/// What a connection reports.
#[derive(Debug)]
pub enum FromHandler {
    /// One frame, as an exit delivered it.
    Frame(Vec<u8>),
    /// An inbound stream was dropped, for this reason (a metrics label).
    Dropped(&'static str),
}

impl ReadFailure {
    fn label(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Timeout => "read_timeout",
            Self::Io => "stream_error",
            Self::TooManyStreams => "too_many_streams",
        }
    }
}

/// Reads frames from the inbound streams of one connection.
pub struct FrameHandler {
    accepting: bool,
    max_streams: usize,
    timeout: Duration,
    inbound: SelectAll<BoxStream<'static, Result<Vec<u8>, ReadFailure>>>,
    events: VecDeque<FromHandler>,
}

impl std::fmt::Debug for FrameHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameHandler")
            .field("accepting", &self.accepting)
            .field("inbound", &self.inbound.len())
            .finish()
    }
}

impl FrameHandler {
    pub(crate) fn new(accepting: bool, max_streams: usize, timeout: Duration) -> Self {
        Self {
            accepting,
            max_streams: max_streams.max(1),
            timeout,
            inbound: SelectAll::new(),
            events: VecDeque::new(),
        }
    }
}

/// The frames of one inbound stream. Exits that know the protocol write length-prefixed
/// frames, several per stream, on a stream they keep open; others (any exit delivering an
/// origin protocol it knows nothing of) write one frame and close. A frame begins with its
/// version byte; a length prefix of a frame never does, which tells the two apart.
fn frames(stream: Stream, timeout: Duration) -> BoxStream<'static, Result<Vec<u8>, ReadFailure>> {
    enum State {
        Start(Stream),
        Framed(Stream),
        Done,
    }
    futures::stream::unfold(State::Start(stream), move |state| async move {
        match state {
            State::Done => None,
            State::Start(mut stream) => {
                let mut first = [0u8; 1];
                match stream.read(&mut first).await {
                    Ok(0) => None,
                    Err(_) => Some((Err(ReadFailure::Io), State::Done)),
                    Ok(_) if first[0] == frame::VERSION => {
                        let rest = within(timeout, read_to_end(stream, first[0])).await;
                        Some((rest, State::Done))
                    }
                    Ok(_) => match within(timeout, read_framed(&mut stream, first[0])).await {
                        Ok(frame) => Some((Ok(frame), State::Framed(stream))),
                        Err(e) => Some((Err(e), State::Done)),
                    },
                }
            }
            State::Framed(mut stream) => {
                let mut first = [0u8; 1];
                match stream.read(&mut first).await {
                    Ok(0) => None,
                    Err(_) => Some((Err(ReadFailure::Io), State::Done)),
                    Ok(_) => match within(timeout, read_framed(&mut stream, first[0])).await {
                        Ok(frame) => Some((Ok(frame), State::Framed(stream))),
                        Err(e) => Some((Err(e), State::Done)),
                    },
                }
            }
        }
    })
    .boxed()
}

/// `future`, unless it takes longer than `timeout` (then a timeout failure).
async fn within(
    timeout: Duration,
    future: impl Future<Output = Result<Vec<u8>, ReadFailure>>,
) -> Result<Vec<u8>, ReadFailure> {
    framing::within(timeout, future).await.unwrap_or(Err(ReadFailure::Timeout))
}

async fn read_to_end(mut stream: Stream, first: u8) -> Result<Vec<u8>, ReadFailure> {
    let mut frame = Vec::with_capacity(4096);
    frame.push(first);
    // One byte over the limit tells an oversized frame from a full one.
    let n = (&mut stream)
        .take(MAX_FRAME_LEN as u64)
        .read_to_end(&mut frame)
        .await
        .map_err(|_| ReadFailure::Io)?;
    if n + 1 > MAX_FRAME_LEN {
        return Err(ReadFailure::Oversized);
    }
    Ok(frame)
}

async fn read_framed(stream: &mut Stream, first: u8) -> Result<Vec<u8>, ReadFailure> {
    framing::read_after(stream, first, MAX_FRAME_LEN).await.map_err(|e| match e {
        FrameError::Io(_) => ReadFailure::Io,
        _ => ReadFailure::Oversized,
    })
}

impl ConnectionHandler for FrameHandler {
    type FromBehaviour = Infallible;
    type ToBehaviour = FromHandler;
    type InboundProtocol = either::Either<ReadyUpgrade<StreamProtocol>, DeniedUpgrade>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        let upgrade = if self.accepting {
            either::Either::Left(ReadyUpgrade::new(PROTOCOL))
        } else {
            either::Either::Right(DeniedUpgrade)
        };
        SubstreamProtocol::new(upgrade, ())
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn connection_keep_alive(&self) -> bool {
        // Inbound streams of exits idle between frames; they do not keep a connection alone.
        false
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, Infallible, FromHandler>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        match self.inbound.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(FromHandler::Frame(frame)))
            }
            Poll::Ready(Some(Err(failure))) => Poll::Ready(
                ConnectionHandlerEvent::NotifyBehaviour(FromHandler::Dropped(failure.label())),
            ),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, DeniedUpgrade, (), Infallible>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: futures::future::Either::Left(stream),
                ..
            }) => {
                if self.inbound.len() >= self.max_streams {
                    self.events
                        .push_back(FromHandler::Dropped(ReadFailure::TooManyStreams.label()));
                } else {
                    self.inbound.push(frames(stream, self.timeout));
                }
            }
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: futures::future::Either::Right(never),
                ..
            }) => match never {},
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound { info, .. }) => {
                match info {}
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info, .. }) => match info {},
            _ => {}
        }
    }
}
