//! The application's handle on one stream: `AsyncRead + AsyncWrite`, with flow control from
//! the connection's buffers and windows.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::channel::mpsc;

use crate::endpoint::{Shared, lock};
use crate::{ConnectionError, ConnectionStats, StreamId};

/// One anonymous stream: what one side writes, the other reads, in order.
///
/// Writes wait (return `Pending`) while the send buffer is full, which happens when the
/// receiver's window is closed or the mixnet is slower than the writer. `flush` sends what is
/// buffered at once instead of waiting to fill a block; `close` ends this direction and
/// completes once the peer acknowledged every byte. Reads return 0 at the end of the peer's
/// direction. Dropping the handle closes this direction gracefully and discards what still
/// arrives.
///
/// On the accepting side nothing here names the opener: the stream is known only by its
/// [`StreamId`], which both ends derive from the stream's secret.
pub struct MixStream {
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) kick: mpsc::UnboundedSender<StreamId>,
    pub(crate) id: StreamId,
}

impl std::fmt::Debug for MixStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MixStream").field("id", &self.id).finish_non_exhaustive()
    }
}

impl MixStream {
    /// The stream's local name (see [`StreamId`]).
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Figures so far.
    pub fn stats(&self) -> ConnectionStats {
        lock(&self.shared).conn.stats()
    }

    /// Aborts the stream: both sides' reads and writes fail from now on.
    pub fn reset(&mut self, code: u8) {
        lock(&self.shared).conn.reset(code);
        self.kick();
    }

    fn kick(&self) {
        let _ = self.kick.unbounded_send(self.id);
    }

    /// Resolves once the stream is over on this side: both directions ended and everything
    /// this side owed the peer (its last acknowledgement) was handed to the mixnet, or the
    /// stream failed. An application about to exit waits for it after `close` and reading to
    /// the end, so that its peer is not left waiting for an acknowledgement.
    pub async fn closed(&mut self) -> Result<(), io::Error> {
        futures::future::poll_fn(|cx| {
            let mut shared = lock(&self.shared);
            if let Some(e) = shared.conn.error() {
                return Poll::Ready(Err(io_error(e.clone())));
            }
            if shared.conn.is_closed() {
                return Poll::Ready(Ok(()));
            }
            shared.closer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

fn io_error(e: ConnectionError) -> io::Error {
    let kind = match e {
        ConnectionError::Reset(_) => io::ErrorKind::ConnectionReset,
        ConnectionError::LocallyReset(_) => io::ErrorKind::ConnectionAborted,
        ConnectionError::Unacknowledged(_) | ConnectionError::IdleTimeout(_) => {
            io::ErrorKind::TimedOut
        }
        ConnectionError::Transport(_) => io::ErrorKind::NotConnected,
        ConnectionError::SequenceExhausted => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl futures::AsyncRead for MixStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut shared = lock(&this.shared);
        match shared.conn.read(buf) {
            Ok(0) if !buf.is_empty() && !shared.conn.is_eof() => {
                shared.reader = Some(cx.waker().clone());
                Poll::Pending
            }
            Ok(n) => {
                drop(shared);
                if n > 0 {
                    // Reading may have opened the window: the behaviour tells the peer.
                    this.kick();
                }
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

impl futures::AsyncWrite for MixStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut shared = lock(&this.shared);
        if shared.conn.is_write_closed() && shared.conn.error().is_none() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stream closed for writing",
            )));
        }
        match shared.conn.write(Instant::now(), buf) {
            Ok(0) if !buf.is_empty() => {
                shared.writer = Some(cx.waker().clone());
                Poll::Pending
            }
            Ok(n) => {
                drop(shared);
                this.kick();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut shared = lock(&this.shared);
        if let Some(e) = shared.conn.error() {
            return Poll::Ready(Err(io_error(e.clone())));
        }
        shared.conn.flush();
        if shared.conn.is_flushed() {
            return Poll::Ready(Ok(()));
        }
        shared.writer = Some(cx.waker().clone());
        drop(shared);
        this.kick();
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut shared = lock(&this.shared);
        if shared.conn.is_finished() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = shared.conn.error() {
            return Poll::Ready(Err(io_error(e.clone())));
        }
        shared.conn.finish();
        shared.writer = Some(cx.waker().clone());
        drop(shared);
        this.kick();
        Poll::Pending
    }
}

impl Drop for MixStream {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        shared.dropped = true;
        shared.conn.finish();
        drop(shared);
        self.kick();
    }
}
