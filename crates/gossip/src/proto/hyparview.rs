//! HyParView membership for one topic (Leitão, Pereira, Rodrigues, DSN 2007), with an
//! admission filter at every point where a peer can become a neighbour, and partial
//! rotation.
//!
//! A small *active view* of neighbours (symmetric, kept over live connections) carries the
//! broadcasts; a larger *passive view* of contacts, refreshed by shuffles (random walks that
//! exchange contacts), replaces neighbours that fail. Joins spread by random walks
//! (`ForwardJoin`); the joiner enters an active view at the walk's end and passive views on
//! the way. The transport is the failure detector: a closed connection removes a neighbour.
//!
//! The [`PeerFilter`] decides who may become a neighbour (join, forward join, neighbour
//! request, refill) and who may be kept as a contact (shuffles, joins); replacements are drawn
//! uniformly among eligible contacts, never by preference. A refused peer is told
//! `Disconnect { alive: true }` and nobody is evicted for it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::config::{MembershipConfig, RotationConfig};
use super::message::{Body, TopicId};
use super::neighbourhood::Neighbourhood;
use super::{DownReason, Event, IgnoreReason, Outbox, PeerFilter, PeerIdentity, Timer, TimerKind};

/// Shuffles awaiting a reply at most (one starts per shuffle interval).
const MAX_OUTSTANDING_SHUFFLES: usize = 4;
/// Peers whose request budgets are tracked at most; budgets that are full again are
/// forgotten first.
const MAX_TRACKED_PEERS: usize = 4096;
/// How long a peer that did not answer (or whose connection failed) is left out of the
/// neighbourhood's horizon, unless it speaks first. Dead nodes stay in a directory for a
/// while; skipping them widens the horizon to live ones, and both ends widen alike.
const UNREACHABLE_FOR: Duration = Duration::from_secs(300);
/// Joins sent again at most to a bootstrap peer that has not taken this node (see
/// `Membership::rejoin_short`).
const MAX_JOINS_PER_BOOTSTRAP: u8 = 4;

/// Membership of one topic.
#[derive(Debug)]
pub(crate) struct Membership<P> {
    topic: TopicId,
    me: P,
    active: Vec<P>,
    passive: Vec<P>,
    /// Neighbour requests sent and not yet answered: when, and whether an accept may evict
    /// a neighbour to make room.
    pending: HashMap<P, (Instant, bool)>,
    /// Contacts that refused to be neighbours lately, and until when they are not asked again
    /// (a full node refuses low-priority requests; asking again at once would only churn).
    refused: HashMap<P, Instant>,
    /// Whether a neighbour-timeout timer is armed (one at a time).
    timeout_armed: bool,
    /// When a member from outside the neighbourhood was last taken in (see
    /// `takes_outsider`).
    outsider_taken: Option<Instant>,
    /// Neighbours rotated out lately, and until when they are not taken back unless they have
    /// no neighbour at all (they would otherwise ask at once and undo the rotation).
    rotated_out: HashMap<P, Instant>,
    /// Peers to join through again if isolated.
    bootstrap: Vec<P>,
    isolated: bool,
    /// When the rejoin timer is due, if armed (an earlier arming supersedes a later one).
    rejoin_at: Option<Instant>,
    /// Rejoins in a row made while short of neighbours (not isolated): each waits twice as
    /// long as the last, up to a shuffle interval.
    short_rejoins: u32,
    /// Bootstrap peers this node joined through that have not been its neighbour since (see
    /// `rejoin_short`).
    unjoined: Vec<BootstrapJoin<P>>,
    /// Shuffles sent and not answered: nonce, until when a reply is taken, contacts offered,
    /// and the neighbour the walk went through (its reply is charged to it: every node on
    /// the walk saw the nonce).
    shuffles: Vec<(u64, Instant, usize, P)>,
    /// Who placed each passive contact (entries of contacts no longer held are pruned).
    introduced_by: HashMap<P, P>,
    /// Each peer's budget of membership requests, and of walks (shuffles and forward
    /// joins) it hands over: tokens, and when they were counted.
    budgets: HashMap<(P, bool), (f64, Instant)>,
    /// When an accepted neighbour last evicted another (see `walk_eviction_interval`).
    walk_evicted: Option<Instant>,
    /// The neighbour that last took another's place (the next to go when one must).
    intruder: Option<P>,
    /// Who may be a neighbour, when the application set a directory.
    hood: Option<Neighbourhood<P>>,
    /// Peers that did not answer or whose connection failed, until when they are skipped.
    unreachable: HashMap<P, Instant>,
}

/// A bootstrap peer that has not taken this node as a neighbour yet.
#[derive(Debug)]
struct BootstrapJoin<P> {
    peer: P,
    /// Joins sent again to it.
    sent: u8,
}

impl<P> BootstrapJoin<P> {
    fn new(peer: P) -> Self {
        Self { peer, sent: 0 }
    }
}

/// What happened to the active view, for the broadcast layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change<P> {
    Up(P),
    Down(P),
}

/// What a membership step needs besides the state: settings, the filter, the RNG, the outbox.
pub(crate) struct Ctx<'a, P, R> {
    pub(crate) config: &'a MembershipConfig,
    pub(crate) filter: &'a dyn PeerFilter<P>,
    pub(crate) rng: &'a mut R,
    pub(crate) out: &'a mut Outbox<P>,
    pub(crate) now: Instant,
    /// Neighbour changes, for the broadcast layer.
    pub(crate) changes: &'a mut Vec<Change<P>>,
    /// Members vouched for by the application (see `State::set_directory`); free active
    /// slots are filled from it when it is not empty.
    pub(crate) directory: &'a [P],
}

impl<P: PeerIdentity, R: rand::Rng> Ctx<'_, P, R> {
    fn pick<'v>(&mut self, from: &'v [P]) -> Option<&'v P> {
        (!from.is_empty()).then(|| &from[self.rng.random_range(0..from.len())])
    }
}

impl<P: PeerIdentity> Membership<P> {
    pub(crate) fn new(topic: TopicId, me: P) -> Self {
        Self {
            topic,
            me,
            active: Vec::new(),
            passive: Vec::new(),
            pending: HashMap::new(),
            refused: HashMap::new(),
            timeout_armed: false,
            rotated_out: HashMap::new(),
            bootstrap: Vec::new(),
            isolated: false,
            rejoin_at: None,
            short_rejoins: 0,
            unjoined: Vec::new(),
            shuffles: Vec::new(),
            introduced_by: HashMap::new(),
            budgets: HashMap::new(),
            walk_evicted: None,
            intruder: None,
            hood: None,
            unreachable: HashMap::new(),
            outsider_taken: None,
        }
    }

    /// Neighbours come from, and are accepted within, this node's neighbourhood among
    /// `directory` (see [`Neighbourhood`]); none (`size` 0 or no directory): any peer.
    pub(crate) fn set_directory(&mut self, directory: &[P], size: usize) {
        self.hood = (size > 0 && !directory.is_empty())
            .then(|| Neighbourhood::new(self.topic, &self.me, directory));
    }

    /// How many of the nearest members the horizon spans: enough to hold
    /// [`MembershipConfig::neighbourhood`] that are neither unreachable nor refused by the
    /// filter.
    fn horizon<R>(&self, ctx: &Ctx<'_, P, R>) -> usize {
        let Some(hood) = &self.hood else { return usize::MAX };
        let now = ctx.now;
        // A node short of neighbours also looks past members that just refused it: after a
        // mass failure the live ones left near it may all be full.
        let isolated = self.short(ctx);
        let mut found = 0;
        for (i, p) in hood.order().enumerate() {
            let reachable = self.unreachable.get(p).is_none_or(|until| *until <= now)
                && !(isolated && self.refused.get(p).is_some_and(|until| *until > now));
            if reachable && ctx.filter.allow_active(&self.topic, p) {
                found += 1;
                if found >= ctx.config.neighbourhood {
                    return i + 1;
                }
            }
        }
        hood.len()
    }

    /// Whether `peer` may be a neighbour as far as the neighbourhood goes.
    pub(crate) fn in_neighbourhood<R>(&mut self, ctx: &Ctx<'_, P, R>, peer: &P) -> bool {
        let horizon = self.horizon(ctx);
        // The other end's horizon is taken at its nominal size: widened by marks this node
        // holds, it would take whoever ranks this node a little further out.
        let theirs = ctx.config.neighbourhood;
        self.hood.as_mut().is_none_or(|hood| hood.allows(peer, horizon, theirs))
    }

    /// Whether a member from outside the neighbourhood may have a slot: only one that says it
    /// has no neighbour (or joins), only while this node has fewer than half its own, and at
    /// most one per [`MembershipConfig::walk_eviction_interval`]. After many
    /// nodes die, a survivor whose every neighbourhood member is dead finds no one else who
    /// must take it, and live nodes that kept their neighbours do not widen their horizon.
    /// Sybils can take such slots too, but an honest node is that short of neighbours only
    /// after a mass failure, one per interval, and such a neighbour is the first to go when a
    /// slot is needed (and `tidy` hands it back to the neighbourhood later).
    fn takes_outsider<R>(&self, ctx: &Ctx<'_, P, R>, peer: &P, high: bool) -> bool {
        high && self.short(ctx)
            && self.hood.as_ref().is_some_and(|hood| hood.is_member(peer))
            && self.outsider_taken.is_none_or(|at| {
                ctx.now.saturating_duration_since(at) >= ctx.config.walk_eviction_interval
            })
    }

    /// Records that `peer` came in from outside: the next to go when a slot is needed.
    fn took_outsider<R>(&mut self, ctx: &Ctx<'_, P, R>, peer: P) {
        self.outsider_taken = Some(ctx.now);
        self.intruder = Some(peer);
    }

    /// Fewer than half the neighbours it should have.
    fn short<R>(&self, ctx: &Ctx<'_, P, R>) -> bool {
        self.active.len() * 2 < ctx.config.active_view
    }

    /// Refuses `peer` for lying outside the neighbourhood (counted).
    fn refuse_outsider<R>(&self, ctx: &mut Ctx<'_, P, R>, peer: P) {
        ctx.out.event(Event::Ignored {
            topic: self.topic,
            peer,
            reason: IgnoreReason::OutsideNeighbourhood,
        });
        self.refuse(ctx, peer);
    }

    /// Marks a member that was a neighbour or was asked to be one (callers check that).
    fn mark_unreachable<R>(&mut self, ctx: &Ctx<'_, P, R>, peer: P) {
        if !self.hood.as_ref().is_some_and(|hood| hood.is_member(&peer)) {
            return;
        }
        let now = ctx.now;
        if self.unreachable.len() >= MAX_TRACKED_PEERS {
            self.unreachable.retain(|_, until| *until > now);
        }
        if self.unreachable.len() < MAX_TRACKED_PEERS {
            self.unreachable.insert(peer, now + UNREACHABLE_FOR);
        }
    }

    /// Whether this topic still needs a connection to `peer`.
    pub(crate) fn needs(&self, peer: &P) -> bool {
        self.active.contains(peer) || self.pending.contains_key(peer)
    }

    pub(crate) fn active(&self) -> &[P] {
        &self.active
    }

    pub(crate) fn passive(&self) -> &[P] {
        &self.passive
    }

    fn send<R>(&self, ctx: &mut Ctx<'_, P, R>, to: P, body: Body<P>) {
        ctx.out.send(to, self.topic, body);
    }

    /// Joins the topic through `bootstrap`.
    pub(crate) fn join<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>, bootstrap: Vec<P>) {
        self.bootstrap = bootstrap.into_iter().filter(|p| *p != self.me).collect();
        self.bootstrap.sort();
        self.bootstrap.dedup();
        self.unjoined.clear();
        for peer in self.bootstrap.clone() {
            if ctx.filter.allow_active(&self.topic, &peer) {
                self.send(ctx, peer, Body::Join);
                self.pending.insert(peer, (ctx.now, true));
                self.unjoined.push(BootstrapJoin::new(peer));
            } else if ctx.filter.allow_passive(&self.topic, &peer) {
                self.add_passive(ctx, peer, self.me);
            }
        }
        if self.hood.is_some() {
            // Bootstrap peers take only a joiner within their neighbourhood: ask in its own
            // at once too.
            self.refill(ctx, &[]);
        }
        self.arm_timeout(ctx);
        ctx.out.timer(
            ctx.now + ctx.config.shuffle_interval,
            Timer::new(self.topic, TimerKind::Shuffle),
        );
    }

    /// Leaves the topic: every neighbour is told.
    pub(crate) fn leave<R>(&mut self, ctx: &mut Ctx<'_, P, R>) {
        for peer in std::mem::take(&mut self.active) {
            self.send(ctx, peer, Body::Disconnect { alive: false });
            self.down(ctx, peer, DownReason::Left);
        }
        self.passive.clear();
        self.pending.clear();
        self.unjoined.clear();
    }

    /// Makes `peer` a neighbour (evicting a random one if the view is full). The caller
    /// checked the filter.
    fn add_active<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>, peer: P) -> bool {
        if peer == self.me || self.active.contains(&peer) {
            return false;
        }
        if self.active.len() >= ctx.config.active_view {
            // The neighbour that took its place this way last goes first: identities that
            // keep asking then replace each other, not the neighbours this node chose.
            let i = self
                .intruder
                .and_then(|p| self.active.iter().position(|a| *a == p))
                .unwrap_or_else(|| ctx.rng.random_range(0..self.active.len()));
            self.intruder = Some(peer);
            let evicted = self.active.swap_remove(i);
            self.send(ctx, evicted, Body::Disconnect { alive: true });
            self.down(ctx, evicted, DownReason::Evicted);
            self.add_passive(ctx, evicted, evicted);
        }
        self.passive.retain(|p| *p != peer);
        self.pending.remove(&peer);
        self.active.push(peer);
        self.unjoined.retain(|e| e.peer != peer);
        self.isolated = false;
        if self.active.len() >= ctx.config.active_view {
            self.short_rejoins = 0;
        }
        ctx.changes.push(Change::Up(peer));
        ctx.out.event(Event::NeighborUp { topic: self.topic, peer });
        true
    }

    fn down<R>(&self, ctx: &mut Ctx<'_, P, R>, peer: P, reason: DownReason) {
        ctx.changes.push(Change::Down(peer));
        ctx.out.event(Event::NeighborDown { topic: self.topic, peer, reason });
        ctx.out.release(peer);
    }

    /// Keeps `peer` as a contact, placed by `source` (this node itself for its bootstrap
    /// peers), unless `source` placed its share already.
    fn add_passive<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>, peer: P, source: P) {
        if peer == self.me
            || self.active.contains(&peer)
            || self.passive.contains(&peer)
            || !ctx.filter.allow_passive(&self.topic, &peer)
            || self.source_is_full(ctx, &source)
        {
            return;
        }
        if self.passive.len() >= ctx.config.passive_view {
            let i = ctx.rng.random_range(0..self.passive.len());
            self.passive.swap_remove(i);
        }
        self.keep(ctx, peer, source);
    }

    fn source_is_full<R>(&self, ctx: &Ctx<'_, P, R>, source: &P) -> bool {
        *source != self.me
            && self.passive.iter().filter(|p| self.introduced_by.get(p) == Some(source)).count()
                >= ctx.config.contacts_per_source
    }

    fn keep<R>(&mut self, ctx: &Ctx<'_, P, R>, peer: P, source: P) {
        self.passive.push(peer);
        self.introduced_by.insert(peer, source);
        if self.introduced_by.len() > 2 * ctx.config.passive_view {
            let passive = &self.passive;
            self.introduced_by.retain(|p, _| passive.contains(p));
        }
    }

    /// Takes one of `peer`'s membership requests from its budget; `false` (and the request
    /// is ignored, counted) when the budget is spent.
    fn within_budget<R>(&mut self, ctx: &mut Ctx<'_, P, R>, peer: P, walk: bool) -> bool {
        // Walks a neighbour relays are counted apart from its own requests: relaying much
        // must not get its joins and neighbour requests ignored.
        let key = (peer, walk);
        let burst = f64::from(ctx.config.request_burst);
        let interval = ctx.config.request_interval.as_secs_f64();
        let now = ctx.now;
        if self.budgets.len() >= MAX_TRACKED_PEERS && !self.budgets.contains_key(&key) {
            let full = |(tokens, at): &(f64, Instant)| {
                tokens + now.saturating_duration_since(*at).as_secs_f64() / interval >= burst
            };
            self.budgets.retain(|_, b| !full(b));
            if self.budgets.len() >= MAX_TRACKED_PEERS {
                // Every tracked peer is spending: the newcomer waits until one is not.
                ctx.out.event(Event::Ignored {
                    topic: self.topic,
                    peer,
                    reason: IgnoreReason::RateLimited,
                });
                return false;
            }
        }
        let (tokens, at) = self.budgets.entry(key).or_insert((burst, now));
        let refill = if interval > 0.0 {
            now.saturating_duration_since(*at).as_secs_f64() / interval
        } else {
            burst
        };
        *tokens = (*tokens + refill).min(burst);
        *at = now;
        if *tokens < 1.0 {
            ctx.out.event(Event::Ignored {
                topic: self.topic,
                peer,
                reason: IgnoreReason::RateLimited,
            });
            return false;
        }
        *tokens -= 1.0;
        true
    }

    pub(crate) fn on_message<R: rand::Rng>(
        &mut self,
        ctx: &mut Ctx<'_, P, R>,
        from: P,
        body: Body<P>,
    ) {
        // Walks travel over neighbour links; from anyone else they are a peer's invention.
        let walk = matches!(body, Body::Shuffle { .. } | Body::ForwardJoin { .. });
        if walk && !self.active.contains(&from) {
            ctx.out.event(Event::Ignored {
                topic: self.topic,
                peer: from,
                reason: IgnoreReason::NotANeighbor,
            });
            return;
        }
        // Forward joins are not budgeted: a contact node relays a burst of them when many
        // join through it, and what one can do is bounded elsewhere (pending asks, and one
        // eviction per interval).
        let request = matches!(body, Body::Join | Body::Neighbor { .. });
        let shuffle = matches!(body, Body::Shuffle { .. });
        if (shuffle || request) && !self.within_budget(ctx, from, shuffle) {
            return;
        }
        // A peer that asks within its budget, or accepts, is alive again: marks cannot be
        // toggled for free by other messages.
        if request || matches!(body, Body::NeighborAccept) {
            self.unreachable.remove(&from);
        }
        match body {
            Body::Join => self.on_join(ctx, from),
            Body::ForwardJoin { peer, ttl } => self.on_forward_join(ctx, from, peer, ttl),
            Body::Neighbor { high } => self.on_neighbor(ctx, from, high),
            Body::NeighborAccept => self.on_accept(ctx, from),
            Body::Disconnect { alive } => self.on_disconnect(ctx, from, alive),
            Body::Shuffle { origin, ttl, nonce, peers } => {
                self.on_shuffle(ctx, from, origin, ttl, nonce, peers);
            }
            Body::ShuffleReply { nonce, mut peers } => {
                let now = ctx.now;
                self.shuffles.retain(|(_, until, _, _)| *until > now);
                match self.shuffles.iter().position(|(n, _, _, _)| *n == nonce) {
                    Some(i) => {
                        let (_, _, offered, through) = self.shuffles.swap_remove(i);
                        peers.truncate(offered);
                        self.integrate(ctx, &peers, &[], through);
                    }
                    None => ctx.out.event(Event::Ignored {
                        topic: self.topic,
                        peer: from,
                        reason: IgnoreReason::UnsolicitedShuffleReply,
                    }),
                }
                // The reply came on a connection made for it; nothing else needs it.
                if !self.active.contains(&from) {
                    ctx.out.release(from);
                }
            }
            _ => {}
        }
    }

    fn refuse<R>(&self, ctx: &mut Ctx<'_, P, R>, peer: P) {
        self.send(ctx, peer, Body::Disconnect { alive: true });
        ctx.out.release(peer);
    }

    /// Whether a peer's request may take a neighbour's place now: at most once per
    /// [`MembershipConfig::walk_eviction_interval`], whoever asks, or identities that ask
    /// without pause would replace every neighbour.
    fn may_evict<R>(&self, ctx: &Ctx<'_, P, R>) -> bool {
        self.walk_evicted.is_none_or(|at| {
            ctx.now.saturating_duration_since(at) >= ctx.config.walk_eviction_interval
        })
    }

    fn on_join<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>, from: P) {
        if !ctx.filter.allow_active(&self.topic, &from) {
            // Refused: nobody is evicted for it, and the joiner hears so at once.
            ctx.out.event(Event::Refused { topic: self.topic, peer: from });
            self.refuse(ctx, from);
            return;
        }
        let outsider = !self.active.contains(&from) && !self.in_neighbourhood(ctx, &from);
        if outsider && !self.takes_outsider(ctx, &from, true) {
            // Its own neighbourhood is where it should ask: a refused joiner with no
            // neighbour refills from there.
            self.refuse_outsider(ctx, from);
            return;
        }
        // A joiner is taken in place of the neighbour that last came in on a peer's word
        // (see `add_active`); with none such, in place of a random one at most once per
        // interval, or an identity that joins and leaves again would replace one each time.
        let room = self.active.len() < ctx.config.active_view;
        let intruder = self.intruder.is_some_and(|p| self.active.contains(&p));
        if !room && !intruder && !self.active.contains(&from) {
            if !self.may_evict(ctx) {
                self.refuse(ctx, from);
                return;
            }
            self.walk_evicted = Some(ctx.now);
        }
        if !self.add_active(ctx, from) && !self.active.contains(&from) {
            return;
        }
        if outsider {
            self.took_outsider(ctx, from);
        }
        self.send(ctx, from, Body::NeighborAccept);
        let ttl = ctx.config.active_walk;
        for peer in self.active.clone() {
            if peer != from {
                self.send(ctx, peer, Body::ForwardJoin { peer: from, ttl });
            }
        }
    }

    fn on_forward_join<R: rand::Rng>(
        &mut self,
        ctx: &mut Ctx<'_, P, R>,
        from: P,
        peer: P,
        ttl: u8,
    ) {
        if peer == self.me {
            return;
        }
        let end = ttl == 0 || self.active.len() <= 1;
        if end {
            // The walk ends here: ask the joiner to be a neighbour, if it may be one.
            if ctx.filter.allow_active(&self.topic, &peer)
                && !self.active.contains(&peer)
                && !self.pending.contains_key(&peer)
                && self.pending.len() < ctx.config.active_view * 2
                && self.in_neighbourhood(ctx, &peer)
            {
                // The joiner may take a neighbour's place, but walks end here on a peer's
                // word: only one such eviction per interval, or a peer naming Sybils as
                // joiners would replace every neighbour.
                let evict = self.may_evict(ctx);
                self.send(ctx, peer, Body::Neighbor { high: true });
                self.pending.insert(peer, (ctx.now, evict));
                self.arm_timeout(ctx);
            } else {
                self.add_passive(ctx, peer, from);
            }
            return;
        }
        if ttl == ctx.config.passive_walk {
            self.add_passive(ctx, peer, from);
        }
        let next: Vec<P> =
            self.active.iter().copied().filter(|p| *p != from && *p != peer).collect();
        match ctx.pick(&next).copied() {
            Some(next) => {
                self.send(ctx, next, Body::ForwardJoin { peer, ttl: ttl.saturating_sub(1) })
            }
            None => self.add_passive(ctx, peer, from),
        }
    }

    fn on_neighbor<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>, from: P, high: bool) {
        if self.active.contains(&from) {
            self.send(ctx, from, Body::NeighborAccept);
            return;
        }
        let outsider = !self.in_neighbourhood(ctx, &from);
        if outsider && !self.takes_outsider(ctx, &from, high) {
            self.refuse_outsider(ctx, from);
            return;
        }
        let room = self.active.len() < ctx.config.active_view;
        let now = ctx.now;
        self.rotated_out.retain(|_, until| *until > now);
        let cooling = self.rotated_out.contains_key(&from);
        // A high-priority request (the asker says it has no neighbour) may replace a
        // neighbour, but only as often as any other request on a peer's word.
        let evict = !room && high && self.may_evict(ctx);
        if ctx.filter.allow_active(&self.topic, &from) && (evict || (room && (high || !cooling))) {
            if evict {
                self.walk_evicted = Some(now);
            }
            self.add_active(ctx, from);
            if outsider {
                self.took_outsider(ctx, from);
            }
            self.send(ctx, from, Body::NeighborAccept);
        } else {
            if !ctx.filter.allow_active(&self.topic, &from) {
                ctx.out.event(Event::Refused { topic: self.topic, peer: from });
            }
            self.add_passive(ctx, from, from);
            self.refuse(ctx, from);
        }
    }

    fn on_accept<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>, from: P) {
        let ask = self.pending.remove(&from);
        if self.active.contains(&from) {
            return;
        }
        // An accept we did not ask for, or asked for without the right to evict, is taken
        // only if there is room.
        let room = self.active.len() < ctx.config.active_view;
        let may_evict = ask.is_some_and(|(_, evict)| evict);
        if ctx.filter.allow_active(&self.topic, &from)
            && (may_evict || room)
            && self.in_neighbourhood(ctx, &from)
        {
            if !room && ask.is_some() {
                self.walk_evicted = Some(ctx.now);
            }
            self.add_active(ctx, from);
        } else {
            self.refuse(ctx, from);
        }
    }

    fn on_disconnect<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>, from: P, alive: bool) {
        if self.pending.remove(&from).is_some() {
            // A refusal: not asked again for a while; the next timeout refills, unless this
            // node has no neighbour at all.
            // With a neighbourhood the few candidates are asked again sooner: after many
            // nodes died, a live one may have refused only because its horizon had not yet
            // widened past its dead.
            let wait = if self.hood.is_some() {
                ctx.config.rejoin_interval
            } else {
                ctx.config.shuffle_interval / 2
            };
            self.refused.insert(from, ctx.now + wait);
            if alive {
                self.add_passive(ctx, from, from);
            }
            if self.active.is_empty() {
                self.refill(ctx, &[]);
            } else {
                self.arm_timeout(ctx);
            }
            ctx.out.release(from);
            return;
        }
        let was_neighbor = self.active.contains(&from);
        if let Some(i) = self.active.iter().position(|p| *p == from) {
            self.active.swap_remove(i);
            self.down(ctx, from, DownReason::Remote);
        } else {
            ctx.out.release(from);
        }
        if alive {
            self.add_passive(ctx, from, from);
        } else {
            self.passive.retain(|p| *p != from);
            if was_neighbor {
                self.mark_unreachable(ctx, from);
            }
        }
        self.refill(ctx, &[]);
    }

    /// The transport lost `peer` (a closed connection or a failed dial).
    pub(crate) fn on_disconnected<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>, peer: P) {
        if self.needs(&peer) {
            self.mark_unreachable(ctx, peer);
        }
        self.pending.remove(&peer);
        self.passive.retain(|p| *p != peer);
        if let Some(i) = self.active.iter().position(|p| *p == peer) {
            self.active.swap_remove(i);
            self.down(ctx, peer, DownReason::Failed);
        }
        self.refill(ctx, &[]);
    }

    fn arm_timeout<R>(&mut self, ctx: &mut Ctx<'_, P, R>) {
        if !self.timeout_armed {
            self.timeout_armed = true;
            ctx.out.timer(
                ctx.now + ctx.config.neighbor_timeout,
                Timer::new(self.topic, TimerKind::NeighborTimeout),
            );
        }
    }

    /// Whether `p` may be asked to fill a slot now: not this node, not a neighbour or asked
    /// already, not cooling off after a refusal or a rotation, not unreachable, admitted.
    fn askable(&self, filter: &dyn PeerFilter<P>, now: Instant, p: &P) -> bool {
        let lapsed = |until: Option<&Instant>| until.is_none_or(|until| *until <= now);
        *p != self.me
            && !self.active.contains(p)
            && !self.pending.contains_key(p)
            && lapsed(self.refused.get(p))
            && lapsed(self.rotated_out.get(p))
            && lapsed(self.unreachable.get(p))
            && filter.allow_active(&self.topic, p)
    }

    /// Asks eligible passive contacts, drawn uniformly, to fill the free active slots;
    /// `except` are not asked this time (just rotated out).
    fn refill<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>, except: &[P]) {
        while self.active.len() + self.pending.len() < ctx.config.active_view {
            let now = ctx.now;
            self.refused.retain(|_, until| *until > now);
            self.rotated_out.retain(|_, until| *until > now);
            let filter = ctx.filter;
            let fits = |p: &P| !except.contains(p) && self.askable(filter, now, p);
            // From the directory when there is one: contacts that walks and shuffles brought
            // can all be one attacker's, the directory is the same for every node. With a
            // neighbourhood, from within its horizon.
            let horizon = self.horizon(ctx);
            let drawn = if let Some(hood) = &self.hood {
                let near: Vec<P> = hood.order().take(horizon).copied().filter(fits).collect();
                ctx.pick(&near).copied()
            } else if ctx.directory.is_empty() {
                None
            } else {
                let directory = ctx.directory;
                (0..32).map(|_| directory[ctx.rng.random_range(0..directory.len())]).find(fits)
            };
            let peer = match drawn {
                Some(p) => p,
                None => {
                    let mut eligible: Vec<P> = self.passive.iter().copied().filter(fits).collect();
                    if let Some(hood) = self.hood.as_mut() {
                        let theirs = ctx.config.neighbourhood;
                        eligible.retain(|p| hood.allows(p, horizon, theirs));
                    }
                    let Some(&peer) = ctx.pick(&eligible) else { break };
                    peer
                }
            };
            let high = self.active.is_empty();
            self.send(ctx, peer, Body::Neighbor { high });
            // For a free slot: if someone took it meanwhile, the accept replaces nobody.
            self.pending.insert(peer, (ctx.now, false));
            self.arm_timeout(ctx);
        }
        if self.active.is_empty() && self.pending.is_empty() {
            if !self.isolated {
                self.isolated = true;
                ctx.out.event(Event::Isolated { topic: self.topic });
                self.arm_rejoin(ctx, ctx.config.rejoin_interval);
            }
        } else if self.active.len() + self.pending.len() < ctx.config.active_view
            && !self.unjoined.is_empty()
        {
            // Slots are free, no one is left to ask, and a bootstrap peer has not taken
            // this node yet (see `rejoin_short`).
            let wait = self.short_rejoin_wait(ctx.config);
            self.arm_rejoin(ctx, wait);
        }
    }

    fn arm_rejoin<R>(&mut self, ctx: &mut Ctx<'_, P, R>, wait: Duration) {
        let at = ctx.now + wait;
        if self.rejoin_at.is_none_or(|armed| at < armed) {
            self.rejoin_at = Some(at);
            ctx.out.timer(at, Timer::new(self.topic, TimerKind::Rejoin));
        }
    }

    fn short_rejoin_wait(&self, config: &MembershipConfig) -> Duration {
        let cap = config.shuffle_interval.max(config.rejoin_interval);
        config.rejoin_interval.saturating_mul(1 << self.short_rejoins.min(16)).min(cap)
    }

    /// Neighbour requests that went unanswered count as refused (the peer may be gone), and
    /// free slots are refilled.
    pub(crate) fn on_neighbor_timeout<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>) {
        self.timeout_armed = false;
        let late: Vec<P> = self
            .pending
            .iter()
            .filter(|(_, (at, _))| {
                ctx.now.saturating_duration_since(*at) >= ctx.config.neighbor_timeout
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in &late {
            self.pending.remove(peer);
            self.passive.retain(|p| p != peer);
            self.mark_unreachable(ctx, *peer);
            ctx.out.release(*peer);
        }
        self.refill(ctx, &[]);
        if !self.pending.is_empty() {
            self.arm_timeout(ctx);
        }
    }

    /// An isolated node joins again through its bootstrap peers and any contact it has; one
    /// short of neighbours with no one left to ask joins through one of them.
    pub(crate) fn on_rejoin<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>) {
        if self.rejoin_at.is_none_or(|at| at > ctx.now) {
            // Superseded by an earlier arming, which did the work.
            return;
        }
        self.rejoin_at = None;
        if !self.active.is_empty() || !self.pending.is_empty() {
            self.isolated = false;
            self.rejoin_short(ctx);
            return;
        }
        let mut contacts = self.bootstrap.clone();
        contacts.extend(self.passive.iter().copied());
        contacts.sort();
        contacts.dedup();
        self.unjoined.clear();
        self.short_rejoins = 0;
        for peer in contacts {
            if ctx.filter.allow_active(&self.topic, &peer) {
                self.send(ctx, peer, Body::Join);
                self.pending.insert(peer, (ctx.now, true));
                if self.bootstrap.contains(&peer) {
                    self.unjoined.push(BootstrapJoin::new(peer));
                }
            }
        }
        if self.hood.is_some() {
            self.refill(ctx, &[]);
        }
        self.arm_timeout(ctx);
        self.arm_rejoin(ctx, ctx.config.rejoin_interval);
    }

    /// Nodes that joined while their bootstrap peers were full (and had spent their eviction
    /// for the interval) can end up neighbours of each other only: each then has a
    /// neighbour, so none is isolated, and full nodes refuse the low-priority requests of
    /// `refill`. So a node short of neighbours joins again through a bootstrap peer that has
    /// not taken it yet, as a join may take a full node's slot (once per
    /// `walk_eviction_interval`). Each bootstrap peer is sent a join again a few times at
    /// most, so every node's joins cost the network a bounded number of evictions, and a
    /// bootstrap peer that refuses for good is not asked for ever.
    ///
    /// Once taken, a bootstrap peer is not asked again, though the next joiner there may take
    /// the slot back (joins replace the last to come in): retrying then made late joiners at
    /// one bootstrap peer replace each other in turn. The forward joins that the accepted
    /// join set off leave the node other links into the network.
    fn rejoin_short<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>) {
        let now = ctx.now;
        let topic = self.topic;
        let filter = ctx.filter;
        self.unjoined
            .retain(|e| e.sent < MAX_JOINS_PER_BOOTSTRAP && filter.allow_active(&topic, &e.peer));
        if self.active.len() + self.pending.len() >= ctx.config.active_view {
            self.short_rejoins = 0;
            return;
        }
        let mut joinable = Vec::new();
        for i in 0..self.unjoined.len() {
            let peer = self.unjoined[i].peer;
            if !self.active.contains(&peer)
                && !self.pending.contains_key(&peer)
                && self.unreachable.get(&peer).is_none_or(|until| *until <= now)
                && self.in_neighbourhood(ctx, &peer)
            {
                joinable.push(i);
            }
        }
        if joinable.is_empty() {
            return;
        }
        let i = joinable[ctx.rng.random_range(0..joinable.len())];
        let entry = &mut self.unjoined[i];
        entry.sent += 1;
        let peer = entry.peer;
        self.short_rejoins = self.short_rejoins.saturating_add(1);
        self.send(ctx, peer, Body::Join);
        self.pending.insert(peer, (now, true));
        self.arm_timeout(ctx);
        let wait = self.short_rejoin_wait(ctx.config);
        self.arm_rejoin(ctx, wait);
    }

    /// Whether `peer` is a neighbour or being asked to be one.
    pub(crate) fn knows(&self, peer: &P) -> bool {
        self.needs(peer)
    }

    /// A peer that treats this node as its neighbour when it is not one: told so, so that
    /// the two views agree again.
    pub(crate) fn not_a_neighbor<R>(&self, ctx: &mut Ctx<'_, P, R>, peer: P) {
        self.send(ctx, peer, Body::Disconnect { alive: true });
        ctx.out.release(peer);
    }

    pub(crate) fn on_shuffle_timer<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>) {
        ctx.out.timer(
            ctx.now + ctx.config.shuffle_interval,
            Timer::new(self.topic, TimerKind::Shuffle),
        );
        // Slots left free (contacts that refused earlier may take them now).
        self.refill(ctx, &[]);
        self.tidy(ctx);
        let Some(&to) = ctx.pick(&self.active) else { return };
        let mut peers = sample(ctx.rng, &self.active, ctx.config.shuffle_active, &[to]);
        peers.extend(sample(ctx.rng, &self.passive, ctx.config.shuffle_passive, &[]));
        let ttl = ctx.config.shuffle_walk;
        let nonce = ctx.rng.random();
        let now = ctx.now;
        self.shuffles.retain(|(_, until, _, _)| *until > now);
        if self.shuffles.len() >= MAX_OUTSTANDING_SHUFFLES {
            self.shuffles.remove(0);
        }
        self.shuffles.push((nonce, now + ctx.config.shuffle_interval, peers.len(), to));
        self.send(ctx, to, Body::Shuffle { origin: self.me, ttl, nonce, peers });
    }

    fn on_shuffle<R: rand::Rng>(
        &mut self,
        ctx: &mut Ctx<'_, P, R>,
        from: P,
        origin: P,
        ttl: u8,
        nonce: u64,
        peers: Vec<P>,
    ) {
        if origin == self.me {
            return;
        }
        if ttl > 0 && self.active.len() > 1 {
            let next: Vec<P> =
                self.active.iter().copied().filter(|p| *p != from && *p != origin).collect();
            if let Some(&next) = ctx.pick(&next) {
                self.send(ctx, next, Body::Shuffle { origin, ttl: ttl - 1, nonce, peers });
                return;
            }
        }
        // The walk ends here: answer the origin with as many contacts, and keep its.
        let reply = sample(ctx.rng, &self.passive, peers.len(), &[origin]);
        self.send(ctx, origin, Body::ShuffleReply { nonce, peers: reply.clone() });
        if !self.active.contains(&origin) {
            ctx.out.release(origin);
        }
        let mut offered = peers;
        offered.push(origin);
        // Charged to the neighbour that handed the walk over: the origin is only a claim.
        self.integrate(ctx, &offered, &reply, from);
    }

    /// Takes contacts that `source` offered into the passive view, up to its share, making
    /// room by dropping first those just sent away.
    fn integrate<R: rand::Rng>(
        &mut self,
        ctx: &mut Ctx<'_, P, R>,
        offered: &[P],
        sent: &[P],
        source: P,
    ) {
        for &peer in offered {
            if peer == self.me || self.active.contains(&peer) || self.passive.contains(&peer) {
                continue;
            }
            if !ctx.filter.allow_passive(&self.topic, &peer) || self.source_is_full(ctx, &source) {
                continue;
            }
            if self.passive.len() >= ctx.config.passive_view {
                let victim = self
                    .passive
                    .iter()
                    .position(|p| sent.contains(p))
                    .unwrap_or_else(|| ctx.rng.random_range(0..self.passive.len()));
                self.passive.swap_remove(victim);
            }
            self.keep(ctx, peer, source);
        }
    }

    /// Lets one neighbour from outside the neighbourhood go, when a member within it could
    /// take its place: views taken in while the horizon was wider (dead peers skipped) or
    /// before there was a directory return to it, one slot per shuffle interval.
    fn tidy<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>) {
        // The slot stays open until a member takes it: never when that would leave the node
        // short of neighbours (it would then take outsiders).
        if self.active.len().saturating_sub(1) * 2 < ctx.config.active_view {
            return;
        }
        let Some(hood) = &self.hood else { return };
        let horizon = self.horizon(ctx);
        let now = ctx.now;
        let free = hood.order().take(horizon).any(|p| self.askable(ctx.filter, now, p));
        if !free {
            return;
        }
        let active = self.active.clone();
        let theirs = ctx.config.neighbourhood;
        let Some(hood) = self.hood.as_mut() else { return };
        let Some(outsider) = active.into_iter().find(|p| !hood.allows(p, horizon, theirs)) else {
            return;
        };
        self.active.retain(|p| *p != outsider);
        self.send(ctx, outsider, Body::Disconnect { alive: true });
        self.down(ctx, outsider, DownReason::OutsideNeighbourhood);
        self.refill(ctx, &[outsider]);
    }

    /// Replaces `count` neighbours, drawn uniformly, with eligible contacts drawn uniformly;
    /// the rotated ones stay contacts.
    pub(crate) fn rotate<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>, count: usize) {
        let mut rotated = Vec::new();
        for _ in 0..count.min(self.active.len()) {
            let i = ctx.rng.random_range(0..self.active.len());
            let peer = self.active.swap_remove(i);
            self.send(ctx, peer, Body::Disconnect { alive: true });
            self.down(ctx, peer, DownReason::Rotated);
            rotated.push(peer);
        }
        let until = ctx.now + ctx.config.shuffle_interval;
        for &peer in &rotated {
            self.add_passive(ctx, peer, peer);
            self.rotated_out.insert(peer, until);
        }
        self.refill(ctx, &rotated);
    }

    pub(crate) fn schedule_rotation<R: rand::Rng>(
        &self,
        ctx: &mut Ctx<'_, P, R>,
        rotation: &RotationConfig,
    ) {
        let jitter = rotation.jitter.min(rotation.interval).as_secs_f64();
        let offset = ctx.rng.random_range(-jitter..=jitter);
        let wait = Duration::from_secs_f64((rotation.interval.as_secs_f64() + offset).max(1.0));
        ctx.out.timer(ctx.now + wait, Timer::new(self.topic, TimerKind::Rotate));
    }

    /// The filter changed: neighbours no longer eligible go, contacts no longer eligible
    /// are forgotten, and the freed slots are refilled.
    pub(crate) fn refilter<R: rand::Rng>(&mut self, ctx: &mut Ctx<'_, P, R>) {
        let topic = self.topic;
        let (keep, evict): (Vec<P>, Vec<P>) =
            self.active.iter().copied().partition(|p| ctx.filter.allow_active(&topic, p));
        self.active = keep;
        for peer in evict {
            self.send(ctx, peer, Body::Disconnect { alive: true });
            self.down(ctx, peer, DownReason::Filtered);
        }
        self.passive.retain(|p| ctx.filter.allow_passive(&topic, p));
        let refused: Vec<P> =
            self.pending.keys().copied().filter(|p| !ctx.filter.allow_active(&topic, p)).collect();
        for peer in refused {
            self.pending.remove(&peer);
        }
        self.refill(ctx, &[]);
    }
}

/// Up to `n` distinct elements of `from`, drawn uniformly, none of them in `except`.
fn sample<P: PeerIdentity, R: rand::Rng>(
    rng: &mut R,
    from: &[P],
    n: usize,
    except: &[P],
) -> Vec<P> {
    let mut pool: Vec<P> = from.iter().copied().filter(|p| !except.contains(p)).collect();
    let n = n.min(pool.len());
    for i in 0..n {
        let j = rng.random_range(i..pool.len());
        pool.swap(i, j);
    }
    pool.truncate(n);
    pool
}
