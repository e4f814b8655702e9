//! Reaching the mix layer from outside the swarm's event loop: from another behaviour of the
//! same swarm (gossip's mix route) or from a task.
//!
//! A [`Handle`] queues messages for the mix behaviour to send and reads which nodes its pool
//! holds; [`crate::Behaviour::route_protocol`] hands the messages of one origin protocol that
//! reach this node to a channel instead of [`crate::Event::Received`]. Both are bounded: a
//! full send queue is an error to the caller, a full delivery channel drops the message
//! (counted as [`crate::DropReason::RouteFull`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::channel::{mpsc, oneshot};
use libp2p_core::Multiaddr;
use libp2p_identity::PeerId;

use crate::ReplyId;
use crate::core::{Destination, MessageId, SendError, SendOptions};

/// Messages a handle may queue before the behaviour takes them.
pub const HANDLE_QUEUE: usize = 256;

/// The outcome of a message queued with [`Handle::send`], once the behaviour took it.
pub type SendOutcome = oneshot::Receiver<Result<MessageId, SendError>>;

pub(crate) enum Command {
    Send {
        destination: Destination,
        codec: String,
        body: Vec<u8>,
        options: SendOptions,
        done: oneshot::Sender<Result<MessageId, SendError>>,
    },
    Reply {
        id: ReplyId,
        body: Vec<u8>,
    },
    Forget {
        id: ReplyId,
    },
}

/// What the pool holds, as the behaviour last published it.
#[derive(Debug, Default)]
pub(crate) struct PoolView {
    version: AtomicU64,
    members: Mutex<Vec<(PeerId, Multiaddr)>>,
}

impl PoolView {
    /// Publishes `members` if they changed.
    pub(crate) fn update(&self, members: Vec<(PeerId, Multiaddr)>) {
        let mut current = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if *current != members {
            *current = members;
            self.version.fetch_add(1, Ordering::Release);
        }
    }
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The behaviour has not taken the messages queued before (it is not being polled fast
    /// enough, or it is overloaded).
    #[error("the mix behaviour's queue is full")]
    Full,
    /// The behaviour is gone.
    #[error("the mix behaviour is gone")]
    Closed,
}

/// Sends through a mix behaviour from outside its swarm's event loop; clones share it. Get one
/// with [`crate::Behaviour::handle`].
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    pool: std::sync::Arc<PoolView>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Send { codec, body, .. } => {
                f.debug_struct("Send").field("codec", codec).field("len", &body.len()).finish()
            }
            Self::Reply { id, body } => {
                f.debug_struct("Reply").field("id", id).field("len", &body.len()).finish()
            }
            Self::Forget { id } => f.debug_struct("Forget").field("id", id).finish(),
        }
    }
}

impl Handle {
    pub(crate) fn new(commands: mpsc::Sender<Command>, pool: std::sync::Arc<PoolView>) -> Self {
        Self { commands, pool }
    }

    /// Queues `body` for [`crate::Behaviour::send_with`]; the returned receiver gets its
    /// outcome once the behaviour took it (it is dropped unanswered if the behaviour goes away
    /// first).
    pub fn send(
        &mut self,
        destination: Destination,
        codec: impl Into<String>,
        body: Vec<u8>,
        options: SendOptions,
    ) -> Result<SendOutcome, HandleError> {
        let (done, outcome) = oneshot::channel();
        let command = Command::Send { destination, codec: codec.into(), body, options, done };
        self.queue(command)?;
        Ok(outcome)
    }

    /// Queues an answer to a message a routed protocol received (see
    /// [`crate::Behaviour::reply`]).
    pub fn reply(&mut self, id: ReplyId, body: Vec<u8>) -> Result<(), HandleError> {
        self.queue(Command::Reply { id, body })
    }

    /// Says that a message a routed protocol received gets no answer: its SURBs are
    /// discarded now rather than held until they expire (see [`crate::Behaviour::forget`]).
    pub fn forget(&mut self, id: ReplyId) -> Result<(), HandleError> {
        self.queue(Command::Forget { id })
    }

    fn queue(&mut self, command: Command) -> Result<(), HandleError> {
        self.commands
            .try_send(command)
            .map_err(|e| if e.is_full() { HandleError::Full } else { HandleError::Closed })
    }

    /// The usable pool nodes and their addresses, as of the last change the behaviour
    /// published (it checks about once a second, and at once when the pool is replaced or a
    /// node offered).
    pub fn pool_members(&self) -> Vec<(PeerId, Multiaddr)> {
        self.pool.members.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Grows with every change of [`Self::pool_members`].
    pub fn pool_version(&self) -> u64 {
        self.pool.version.load(Ordering::Acquire)
    }
}

/// A message of a routed protocol (see [`crate::Behaviour::route_protocol`]) that reached this
/// node; its sender is unknown to it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Routed {
    /// The origin protocol.
    pub codec: String,
    /// The message.
    pub body: Vec<u8>,
    /// Set if the sender attached SURBs: answer with [`Handle::reply`], or say no answer
    /// comes with [`Handle::forget`] (see [`crate::Event::Received`] for how long they wait).
    pub reply: Option<ReplyId>,
}

/// Where the messages of a routed protocol go.
pub type RoutedReceiver = mpsc::Receiver<Routed>;
