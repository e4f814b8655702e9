//! The costly part of processing a received packet, cut out as a job any thread can run.
//!
//! Opening a packet (the Diffie-Hellman, the MAC check) and peeling it (decrypting the routing
//! block and the payload, blinding α) is nearly all the CPU a hop costs, and it needs nothing
//! but the packet and the keys. Everything that decides, the replay filter first, stays with
//! the core, one packet at a time: [`super::MixCore::prepare_packet`] makes a [`HopJob`],
//! anyone runs it, [`super::MixCore::finish_packet`] takes the [`HopDone`]. Two copies of a
//! packet opened at once on two threads carry the same replay tag, so whichever finishes
//! second is a replay, exactly as if they had been processed in turn.

use std::sync::Arc;

use mix_sphinx::{Action, NodeSecretKey, Packet, ProcessError, ReplayTag, WireFormat};

use super::keys::{KeyUse, OpeningKeys};

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
        let outcome = self.outcome.as_ref().map(|o| (&o.tag, &o.action));
        f.debug_struct("HopDone").field("outcome", &outcome).finish_non_exhaustive()
    }
}

/// A packet whose MAC held under `key`.
pub(super) struct Opened {
    pub(super) key: Arc<NodeSecretKey>,
    pub(super) which: KeyUse,
    pub(super) tag: ReplayTag,
    /// The peel can still fail (a payload that is not ours, a malformed final block); that is
    /// judged after the replay check, so a replayed bad packet counts as a replay.
    pub(super) action: Result<Action, ProcessError>,
}

impl HopJob {
    pub(super) fn new(packet: Packet, keys: OpeningKeys, format: WireFormat) -> Self {
        Self { packet, keys, format }
    }

    /// Opens the packet with the first key whose MAC holds, and peels it.
    pub fn run(self) -> HopDone {
        let Self { mut packet, keys, format } = self;
        let Some((first, _)) = keys.iter().next() else {
            return HopDone { packet, outcome: Err(ProcessError::MacMismatch) };
        };
        let mut secrets: [&NodeSecretKey; 3] = [first; 3];
        let mut n = 0;
        for ((key, _), slot) in keys.iter().zip(&mut secrets) {
            *slot = key;
            n += 1;
        }
        let outcome = match NodeSecretKey::open_any(&secrets[..n], &format, &mut packet) {
            Ok((i, opened)) => {
                let tag = *opened.replay_tag();
                let action = opened.peel();
                let (key, which) = keys.iter().nth(i).expect("opened with one of them");
                Ok(Opened { key: Arc::clone(key), which: *which, tag, action })
            }
            Err(e) => Err(e),
        };
        HopDone { packet, outcome }
    }
}
