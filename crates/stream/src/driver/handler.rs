//! The acceptor's side of a connection: exits deliver each frame on an inbound
//! `/mix/stream/1.0.0` stream of its own (written, then closed), as the mix exit layer does for
//! any origin protocol.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::AsyncReadExt;
use libp2p_core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p_swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p_swarm::handler::{DialUpgradeError, FullyNegotiatedOutbound};
use libp2p_swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, SubstreamProtocol,
};

use crate::frame::MAX_FRAME_LEN;

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
    reads: futures_bounded::FuturesSet<Result<Vec<u8>, ReadFailure>>,
    events: VecDeque<FromHandler>,
}

impl std::fmt::Debug for FrameHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameHandler")
            .field("accepting", &self.accepting)
            .field("reads", &self.reads.len())
            .finish()
    }
}

impl FrameHandler {
    pub(crate) fn new(accepting: bool, max_reads: usize, timeout: Duration) -> Self {
        Self {
            accepting,
            reads: futures_bounded::FuturesSet::new(
                move || futures_bounded::Delay::futures_timer(timeout),
                max_reads.max(1),
            ),
            events: VecDeque::new(),
        }
    }
}

async fn read_frame(mut stream: Stream) -> Result<Vec<u8>, ReadFailure> {
    let mut frame = Vec::with_capacity(4096);
    // One byte over the limit tells an oversized frame from a full one.
    let n = (&mut stream)
        .take(MAX_FRAME_LEN as u64 + 1)
        .read_to_end(&mut frame)
        .await
        .map_err(|_| ReadFailure::Io)?;
    if n > MAX_FRAME_LEN {
        return Err(ReadFailure::Oversized);
    }
    Ok(frame)
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
        !self.reads.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, Infallible, FromHandler>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        match self.reads.poll_unpin(cx) {
            Poll::Ready(Ok(Ok(frame))) => {
                Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(FromHandler::Frame(frame)))
            }
            Poll::Ready(Ok(Err(failure))) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                FromHandler::Dropped(failure.label()),
            )),
            Poll::Ready(Err(_)) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                FromHandler::Dropped(ReadFailure::Timeout.label()),
            )),
            Poll::Pending => Poll::Pending,
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
                let full = self.reads.try_push(read_frame(stream)).is_err();
                if full {
                    self.events
                        .push_back(FromHandler::Dropped(ReadFailure::TooManyStreams.label()));
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
