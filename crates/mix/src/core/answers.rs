//! The SURBs of messages this node delivered as the exit, held until the answer comes (from
//! the destination through the driver, or from the local application) or their time is up.
//! The driver and the application name a delivery by its id and never touch a SURB.
//!
//! Two budgets, so that one kind cannot push out the other: deliveries to destinations (exit
//! jobs, which the driver bounds and ends itself) are never pushed out, and past their budget
//! a new one's SURBs are not kept; deliveries to this node (answered by the application, or
//! never) push out the oldest of their own kind.

use std::collections::BTreeMap;
use std::time::Instant;

use mix_sphinx::Surb;

/// Names a message this node delivered as the exit, to answer it ([`super::MixCore::answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(u64);

/// Where a delivery goes, for its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// To a destination (an exit job).
    Exit,
    /// To this node's application.
    Local,
}

/// What holding a delivery's SURBs did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Held {
    /// Held; this many older ones were pushed out for it.
    Yes { evicted: u64 },
    /// The budget was full: not held (the delivery gets no answer).
    Refused,
}

type Pool = BTreeMap<DeliveryId, (Vec<Surb>, Instant)>;

/// Deliveries awaiting their answer, oldest first in each pool (ids grow, and every entry
/// waits the same time, so the oldest also expires first).
#[derive(Debug)]
pub(super) struct HeldReplies {
    exits: Pool,
    local: Pool,
    next: u64,
}

impl HeldReplies {
    /// Ids start at `offset` (random), so that one node's ids mean nothing to another's.
    pub(super) fn starting_at(offset: u64) -> Self {
        Self { exits: Pool::new(), local: Pool::new(), next: offset }
    }

    /// A fresh id for a delivery without SURBs.
    pub(super) fn next_id(&mut self) -> DeliveryId {
        let id = DeliveryId(self.next);
        self.next = self.next.wrapping_add(1);
        id
    }

    /// Holds `surbs` until `expires` under `id`, within `max` of `kind`.
    pub(super) fn hold(
        &mut self,
        id: DeliveryId,
        kind: Kind,
        surbs: Vec<Surb>,
        expires: Instant,
        max: usize,
    ) -> Held {
        let max = max.max(1);
        let pool = match kind {
            Kind::Exit => &mut self.exits,
            Kind::Local => &mut self.local,
        };
        let mut evicted = 0;
        while pool.len() >= max {
            if kind == Kind::Exit {
                return Held::Refused;
            }
            pool.pop_first();
            evicted += 1;
        }
        pool.insert(id, (surbs, expires));
        Held::Yes { evicted }
    }

    /// The SURBs of `id`, if still held and not expired at `now`.
    pub(super) fn take(&mut self, id: DeliveryId, now: Instant) -> Option<Vec<Surb>> {
        let (surbs, expires) = self.exits.remove(&id).or_else(|| self.local.remove(&id))?;
        (now < expires).then_some(surbs)
    }

    pub(super) fn forget(&mut self, id: DeliveryId) -> bool {
        self.exits.remove(&id).is_some() || self.local.remove(&id).is_some()
    }

    /// Forgets those expired at `now`; returns how many.
    pub(super) fn expire(&mut self, now: Instant) -> u64 {
        let mut expired = 0;
        for pool in [&mut self.exits, &mut self.local] {
            while pool.first_key_value().is_some_and(|(_, (_, expires))| *expires <= now) {
                pool.pop_first();
                expired += 1;
            }
        }
        expired
    }

    /// When the next one expires.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [&self.exits, &self.local]
            .into_iter()
            .filter_map(|pool| pool.first_key_value().map(|(_, (_, expires))| *expires))
            .min()
    }

    pub(super) fn len(&self) -> usize {
        self.exits.len() + self.local.len()
    }
}
