//! Moving one stream along: the application's message bytes, frames out, and the stream's
//! end.

use std::time::{Duration, Instant};

use libp2p_mix::{Destination, SendError};
use mix_sphinx::Surb;
use zeroize::Zeroizing;

use super::shared::Shared;
use super::stats::role_index;
use super::{Config, Endpoint};
use super::{
    EndpointEvent, EndpointStats, Entry, FRAMES_PER_DRIVE, IDLE_CHECK, MixTransport, Outcome,
    QUEUE_RETRY, RESET_ABANDONED, RESET_REFUSED, RESET_TOO_LARGE, StreamId, lock,
};
use crate::{ConnectionError, Role, SurbBytes, SurbSource};
use libp2p_identity::PeerId;
use libp2p_mix::SendOptions;

/// How long a stream reset on this side waits for a SURB to carry the reset, at most.
const RESET_LINGER: Duration = Duration::from_secs(5);

/// What sending left to do.
#[derive(Debug, Default)]
struct Sent {
    /// A stream waits for room in the mix node's queue.
    waiting: bool,
    /// The stream used its frame budget and has more.
    more: bool,
}

impl Endpoint {
    /// Moves stream `id` along: timers, the application's message bytes, frames out, and the
    /// end of the stream.
    pub(super) fn drive_one(
        &mut self,
        id: StreamId,
        now: Instant,
        queue_full: bool,
        transport: &mut impl MixTransport,
    ) {
        let Self { streams, stats, config, accepted_bytes, .. } = self;
        let Some(entry) = streams.get_mut(&id) else { return };
        let held = entry.shared.clone();
        let mut shared = lock(&held);
        let s = &mut *shared;
        s.conn.handle_timeout(now);
        move_message_bytes(entry, s, now, config, accepted_bytes, stats);
        let sent = match entry.role {
            Role::Opener => send_frames(entry, s, id, now, queue_full, transport, stats),
            Role::Acceptor => send_replies(s, now, transport, stats),
        };
        // What the application waits for may have happened.
        s.wake();
        let conn_stats = s.conn.stats();
        if conn_stats.recv.blocks > entry.stats.recv.blocks
            || conn_stats.send.blocks > entry.stats.send.blocks
        {
            entry.progressed = Some(now);
        }
        stats.progress(&entry.stats, &conn_stats, entry.role);
        entry.stats = conn_stats;
        if let Some(at) = entry.awaiting_data {
            if conn_stats.recv.shards > 0 {
                entry.awaiting_data = None;
            } else if now >= opening_ends(at, config.opening_deadline) {
                // An opening that brought nothing loses its slot.
                s.conn.reset(RESET_REFUSED);
                entry.awaiting_data = None;
                stats.drop("opening_idle");
            }
        }
        // What the stream holds now: its message so far and what it received unread.
        if entry.role == Role::Acceptor {
            let held = entry.inbox.as_ref().map_or(0, Vec::len) + s.conn.received_buffered();
            *accepted_bytes = (*accepted_bytes + held).saturating_sub(entry.charged);
            entry.charged = held;
            stats.accepted_bytes = *accepted_bytes;
        }
        let data_deadline = entry.awaiting_data.map(|at| opening_ends(at, config.opening_deadline));
        let error = s.conn.error().cloned();
        let timeout = match (s.conn.poll_timeout(now), data_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (finished, closed, eof) = (s.conn.is_finished(), s.conn.is_closed(), s.conn.is_eof());
        let reset_unsent = s.conn.reset_unsent();
        drop(shared);

        if (finished || error.is_some()) && entry.outgoing.take().is_some() {
            let result = error.clone().map_or(Ok(()), Err);
            self.events.push_back(EndpointEvent::Sent { id, result });
        }
        if eof && let Some(data) = entry.inbox.take() {
            self.events.push_back(EndpointEvent::Message { id, data });
        }
        if (closed || error.is_some()) && entry.ended.is_none() {
            let outcome = match &error {
                None => Outcome::Closed,
                Some(ConnectionError::Reset(_) | ConnectionError::LocallyReset(_)) => {
                    Outcome::Reset
                }
                Some(ConnectionError::Unacknowledged(_) | ConnectionError::IdleTimeout(_)) => {
                    Outcome::TimedOut
                }
                Some(_) => Outcome::Failed,
            };
            self.stats.end(outcome, &entry.stats);
            self.stats.active[role_index(entry.role)] -= 1;
            if error.is_none() && entry.role == Role::Opener {
                // Streams teach the node what the network loses; new streams start from it.
                self.loss.learn(&entry.stats);
                self.stats.loss = self.loss.estimate();
            }
            entry.ended = Some(now);
        }
        // A stream that ended well stays a while to acknowledge late retransmissions: the
        // acknowledgement of the peer's last block may be lost, and the peer, still sending
        // it again, would otherwise wait in vain until its idle timeout.
        // An application's reset that has no SURB to go out in yet waits a little for one:
        // the opener sends some with every frame until it hears back. The endpoint's own
        // refusals free the slot at once, or an opener that never sends a SURB would hold it.
        let linger = match (&error, reset_unsent) {
            (None, _) => self.config.linger,
            // A stream evicted for a new one no longer holds a slot: its opener may as well
            // hear why.
            (Some(_), Some(code))
                if entry.evicted
                    || ![RESET_REFUSED, RESET_TOO_LARGE, RESET_ABANDONED].contains(&code) =>
            {
                self.config.linger.min(RESET_LINGER)
            }
            (Some(_), _) => Duration::ZERO,
        };
        let next = match entry.ended {
            Some(t) if now >= t + linger => {
                self.remove(id);
                return;
            }
            // Still answering retransmissions while lingering.
            Some(t) => timeout.map_or(t + linger, |at| at.min(t + linger)),
            None => timeout.unwrap_or(now + IDLE_CHECK),
        };
        // A stream that waits for room in the mix node's queue looks again shortly: not
        // later (its retransmission timer may be seconds away), and not now (its timers due
        // now wait with it; it would spin).
        let next = if sent.waiting { now + QUEUE_RETRY } else { next };
        if sent.more {
            self.again.push(id);
        }
        self.set_deadline(id, Some(next));
    }

    pub(super) fn remove(&mut self, id: StreamId) {
        if let Some(gone) = self.streams.remove(&id) {
            if !gone.evicted {
                self.held[role_index(gone.role)] -= 1;
            }
            self.accepted_bytes = self.accepted_bytes.saturating_sub(gone.charged);
            self.stats.accepted_bytes = self.accepted_bytes;
            let shared = lock(&gone.shared);
            for label in shared.conn.expected_labels() {
                if self.labels.get(label) == Some(&id) {
                    self.labels.remove(label);
                }
            }
        }
        self.set_deadline(id, None);
    }

    fn set_deadline(&mut self, id: StreamId, at: Option<Instant>) {
        if let Some(old) = self.deadline_of.remove(&id) {
            self.deadlines.remove(&(old, id));
        }
        if let Some(at) = at {
            self.deadlines.insert((at, id));
            self.deadline_of.insert(id, at);
        }
    }
}

/// A message being sent takes what room its connection has; a message being received, or a
/// stream the application let go of, gives up what arrived.
fn move_message_bytes(
    entry: &mut Entry,
    s: &mut Shared,
    now: Instant,
    config: &Config,
    accepted_bytes: &mut usize,
    stats: &mut EndpointStats,
) {
    if let Some((data, offset)) = entry.outgoing.as_mut() {
        if let Ok(n) = s.conn.write(now, &data[*offset..]) {
            *offset += n;
        }
        if *offset == data.len() {
            s.conn.finish();
        }
    }
    if !(s.dropped || entry.inbox.is_some()) {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match s.conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Some(inbox) = entry.inbox.as_mut() else { continue };
        let over = if inbox.len() + n > config.max_message_len {
            Some("message_too_large")
        } else if *accepted_bytes + n > config.max_accepted_bytes {
            // All accepted messages together hold as much as they may.
            Some("memory_budget")
        } else {
            None
        };
        if let Some(reason) = over {
            s.conn.reset(RESET_TOO_LARGE);
            entry.inbox = None;
            stats.drop(reason);
            break;
        }
        *accepted_bytes += n;
        entry.charged += n;
        inbox.extend_from_slice(&buf[..n]);
    }
}

/// Opener: frames out as one-way mix messages, up to the frame budget.
fn send_frames(
    entry: &mut Entry,
    s: &mut Shared,
    id: StreamId,
    now: Instant,
    queue_full: bool,
    transport: &mut impl MixTransport,
    stats: &mut EndpointStats,
) -> Sent {
    let mut sent = Sent::default();
    let Some(dest) = entry.dest.clone() else { return sent };
    let avoid = match &dest {
        Destination::Peer { peer_id, .. } => *peer_id,
        Destination::MixNode(peer_id) => *peer_id,
    };
    for _ in 0..FRAMES_PER_DRIVE {
        let frame = match entry.unsent.take() {
            Some(frame) => frame,
            None if queue_full => {
                sent.waiting = true;
                return sent;
            }
            None => {
                let mut source =
                    Surbs { transport: &mut *transport, id, avoid, options: entry.options, now };
                match s.conn.poll_transmit(now, &mut source) {
                    Some(frame) => frame,
                    None => return sent,
                }
            }
        };
        match transport.send(now, &dest, &frame, entry.options) {
            Ok(()) => entry.sent_any = true,
            Err(
                SendError::QueueFull(_)
                | SendError::RateLimited(_)
                | SendError::TooManySurbs(_)
                | SendError::TooManyPendingRequests(_),
            ) => {
                entry.unsent = Some(frame);
                sent.waiting = true;
                return sent;
            }
            Err(SendError::NotMixing) => {
                s.conn.fail(ConnectionError::Transport(SendError::NotMixing.to_string()));
                return sent;
            }
            Err(e) if !entry.sent_any => {
                // No path at all: say so now rather than after every retry.
                s.conn.fail(ConnectionError::Transport(e.to_string()));
                return sent;
            }
            Err(e) => {
                // A path may come back; the stream resends what this frame carried.
                tracing::debug!(%e, "stream frame not sent");
                stats.drop("no_path");
            }
        }
    }
    // Let the mix node put these on the wire before building more.
    sent.more = true;
    sent
}

/// Acceptor: frames back through the opener's SURBs, up to the frame budget, skipping SURBs
/// whose first hop is down here.
fn send_replies(
    s: &mut Shared,
    now: Instant,
    transport: &mut impl MixTransport,
    stats: &mut EndpointStats,
) -> Sent {
    let mut budget = FRAMES_PER_DRIVE;
    while budget > 0
        && let Some((surb, frame)) = s.conn.poll_transmit_reply(now)
    {
        budget -= 1;
        let Ok(surb) = Surb::from_slice(&surb) else {
            stats.drop("bad_surb");
            continue;
        };
        let Ok((_, first_hop)) = surb.first_hop().decode() else {
            stats.drop("bad_surb");
            continue;
        };
        if transport.is_suspended(&first_hop) {
            // Its first hop is down here: the frame would be lost (the stream sends it again
            // through another SURB).
            stats.drop("surb_hop_down");
            continue;
        }
        if let Err(e) = transport.reply(now, surb, &frame) {
            tracing::debug!(%e, "reply frame not sent");
            stats.drop("reply_failed");
        }
    }
    Sent { waiting: false, more: budget == 0 }
}

/// SURBs for one opener's frames, from the mix node.
struct Surbs<'a, T> {
    transport: &'a mut T,
    id: StreamId,
    avoid: PeerId,
    options: SendOptions,
    now: Instant,
}

impl<T: MixTransport> SurbSource for Surbs<'_, T> {
    fn make_surbs(&mut self, count: usize) -> Option<(Vec<SurbBytes>, Duration)> {
        let (surbs, expires) = self
            .transport
            .surb_bundle(self.now, &self.id, count, &self.avoid, self.options)
            .ok()?;
        let lifetime = expires.saturating_duration_since(self.now);
        Some((surbs.iter().map(|s| Zeroizing::new(s.to_bytes().to_vec())).collect(), lifetime))
    }
}

/// When an opening that began `at` loses its slot; a deadline too long for `Instant` (a
/// setting of years) lasts a year, as the mix layer's penalty does.
fn opening_ends(at: Instant, deadline: Duration) -> Instant {
    at.checked_add(deadline).unwrap_or_else(|| at + Duration::from_secs(365 * 86_400))
}
