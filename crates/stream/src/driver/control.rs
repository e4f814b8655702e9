//! The application's handle on the behaviour: open streams, send messages, accept both.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::channel::{mpsc, oneshot};
use futures::lock::Mutex;
use futures::{SinkExt, StreamExt};
use libp2p_identity::PeerId;

use super::stream::MixStream;
use crate::endpoint::{OpenStreamError, StreamPeer};
use crate::{ConnectionError, StreamConfig};

/// Whom to open a stream to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A mix node in this node's pool: its address and mix key come from there.
    MixNode(PeerId),
    /// A peer given in full.
    Peer(StreamPeer),
}

impl From<PeerId> for Target {
    fn from(peer: PeerId) -> Self {
        Self::MixNode(peer)
    }
}

impl From<StreamPeer> for Target {
    fn from(peer: StreamPeer) -> Self {
        Self::Peer(peer)
    }
}

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// It could not be sent at all.
    #[error(transparent)]
    Open(#[from] OpenStreamError),
    /// It was sent, but not acknowledged in full.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

pub(crate) enum Command {
    Open {
        target: Target,
        config: Option<StreamConfig>,
        reply: oneshot::Sender<Result<MixStream, OpenStreamError>>,
    },
    Send {
        target: Target,
        data: Vec<u8>,
        config: Option<StreamConfig>,
        reply: oneshot::Sender<Result<(), TransferError>>,
    },
}

/// Opens streams, sends messages, and accepts both; clones share one behaviour.
#[derive(Clone)]
pub struct Control {
    commands: mpsc::Sender<Command>,
    incoming: Arc<Mutex<mpsc::Receiver<MixStream>>>,
    messages: Arc<Mutex<mpsc::Receiver<Vec<u8>>>>,
    /// Bytes of received messages waiting in `messages` (the behaviour bounds them).
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl Control {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        incoming: mpsc::Receiver<MixStream>,
        messages: mpsc::Receiver<Vec<u8>>,
        queued: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            commands,
            incoming: Arc::new(Mutex::new(incoming)),
            messages: Arc::new(Mutex::new(messages)),
            queued,
        }
    }

    /// Opens a stream to `peer` with the behaviour's settings. The stream is usable at once;
    /// the acceptor learns of it with the first frame.
    pub async fn open_stream(
        &mut self,
        peer: impl Into<Target>,
    ) -> Result<MixStream, OpenStreamError> {
        self.open_stream_with(peer, None).await
    }

    /// [`Self::open_stream`] with settings of its own (see [`StreamConfig::high_anonymity`]).
    pub async fn open_stream_with(
        &mut self,
        peer: impl Into<Target>,
        config: Option<StreamConfig>,
    ) -> Result<MixStream, OpenStreamError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Open { target: peer.into(), config, reply };
        self.commands.send(command).await.map_err(|_| OpenStreamError::Stopped)?;
        rx.await.map_err(|_| OpenStreamError::Stopped)?
    }

    /// Sends `data`, of any size, to `peer`; resolves once every byte was acknowledged.
    pub async fn send(
        &mut self,
        peer: impl Into<Target>,
        data: Vec<u8>,
    ) -> Result<(), TransferError> {
        self.send_with(peer, data, None).await
    }

    /// [`Self::send`] with settings of its own.
    pub async fn send_with(
        &mut self,
        peer: impl Into<Target>,
        data: Vec<u8>,
        config: Option<StreamConfig>,
    ) -> Result<(), TransferError> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Send { target: peer.into(), data, config, reply };
        self.commands.send(command).await.map_err(|_| OpenStreamError::Stopped)?;
        rx.await.map_err(|_| OpenStreamError::Stopped)?
    }

    /// The next stream another node opened to this one (`None` once the behaviour is gone).
    /// Nothing about it names its opener.
    pub async fn accept_stream(&self) -> Option<MixStream> {
        self.incoming.lock().await.next().await
    }

    /// The next message another node sent to this one, whole.
    pub async fn next_message(&self) -> Option<Vec<u8>> {
        let message = self.messages.lock().await.next().await?;
        self.queued.fetch_sub(message.len(), Ordering::Relaxed);
        Some(message)
    }
}
