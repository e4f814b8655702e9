//! The SURBs of messages this node delivered as the exit, held until the answer comes (from
//! the destination through the driver, or from the local application) or their time is up.
//! The driver and the application name a delivery by its id and never touch a SURB.

use std::collections::BTreeMap;
use std::time::Instant;

use mix_sphinx::Surb;

/// Names a message this node delivered as the exit, to answer it ([`super::MixCore::answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(u64);

/// Deliveries awaiting their answer, oldest first (ids grow).
#[derive(Debug, Default)]
pub(super) struct HeldReplies {
    held: BTreeMap<DeliveryId, (Vec<Surb>, Instant)>,
    next: u64,
}

impl HeldReplies {
    /// A fresh id for a delivery without SURBs.
    pub(super) fn next_id(&mut self) -> DeliveryId {
        let id = DeliveryId(self.next);
        self.next += 1;
        id
    }

    /// Holds `surbs` until `expires` under a fresh id; past `max`, the oldest held go first.
    /// Returns the id and how many were forgotten to make room.
    pub(super) fn hold(
        &mut self,
        surbs: Vec<Surb>,
        expires: Instant,
        max: usize,
    ) -> (DeliveryId, u64) {
        let mut forgotten = 0;
        while self.held.len() >= max.max(1) {
            self.held.pop_first();
            forgotten += 1;
        }
        let id = self.next_id();
        self.held.insert(id, (surbs, expires));
        (id, forgotten)
    }

    /// The SURBs of `id`, if still held and not expired at `now`.
    pub(super) fn take(&mut self, id: DeliveryId, now: Instant) -> Option<Vec<Surb>> {
        let (surbs, expires) = self.held.remove(&id)?;
        (now < expires).then_some(surbs)
    }

    pub(super) fn forget(&mut self, id: DeliveryId) -> bool {
        self.held.remove(&id).is_some()
    }

    /// Forgets those expired at `now`; returns how many.
    pub(super) fn expire(&mut self, now: Instant) -> u64 {
        let before = self.held.len();
        self.held.retain(|_, (_, expires)| *expires > now);
        (before - self.held.len()) as u64
    }

    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}
