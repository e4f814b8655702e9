//! Frames that arrive: to their stream by label, or opening a new one within the budgets.

use std::time::Instant;

use libp2p_identity::PeerId;

use super::stats::{mode_index, role_index};
use super::{Endpoint, EndpointEvent, Entry, RESET_ABANDONED, StreamId, lock};
use crate::labels::LabelUpdate;
use crate::{AcceptError, Connection, FrameDrop, Mode, Role, StreamConfig, frame};

impl Endpoint {
    /// A frame an exit (`from`) delivered: to its stream, or opening a new one. `from_member`
    /// says whether `from` is in the mix pool: honest openings come through exits, which are
    /// members, so strangers' openings get few slots (see
    /// [`super::Config::max_accepted_from_strangers`]).
    pub fn handle_frame(&mut self, now: Instant, from: PeerId, from_member: bool, frame: &[u8]) {
        if self.config.peer_frame_rate.is_some() && !self.peers.take_frame(from, now) {
            self.stats.drop("peer_frame_rate");
            return;
        }
        let Ok((label, _)) = frame::split(frame) else {
            self.stats.drop("malformed");
            return;
        };
        if let Some(&id) = self.labels.get(&label) {
            self.feed(id, |c| c.handle_frame(now, frame));
            return;
        }
        if self.keys.is_empty() {
            self.stats.drop("not_accepting");
            return;
        }
        let victim = match self.admit(now, from, from_member) {
            Ok(victim) => victim,
            Err(reason) => {
                self.stats.drop(reason);
                return;
            }
        };
        let config =
            StreamConfig { initial_loss: self.loss.estimate(), ..self.config.stream.clone() };
        let conn =
            match Connection::accept(&self.keys, frame, config, self.limits, now, &mut self.rng) {
                Ok(conn) => conn,
                Err(AcceptError::NotAnOpening) => {
                    self.stats.drop("unknown_stream");
                    return;
                }
                Err(AcceptError::Frame(_)) => {
                    // Junk, a frame of a stream that ended, or one under a retired key.
                    self.stats.drop("unknown_label");
                    return;
                }
            };
        let id = *conn.id();
        if self.streams.contains_key(&id) {
            // An opening of a stream this node holds, which overtook more frames than the
            // stream's label window covers.
            self.feed(id, |c| c.handle_opening(now, conn.opening_seq(), frame));
            return;
        }
        if let Err(reason) = self.remember_opening(now, &conn) {
            self.stats.drop(reason);
            return;
        }
        // Only now that the opening is valid and new does it take the slot.
        if let Some(victim) = victim {
            self.evict(victim);
        }
        self.insert_accepted(now, conn, from, !from_member);
    }

    /// Whether a new opening from `from` may cost a Diffie-Hellman and a slot now, and the
    /// stream whose slot it takes if every slot is held; the reason to drop it if not.
    fn admit(
        &mut self,
        now: Instant,
        from: PeerId,
        member: bool,
    ) -> Result<Option<StreamId>, &'static str> {
        let victim = if self.held[role_index(Role::Acceptor)] >= self.config.max_accepted {
            Some(self.stalled(now, !member).ok_or("too_many_streams")?)
        } else {
            None
        };
        if self.accepted_bytes >= self.config.max_accepted_bytes {
            return Err("memory_budget");
        }
        if !member {
            let from_this = self.streams.values().filter(|e| e.via == Some(from)).count();
            if from_this >= self.config.max_accepted_per_stranger {
                return Err("peer_streams");
            }
            let from_strangers = self.streams.values().filter(|e| e.via_stranger).count();
            if from_strangers >= self.config.max_accepted_from_strangers {
                return Err("stranger_streams");
            }
        }
        // Each unknown label costs a Diffie-Hellman per key: budget them, per peer (so that
        // one peer's junk does not use up everybody's) and in all.
        if !self.peers.take_opening(from, now) {
            return Err("peer_accept_rate");
        }
        if member {
            let cap = self.config.accept_rate.max(1.0);
            if !self.accept.take(cap, cap, now) {
                return Err("accept_rate");
            }
        } else {
            let cap = self.config.stranger_accept_rate.max(1.0);
            if !self.stranger_accept.take(cap, cap, now) {
                return Err("stranger_accept_rate");
            }
        }
        Ok(victim)
    }

    /// The accepted stream whose slot a new opening may take when all are held: one that
    /// ended and lingers, or else the one that has gone longest without a new block, if that
    /// is at least [`super::Config::stalled_after`]; strangers' streams go first. An opening a
    /// stranger delivered takes only a stranger's slot: strangers cannot take the others'.
    fn stalled(&self, now: Instant, by_stranger: bool) -> Option<StreamId> {
        let stall = self.config.stalled_after;
        self.streams
            .iter()
            .filter(|(_, e)| e.role == Role::Acceptor && !e.evicted)
            .filter(|(_, e)| e.via_stranger || !by_stranger)
            .filter(|(_, e)| {
                e.ended.is_some()
                    || e.progressed.is_some_and(|at| now.saturating_duration_since(at) >= stall)
            })
            .min_by_key(|(_, e)| (e.ended.is_none(), !e.via_stranger, e.progressed))
            .map(|(id, _)| *id)
    }

    /// Gives up accepted stream `id` for a new one: reset on this side (its application hears
    /// so; its opener does with the next SURB, when the stream is driven), its slot freed at
    /// once, counted.
    fn evict(&mut self, id: StreamId) {
        let Some(entry) = self.streams.get_mut(&id) else { return };
        entry.evicted = true;
        if entry.ended.is_none() {
            let mut shared = lock(&entry.shared);
            shared.conn.reset(RESET_ABANDONED);
            shared.wake();
            self.stats.drop("stalled_evicted");
        }
        self.held[role_index(Role::Acceptor)] -= 1;
        self.dirty.push(id);
    }

    /// Refuses an opening sealed too far from this node's clock, or seen within the
    /// freshness window; remembers it otherwise.
    fn remember_opening(&mut self, now: Instant, conn: &Connection) -> Result<(), &'static str> {
        let unix = self.unix(now).as_secs();
        let fresh = self.config.opening_freshness.as_secs();
        let ahead = self.config.opening_future_slack.as_secs();
        let opened = conn.opened_unix().unwrap_or(0);
        if opened < unix.saturating_sub(fresh) || opened > unix.saturating_add(ahead) {
            return Err("stale_opening");
        }
        // Sealed before this endpoint started: whether it was seen before a restart is not
        // known, so a replay of it would pass. Its stream, if any, died with the restart
        // anyway. After a restart, the run before may also have accepted openings dated up to
        // the slack ahead of its clock, so those are refused too.
        let refused_before = if self.config.after_restart {
            self.started_unix.saturating_add(ahead).saturating_add(1)
        } else {
            self.started_unix
        };
        if opened < refused_before {
            return Err("opened_before_start");
        }
        self.openings.forget_older_than(unix.saturating_sub(fresh));
        let short: [u8; 16] = conn.id().to_bytes()[..16].try_into().expect("16 bytes");
        if self.openings.contains(&short) {
            return Err("replayed_opening");
        }
        if self.openings.len() >= self.config.max_recent_openings {
            return Err("openings_full");
        }
        self.openings.insert(opened.max(unix), short);
        Ok(())
    }

    fn insert_accepted(&mut self, now: Instant, mut conn: Connection, via: PeerId, stranger: bool) {
        let id = *conn.id();
        conn.record_label_updates();
        for label in conn.expected_labels() {
            self.labels.insert(*label, id);
        }
        let mode = conn.mode();
        self.stats.accepted[mode_index(mode)] += 1;
        self.stats.active[role_index(Role::Acceptor)] += 1;
        self.stats.touch();
        let mut entry = Entry::new(conn, Role::Acceptor);
        entry.inbox = (mode == Mode::Message).then(Vec::new);
        entry.awaiting_data = Some(now);
        entry.progressed = Some(now);
        entry.via = Some(via);
        entry.via_stranger = stranger;
        self.streams.insert(id, entry);
        self.held[role_index(Role::Acceptor)] += 1;
        if mode == Mode::Stream {
            self.events.push_back(EndpointEvent::Incoming(id));
        }
        self.dirty.push(id);
    }

    /// Hands a frame to stream `id`'s connection, keeps the label index in step with the
    /// stream's window, and counts a refusal.
    fn feed(
        &mut self,
        id: StreamId,
        handle: impl FnOnce(&mut Connection) -> Result<(), FrameDrop>,
    ) {
        let Some(entry) = self.streams.get(&id) else { return };
        let share = self.rebuilt_share(entry.role);
        let mut shared = lock(&entry.shared);
        shared.conn.set_rebuilt_limit(share);
        let result = handle(&mut shared.conn);
        let updates = shared.conn.drain_label_updates();
        drop(shared);
        for update in updates {
            match update {
                LabelUpdate::Added(label) => {
                    self.labels.insert(label, id);
                }
                LabelUpdate::Removed(label) => {
                    if self.labels.get(&label) == Some(&id) {
                        self.labels.remove(&label);
                    }
                }
            }
        }
        if let Err(e) = result {
            self.stats.drop(drop_label(&e));
        }
        self.dirty.push(id);
    }

    /// How many rebuilt bytes each stream of `role` may hold: an equal share of
    /// [`super::Config::max_accepted_bytes`] among the streams of its role (the streams this
    /// node opened get as much again), and at least one block. A shard of a few bytes can
    /// rebuild a whole block, so without a share 256 streams each holding a window of blocks
    /// out of order would hold gigabytes for a few megabytes sent. A share shrinks as streams
    /// open, and streams holding more than their new share take no more blocks until they
    /// are under it: while streams open, all together may hold up to about twice the budget.
    fn rebuilt_share(&self, role: Role) -> usize {
        let streams = self.held[role_index(role)].max(1);
        (self.config.max_accepted_bytes / streams).max(crate::coding::MAX_BLOCK_BYTES)
    }

    /// A reply through one of the SURBs stream `id` sent: a frame back from its acceptor.
    pub fn handle_reply(&mut self, now: Instant, id: &StreamId, body: &[u8]) {
        let Some(entry) = self.streams.get(id) else {
            self.stats.drop("stream_ended");
            return;
        };
        let share = self.rebuilt_share(entry.role);
        let mut shared = lock(&entry.shared);
        // An acceptor can send compressed zeros back too.
        shared.conn.set_rebuilt_limit(share);
        let result = shared.conn.handle_frame(now, body);
        drop(shared);
        if let Err(e) = result {
            self.stats.drop(drop_label(&e));
        }
        self.dirty.push(*id);
    }
}

pub(super) fn drop_label(e: &FrameDrop) -> &'static str {
    match e {
        FrameDrop::Frame(crate::FrameError::Authentication) => "authentication",
        FrameDrop::Frame(_) => "malformed",
        FrameDrop::Replay => "replay",
        FrameDrop::UnknownLabel => "unknown_label",
        FrameDrop::TooOld => "too_old",
        FrameDrop::Protocol(_) => "protocol",
        FrameDrop::Shard(crate::ShardError::OverBudget) => "rebuilt_share",
        FrameDrop::Shard(_) => "shard",
    }
}
