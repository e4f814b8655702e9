//! The gossip node as a plain state machine: no sockets, no clock, randomness injected.
//!
//! ```text
//!   join / leave / publish ─┐                 ┌─> Output::Send (a message to a peer)
//!   handle_message ─────────┼─> State ────────┼─> Output::Timer (call handle_timer then)
//!   handle_timer ───────────┤  per topic:     ├─> Output::Event (deliveries, neighbours)
//!   handle_disconnected ────┘  HyParView,     ├─> Output::Disconnect (no topic needs the peer)
//!                              PlumTree, stem └─> Output::MixPublish (send through the mixnet)
//! ```
//!
//! The same code runs in the libp2p driver ([`crate::Behaviour`]) and in the simulator
//! (`mix-sim`), where peers are small integers and time is virtual. Timers are data: the
//! caller keeps them and hands each back when it is due; a timer that no longer applies does
//! nothing.

mod config;
mod hyparview;
mod message;
mod neighbourhood;
mod plumtree;
mod scheduler;
mod stem;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use rand::RngExt;

pub use config::{
    BroadcastConfig, Config, ConfigError, Forwarding, LIVENESS_TIMEOUT, MAX_FORWARDING_DELAY,
    MembershipConfig, MixRouteConfig, Rebroadcasters, RotationConfig, StemConfig,
    silent_neighbour_detection,
};
pub use message::{Body, Message, MessageId, TopicId};

use hyparview::{Change, Membership};
use plumtree::Broadcast;
use scheduler::{Scheduler, Step};
use stem::{Held, Stem};

/// What identifies a peer: libp2p's `PeerId` on a network, an integer in the simulator.
pub trait PeerIdentity: Copy + Eq + Ord + Hash + Debug + Send + Sync + 'static {}

impl<T: Copy + Eq + Ord + Hash + Debug + Send + Sync + 'static> PeerIdentity for T {}

/// Who may become a neighbour, and who may be kept as a contact. Consulted wherever a peer
/// could enter a view; it should be cheap and may be subjective (nodes need not agree).
/// Call [`State::refilter`] after its answers change.
pub trait PeerFilter<P>: Send + Sync {
    /// Whether `peer` may be a neighbour (in the active view) on `topic`.
    fn allow_active(&self, topic: &TopicId, peer: &P) -> bool;
    /// Whether `peer` may be kept as a contact (in the passive view) on `topic`.
    fn allow_passive(&self, topic: &TopicId, peer: &P) -> bool {
        self.allow_active(topic, peer)
    }
}

impl<P, F: Fn(&TopicId, &P) -> bool + Send + Sync> PeerFilter<P> for F {
    fn allow_active(&self, topic: &TopicId, peer: &P) -> bool {
        self(topic, peer)
    }
}

/// Admits everyone.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl<P> PeerFilter<P> for AllowAll {
    fn allow_active(&self, _: &TopicId, _: &P) -> bool {
        true
    }
}

/// How a publication leaves its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Route {
    /// Broadcast from here. Neighbours see it first from this node.
    #[default]
    Direct,
    /// Relayed along a Dandelion++ stem first, broadcast by a random relay.
    Stem,
    /// Sent through the mixnet to a random topic member, which broadcasts it; seeing it come
    /// back through gossip confirms it, otherwise it is sent again over a fresh path.
    Mix,
}

/// Why a neighbour went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    /// It ended the neighbourship.
    Remote,
    /// Its connection failed.
    Failed,
    /// Replaced by partial rotation.
    Rotated,
    /// The filter no longer admits it.
    Filtered,
    /// Evicted to make room for a newcomer.
    Evicted,
    /// This node left the topic.
    Left,
    /// It lies outside this node's neighbourhood (see
    /// [`MembershipConfig::neighbourhood`]), and a member within it could take its place.
    OutsideNeighbourhood,
}

/// Why a message was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// A shuffle reply that answers no shuffle this node has outstanding (or answers one a
    /// second time).
    UnsolicitedShuffleReply,
    /// The peer sent more join, neighbour or shuffle requests than its budget allows.
    RateLimited,
    /// A shuffle or forward join from a peer that is not a neighbour: walks travel over
    /// neighbour links only.
    NotANeighbor,
    /// A join or neighbour request (or accept) from a peer outside this node's
    /// neighbourhood (see [`MembershipConfig::neighbourhood`]): refused.
    OutsideNeighbourhood,
    /// A message on a topic this node has not joined (or has left).
    UnknownTopic,
    /// A publication (broadcast or stem) longer than this node's
    /// [`Config::max_message_size`]: neither delivered nor relayed.
    TooLarge,
}

impl IgnoreReason {
    /// A short name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsolicitedShuffleReply => "unsolicited_shuffle_reply",
            Self::RateLimited => "rate_limited",
            Self::NotANeighbor => "walk_from_stranger",
            Self::OutsideNeighbourhood => "outside_neighbourhood",
            Self::UnknownTopic => "unknown_topic",
            Self::TooLarge => "too_large",
        }
    }
}

/// What a node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<P> {
    /// A publication, delivered once; `from` is the neighbour it came from, not its author.
    Received {
        /// Its topic.
        topic: TopicId,
        /// Its id.
        id: MessageId,
        /// Its content.
        data: Vec<u8>,
        /// The neighbour it arrived from.
        from: P,
    },
    /// A neighbour came.
    NeighborUp {
        /// The topic.
        topic: TopicId,
        /// The neighbour.
        peer: P,
    },
    /// A neighbour went.
    NeighborDown {
        /// The topic.
        topic: TopicId,
        /// The neighbour.
        peer: P,
        /// Why.
        reason: DownReason,
    },
    /// The filter refused a peer that asked to be a neighbour.
    Refused {
        /// The topic.
        topic: TopicId,
        /// The peer.
        peer: P,
    },
    /// A message from `peer` was ignored.
    Ignored {
        /// The topic.
        topic: TopicId,
        /// The peer that sent it.
        peer: P,
        /// Why.
        reason: IgnoreReason,
    },
    /// No neighbour and no eligible contact: the node will join again through its bootstrap
    /// peers.
    Isolated {
        /// The topic.
        topic: TopicId,
    },
    /// An own publication sent by stem or mixnet came back as a broadcast.
    PublishConfirmed {
        /// The topic.
        topic: TopicId,
        /// The publication.
        id: MessageId,
    },
    /// An own publication sent through the mixnet never came back, after every retry.
    PublishFailed {
        /// The topic.
        topic: TopicId,
        /// The publication.
        id: MessageId,
    },
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<P> {
    /// Send `message` to `to` (connecting if needed).
    Send {
        /// The peer.
        to: P,
        /// The message.
        message: Message<P>,
    },
    /// Hand `timer` back with [`State::handle_timer`] at `at`.
    Timer {
        /// When.
        at: Instant,
        /// The timer.
        timer: Timer,
    },
    /// Report this.
    Event(Event<P>),
    /// No topic needs a connection to this peer any more.
    Disconnect(P),
    /// Send a publication through the mixnet to `to`, a topic member that broadcasts it (the
    /// caller hands it to `to`'s [`State::handle_mix_delivery`]; [`State::mix_failed`] if it
    /// could not be sent).
    MixPublish {
        /// The rebroadcaster.
        to: P,
        /// The topic.
        topic: TopicId,
        /// The publication.
        data: Vec<u8>,
    },
}

/// A timer, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timer {
    topic: Option<TopicId>,
    kind: TimerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKind {
    Shuffle,
    NeighborTimeout,
    Rejoin,
    Rotate,
    Graft(MessageId),
    Dispatch,
    Evict,
    Flush,
    Embargo(MessageId),
    /// The attempt it watches, by its token: a timer of an earlier attempt (one that failed
    /// at once and was retried, or of an earlier publication of the same data) does nothing.
    MixConfirm(MessageId, u64),
}

impl Timer {
    fn new(topic: TopicId, kind: TimerKind) -> Self {
        Self { topic: Some(topic), kind }
    }

    fn flush() -> Self {
        Self { topic: None, kind: TimerKind::Flush }
    }
}

/// Where a step's outputs go.
#[derive(Debug)]
pub(crate) struct Outbox<P> {
    out: VecDeque<Output<P>>,
    /// Publications and their announcements, for the scheduler.
    payloads: Vec<(P, Message<P>)>,
    /// Peers a topic no longer needs.
    released: Vec<P>,
}

impl<P: PeerIdentity> Outbox<P> {
    fn new() -> Self {
        Self { out: VecDeque::new(), payloads: Vec::new(), released: Vec::new() }
    }

    pub(crate) fn send(&mut self, to: P, topic: TopicId, body: Body<P>) {
        self.out.push_back(Output::Send { to, message: Message { topic, body } });
    }

    pub(crate) fn send_payload(&mut self, to: P, topic: TopicId, body: Body<P>) {
        self.payloads.push((to, Message { topic, body }));
    }

    pub(crate) fn timer(&mut self, at: Instant, timer: Timer) {
        self.out.push_back(Output::Timer { at, timer });
    }

    pub(crate) fn event(&mut self, event: Event<P>) {
        self.out.push_back(Output::Event(event));
    }

    pub(crate) fn release(&mut self, peer: P) {
        self.released.push(peer);
    }
}

/// Why a publication was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The node has not joined the topic.
    #[error("not joined to the topic")]
    NotJoined,
    /// The publication is larger than the configured maximum.
    #[error("publication of {len} bytes exceeds {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The same content was published on this topic already.
    #[error("already published")]
    Duplicate,
}

#[derive(Debug)]
struct Topic<P> {
    membership: Membership<P>,
    broadcast: Broadcast<P>,
    stem: Stem<P>,
    /// Own stem and mix publications not yet seen coming back.
    own: HashSet<MessageId>,
    /// Own mix publications: content and attempts made.
    /// Own mix publications awaiting confirmation: the data, attempts so far, and the token
    /// of the latest attempt (its confirmation timer carries it).
    mix: HashMap<MessageId, (Vec<u8>, u32, u64)>,
}

/// A gossip node: every topic it joined.
pub struct State<P, R> {
    me: P,
    config: Config,
    /// The broadcast settings in effect: the graft timeout allows for the forwarding delay.
    broadcast: BroadcastConfig,
    filter: Arc<dyn PeerFilter<P>>,
    rng: R,
    topics: BTreeMap<TopicId, Topic<P>>,
    scheduler: Scheduler<P>,
    out: Outbox<P>,
    /// Members vouched for by the application, for rebroadcasters (at most
    /// [`MAX_DIRECTORY`]).
    directory: Vec<P>,
    /// Tokens of mix publication attempts, unique for this node's lifetime.
    mix_attempts: u64,
}

/// Directory entries kept at most (a uniform sample of a larger directory).
pub const MAX_DIRECTORY: usize = 16_384;

impl<P: PeerIdentity, R> Debug for State<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("me", &self.me)
            .field("topics", &self.topics.len())
            .finish_non_exhaustive()
    }
}

impl<P: PeerIdentity, R: rand::CryptoRng> State<P, R> {
    /// A node known to others as `me`, admitting every peer until a filter is set
    /// ([`Self::with_filter`]).
    pub fn new(me: P, config: Config, rng: R) -> Self {
        let scheduler = Scheduler::new(config.forwarding);
        let mut broadcast = config.broadcast.clone();
        broadcast.graft_timeout += config.forwarding.typical_delay() * 3;
        Self {
            me,
            config,
            broadcast,
            filter: Arc::new(AllowAll),
            rng,
            topics: BTreeMap::new(),
            scheduler,
            out: Outbox::new(),
            directory: Vec::new(),
            mix_attempts: 0,
        }
    }

    /// Sets the directory that rebroadcasters of mix publications are drawn from
    /// ([`crate::Rebroadcasters::Directory`]): members that no single peer can put there for
    /// one victim, such as the mixnet's signed discovery records. Replaces the previous one;
    /// a larger directory than [`MAX_DIRECTORY`] is sampled uniformly.
    pub fn set_directory(&mut self, members: impl IntoIterator<Item = P>) {
        let mut all: Vec<P> = Vec::new();
        // Reservoir sampling: memory stays bounded however long the iterator is.
        for (seen, p) in members.into_iter().filter(|p| *p != self.me).enumerate() {
            if all.len() < MAX_DIRECTORY {
                all.push(p);
            } else {
                let j = self.rng.random_range(0..=seen);
                if j < MAX_DIRECTORY {
                    all[j] = p;
                }
            }
        }
        all.sort();
        all.dedup();
        self.directory = all;
        let size = self.config.membership.neighbourhood;
        for t in self.topics.values_mut() {
            t.membership.set_directory(&self.directory, size);
        }
    }

    /// Whether `peer` may be a neighbour on `topic` as far as this node's neighbourhood goes
    /// ([`MembershipConfig::neighbourhood`]); `true` without a directory or topic.
    pub fn in_neighbourhood(&mut self, now: Instant, topic: &TopicId, peer: &P) -> bool {
        let mut allowed = true;
        self.with_membership(now, *topic, |m, ctx| allowed = m.in_neighbourhood(ctx, peer));
        allowed
    }

    /// The directory's size.
    pub fn directory_len(&self) -> usize {
        self.directory.len()
    }

    /// This node.
    pub fn me(&self) -> P {
        self.me
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The topics joined.
    pub fn topics(&self) -> impl Iterator<Item = &TopicId> {
        self.topics.keys()
    }

    /// The neighbours on `topic`.
    pub fn neighbors(&self, topic: &TopicId) -> &[P] {
        self.topics.get(topic).map_or(&[], |t| t.membership.active())
    }

    /// The contacts held in reserve on `topic`.
    pub fn contacts(&self, topic: &TopicId) -> &[P] {
        self.topics.get(topic).map_or(&[], |t| t.membership.passive())
    }

    /// The neighbours that get payloads eagerly on `topic` (the others get ids).
    pub fn eager(&self, topic: &TopicId) -> Vec<P> {
        self.topics.get(topic).map_or_else(Vec::new, |t| t.broadcast.eager().copied().collect())
    }

    /// Sizes of the forwarding batches flushed since the last call (window mode).
    pub fn take_batch_sizes(&mut self) -> Vec<usize> {
        self.scheduler.take_batch_sizes()
    }

    /// Admits neighbours and contacts by `filter` (the policy of whom to gossip with).
    pub fn with_filter(mut self, filter: Arc<dyn PeerFilter<P>>) -> Self {
        self.filter = filter;
        self
    }

    /// Replaces the admission filter; call [`Self::refilter`] for topics where its answers
    /// changed.
    pub fn set_filter(&mut self, filter: Arc<dyn PeerFilter<P>>) {
        self.filter = filter;
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.out.out.pop_front()
    }

    /// Runs `f` on `topic`'s membership with a context, then applies its neighbour changes to
    /// the broadcast layer.
    fn with_membership(
        &mut self,
        now: Instant,
        topic: TopicId,
        f: impl FnOnce(&mut Membership<P>, &mut hyparview::Ctx<'_, P, R>),
    ) {
        let Some(t) = self.topics.get_mut(&topic) else { return };
        let mut changes = Vec::new();
        let mut ctx = hyparview::Ctx {
            config: &self.config.membership,
            filter: &*self.filter,
            rng: &mut self.rng,
            out: &mut self.out,
            now,
            changes: &mut changes,
            directory: &self.directory,
        };
        f(&mut t.membership, &mut ctx);
        let mut ctx = plumtree::Ctx { config: &self.broadcast, out: &mut self.out, now };
        let changed = !changes.is_empty();
        for change in changes {
            match change {
                Change::Up(peer) => t.broadcast.neighbor_up(&mut ctx, peer),
                Change::Down(peer) => t.broadcast.neighbor_down(peer),
            }
        }
        if changed && !t.stem.held.is_empty() {
            self.reroute_stems(now, topic);
        }
    }

    /// Relays again, to a current successor, the stem messages last sent to a peer that is no
    /// longer a neighbour (it may have died with them), as soon as there is a neighbour.
    fn reroute_stems(&mut self, now: Instant, topic: TopicId) {
        let Some(t) = self.topics.get_mut(&topic) else { return };
        let active = t.membership.active().to_vec();
        for id in t.stem.stranded(&active) {
            let Some(inbound) = t.stem.held.get(&id).map(|h| h.inbound) else { continue };
            let Some(next) =
                t.stem.successor(&self.config.stem, now, &mut self.rng, &active, inbound)
            else {
                continue;
            };
            let Some(held) = t.stem.held.get_mut(&id) else { continue };
            held.next = next;
            let data = held.data.clone();
            self.out.send_payload(next, topic, Body::Stem { id, data });
        }
    }

    /// Ends a step: publications through the scheduler, connections nobody needs closed.
    fn finish(&mut self, now: Instant) {
        let mut steps = Vec::new();
        for (to, message) in std::mem::take(&mut self.out.payloads) {
            self.scheduler.push(now, &mut self.rng, to, message, &mut steps);
        }
        self.apply(steps);
        for peer in std::mem::take(&mut self.out.released) {
            let needed = self.topics.values().any(|t| t.membership.needs(&peer));
            if !needed {
                self.out.out.push_back(Output::Disconnect(peer));
            }
        }
    }

    fn apply(&mut self, steps: Vec<Step<P>>) {
        for step in steps {
            match step {
                Step::Send(to, message) => self.out.out.push_back(Output::Send { to, message }),
                Step::Timer(at, timer) => self.out.timer(at, timer),
            }
        }
    }

    /// Joins `topic` through `bootstrap` (peers already in it; none for the first node).
    pub fn join(&mut self, now: Instant, topic: TopicId, bootstrap: Vec<P>) {
        let me = self.me;
        let (directory, size) = (&self.directory, self.config.membership.neighbourhood);
        self.topics.entry(topic).or_insert_with(|| Topic {
            membership: {
                let mut m = Membership::new(topic, me);
                m.set_directory(directory, size);
                m
            },
            broadcast: Broadcast::new(topic),
            stem: Stem::new(),
            own: HashSet::new(),
            mix: HashMap::new(),
        });
        self.with_membership(now, topic, |m, ctx| m.join(ctx, bootstrap));
        if let Some(rotation) = self.config.rotation {
            self.with_membership(now, topic, |m, ctx| m.schedule_rotation(ctx, &rotation));
        }
        self.finish(now);
    }

    /// Leaves `topic`.
    pub fn leave(&mut self, now: Instant, topic: &TopicId) {
        self.with_membership(now, *topic, |m, ctx| m.leave(ctx));
        self.topics.remove(topic);
        self.finish(now);
    }

    /// Publishes `data` on `topic` by `route`.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: &TopicId,
        data: Vec<u8>,
        route: Route,
    ) -> Result<MessageId, PublishError> {
        if data.len() > self.config.max_message_size {
            return Err(PublishError::TooLarge {
                len: data.len(),
                max: self.config.max_message_size,
            });
        }
        let Some(t) = self.topics.get_mut(topic) else { return Err(PublishError::NotJoined) };
        let id = MessageId::of(topic, &data);
        if t.broadcast.has_seen(&id) || t.own.contains(&id) {
            return Err(PublishError::Duplicate);
        }
        match route {
            Route::Direct => {
                let mut ctx = plumtree::Ctx { config: &self.broadcast, out: &mut self.out, now };
                t.broadcast.broadcast(&mut ctx, id, data);
            }
            Route::Stem => {
                t.own.insert(id);
                let active = t.membership.active().to_vec();
                match t.stem.successor(&self.config.stem, now, &mut self.rng, &active, None) {
                    Some(next) => {
                        t.stem.held.insert(id, Held { data: data.clone(), inbound: None, next });
                        self.out.send_payload(next, *topic, Body::Stem { id, data });
                        let at = Stem::<P>::embargo(&self.config.stem, now, &mut self.rng);
                        self.out.timer(at, Timer::new(*topic, TimerKind::Embargo(id)));
                    }
                    None => {
                        // No neighbour to relay to: broadcasting is all that is left.
                        t.own.remove(&id);
                        let mut ctx =
                            plumtree::Ctx { config: &self.broadcast, out: &mut self.out, now };
                        t.broadcast.broadcast(&mut ctx, id, data);
                    }
                }
            }
            Route::Mix => {
                t.own.insert(id);
                t.mix.insert(id, (data, 0, 0));
                self.send_mix(now, *topic, id);
            }
        }
        self.finish(now);
        Ok(id)
    }

    /// Sends an own mix publication to a rebroadcaster drawn uniformly among the eligible
    /// topic members this node knows, or gives up after the configured retries.
    fn send_mix(&mut self, now: Instant, topic: TopicId, id: MessageId) {
        let Some(t) = self.topics.get_mut(&topic) else { return };
        let Some((data, attempts, token)) = t.mix.get_mut(&id) else { return };
        if *attempts > self.config.mix.retries {
            t.mix.remove(&id);
            t.own.remove(&id);
            self.out.event(Event::PublishFailed { topic, id });
            return;
        }
        *attempts += 1;
        // Each attempt, retries included, is a fresh uniform draw from a sample that is the
        // same for every publisher: members that receive retries of one publication share
        // nothing that narrows who sent it.
        let use_directory = self.config.mix.rebroadcasters == Rebroadcasters::Directory
            && !self.directory.is_empty();
        let filter = &self.filter;
        let drawn = if use_directory {
            // Uniform over the entries the filter allows, without copying the directory.
            let d = &self.directory;
            (0..64)
                .map(|_| d[self.rng.random_range(0..d.len())])
                .find(|p| filter.allow_passive(&topic, p))
        } else {
            let mut members: Vec<P> =
                t.membership.active().iter().chain(t.membership.passive()).copied().collect();
            members.sort();
            members.dedup();
            members.retain(|p| filter.allow_passive(&topic, p));
            (!members.is_empty()).then(|| members[self.rng.random_range(0..members.len())])
        };
        // None: nobody to hand it to yet; try again after the timeout.
        if let Some(to) = drawn {
            self.out.out.push_back(Output::MixPublish { to, topic, data: data.clone() });
        }
        self.mix_attempts += 1;
        *token = self.mix_attempts;
        self.out.timer(
            now + self.config.mix.confirm_timeout,
            Timer::new(topic, TimerKind::MixConfirm(id, *token)),
        );
    }

    /// The mix publication of `data` on `topic` could not be sent (no path, say): try another
    /// rebroadcaster now.
    pub fn mix_failed(&mut self, now: Instant, topic: &TopicId, data: &[u8]) {
        let id = MessageId::of(topic, data);
        self.send_mix(now, *topic, id);
        self.finish(now);
    }

    /// A publication reached this node through the mixnet for it to broadcast (this node is
    /// the rebroadcaster, and does not know who published it). Refused if this node has not
    /// joined the topic or the publication is too large.
    pub fn handle_mix_delivery(
        &mut self,
        now: Instant,
        topic: &TopicId,
        data: Vec<u8>,
    ) -> Result<(), PublishError> {
        let max = self.config.max_message_size;
        if data.len() > max {
            return Err(PublishError::TooLarge { len: data.len(), max });
        }
        let Some(t) = self.topics.get_mut(topic) else { return Err(PublishError::NotJoined) };
        let id = MessageId::of(topic, &data);
        let mut ctx = plumtree::Ctx { config: &self.broadcast, out: &mut self.out, now };
        if t.broadcast.broadcast(&mut ctx, id, data.clone()) {
            // This node is a member like any other: it gets the message too.
            self.out.event(Event::Received { topic: *topic, id, data, from: self.me });
        }
        self.finish(now);
        Ok(())
    }

    /// A message from `from`.
    pub fn handle_message(&mut self, now: Instant, from: P, message: Message<P>) {
        let topic = message.topic;
        let ignored = |reason| Event::Ignored { topic, peer: from, reason };
        let Some(t) = self.topics.get(&topic) else {
            self.out.event(ignored(IgnoreReason::UnknownTopic));
            return;
        };
        if from == self.me {
            return;
        }
        // Broadcast traffic from a peer that is not a neighbour: its view is out of date.
        let stray = matches!(
            message.body,
            Body::Gossip { .. }
                | Body::Stem { .. }
                | Body::IHave { .. }
                | Body::Graft { .. }
                | Body::Prune
        ) && !t.membership.knows(&from);
        if stray {
            self.with_membership(now, topic, |m, ctx| m.not_a_neighbor(ctx, from));
        }
        // After the stray check, so that a stranger is answered alike whatever the size and
        // cannot probe this node's limit.
        if let Body::Gossip { data, .. } | Body::Stem { data, .. } = &message.body
            && data.len() > self.config.max_message_size
        {
            self.out.event(ignored(IgnoreReason::TooLarge));
            self.finish(now);
            return;
        }
        match message.body {
            body @ (Body::Join
            | Body::ForwardJoin { .. }
            | Body::Neighbor { .. }
            | Body::NeighborAccept
            | Body::Disconnect { .. }
            | Body::Shuffle { .. }
            | Body::ShuffleReply { .. }) => {
                self.with_membership(now, topic, |m, ctx| m.on_message(ctx, from, body));
            }
            Body::Gossip { id, data } => self.on_gossip(now, topic, from, id, data),
            Body::IHave { ids } => {
                if let Some(t) = self.topics.get_mut(&topic) {
                    let mut ctx =
                        plumtree::Ctx { config: &self.broadcast, out: &mut self.out, now };
                    t.broadcast.on_ihave(&mut ctx, from, ids);
                }
            }
            Body::Graft { id } => {
                if let Some(t) = self.topics.get_mut(&topic) {
                    let mut ctx =
                        plumtree::Ctx { config: &self.broadcast, out: &mut self.out, now };
                    t.broadcast.on_graft(&mut ctx, from, id);
                }
            }
            Body::Prune => {
                if let Some(t) = self.topics.get_mut(&topic) {
                    t.broadcast.on_prune(from);
                }
            }
            Body::Stem { id, data } => self.on_stem(now, topic, from, id, data),
            // The driver's: it answers probes itself.
            Body::Ping { .. } => {}
        }
        self.finish(now);
    }

    fn on_gossip(&mut self, now: Instant, topic: TopicId, from: P, id: MessageId, data: Vec<u8>) {
        let Some(t) = self.topics.get_mut(&topic) else { return };
        t.stem.held.remove(&id);
        let own = t.own.remove(&id);
        if own {
            t.mix.remove(&id);
        }
        let before = self.out.out.len();
        let mut ctx = plumtree::Ctx { config: &self.broadcast, out: &mut self.out, now };
        let received = t.broadcast.on_gossip(&mut ctx, from, id, data);
        if own && received == plumtree::Received::New {
            // The application has its own publication: confirm it instead of delivering it.
            let delivered = self.out.out.iter().skip(before).position(
                |o| matches!(o, Output::Event(Event::Received { id: got, .. }) if *got == id),
            );
            if let Some(i) = delivered {
                self.out.out.remove(before + i);
            }
            self.out.event(Event::PublishConfirmed { topic, id });
        }
    }

    fn on_stem(&mut self, now: Instant, topic: TopicId, from: P, id: MessageId, data: Vec<u8>) {
        let Some(t) = self.topics.get_mut(&topic) else { return };
        if t.broadcast.has_seen(&id) {
            return;
        }
        let active = t.membership.active().to_vec();
        if t.stem.held.remove(&id).is_some() {
            // The stem looped back to a relay: broadcast from here rather than let it die
            // and wait for an embargo.
            self.fluff(now, topic, id, data, from);
            return;
        }
        if t.own.contains(&id) {
            // Back at its publisher, which must not broadcast it: on along another neighbour.
            let others: Vec<P> = active.iter().copied().filter(|p| *p != from).collect();
            if !others.is_empty() {
                let next = others[self.rng.random_range(0..others.len())];
                self.out.send_payload(next, topic, Body::Stem { id, data });
            }
            return;
        }
        // A full store does not change what is relayed (fluffing everything then would tell
        // a successor that whatever this node still stems is its own): the message goes on
        // unheld, without an embargo here.
        let full = t.stem.held.len() >= self.config.stem.max_held;
        let next = if Stem::<P>::fluffs(&self.config.stem, &mut self.rng) {
            None
        } else {
            t.stem.successor(&self.config.stem, now, &mut self.rng, &active, Some(from))
        };
        match next {
            Some(next) if full => self.out.send_payload(next, topic, Body::Stem { id, data }),
            Some(next) => {
                t.stem.held.insert(id, Held { data: data.clone(), inbound: Some(from), next });
                self.out.send_payload(next, topic, Body::Stem { id, data });
                let at = Stem::<P>::embargo(&self.config.stem, now, &mut self.rng);
                self.out.timer(at, Timer::new(topic, TimerKind::Embargo(id)));
            }
            None => self.fluff(now, topic, id, data, from),
        }
    }

    /// Broadcasts a stem message from here, delivering it as received from `from`.
    fn fluff(&mut self, now: Instant, topic: TopicId, id: MessageId, data: Vec<u8>, from: P) {
        let Some(t) = self.topics.get_mut(&topic) else { return };
        let own = t.own.remove(&id);
        let mut ctx = plumtree::Ctx { config: &self.broadcast, out: &mut self.out, now };
        if t.broadcast.broadcast(&mut ctx, id, data.clone()) {
            if own {
                self.out.event(Event::PublishConfirmed { topic, id });
            } else {
                self.out.event(Event::Received { topic, id, data, from });
            }
        }
    }

    /// The transport lost `peer`.
    pub fn handle_disconnected(&mut self, now: Instant, peer: P) {
        self.scheduler.forget(&peer);
        let topics: Vec<TopicId> = self.topics.keys().copied().collect();
        for topic in topics {
            self.with_membership(now, topic, |m, ctx| m.on_disconnected(ctx, peer));
        }
        self.finish(now);
    }

    /// A timer came due.
    pub fn handle_timer(&mut self, now: Instant, timer: Timer) {
        let Some(topic) = timer.topic else {
            let mut steps = Vec::new();
            self.scheduler.on_timer(now, &mut self.rng, &mut steps);
            self.apply(steps);
            return;
        };
        if !self.topics.contains_key(&topic) {
            return;
        }
        match timer.kind {
            TimerKind::Shuffle => {
                self.with_membership(now, topic, |m, ctx| m.on_shuffle_timer(ctx))
            }
            TimerKind::NeighborTimeout => {
                self.with_membership(now, topic, |m, ctx| m.on_neighbor_timeout(ctx));
            }
            TimerKind::Rejoin => self.with_membership(now, topic, |m, ctx| m.on_rejoin(ctx)),
            TimerKind::Rotate => {
                if let Some(rotation) = self.config.rotation {
                    self.with_membership(now, topic, |m, ctx| {
                        m.rotate(ctx, rotation.count);
                        m.schedule_rotation(ctx, &rotation);
                    });
                }
            }
            TimerKind::Graft(id) => {
                self.with_broadcast(now, topic, |b, ctx| b.on_graft_timer(ctx, id))
            }
            TimerKind::Dispatch => self.with_broadcast(now, topic, |b, ctx| b.on_dispatch(ctx)),
            TimerKind::Evict => self.with_broadcast(now, topic, |b, ctx| b.on_evict(ctx)),
            TimerKind::Embargo(id) => {
                let held = self.topics.get_mut(&topic).and_then(|t| t.stem.held.remove(&id));
                if let Some(held) = held {
                    let from = held.inbound.unwrap_or(self.me);
                    self.fluff(now, topic, id, held.data, from);
                }
            }
            TimerKind::MixConfirm(id, attempt) => {
                let current = self.topics.get(&topic).and_then(|t| t.mix.get(&id));
                if current.is_some_and(|(_, _, token)| *token == attempt) {
                    self.send_mix(now, topic, id);
                }
            }
            TimerKind::Flush => {}
        }
        self.finish(now);
    }

    fn with_broadcast(
        &mut self,
        now: Instant,
        topic: TopicId,
        f: impl FnOnce(&mut Broadcast<P>, &mut plumtree::Ctx<'_, P>),
    ) {
        if let Some(t) = self.topics.get_mut(&topic) {
            let mut ctx = plumtree::Ctx { config: &self.broadcast, out: &mut self.out, now };
            f(&mut t.broadcast, &mut ctx);
        }
    }

    /// The filter's answers changed: neighbours it no longer admits go.
    pub fn refilter(&mut self, now: Instant, topic: &TopicId) {
        self.with_membership(now, *topic, |m, ctx| m.refilter(ctx));
        self.finish(now);
    }

    /// Rotates `count` neighbours now.
    pub fn rotate_now(&mut self, now: Instant, topic: &TopicId, count: usize) {
        self.with_membership(now, *topic, |m, ctx| m.rotate(ctx, count));
        self.finish(now);
    }
}
