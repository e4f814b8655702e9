//! The secrets kept for the SURBs this node handed out.
//!
//! Two kinds of entries share the store. A *request* sends several SURBs and the exit replies
//! through each: the first reply answers the request, and the ids of its other SURBs are
//! remembered until the request's deadline so that their copies are recognised as duplicates
//! rather than as unknown replies. A *bundle* is a set of SURBs the application carries in its
//! own messages (a stream's return channel): each SURB answers once, on its own, and the bundle
//! lives until its deadline or until every SURB was used. Entries whose deadline passed are
//! forgotten.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use mix_sphinx::{SurbId, SurbSecrets};

use super::RequestId;

/// How the SURBs of one entry answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replies {
    /// The first reply through any SURB answers; the others are duplicates.
    First,
    /// Every SURB answers once, separately.
    Each,
}

#[derive(Debug)]
struct Pending {
    ids: Vec<SurbId>,
    sent_at: Instant,
    deadline: Instant,
    replies: Replies,
    /// SURBs not used yet ([`Replies::Each`]).
    unused: usize,
}

/// What a reply's SURB id refers to.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A pending entry: this reply answers it.
    Matched(Matched),
    /// Another copy for a request already answered, or a SURB already used.
    Duplicate,
    /// Nothing we know (expired, or never ours).
    Unknown,
}

/// A reply's SURB, matched to its entry.
#[derive(Debug)]
pub(crate) struct Matched {
    pub(crate) request: RequestId,
    pub(crate) sent_at: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct SurbStore {
    by_id: HashMap<SurbId, (RequestId, SurbSecrets)>,
    requests: HashMap<RequestId, Pending>,
    deadlines: BinaryHeap<Reverse<(Instant, RequestId)>>,
    answered: HashMap<SurbId, Instant>,
    answered_deadlines: BinaryHeap<Reverse<(Instant, SurbId)>>,
    /// Entries of kind [`Replies::First`].
    first_kind: usize,
}

impl SurbStore {
    /// Requests awaiting their reply (bundles not counted).
    pub(crate) fn pending(&self) -> usize {
        self.first_kind
    }

    /// SURBs whose secrets are held, of requests and bundles.
    pub(crate) fn held(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn insert(
        &mut self,
        request: RequestId,
        secrets: Vec<SurbSecrets>,
        replies: Replies,
        now: Instant,
        deadline: Instant,
    ) {
        let ids: Vec<SurbId> = secrets.iter().map(SurbSecrets::id).collect();
        for s in secrets {
            self.by_id.insert(s.id(), (request, s));
        }
        if replies == Replies::First {
            self.first_kind += 1;
        }
        let unused = ids.len();
        self.requests.insert(request, Pending { ids, sent_at: now, deadline, replies, unused });
        self.deadlines.push(Reverse((deadline, request)));
    }

    /// The secrets of SURB `id` while its entry awaits a reply through it, without taking
    /// it: a reply that does not open (tampered on its way, or junk from the exit) must not
    /// use up the request, or it would end with neither a reply nor a timeout, and an honest
    /// copy through another SURB would be thrown away as a duplicate.
    pub(crate) fn peek(&self, id: &SurbId) -> Option<&SurbSecrets> {
        let (request, secrets) = self.by_id.get(id)?;
        self.requests.contains_key(request).then_some(secrets)
    }

    /// The entry a reply's SURB belongs to. For a request, the first reply takes it and all its
    /// SURBs, and the others become known duplicates until the deadline; in a bundle, only the
    /// SURB used is spent.
    pub(crate) fn take(&mut self, id: &SurbId) -> Lookup {
        if self.answered.remove(id).is_some() {
            return Lookup::Duplicate;
        }
        let Some((request, _)) = self.by_id.remove(id) else { return Lookup::Unknown };
        let Some(pending) = self.requests.get_mut(&request) else { return Lookup::Unknown };
        let sent_at = pending.sent_at;
        match pending.replies {
            Replies::Each => {
                pending.unused -= 1;
                self.answered.insert(*id, pending.deadline);
                self.answered_deadlines.push(Reverse((pending.deadline, *id)));
                if pending.unused == 0 {
                    self.requests.remove(&request);
                }
            }
            Replies::First => {
                let Some(pending) = self.requests.remove(&request) else { return Lookup::Unknown };
                self.first_kind -= 1;
                for other in pending.ids.iter().filter(|other| *other != id) {
                    self.by_id.remove(other);
                    self.answered.insert(*other, pending.deadline);
                    self.answered_deadlines.push(Reverse((pending.deadline, *other)));
                }
            }
        }
        Lookup::Matched(Matched { request, sent_at })
    }

    /// Forgets the entries whose deadline passed and returns them with their kind.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(RequestId, Replies)> {
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
                if pending.replies == Replies::First {
                    self.first_kind -= 1;
                }
                expired.push((request, pending.replies));
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

    /// The earliest deadline of an entry still pending.
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
