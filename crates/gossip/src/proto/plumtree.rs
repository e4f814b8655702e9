//! PlumTree broadcast for one topic ("Epidemic Broadcast Trees", Leitão, Pereira, Rodrigues,
//! SRDS 2007), without the hop counter.
//!
//! Neighbours are *eager* (they get payloads) or *lazy* (they get ids, in IHAVE). A payload
//! that arrives twice prunes the second sender to lazy, so the eager links settle into a
//! spanning tree; an id announced in an IHAVE whose payload does not follow in time is asked
//! for with GRAFT, which makes the announcer eager again and repairs the tree. New neighbours
//! start eager.
//!
//! The paper's tree optimisation compares hop counts carried by every message; a hop count
//! tells a neighbour how far it is from the publisher (0: it is the publisher), so it is not
//! carried and the optimisation is left out. Hop counts are measured by the simulator, outside
//! the protocol.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use super::config::BroadcastConfig;
use super::message::{Body, MessageId, TopicId};
use super::{Event, Outbox, PeerIdentity, Timer, TimerKind};

/// Broadcast state of one topic.
#[derive(Debug)]
pub(crate) struct Broadcast<P> {
    topic: TopicId,
    eager: BTreeSet<P>,
    lazy: BTreeSet<P>,
    /// Message ids delivered, with when (duplicates are dropped until they are forgotten).
    seen: HashMap<MessageId, Instant>,
    seen_order: VecDeque<(Instant, MessageId)>,
    /// Payloads kept to answer GRAFTs.
    cache: HashMap<MessageId, Vec<u8>>,
    cache_order: VecDeque<(Instant, MessageId)>,
    /// Ids announced to us whose payload has not arrived, with who announced them.
    missing: HashMap<MessageId, VecDeque<P>>,
    /// IHAVEs to send at the next dispatch.
    lazy_queue: BTreeMap<P, Vec<MessageId>>,
    dispatch_armed: bool,
    evict_armed: bool,
}

pub(crate) struct Ctx<'a, P> {
    pub(crate) config: &'a BroadcastConfig,
    pub(crate) out: &'a mut Outbox<P>,
    pub(crate) now: Instant,
}

/// What a received payload turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    New,
    Duplicate,
}

impl<P: PeerIdentity> Broadcast<P> {
    pub(crate) fn new(topic: TopicId) -> Self {
        Self {
            topic,
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            missing: HashMap::new(),
            lazy_queue: BTreeMap::new(),
            dispatch_armed: false,
            evict_armed: false,
        }
    }

    pub(crate) fn eager(&self) -> impl Iterator<Item = &P> {
        self.eager.iter()
    }

    pub(crate) fn has_seen(&self, id: &MessageId) -> bool {
        self.seen.contains_key(id)
    }

    fn is_neighbor(&self, peer: &P) -> bool {
        self.eager.contains(peer) || self.lazy.contains(peer)
    }

    /// Makes a neighbour eager (messages from peers that are not neighbours change nothing).
    fn make_eager(&mut self, peer: P) {
        if self.lazy.remove(&peer) {
            self.eager.insert(peer);
        }
    }

    /// A new neighbour starts eager, and hears of the messages of the last moments: one that
    /// arrives just after a broadcast passed (a node replacing neighbours that died, say)
    /// grafts what it missed.
    pub(crate) fn neighbor_up(&mut self, ctx: &mut Ctx<'_, P>, peer: P) {
        self.lazy.remove(&peer);
        self.eager.insert(peer);
        let since = ctx.now.checked_sub(ctx.config.announce_recent);
        let recent: Vec<MessageId> = self
            .cache_order
            .iter()
            .rev()
            .take_while(|(at, _)| since.is_none_or(|s| *at >= s))
            .map(|(_, id)| *id)
            .filter(|id| self.cache.contains_key(id))
            .take(ctx.config.max_ihave * 4)
            .collect();
        if !recent.is_empty() {
            self.lazy_queue.entry(peer).or_default().extend(recent);
            if !self.dispatch_armed {
                self.dispatch_armed = true;
                ctx.out.timer(
                    ctx.now + ctx.config.ihave_delay,
                    Timer::new(self.topic, TimerKind::Dispatch),
                );
            }
        }
    }

    pub(crate) fn neighbor_down(&mut self, peer: P) {
        self.eager.remove(&peer);
        self.lazy.remove(&peer);
        self.lazy_queue.remove(&peer);
        for announcers in self.missing.values_mut() {
            announcers.retain(|p| *p != peer);
        }
    }

    fn remember(&mut self, ctx: &mut Ctx<'_, P>, id: MessageId, data: Vec<u8>) {
        self.seen.insert(id, ctx.now);
        self.seen_order.push_back((ctx.now, id));
        self.cache.insert(id, data);
        self.cache_order.push_back((ctx.now, id));
        self.missing.remove(&id);
        while self.cache.len() > ctx.config.max_cached.max(1) {
            let Some((_, old)) = self.cache_order.pop_front() else { break };
            self.cache.remove(&old);
        }
        while self.seen.len() > ctx.config.max_seen.max(1) {
            let Some((_, old)) = self.seen_order.pop_front() else { break };
            self.seen.remove(&old);
        }
        if !self.evict_armed {
            self.evict_armed = true;
            let at = ctx.now + ctx.config.cache_retention.min(ctx.config.seen_retention) / 4;
            ctx.out.timer(at, Timer::new(self.topic, TimerKind::Evict));
        }
    }

    /// Pushes a message this node has (its own, or just received from `from`): payload to
    /// eager neighbours, ids to lazy ones.
    fn push(&mut self, ctx: &mut Ctx<'_, P>, id: MessageId, data: &[u8], from: Option<P>) {
        for peer in self.eager.iter().copied().filter(|p| Some(*p) != from) {
            ctx.out.send_payload(peer, self.topic, Body::Gossip { id, data: data.to_vec() });
        }
        for peer in self.lazy.iter().copied().filter(|p| Some(*p) != from) {
            self.lazy_queue.entry(peer).or_default().push(id);
        }
        if !self.lazy_queue.is_empty() && !self.dispatch_armed {
            self.dispatch_armed = true;
            ctx.out.timer(
                ctx.now + ctx.config.ihave_delay,
                Timer::new(self.topic, TimerKind::Dispatch),
            );
        }
    }

    /// Broadcasts a message as if this node had just received it from nobody.
    pub(crate) fn broadcast(&mut self, ctx: &mut Ctx<'_, P>, id: MessageId, data: Vec<u8>) -> bool {
        if self.seen.contains_key(&id) {
            return false;
        }
        self.push(ctx, id, &data, None);
        self.remember(ctx, id, data);
        true
    }

    pub(crate) fn on_gossip(
        &mut self,
        ctx: &mut Ctx<'_, P>,
        from: P,
        id: MessageId,
        data: Vec<u8>,
    ) -> Received {
        if self.seen.contains_key(&id) {
            // A second copy: that link need not carry payloads.
            if self.eager.remove(&from) {
                self.lazy.insert(from);
            }
            ctx.out.send(from, self.topic, Body::Prune);
            return Received::Duplicate;
        }
        self.make_eager(from);
        ctx.out.event(Event::Received { topic: self.topic, id, data: data.clone(), from });
        self.push(ctx, id, &data, Some(from));
        self.remember(ctx, id, data);
        Received::New
    }

    pub(crate) fn on_prune(&mut self, from: P) {
        if self.eager.remove(&from) {
            self.lazy.insert(from);
        }
    }

    pub(crate) fn on_ihave(&mut self, ctx: &mut Ctx<'_, P>, from: P, ids: Vec<MessageId>) {
        if !self.is_neighbor(&from) {
            return;
        }
        for id in ids {
            if self.seen.contains_key(&id) {
                continue;
            }
            if !self.missing.contains_key(&id) && self.missing.len() >= ctx.config.max_missing {
                continue;
            }
            let announcers = self.missing.entry(id).or_default();
            let first = announcers.is_empty();
            if !announcers.contains(&from) {
                announcers.push_back(from);
            }
            if first {
                ctx.out.timer(
                    ctx.now + ctx.config.graft_timeout,
                    Timer::new(self.topic, TimerKind::Graft(id)),
                );
            }
        }
    }

    /// The payload of `id` did not follow its announcement: ask an announcer for it.
    pub(crate) fn on_graft_timer(&mut self, ctx: &mut Ctx<'_, P>, id: MessageId) {
        if self.seen.contains_key(&id) {
            return;
        }
        let Some(announcers) = self.missing.get_mut(&id) else { return };
        let Some(peer) = announcers.pop_front() else {
            self.missing.remove(&id);
            return;
        };
        let more = !announcers.is_empty();
        self.make_eager(peer);
        ctx.out.send(peer, self.topic, Body::Graft { id: Some(id) });
        if more {
            ctx.out.timer(
                ctx.now + ctx.config.graft_retry,
                Timer::new(self.topic, TimerKind::Graft(id)),
            );
        }
    }

    pub(crate) fn on_graft(&mut self, ctx: &mut Ctx<'_, P>, from: P, id: Option<MessageId>) {
        if !self.is_neighbor(&from) {
            return;
        }
        self.make_eager(from);
        if let Some(data) = id.and_then(|id| self.cache.get(&id).map(|d| (id, d.clone()))) {
            // At once: the requester learns only that this node has the message, which its
            // announcement already told, and a delayed answer races the eager copy.
            ctx.out.send(from, self.topic, Body::Gossip { id: data.0, data: data.1 });
        }
    }

    /// Sends the IHAVEs collected since the last dispatch.
    pub(crate) fn on_dispatch(&mut self, ctx: &mut Ctx<'_, P>) {
        self.dispatch_armed = false;
        for (peer, ids) in std::mem::take(&mut self.lazy_queue) {
            if !self.is_neighbor(&peer) {
                continue;
            }
            // Announcements leave through the forwarding scheduler too: sent at once, they
            // would time the message at its publisher however its payload is delayed.
            for chunk in ids.chunks(ctx.config.max_ihave.max(1)) {
                ctx.out.send_payload(peer, self.topic, Body::IHave { ids: chunk.to_vec() });
            }
        }
    }

    /// Forgets payloads and ids past their retention.
    pub(crate) fn on_evict(&mut self, ctx: &mut Ctx<'_, P>) {
        self.evict_armed = false;
        while let Some(&(at, id)) = self.cache_order.front() {
            if ctx.now.saturating_duration_since(at) < ctx.config.cache_retention {
                break;
            }
            self.cache_order.pop_front();
            self.cache.remove(&id);
        }
        while let Some(&(at, id)) = self.seen_order.front() {
            if ctx.now.saturating_duration_since(at) < ctx.config.seen_retention {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&id);
        }
        self.missing.retain(|id, a| !a.is_empty() && !self.seen.contains_key(id));
        if !self.seen_order.is_empty() {
            self.evict_armed = true;
            let at = ctx.now + ctx.config.cache_retention.min(ctx.config.seen_retention) / 4;
            ctx.out.timer(at, Timer::new(self.topic, TimerKind::Evict));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Outbox;

    #[test]
    fn a_flood_cannot_grow_the_caches_past_their_bounds() {
        let config = BroadcastConfig {
            max_cached: 100,
            max_seen: 300,
            max_missing: 50,
            ..Default::default()
        };
        let topic = TopicId([0; 32]);
        let mut out = Outbox::new();
        let mut b = Broadcast::<u32>::new(topic);
        let mut ctx = Ctx { config: &config, out: &mut out, now: Instant::now() };
        b.neighbor_up(&mut ctx, 1);
        let id = |i: u32| MessageId::of(&topic, &i.to_be_bytes());
        for i in 0..1000 {
            assert_eq!(b.on_gossip(&mut ctx, 1, id(i), vec![0; 100]), Received::New);
        }
        assert_eq!((b.cache.len(), b.cache_order.len()), (100, 100));
        assert_eq!((b.seen.len(), b.seen_order.len()), (300, 300));
        // The newest are what is kept: recent duplicates are still recognised.
        assert_eq!(b.on_gossip(&mut ctx, 1, id(999), vec![0; 100]), Received::Duplicate);
        assert!(b.cache.contains_key(&id(950)) && !b.cache.contains_key(&id(10)));
        let announced: Vec<MessageId> = (5000..5200).map(id).collect();
        for chunk in announced.chunks(12) {
            b.on_ihave(&mut ctx, 1, chunk.to_vec());
        }
        assert_eq!(b.missing.len(), 50);
    }
}
