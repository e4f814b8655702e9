//! Settings, with the defaults of the papers where they have one.

use std::time::Duration;

/// The default liveness timeout of the driver: a neighbour quiet this long (probes included)
/// is taken for gone.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a node may hold a publication before forwarding it (a window, or a Poisson
/// delay's cap). Held publications are in memory, so this bounds them by the inbound rate.
pub const MAX_FORWARDING_DELAY: Duration = Duration::from_secs(60);

/// The longest a silent neighbour goes unnoticed with liveness timeout `timeout`: the timeout
/// and one probe period (a quarter of it; the clock is checked once a period). The
/// simulator's silent-crash model uses this.
pub fn silent_neighbour_detection(timeout: Duration) -> Duration {
    timeout + timeout / 4
}

/// HyParView membership.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipConfig {
    /// Neighbours (symmetric, used to broadcast).
    pub active_view: usize,
    /// Contacts kept in reserve to replace neighbours.
    pub passive_view: usize,
    /// Steps of a join's random walk (the joiner enters active views at its end).
    pub active_walk: u8,
    /// Step of the join walk at which the joiner enters a passive view.
    pub passive_walk: u8,
    /// Steps of a shuffle's random walk.
    pub shuffle_walk: u8,
    /// Neighbours offered in a shuffle.
    pub shuffle_active: usize,
    /// Passive contacts offered in a shuffle.
    pub shuffle_passive: usize,
    /// How often a node shuffles.
    pub shuffle_interval: Duration,
    /// How long a neighbour request may go unanswered.
    pub neighbor_timeout: Duration,
    /// How long an isolated node waits before joining again through what it knows. A node
    /// short of neighbours, with no contact left to ask, joins again through a bootstrap
    /// peer that has not taken it, after this wait doubled each time up to
    /// [`Self::shuffle_interval`] (a few times per bootstrap peer at most).
    pub rejoin_interval: Duration,
    /// Passive contacts one peer may have placed at most (through shuffles, forward joins,
    /// or by contacting this node itself): many identities behind one connection cannot
    /// fill the view with their own.
    pub contacts_per_source: usize,
    /// Join, neighbour and shuffle requests one peer may send at once; after that, one per
    /// [`Self::request_interval`]. More are ignored (and counted).
    pub request_burst: u32,
    /// See [`Self::request_burst`].
    pub request_interval: Duration,
    /// A joiner at the end of a forward-join walk takes a neighbour's place at most once
    /// per this interval (otherwise only a free slot): walks end on a peer's word.
    pub walk_eviction_interval: Duration,
    /// Once the application sets a directory of members (`State::set_directory`; the mix
    /// route sets the mix pool), a node asks and accepts as neighbours only peers within its
    /// neighbourhood: this many of the members nearest to it by a pseudo-random distance of
    /// the pair, skipping unreachable ones, or peers that have it among theirs. Either end
    /// can check that, so Sybils become neighbours only as often as chance places them
    /// there. 0: any peer.
    pub neighbourhood: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            active_view: 5,
            passive_view: 30,
            active_walk: 6,
            passive_walk: 3,
            shuffle_walk: 6,
            shuffle_active: 3,
            shuffle_passive: 4,
            shuffle_interval: Duration::from_secs(60),
            neighbor_timeout: Duration::from_millis(500),
            rejoin_interval: Duration::from_secs(5),
            contacts_per_source: 8,
            request_burst: 8,
            request_interval: Duration::from_secs(2),
            walk_eviction_interval: Duration::from_secs(10),
            neighbourhood: 5,
        }
    }
}

/// PlumTree broadcast.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastConfig {
    /// How long after an announcement (IHAVE) the payload may take before it is asked for,
    /// to which three times the forwarding's typical delay ([`Forwarding::typical_delay`]) is
    /// added.
    pub graft_timeout: Duration,
    /// How long before asking the next announcer.
    pub graft_retry: Duration,
    /// Announcements are collected this long and sent together.
    pub ihave_delay: Duration,
    /// Payloads kept to answer requests.
    pub cache_retention: Duration,
    /// Message ids remembered, to drop duplicates.
    pub seen_retention: Duration,
    /// Ids per IHAVE at most (it must fit a control frame).
    pub max_ihave: usize,
    /// A new neighbour hears the ids of the messages of this last span (at most four IHAVEs'
    /// worth), so that what was pushed to a neighbour that died unnoticed still spreads once
    /// the dead neighbour is replaced.
    pub announce_recent: Duration,
    /// Payloads kept at most (the oldest go first): what a flood of new messages can pin.
    pub max_cached: usize,
    /// Message ids remembered at most (the oldest go first).
    pub max_seen: usize,
    /// Announced ids waiting for their payload at most; further announcements are ignored
    /// until some arrive or time out.
    pub max_missing: usize,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        Self {
            graft_timeout: Duration::from_millis(120),
            graft_retry: Duration::from_millis(40),
            ihave_delay: Duration::from_millis(5),
            cache_retention: Duration::from_secs(30),
            seen_retention: Duration::from_secs(90),
            max_ihave: 12,
            announce_recent: Duration::from_secs(20),
            max_cached: 4096,
            max_seen: 65_536,
            max_missing: 4096,
        }
    }
}

/// When queued messages (own and forwarded alike) leave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Forwarding {
    /// At once.
    Immediate,
    /// Collected for `window` (or until `max_batch` are waiting), then sent in an order
    /// drawn by a Fisher-Yates shuffle from a CSPRNG. A window holding fewer than
    /// `min_batch` waits for more, up to four windows.
    Window {
        /// How long a batch collects (100 to 200 ms recommended).
        window: Duration,
        /// Messages below which a batch waits for more.
        min_batch: usize,
        /// Messages at which a batch leaves early (16 to 256).
        max_batch: usize,
    },
    /// Each message waits an independent exponential delay of mean `mean`, at most `cap`:
    /// no batch boundary for an observer to align with.
    Poisson {
        /// Mean delay.
        mean: Duration,
        /// Longest delay.
        cap: Duration,
    },
}

impl Forwarding {
    /// The batch-and-shuffle window with the recommended settings (150 ms, early at 64).
    pub fn window() -> Self {
        Self::Window { window: Duration::from_millis(150), min_batch: 1, max_batch: 64 }
    }

    /// About the most a message waits in one node's queue. Every hop costs this much more
    /// than the network alone would, so a payload on a tree path a few hops longer than the
    /// path of its announcement trails it by a few times this: the graft timeout is extended
    /// by three times it (fewer would graft, and duplicate, on most broadcasts).
    pub fn typical_delay(&self) -> Duration {
        match *self {
            Self::Immediate => Duration::ZERO,
            Self::Window { window, .. } => window,
            Self::Poisson { mean, cap } => (mean * 3).min(cap),
        }
    }
}

/// Partial rotation of the active view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotationConfig {
    /// Mean time between rotations (120 to 300 s).
    pub interval: Duration,
    /// Each interval is drawn uniformly within `interval ± jitter`.
    pub jitter: Duration,
    /// Neighbours replaced per rotation (1 or 2).
    pub count: usize,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(180), jitter: Duration::from_secs(60), count: 1 }
    }
}

/// Dandelion++ stems ([`crate::Route::Stem`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StemConfig {
    /// How long stem successors are kept (10 min in Dandelion++).
    pub epoch: Duration,
    /// Each relay broadcasts ("fluffs") a stem message with this probability instead of
    /// relaying it further.
    pub fluff_probability: f64,
    /// Mean of the embargo: a stem message not seen broadcast by then is broadcast by the node
    /// holding it.
    pub embargo: Duration,
    /// Stem successors per epoch.
    pub successors: usize,
    /// Stem messages held at most, waiting to be seen broadcast; when full, a relay
    /// broadcasts what reaches it at once.
    pub max_held: usize,
}

impl Default for StemConfig {
    fn default() -> Self {
        Self {
            epoch: Duration::from_secs(600),
            fluff_probability: 0.1,
            embargo: Duration::from_secs(10),
            successors: 2,
            max_held: 1024,
        }
    }
}

/// Where a mix publication's rebroadcaster is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Rebroadcasters {
    /// From the directory the application sets ([`crate::State::set_directory`]: e.g. the
    /// members in the mixnet's signed discovery records), the same for every node, so that an
    /// attacker who poisons one node's views gains nothing there; from the views only while
    /// the directory is empty.
    #[default]
    Directory,
    /// From this node's own active and passive views. A Sybil that fills a victim's views
    /// then receives most of the victim's mix publications, and the victim is one of the few
    /// nodes whose views hold it. Kept to measure the difference.
    Views,
}

/// Publishing through the mixnet ([`crate::Route::Mix`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixRouteConfig {
    /// How long the publisher waits to see its message come back through gossip.
    pub confirm_timeout: Duration,
    /// Fresh paths (and rebroadcasters) tried after the first.
    pub retries: u32,
    /// Where rebroadcasters are drawn from.
    pub rebroadcasters: Rebroadcasters,
}

impl Default for MixRouteConfig {
    fn default() -> Self {
        Self {
            confirm_timeout: Duration::from_secs(20),
            retries: 3,
            rebroadcasters: Rebroadcasters::default(),
        }
    }
}

/// All of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Membership.
    pub membership: MembershipConfig,
    /// Broadcast.
    pub broadcast: BroadcastConfig,
    /// When publications leave (own and forwarded).
    pub forwarding: Forwarding,
    /// Partial rotation of neighbours; `None` keeps them as long as they live.
    pub rotation: Option<RotationConfig>,
    /// Stems.
    pub stem: StemConfig,
    /// The mix route.
    pub mix: MixRouteConfig,
    /// The largest publication.
    pub max_message_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            membership: MembershipConfig::default(),
            broadcast: BroadcastConfig::default(),
            forwarding: Forwarding::window(),
            rotation: Some(RotationConfig::default()),
            stem: StemConfig::default(),
            mix: MixRouteConfig::default(),
            max_message_size: crate::limits::MAX_PAYLOAD,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named setting is out of its range.
    #[error("{setting}: {why}")]
    OutOfRange {
        /// The setting, as `section.field`.
        setting: &'static str,
        /// What it must be.
        why: &'static str,
    },
}

fn check(ok: bool, setting: &'static str, why: &'static str) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::OutOfRange { setting, why }) }
}

impl Config {
    /// Checks settings that would break the protocol (the ranges the defaults come from are
    /// advice, not checked: window 100–200 ms, batches 16–256, rotation 120–300 s).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.membership;
        check(m.active_view >= 1, "membership.active_view", "at least 1")?;
        check(m.passive_view >= m.active_view, "membership.passive_view", "at least active_view")?;
        check(m.active_walk >= m.passive_walk, "membership.active_walk", "at least passive_walk")?;
        check(m.contacts_per_source >= 1, "membership.contacts_per_source", "at least 1")?;
        check(m.request_burst >= 1, "membership.request_burst", "at least 1")?;
        check(
            !m.shuffle_interval.is_zero() && !m.neighbor_timeout.is_zero(),
            "membership.shuffle_interval",
            "shuffle_interval and neighbor_timeout must be above zero",
        )?;
        let b = &self.broadcast;
        check(
            (1..=crate::limits::MAX_IDS).contains(&b.max_ihave),
            "broadcast.max_ihave",
            "1 to 14 (an IHAVE must fit a control frame)",
        )?;
        check(
            b.max_cached >= 1 && b.max_seen >= b.max_cached && b.max_missing >= 1,
            "broadcast.max_seen",
            "max_cached and max_missing at least 1, max_seen at least max_cached",
        )?;
        check(
            b.seen_retention >= b.cache_retention,
            "broadcast.seen_retention",
            "at least cache_retention (or forgotten messages come back as new)",
        )?;
        match self.forwarding {
            Forwarding::Immediate => {}
            Forwarding::Window { window, min_batch, max_batch } => {
                check(
                    !window.is_zero() && window <= MAX_FORWARDING_DELAY,
                    "forwarding.window",
                    "above zero, at most 60 s",
                )?;
                check(
                    min_batch >= 1 && max_batch >= min_batch,
                    "forwarding.max_batch",
                    "min_batch at least 1 and max_batch at least min_batch",
                )?;
            }
            Forwarding::Poisson { mean, cap } => {
                check(
                    !mean.is_zero() && cap >= mean && cap <= MAX_FORWARDING_DELAY,
                    "forwarding.cap",
                    "mean above zero, cap >= mean, cap at most 60 s",
                )?;
            }
        }
        if let Some(r) = &self.rotation {
            check(
                !r.interval.is_zero() && r.jitter < r.interval,
                "rotation.jitter",
                "interval above zero and jitter below it",
            )?;
            check(
                r.count >= 1 && r.count < m.active_view.max(2),
                "rotation.count",
                "at least 1 and below active_view",
            )?;
        }
        let s = &self.stem;
        check((0.0..=1.0).contains(&s.fluff_probability), "stem.fluff_probability", "0 to 1")?;
        check(
            s.successors >= 1 && !s.epoch.is_zero(),
            "stem.successors",
            "at least 1, epoch above zero",
        )?;
        check(
            (1..=crate::limits::MAX_PAYLOAD).contains(&self.max_message_size),
            "max_message_size",
            "1 to MAX_PAYLOAD (4029) bytes (a publication must fit the largest bucket)",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_broken_settings_are_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        let broken = [
            Config { max_message_size: 5000, ..Config::default() },
            Config {
                forwarding: Forwarding::Window {
                    window: Duration::from_millis(150),
                    min_batch: 4,
                    max_batch: 2,
                },
                ..Config::default()
            },
            Config {
                rotation: Some(RotationConfig { count: 5, ..RotationConfig::default() }),
                ..Config::default()
            },
            Config {
                stem: StemConfig { fluff_probability: 1.5, ..StemConfig::default() },
                ..Config::default()
            },
            Config {
                forwarding: Forwarding::Poisson {
                    mean: Duration::from_millis(50),
                    cap: Duration::from_secs(3600),
                },
                ..Config::default()
            },
        ];
        let named: Vec<&str> = broken
            .iter()
            .map(|c| match c.validate() {
                Err(ConfigError::OutOfRange { setting, .. }) => setting,
                Ok(()) => "accepted",
            })
            .collect();
        assert_eq!(
            named,
            [
                "max_message_size",
                "forwarding.max_batch",
                "rotation.count",
                "stem.fluff_probability",
                "forwarding.cap"
            ]
        );
    }
}
