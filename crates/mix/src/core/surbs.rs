//! The secrets kept for the SURBs of pending requests.
//!
//! A request sends several SURBs; the exit replies through each. The first reply to arrive
//! answers the request and forgets all its SURBs, so later copies are dropped as unknown. A
//! request that gets no reply by its deadline is forgotten too.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use mix_sphinx::{SurbId, SurbSecrets};

use super::RequestId;

#[derive(Debug)]
struct Pending {
    ids: Vec<SurbId>,
    sent_at: Instant,
}

/// A reply's SURB, matched to its request.
#[derive(Debug)]
pub(crate) struct Matched {
    pub(crate) request: RequestId,
    pub(crate) secrets: SurbSecrets,
    pub(crate) sent_at: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct SurbStore {
    by_id: HashMap<SurbId, (RequestId, SurbSecrets)>,
    requests: HashMap<RequestId, Pending>,
    deadlines: BinaryHeap<Reverse<(Instant, RequestId)>>,
}

impl SurbStore {
    pub(crate) fn pending(&self) -> usize {
        self.requests.len()
    }

    pub(crate) fn insert(
        &mut self,
        request: RequestId,
        secrets: Vec<SurbSecrets>,
        now: Instant,
        deadline: Instant,
    ) {
        let ids = secrets.iter().map(SurbSecrets::id).collect();
        for s in secrets {
            self.by_id.insert(s.id(), (request, s));
        }
        self.requests.insert(request, Pending { ids, sent_at: now });
        self.deadlines.push(Reverse((deadline, request)));
    }

    /// The request a reply's SURB belongs to; forgets every SURB of that request.
    pub(crate) fn take(&mut self, id: &SurbId) -> Option<Matched> {
        let (request, secrets) = self.by_id.remove(id)?;
        let pending = self.requests.remove(&request)?;
        for other in &pending.ids {
            self.by_id.remove(other);
        }
        Some(Matched { request, secrets, sent_at: pending.sent_at })
    }

    /// Forgets the requests whose deadline passed and returns them.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<RequestId> {
        let mut expired = Vec::new();
        while let Some(Reverse((deadline, request))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(pending) = self.requests.remove(&request) {
                for id in &pending.ids {
                    self.by_id.remove(id);
                }
                expired.push(request);
            }
        }
        expired
    }

    /// The earliest deadline of a request still pending.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        // Answered requests leave their deadline behind; drop those lazily.
        while let Some(Reverse((deadline, request))) = self.deadlines.peek().copied() {
            if self.requests.contains_key(&request) {
                return Some(deadline);
            }
            self.deadlines.pop();
        }
        None
    }
}
