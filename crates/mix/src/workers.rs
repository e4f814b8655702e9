//! Hop workers: threads that open received packets and build own ones, so that one node uses
//! every core.
//!
//! The swarm's task stays the only place where anything is decided. It hands each packet to
//! the core, which returns the costly part as a [`HopJob`], and each own message the core
//! planned as a [`BuildJob`]; a worker runs it and sends the result back, and the swarm's
//! task gives it to the core again. Jobs in flight are bounded: past the bound the swarm's
//! task does the job itself, which slows its reading of connections (their flow control
//! pushes back on senders) and its taking of new messages down instead of dropping.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::StreamExt as _;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use libp2p_identity::PeerId;

use crate::core::{BuildDone, BuildJob, BuildTicket, HopDone, HopJob};

/// Jobs queued or running per worker before the swarm's task does them itself: enough to keep
/// a worker busy between two polls of the swarm's task, few enough to bound memory (a job
/// holds one 4,608-byte packet, or one message's plan and plaintext) and reordering.
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

enum Job {
    Hop(PeerId, HopJob),
    Build(BuildJob),
}

/// A job's result; `None`: the job panicked (a bug), its packets are dropped and counted.
pub(crate) enum Done {
    Hop(PeerId, Option<HopDone>),
    Build(BuildTicket, Option<BuildDone>),
}

/// A pool of hop worker threads. Dropping it stops them once their current job is done.
pub(crate) struct HopWorkers {
    jobs: SyncSender<Job>,
    done: UnboundedReceiver<Done>,
    /// Hop jobs and build jobs queued or running.
    opening: usize,
    building: usize,
    max_in_flight: usize,
}

impl std::fmt::Debug for HopWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopWorkers")
            .field("opening", &self.opening)
            .field("building", &self.building)
            .finish_non_exhaustive()
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
        Ok(Self { jobs, done, opening: 0, building: 0, max_in_flight })
    }

    /// Queues a received packet's job, or gives it back when the workers hold as many as
    /// they may.
    pub(crate) fn submit(&mut self, peer: PeerId, job: HopJob) -> Result<(), HopJob> {
        match self.try_send(Job::Hop(peer, job)) {
            None => {
                self.opening += 1;
                Ok(())
            }
            Some(Job::Hop(_, job)) => Err(job),
            Some(Job::Build(_)) => unreachable!("a hop job comes back as one"),
        }
    }

    /// Queues an own message's job, or gives it back when the workers hold as many as they
    /// may.
    pub(crate) fn submit_build(&mut self, job: BuildJob) -> Result<(), BuildJob> {
        match self.try_send(Job::Build(job)) {
            None => {
                self.building += 1;
                Ok(())
            }
            Some(Job::Build(job)) => Err(job),
            Some(Job::Hop(..)) => unreachable!("a build job comes back as one"),
        }
    }

    /// Queues `job`; gives it back when the workers hold as many as they may.
    fn try_send(&mut self, job: Job) -> Option<Job> {
        if self.in_flight() >= self.max_in_flight {
            return Some(job);
        }
        match self.jobs.try_send(job) {
            Ok(()) => None,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Some(job),
        }
    }

    /// The next finished job, if any, or `None` once every worker is gone (the jobs in
    /// flight will not come back); registers the task's waker otherwise.
    pub(crate) fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<Option<Done>> {
        if self.in_flight() == 0 {
            return Poll::Pending;
        }
        match self.done.poll_next_unpin(cx) {
            Poll::Ready(Some(done)) => {
                match &done {
                    Done::Hop(..) => self.opening -= 1,
                    Done::Build(..) => self.building -= 1,
                }
                Poll::Ready(Some(done))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Jobs queued or running.
    pub(crate) fn in_flight(&self) -> usize {
        self.opening + self.building
    }

    /// Received packets being opened.
    pub(crate) fn opening(&self) -> usize {
        self.opening
    }
}

fn work(queue: &Mutex<Receiver<Job>>, done: &UnboundedSender<Done>) {
    loop {
        // Only one idle worker waits in `recv` at a time; the others wait for the lock.
        let next = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        let Ok(job) = next else { return };
        // A panic must not leave the job unanswered: the swarm's task counts jobs in flight.
        let result = match job {
            Job::Hop(peer, job) => Done::Hop(peer, catch(|| job.run())),
            Job::Build(job) => {
                let ticket = job.ticket();
                Done::Build(ticket, catch(|| job.run()))
            }
        };
        if done.unbounded_send(result).is_err() {
            return;
        }
    }
}

fn catch<T>(run: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).ok()
}
