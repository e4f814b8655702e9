//! What the endpoint counts, as plain figures: the driver exports them to Prometheus, a
//! simulation reads them directly.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{ConnectionStats, Mode, Role};

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Outcome {
    /// Both directions finished and were acknowledged.
    Closed,
    /// Either side reset it.
    Reset,
    /// The peer stopped answering.
    TimedOut,
    /// It failed otherwise (no path, a transport error).
    Failed,
}

impl Outcome {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Reset => "reset",
            Self::TimedOut => "timed_out",
            Self::Failed => "failed",
        }
    }
}

/// The endpoint's counters and levels ([`crate::Endpoint::stats`]). Counters only grow.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Streams (index 0) and messages (1) this node opened.
    pub opened: [u64; 2],
    /// Streams (0) and messages (1) this node accepted.
    pub accepted: [u64; 2],
    /// Streams open now that this node opened (0) and accepted (1); a stream leaves when it
    /// ends (it may linger a while longer, see [`crate::Endpoint::active_streams`]).
    pub active: [usize; 2],
    /// Frames sent: mix messages and SURB replies.
    pub frames_sent: u64,
    /// Frames received and authenticated.
    pub frames_received: u64,
    /// Application bytes written to streams.
    pub bytes_sent: u64,
    /// Application bytes read from streams.
    pub bytes_received: u64,
    /// Shards sent again.
    pub shards_resent: u64,
    /// Blocks rebuilt with parity.
    pub blocks_recovered: u64,
    /// SURBs sent ahead to acceptors.
    pub surbs_sent: u64,
    /// Frame loss on the mixnet as learned so far.
    pub loss: f64,
    /// Bytes accepted streams and messages hold now.
    pub accepted_bytes: usize,
    ended: BTreeMap<Outcome, u64>,
    dropped: BTreeMap<&'static str, u64>,
    /// Smoothed round-trip times of streams when they ended, until the driver takes them.
    rtts: Vec<Duration>,
    /// Grows with every change: the driver exports only when it moved.
    pub(crate) changes: u64,
}

/// Round-trip samples kept until taken.
const MAX_RTTS: usize = 4096;

pub(super) fn mode_index(mode: Mode) -> usize {
    match mode {
        Mode::Stream => 0,
        Mode::Message => 1,
    }
}

pub(super) fn role_index(role: Role) -> usize {
    match role {
        Role::Opener => 0,
        Role::Acceptor => 1,
    }
}

impl EndpointStats {
    /// Streams that ended with `outcome`.
    pub fn ended(&self, outcome: Outcome) -> u64 {
        self.ended.get(&outcome).copied().unwrap_or(0)
    }

    /// Every ending so far, by outcome.
    pub fn endings(&self) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        self.ended.iter().map(|(o, n)| (*o, *n))
    }

    /// Frames dropped for `reason` (a metrics label such as `"replayed_opening"`).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.get(reason).copied().unwrap_or(0)
    }

    /// Every drop so far, by reason.
    pub fn drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.dropped.iter().map(|(r, n)| (*r, *n))
    }

    /// Takes the round-trip samples gathered since the last call.
    pub(super) fn take_rtts(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.rtts)
    }

    pub(super) fn drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
        self.changes += 1;
    }

    pub(super) fn end(&mut self, outcome: Outcome, stats: &ConnectionStats) {
        *self.ended.entry(outcome).or_default() += 1;
        if let Some(rtt) = stats.rtt
            && self.rtts.len() < MAX_RTTS
        {
            self.rtts.push(rtt);
        }
        self.changes += 1;
    }

    pub(super) fn touch(&mut self) {
        self.changes += 1;
    }

    /// Adds what changed between two snapshots of one stream's figures.
    pub(super) fn progress(
        &mut self,
        before: &ConnectionStats,
        after: &ConnectionStats,
        role: Role,
    ) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        self.frames_sent += d(before.frames_sent, after.frames_sent);
        self.frames_received += d(before.frames_received, after.frames_received);
        self.bytes_sent += d(before.send.bytes_written, after.send.bytes_written);
        self.bytes_received += d(before.recv.bytes_read, after.recv.bytes_read);
        self.shards_resent += d(before.send.shards_resent, after.send.shards_resent);
        self.blocks_recovered += d(before.recv.recovered, after.recv.recovered);
        if role == Role::Opener {
            self.surbs_sent += d(before.surbs, after.surbs);
        }
        if before != after {
            self.changes += 1;
        }
    }
}
