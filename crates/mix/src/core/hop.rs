//! The costly part of processing a received packet, cut out as a job any thread can run.
//!
//! Opening a packet (the Diffie-Hellman, the MAC check) and peeling it (decrypting the routing
//! block and the payload, blinding α) is nearly all the CPU a hop costs, and it needs nothing
//! but the packet, the keys and their replay filters. [`super::MixCore::prepare_packet`] makes
//! a [`HopJob`], anyone runs it, [`super::MixCore::finish_packet`] takes the [`HopDone`] and
//! decides everything else, one packet at a time. The job checks the packet's replay tag right
//! after the MAC, under the filter's lock (check and insertion in one step), and peels only a
//! fresh packet: of two copies opened at once on two threads exactly one passes, and a replay
//! costs one Diffie-Hellman, as it did on one thread.

use std::sync::Arc;

use mix_sphinx::{Action, NodeSecretKey, Packet, ProcessError, ReplayTag, WireFormat};

use super::keys::{KeyUse, OpeningKeys};
use super::replay::ReplayFull;

/// A received packet with the keys that may open it. `Send`: run it on any thread.
pub struct HopJob {
    packet: Packet,
    keys: OpeningKeys,
    format: WireFormat,
}

impl std::fmt::Debug for HopJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopJob").finish_non_exhaustive()
    }
}

/// A [`HopJob`] run: the packet as peeled, for the core to decide on.
pub struct HopDone {
    pub(super) packet: Packet,
    pub(super) outcome: Result<Opened, ProcessError>,
}

impl std::fmt::Debug for HopDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = self.outcome.as_ref().map(|o| (&o.tag, &o.seen, &o.action));
        f.debug_struct("HopDone").field("outcome", &outcome).finish_non_exhaustive()
    }
}

/// A packet whose MAC held under `key`.
pub(super) struct Opened {
    pub(super) key: Arc<NodeSecretKey>,
    pub(super) which: KeyUse,
    pub(super) tag: ReplayTag,
    /// Whether the tag was in the key's replay filter already (or the filter is full).
    pub(super) seen: Result<bool, ReplayFull>,
    /// The peel, for a fresh packet only. It can still fail (a payload that is not ours, a
    /// malformed final block).
    pub(super) action: Option<Result<Action, ProcessError>>,
}

impl HopJob {
    pub(super) fn new(packet: Packet, keys: OpeningKeys, format: WireFormat) -> Self {
        Self { packet, keys, format }
    }

    /// Opens the packet with the first key whose MAC holds, and peels it.
    pub fn run(self) -> HopDone {
        let Self { mut packet, keys, format } = self;
        let Some(first) = keys.iter().next() else {
            return HopDone { packet, outcome: Err(ProcessError::MacMismatch) };
        };
        let mut secrets: [&NodeSecretKey; 3] = [&first.secret; 3];
        let mut n = 0;
        for (key, slot) in keys.iter().zip(&mut secrets) {
            *slot = &key.secret;
            n += 1;
        }
        let outcome = match NodeSecretKey::open_any(&secrets[..n], &format, &mut packet) {
            Ok((i, opened)) => {
                let tag = *opened.replay_tag();
                let key = keys.iter().nth(i).expect("opened with one of them");
                let seen = keys.check_replay(key, &tag);
                let action = (seen == Ok(false)).then(|| opened.peel());
                Ok(Opened { key: Arc::clone(&key.secret), which: key.use_, tag, seen, action })
            }
            Err(e) => Err(e),
        };
        HopDone { packet, outcome }
    }
}
