//! A graceful stop with a bounded drain ([`crate::Behaviour::stop_within`]).
//!
//! Packets held for their mixing delay leave when due, as long as the drain allows; what is
//! still held then is dropped and counted. Peers are then given a moment to read what was
//! written to them: a peer that sees its connection close right after the last frames
//! arrived may drop the connection before its handler read them (seen on loopback, where
//! the frames and the close arrive together). Then every connection is closed, with a short
//! grace, and the stop is reported once.

use std::task::Context;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures_timer::Delay;

/// How long connections stay open after the last held packet was written, so that peers read
/// it before the close: well above a loopback or LAN peer's scheduling delay, and about a
/// long-distance round trip.
pub(crate) const LINGER: Duration = Duration::from_millis(500);

/// How long closing connections may take at the end of a stop.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How often a stop looks at what is still held. Packets leave on the core's own timers, and
/// the last one to leave wakes nothing that would tell the stop.
const CHECK: Duration = Duration::from_millis(10);

/// What a graceful stop did ([`crate::Event::Stopped`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StopReport {
    /// Packets held when the stop began (being opened or built, for mixing, for a connection,
    /// or on a connection).
    pub held: usize,
    /// Packets forwarded for others during the stop (own packets that left are not counted).
    pub sent_on: u64,
    /// Held packets dropped when the drain was over.
    pub dropped: usize,
    /// Packets that arrived during the stop and were refused.
    pub refused: u64,
    /// How long the stop took.
    pub took: Duration,
}

/// Where a stop is.
#[derive(Debug)]
enum Phase {
    /// Held packets leave when due, until `deadline`.
    Draining { deadline: Instant },
    /// Nothing is held any more; peers read the last frames until `until`.
    Lingering { until: Instant },
    /// Connections are being closed, until `until`.
    Closing { until: Instant },
    /// Reported.
    Done,
}

/// What a stop does next, as the behaviour must carry it out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing yet.
    Wait,
    /// Drop what is still held.
    Abandon,
    /// Close every connection.
    Close,
    /// Report the stop.
    Report,
}

/// A graceful stop under way.
#[derive(Debug)]
pub(crate) struct Stopping {
    started: Instant,
    phase: Phase,
    check: Delay,
    held: usize,
    forwarded_before: u64,
    refused_before: u64,
    dropped: usize,
}

impl Stopping {
    /// `held`, `forwarded` and `refused`: the node's figures as the stop begins.
    pub(crate) fn new(
        now: Instant,
        drain: Duration,
        held: usize,
        forwarded: u64,
        refused: u64,
    ) -> Self {
        // A drain too long to add (e.g. `Duration::MAX` for "no limit") is a year.
        let deadline = now.checked_add(drain).unwrap_or(now + Duration::from_secs(365 * 86_400));
        Self {
            started: now,
            phase: Phase::Draining { deadline },
            check: Delay::new(CHECK),
            held,
            forwarded_before: forwarded,
            refused_before: refused,
            dropped: 0,
        }
    }

    /// The next step, given what the node still holds and whether any connection is open;
    /// registers a wake-up for the next look.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
        held: usize,
        connected: bool,
    ) -> Step {
        let step = match self.phase {
            Phase::Draining { deadline } if held == 0 || now >= deadline => {
                self.phase = Phase::Lingering { until: now + LINGER };
                Step::Abandon
            }
            Phase::Lingering { until } if !connected || now >= until => {
                self.phase = Phase::Closing { until: now + CLOSE_GRACE };
                Step::Close
            }
            Phase::Closing { until } if !connected || now >= until => {
                self.phase = Phase::Done;
                Step::Report
            }
            Phase::Draining { .. }
            | Phase::Lingering { .. }
            | Phase::Closing { .. }
            | Phase::Done => Step::Wait,
        };
        if !matches!(self.phase, Phase::Done) {
            while self.check.poll_unpin(cx).is_ready() {
                self.check.reset(CHECK);
            }
        }
        step
    }

    /// Whether the connections were closed: new ones are refused from then on.
    pub(crate) fn closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. } | Phase::Done)
    }

    /// Counts the packets dropped when the drain ended.
    pub(crate) fn abandoned(&mut self, dropped: usize) {
        self.dropped += dropped;
    }

    /// The report, from the node's figures now. Packets refused during the stop are those
    /// dropped for stopping that the drain's end did not drop.
    pub(crate) fn report(&self, now: Instant, forwarded: u64, stopping_drops: u64) -> StopReport {
        StopReport {
            held: self.held,
            sent_on: forwarded.saturating_sub(self.forwarded_before),
            dropped: self.dropped,
            refused: stopping_drops
                .saturating_sub(self.refused_before)
                .saturating_sub(self.dropped as u64),
            took: now.duration_since(self.started),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context<'static> {
        Context::from_waker(futures::task::noop_waker_ref())
    }

    #[test]
    fn a_stop_drains_then_closes_then_reports_once() {
        let t0 = Instant::now();
        let mut stop = Stopping::new(t0, Duration::from_secs(2), 5, 100, 3);
        let mut cx = cx();
        assert_eq!(stop.poll(&mut cx, t0, 5, true), Step::Wait);
        // The drain is over with 2 still held: they go, then connections close.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(stop.poll(&mut cx, t1, 2, true), Step::Abandon);
        stop.abandoned(2);
        // Peers get their moment to read, then connections close.
        assert_eq!(stop.poll(&mut cx, t1, 0, true), Step::Wait);
        let t2 = t1 + LINGER;
        assert_eq!(stop.poll(&mut cx, t2, 0, true), Step::Close);
        assert_eq!(stop.poll(&mut cx, t2, 0, true), Step::Wait);
        assert_eq!(stop.poll(&mut cx, t2 + CLOSE_GRACE, 0, true), Step::Report);
        assert_eq!(stop.poll(&mut cx, t2 + CLOSE_GRACE, 0, false), Step::Wait);
        // 3 forwarded; 2 dropped by the drain's end and 1 arrival refused since the start.
        let report = stop.report(t1, 103, 3 + 2 + 1);
        assert_eq!((report.held, report.sent_on, report.dropped, report.refused), (5, 3, 2, 1));
        assert_eq!(report.took, Duration::from_secs(2));
    }

    #[test]
    fn a_stop_ends_as_soon_as_nothing_is_held_and_nothing_is_connected() {
        let t0 = Instant::now();
        let mut stop = Stopping::new(t0, Duration::from_secs(60), 0, 0, 0);
        let mut cx = cx();
        assert_eq!(stop.poll(&mut cx, t0, 0, false), Step::Abandon);
        assert_eq!(stop.poll(&mut cx, t0, 0, false), Step::Close);
        assert_eq!(stop.poll(&mut cx, t0, 0, false), Step::Report);
    }
}
