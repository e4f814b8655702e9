//! Hop workers: threads that open received packets, so that one node uses every core.
//!
//! The swarm's task stays the only place where anything is decided. It hands each packet to
//! the core, which returns the costly part as a [`HopJob`]; a worker runs it and sends the
//! [`HopDone`] back, and the swarm's task gives it to the core again. Jobs in flight are
//! bounded: past the bound the swarm's task opens the packet itself, which slows its reading
//! of connections down (their flow control pushes back on senders) instead of dropping.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::StreamExt as _;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use libp2p_identity::PeerId;

use crate::core::{HopDone, HopJob};

/// Jobs queued or running per worker before the swarm's task opens packets itself: enough to
/// keep a worker busy between two polls of the swarm's task, few enough to bound memory
/// (a job holds one 4,608-byte packet) and reordering.
const JOBS_PER_WORKER: usize = 128;

/// The most hop workers a node starts, whatever it is configured with: each is a thread.
pub const MAX_HOP_WORKERS: usize = 256;

/// The number of hop workers a node starts by default: one per core, none on a single core
/// (handing packets to another thread only costs there).
pub fn default_hop_workers() -> usize {
    match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        1 => 0,
        n => n,
    }
}

type Job = (PeerId, HopJob);
/// `None`: the job panicked (a bug); the packet is dropped and counted.
type Done = (PeerId, Option<HopDone>);

/// A pool of hop worker threads. Dropping it stops them once their current job is done.
pub(crate) struct HopWorkers {
    jobs: SyncSender<Job>,
    done: UnboundedReceiver<Done>,
    in_flight: usize,
    max_in_flight: usize,
}

impl std::fmt::Debug for HopWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopWorkers").field("in_flight", &self.in_flight).finish_non_exhaustive()
    }
}

impl HopWorkers {
    /// Starts `workers` threads (at least one).
    pub(crate) fn start(workers: usize) -> std::io::Result<Self> {
        let workers = workers.clamp(1, MAX_HOP_WORKERS);
        let max_in_flight = JOBS_PER_WORKER * workers;
        let (jobs, queue) = std::sync::mpsc::sync_channel(max_in_flight);
        let queue = Arc::new(Mutex::new(queue));
        let (done_tx, done) = unbounded();
        for i in 0..workers {
            let queue = Arc::clone(&queue);
            let done_tx = done_tx.clone();
            std::thread::Builder::new()
                .name(format!("mix-hop-{i}"))
                .spawn(move || work(&queue, &done_tx))?;
        }
        Ok(Self { jobs, done, in_flight: 0, max_in_flight })
    }

    /// Queues a job, or gives it back when the workers have as many as they may hold.
    pub(crate) fn submit(&mut self, peer: PeerId, job: HopJob) -> Result<(), HopJob> {
        if self.in_flight >= self.max_in_flight {
            return Err(job);
        }
        match self.jobs.try_send((peer, job)) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(TrySendError::Full((_, job)) | TrySendError::Disconnected((_, job))) => Err(job),
        }
    }

    /// The next finished job, if any; registers the task's waker otherwise.
    pub(crate) fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Done> {
        if self.in_flight == 0 {
            return Poll::Pending;
        }
        match self.done.poll_next_unpin(cx) {
            Poll::Ready(Some(done)) => {
                self.in_flight -= 1;
                Poll::Ready(done)
            }
            // Every worker is gone: nothing more will come.
            Poll::Ready(None) => {
                self.in_flight = 0;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

fn work(queue: &Mutex<Receiver<Job>>, done: &UnboundedSender<Done>) {
    loop {
        // Only one idle worker waits in `recv` at a time; the others wait for the lock.
        let next = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        let Ok((peer, job)) = next else { return };
        // A panic must not leave the job unanswered: the swarm's task counts jobs in flight.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run())).ok();
        if done.unbounded_send((peer, result)).is_err() {
            return;
        }
    }
}
