//! The secrets kept for the SURBs of pending requests.
//!
//! A request sends several SURBs; the exit replies through each. The first reply to arrive
//! answers the request; the ids of its other SURBs are remembered until the request's deadline
//! so that their copies are recognised as duplicates rather than as unknown replies. A request
//! that gets no reply by its deadline is forgotten.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use mix_sphinx::{SurbId, SurbSecrets};

use super::RequestId;

#[derive(Debug)]
struct Pending {
    ids: Vec<SurbId>,
    sent_at: Instant,
    deadline: Instant,
}

/// What a reply's SURB id refers to.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A pending request: this reply answers it.
    Matched(Box<Matched>),
    /// Another copy for a request already answered.
    Duplicate,
    /// Nothing we know (expired, or never ours).
    Unknown,
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
    answered: HashMap<SurbId, Instant>,
    answered_deadlines: BinaryHeap<Reverse<(Instant, SurbId)>>,
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
        self.requests.insert(request, Pending { ids, sent_at: now, deadline });
        self.deadlines.push(Reverse((deadline, request)));
    }

    /// The request a reply's SURB belongs to. The first reply takes the request and all its
    /// SURBs; the others become known duplicates until the deadline.
    pub(crate) fn take(&mut self, id: &SurbId) -> Lookup {
        if self.answered.remove(id).is_some() {
            return Lookup::Duplicate;
        }
        let Some((request, secrets)) = self.by_id.remove(id) else { return Lookup::Unknown };
        let Some(pending) = self.requests.remove(&request) else { return Lookup::Unknown };
        for other in pending.ids.iter().filter(|other| *other != id) {
            self.by_id.remove(other);
            self.answered.insert(*other, pending.deadline);
            self.answered_deadlines.push(Reverse((pending.deadline, *other)));
        }
        Lookup::Matched(Box::new(Matched { request, secrets, sent_at: pending.sent_at }))
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
        while let Some(Reverse((deadline, id))) = self.answered_deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.answered_deadlines.pop();
            self.answered.remove(&id);
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
