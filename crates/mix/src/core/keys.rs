//! Mix keys per epoch.
//!
//! With rotation on, epoch `e` spans Unix time `[e·E, (e+1)·E)` for the network-wide epoch
//! length `E`. A node holds the key of the current epoch, the key of the next one (already
//! advertised, so that senders whose clocks run ahead, and packets built just before the
//! boundary, find it), and during the first `overlap` of an epoch the previous key, for packets
//! and SURBs still in flight. Each key has its own replay filter, which is dropped with the key:
//! a replayed packet is refused for exactly as long as the key that opens it exists.
//! Secret keys zeroize themselves on drop.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mix_sphinx::{NodePublicKey, NodeSecretKey, ReplayTag};
use rand::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::replay::{ReplayConfig, ReplayFilter, ReplayFull, ReplaySnapshot};

/// Epoch length and overlap. Every node of a network must use the same epoch length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationConfig {
    /// How long one key is current.
    pub epoch: Duration,
    /// How long the previous key still opens packets after a rotation. It must exceed the
    /// longest time a packet or a SURB reply spends in flight.
    pub overlap: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self { epoch: Duration::from_secs(3600), overlap: Duration::from_secs(300) }
    }
}

impl RotationConfig {
    /// The epoch that Unix time `unix` falls in.
    pub fn epoch_at(&self, unix: Duration) -> u64 {
        (unix.as_millis() / self.epoch.as_millis().max(1)) as u64
    }

    /// When `epoch` starts, in Unix time.
    pub fn start_of(&self, epoch: u64) -> Duration {
        self.epoch.saturating_mul(u32::try_from(epoch).unwrap_or(u32::MAX))
    }
}

/// A key's public half with the epoch it serves, as records advertise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochKeys {
    /// The epoch of `current`.
    pub epoch: u64,
    /// The key of `epoch`.
    pub current: NodePublicKey,
    /// The key of `epoch + 1`.
    pub next: NodePublicKey,
}

/// A key's replay filter, created with its first tag. Shared with hop workers, which check a
/// packet's tag right after its MAC, before the costly rest: the lock makes the check and the
/// insertion one step, so two copies opened at once on two threads never both pass.
type SharedFilter = Arc<Mutex<LazyFilter>>;

/// A replay filter made when its first tag comes (the next epoch's key may never see one).
struct LazyFilter {
    config: ReplayConfig,
    /// The filter's hash-seed secret, derived from the key it serves.
    secret: Zeroizing<[u8; 32]>,
    filter: Option<ReplayFilter>,
}

impl LazyFilter {
    fn new(config: ReplayConfig, key: &NodeSecretKey) -> Self {
        // Straight into zeroizing memory; the hasher, which held the key, wipes itself on drop
        // (sha2's `zeroize` feature).
        let mut secret = Zeroizing::new([0u8; 32]);
        Sha256::new()
            .chain_update(b"libp2p-mix replay filter secret")
            .chain_update(key.to_bytes().as_slice())
            .finalize_into((&mut *secret).into());
        Self { config, secret, filter: None }
    }
}

fn lock(filter: &SharedFilter) -> MutexGuard<'_, LazyFilter> {
    filter.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Slot {
    epoch: u64,
    /// Shared with hop workers, which open packets with it off the core's thread.
    secret: Arc<NodeSecretKey>,
    replay: SharedFilter,
}

impl Slot {
    fn new(epoch: u64, secret: NodeSecretKey, config: ReplayConfig) -> Self {
        let replay = Arc::new(Mutex::new(LazyFilter::new(config, &secret)));
        Self { epoch, secret: Arc::new(secret), replay }
    }
}

/// Which held key opened a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyUse {
    Current,
    Previous,
    Next,
}

/// The keys a node holds.
pub(crate) struct KeyRing {
    replay_config: ReplayConfig,
    rotation: Option<RotationConfig>,
    current: Slot,
    previous: Option<Slot>,
    next: Option<Slot>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("epoch", &self.current.epoch)
            .field("previous", &self.previous.as_ref().map(|s| s.epoch))
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A ring whose current key is `secret`. Without rotation it is the only key, for ever.
    pub(crate) fn new(
        secret: NodeSecretKey,
        rotation: Option<RotationConfig>,
        replay: ReplayConfig,
    ) -> Self {
        Self {
            replay_config: replay,
            rotation,
            current: Slot::new(0, secret, replay),
            previous: None,
            next: None,
        }
    }

    pub(crate) fn rotation(&self) -> Option<&RotationConfig> {
        self.rotation.as_ref()
    }

    /// The advertised keys, once rotation has started.
    pub(crate) fn epoch_keys(&self) -> Option<EpochKeys> {
        let next = self.next.as_ref()?;
        Some(EpochKeys {
            epoch: self.current.epoch,
            current: self.current.secret.public_key(),
            next: next.secret.public_key(),
        })
    }

    /// Brings the ring to Unix time `unix`: rotates if an epoch began, drops the previous key
    /// when the overlap ended. Returns whether the advertised keys changed.
    pub(crate) fn advance<R: CryptoRng>(&mut self, unix: Duration, rng: &mut R) -> bool {
        let Some(rotation) = self.rotation else { return false };
        let epoch = rotation.epoch_at(unix);
        let mut changed = false;
        if self.next.is_none() {
            // Start: a fresh key for the epoch we are in. The key given at construction may
            // have served an earlier run of this node (or an earlier epoch); reusing it with an
            // empty replay filter would let every packet captured under it be replayed.
            let config = self.replay_config;
            self.current = Slot::new(epoch, NodeSecretKey::generate(rng), config);
            self.next = Some(Slot::new(epoch + 1, NodeSecretKey::generate(rng), config));
            changed = true;
        }
        while self.current.epoch < epoch {
            let next = self.next.take().expect("set above");
            let old = std::mem::replace(&mut self.current, next);
            // A key two epochs old (the node slept through an epoch) is not kept at all.
            self.previous = (old.epoch + 1 == self.current.epoch).then_some(old);
            if self.current.epoch < epoch {
                // More than one epoch passed: skip straight to a fresh key for this one.
                self.current = Slot::new(epoch, NodeSecretKey::generate(rng), self.replay_config);
                self.previous = None;
            }
            let next =
                Slot::new(self.current.epoch + 1, NodeSecretKey::generate(rng), self.replay_config);
            self.next = Some(next);
            changed = true;
        }
        if self.previous.is_some() && unix >= rotation.start_of(epoch) + rotation.overlap {
            self.previous = None;
        }
        changed
    }

    /// The next instant (in Unix time) at which [`Self::advance`] has something to do.
    pub(crate) fn next_change(&self) -> Option<Duration> {
        let rotation = self.rotation?;
        let next_epoch = rotation.start_of(self.current.epoch + 1);
        Some(match self.previous {
            Some(_) => next_epoch.min(rotation.start_of(self.current.epoch) + rotation.overlap),
            None => next_epoch,
        })
    }

    /// Whether the next key is accepted already: during the last `overlap` of an epoch, for
    /// senders whose clocks run ahead.
    fn next_open(&self, unix: Duration) -> bool {
        self.rotation.is_some_and(|r| unix + r.overlap >= r.start_of(self.current.epoch + 1))
    }

    /// The replay filters of the keys held now, by public key.
    pub(crate) fn replay_snapshots(&self) -> Vec<([u8; 32], ReplaySnapshot)> {
        self.slots()
            .filter_map(|slot| {
                let snapshot = lock(&slot.replay).filter.as_ref()?.snapshot();
                Some((*slot.secret.public_key().as_bytes(), snapshot))
            })
            .collect()
    }

    /// Restores the saved filter of every held key whose public key matches one in `saved`.
    /// Returns how many were restored.
    pub(crate) fn restore_replay(&mut self, saved: &[([u8; 32], ReplaySnapshot)]) -> usize {
        let config = self.replay_config;
        let mut restored = 0;
        for slot in self.slots_mut() {
            let public = *slot.secret.public_key().as_bytes();
            let Some((_, snapshot)) = saved.iter().find(|(k, _)| *k == public) else { continue };
            let mut lazy = lock(&slot.replay);
            match ReplayFilter::restore(&config, snapshot, lazy.secret.clone()) {
                Some(filter) => {
                    lazy.filter = Some(filter);
                    restored += 1;
                }
                // The state file's decoder refuses such snapshots; one built in code may not.
                None => tracing::warn!("a saved replay filter does not fit; its key starts empty"),
            }
        }
        restored
    }

    /// The secret keys held now, when keys rotate (current, previous, next).
    pub(crate) fn epoch_secrets(&self) -> Vec<Zeroizing<[u8; 32]>> {
        if self.rotation.is_none() || self.next.is_none() {
            return Vec::new();
        }
        self.slots().map(|slot| slot.secret.to_bytes()).collect()
    }

    /// The current key's filter: tags over one stage's capacity, and stages in use.
    pub(crate) fn replay_fill(&self) -> (f64, usize) {
        let current = lock(&self.current.replay);
        current.filter.as_ref().map_or((0.0, 1), |f| (f.fill_ratio(), f.stages()))
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        std::iter::once(&self.current).chain(self.previous.as_ref()).chain(self.next.as_ref())
    }

    fn slots_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        std::iter::once(&mut self.current).chain(self.previous.as_mut()).chain(self.next.as_mut())
    }

    /// The keys that may open a packet at Unix time `unix`, in the order they are tried: the
    /// current key, else the previous, else the next one.
    pub(crate) fn opening_keys(&self, unix: Duration) -> OpeningKeys {
        let mut keys = OpeningKeys::default();
        keys.push(&self.current, KeyUse::Current);
        if let Some(prev) = &self.previous {
            keys.push(prev, KeyUse::Previous);
        }
        if let Some(next) = self.next.as_ref().filter(|_| self.next_open(unix)) {
            keys.push(next, KeyUse::Next);
        }
        keys
    }

    /// Whether the ring still holds `key` (it may have rotated out while a packet it opened
    /// was being processed elsewhere).
    pub(crate) fn holds(&self, key: &Arc<NodeSecretKey>) -> bool {
        self.slots().any(|slot| Arc::ptr_eq(&slot.secret, key))
    }
}

/// A key to try on a packet, with its replay filter.
#[derive(Clone)]
pub(crate) struct OpeningKey {
    pub(crate) secret: Arc<NodeSecretKey>,
    pub(crate) use_: KeyUse,
    replay: SharedFilter,
}

/// Up to three keys to try on a packet, cheap to clone and to send to another thread.
#[derive(Clone, Default)]
pub(crate) struct OpeningKeys {
    keys: [Option<OpeningKey>; 3],
}

impl OpeningKeys {
    fn push(&mut self, slot: &Slot, use_: KeyUse) {
        if let Some(free) = self.keys.iter_mut().find(|k| k.is_none()) {
            *free = Some(OpeningKey {
                secret: Arc::clone(&slot.secret),
                use_,
                replay: Arc::clone(&slot.replay),
            });
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &OpeningKey> {
        self.keys.iter().flatten()
    }

    /// Records `tag` in the replay filter of `key`; whether it was seen before (or the filter
    /// is full).
    pub(crate) fn check_replay(
        &self,
        key: &OpeningKey,
        tag: &ReplayTag,
    ) -> Result<bool, ReplayFull> {
        let mut lazy = lock(&key.replay);
        let LazyFilter { config, secret, filter } = &mut *lazy;
        filter
            .get_or_insert_with(|| ReplayFilter::new(config, secret.clone()))
            .check_and_insert(tag)
    }
}
