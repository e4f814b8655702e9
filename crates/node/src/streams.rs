//! Streams of bytes over the mixnet, on a node: `mix-stream`'s sessions carried by the mix
//! behaviour.
//!
//! Each shard is one anonymous request to the receiving mix node, on a path of its own, with
//! one SURB; the receiver acknowledges through that SURB, so it never learns who opened the
//! stream. The receiver's stream key is its mix key (this works while keys do not rotate).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p_mix::{Behaviour, Destination, ReplyId, RequestId, SendError};
use mix_sphinx::NodeSecretKey;
use mix_stream::{
    Ack, CodingConfig, Incoming, Outgoing, ReassemblyConfig, ReceiverKey, SessionConfig,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::oneshot;

/// The origin protocol of stream shards.
pub(crate) const STREAM_CODEC: &str = "/mixnode/stream/1";

/// How a finished stream went.
#[derive(Debug, Clone)]
pub(crate) struct StreamReport {
    pub(crate) bytes: usize,
    pub(crate) shards_sent: u64,
    pub(crate) elapsed: Duration,
}

type Done = oneshot::Sender<Result<StreamReport, String>>;

struct Active {
    out: Outgoing,
    data: Vec<u8>,
    written: usize,
    flushed: bool,
    receiver: PeerId,
    /// Shards waiting for room in the mix node's queues.
    backlog: VecDeque<Vec<u8>>,
    done: Option<Done>,
    started: Instant,
}

/// The streams a node opened and the shards it receives.
pub(crate) struct Streams {
    incoming: Incoming,
    active: HashMap<u64, Active>,
    requests: HashMap<RequestId, u64>,
    next: u64,
    rng: StdRng,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").field("active", &self.active.len()).finish_non_exhaustive()
    }
}

impl Streams {
    pub(crate) fn new(secret: &NodeSecretKey) -> Self {
        let key = ReceiverKey::from_bytes(*secret.to_bytes());
        Self {
            incoming: Incoming::new(key, ReassemblyConfig::default(), 1024),
            active: HashMap::new(),
            requests: HashMap::new(),
            next: 0,
            rng: StdRng::from_rng(&mut rand::rng()),
        }
    }

    /// Streams `data` to the mix node `receiver`.
    pub(crate) fn open(&mut self, mix: &Behaviour, receiver: PeerId, data: Vec<u8>, done: Done) {
        let Some(node) = mix.core().pool().get(&receiver) else {
            let _ = done.send(Err(format!("{receiver} is not in the pool")));
            return;
        };
        let max_shard_len = match mix.max_message_size(STREAM_CODEC, 1) {
            Ok(n) => n,
            Err(e) => {
                let _ = done.send(Err(e.to_string()));
                return;
            }
        };
        let config = SessionConfig {
            coding: CodingConfig { max_shard_len, ..CodingConfig::default() },
            ..SessionConfig::default()
        };
        let key = node.mix_key().to_bytes();
        match Outgoing::new(&key, config, &mut self.rng) {
            Ok(out) => {
                self.active.insert(
                    self.next,
                    Active {
                        out,
                        data,
                        written: 0,
                        flushed: false,
                        receiver,
                        backlog: VecDeque::new(),
                        done: Some(done),
                        started: Instant::now(),
                    },
                );
                self.next += 1;
            }
            Err(e) => {
                let _ = done.send(Err(e.to_string()));
            }
        }
    }

    /// A shard arrived (this node is the receiver): acknowledges it through its SURB and
    /// returns the stream's newly readable bytes, if any.
    pub(crate) fn on_shard(
        &mut self,
        mix: &mut Behaviour,
        body: &[u8],
        reply: Option<ReplyId>,
    ) -> Option<([u8; 32], Vec<u8>)> {
        let readable = match self.incoming.accept(Instant::now(), body) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(%e, "stream shard refused");
                return None;
            }
        };
        if let (Some(id), Some(ack)) = (reply, self.incoming.ack(&readable.stream)) {
            let _ = mix.reply(id, &ack.encode());
        }
        (!readable.bytes.is_empty()).then_some((readable.stream, readable.bytes))
    }

    /// A reply to one of our requests; `true` if it was a stream's acknowledgement.
    pub(crate) fn on_reply(&mut self, request: RequestId, body: &[u8]) -> bool {
        let Some(stream) = self.requests.remove(&request) else { return false };
        if let (Some(active), Some(ack)) = (self.active.get_mut(&stream), Ack::decode(body)) {
            active.out.on_ack(Instant::now(), &ack);
        }
        true
    }

    /// A request of ours got no reply; `true` if it was a stream's (the session resends).
    pub(crate) fn on_request_failed(&mut self, request: RequestId) -> bool {
        self.requests.remove(&request).is_some()
    }

    /// Moves every stream along: writes, timers, sends.
    pub(crate) fn tick(&mut self, mix: &mut Behaviour) {
        let now = Instant::now();
        let mut finished = Vec::new();
        for (&id, a) in &mut self.active {
            if a.written < a.data.len() {
                match a.out.write(now, &a.data[a.written..]) {
                    Ok(n) => a.written += n,
                    Err(e) => {
                        finished.push((id, Err(e.to_string())));
                        continue;
                    }
                }
            } else if !a.flushed {
                a.flushed = a.out.flush(now).unwrap_or(false);
            }
            a.out.handle_timeout(now);
            while let Some(shard) = a.out.poll_transmit() {
                a.backlog.push_back(shard);
            }
            while let Some(shard) = a.backlog.pop_front() {
                let dest = Destination::MixNode(a.receiver);
                match mix.request(&dest, STREAM_CODEC, &shard, 1) {
                    Ok(request) => {
                        self.requests.insert(request, id);
                    }
                    Err(SendError::QueueFull(_) | SendError::TooManyPendingRequests(_)) => {
                        a.backlog.push_front(shard);
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(%e, "stream shard not sent; the session will resend");
                    }
                }
            }
            if let Some(e) = a.out.error() {
                finished.push((id, Err(e.to_string())));
            } else if a.flushed && a.out.is_done() {
                finished.push((
                    id,
                    Ok(StreamReport {
                        bytes: a.data.len(),
                        shards_sent: a.out.shards_sent(),
                        elapsed: a.started.elapsed(),
                    }),
                ));
            }
        }
        for (id, result) in finished {
            if let Some(mut a) = self.active.remove(&id)
                && let Some(done) = a.done.take()
            {
                let _ = done.send(result);
            }
        }
        self.requests.retain(|_, s| self.active.contains_key(s));
    }
}
