//! The labels that name frames to their receiver, and the window of them a receiver expects.
//!
//! A frame's label is HMAC-SHA-256(label key, sequence number), cut to 16 bytes: without the
//! key, labels of one stream look like those of any other, and like random bytes. The receiver
//! computes the labels of the sequence numbers it may see next and looks each arriving frame
//! up; a label it does not expect is not a frame of this stream (or is too old to tell).

use std::collections::{HashMap, VecDeque};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::frame::LABEL_LEN;

/// A frame label.
pub(crate) type Label = [u8; LABEL_LEN];

/// The label of frame `seq` under `key`.
pub(crate) fn label(key: &[u8; 32], seq: u32) -> Label {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(&seq.to_be_bytes());
    let out = mac.finalize().into_bytes();
    out[..LABEL_LEN].try_into().expect("32 >= 16")
}

/// A change to the set of labels a receiver expects, for an index over many streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelUpdate {
    Added(Label),
    Removed(Label),
}

/// The labels of sequence numbers `[low, next)`: up to `behind` below the highest seen and
/// `ahead` above it. Seen ones stay (marked) until they fall out, so that a duplicate is told
/// from a stranger's frame.
pub(crate) struct LabelWindow {
    key: Zeroizing<[u8; 32]>,
    expected: HashMap<Label, (u32, bool)>,
    /// The labels of `[low, next)` in order: eviction needs no HMAC.
    order: VecDeque<Label>,
    low: u32,
    next: u64,
    /// Labels expected above the highest seen: starts small, doubles up to `max_ahead` while
    /// frames arrive far ahead (a sender with many frames in flight).
    ahead: u32,
    max_ahead: u32,
    behind: u32,
    highest: Option<u32>,
    /// The highest sequence number an acknowledgement told the sender about.
    advertised: Option<u32>,
    record: bool,
    updates: Vec<LabelUpdate>,
}

impl std::fmt::Debug for LabelWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelWindow")
            .field("low", &self.low)
            .field("next", &self.next)
            .field("expected", &self.expected.len())
            .finish_non_exhaustive()
    }
}

/// What a label is to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Frame `seq`, not seen before.
    New(u32),
    /// Frame `seq`, seen before.
    Seen(u32),
    /// Not a label of the window.
    Unknown,
}

impl LabelWindow {
    /// Labels expected above the highest seen at first (and the least ever).
    pub(crate) const MIN_AHEAD: u32 = 64;

    /// Labels one authenticated frame may add at most. A sender that jumps to the top of the
    /// window, or asks for many labels ahead, gets the window's growth a frame at a time: each
    /// frame costs the receiver at most this many HMACs, however far it jumps.
    pub(crate) const MAX_NEW_PER_FRAME: u64 = 128;

    /// Expects `0..MIN_AHEAD` first, and at most `max_ahead` above the highest seen later.
    pub(crate) fn new(key: Zeroizing<[u8; 32]>, max_ahead: u32, behind: u32) -> Self {
        let mut window = Self {
            key,
            expected: HashMap::new(),
            order: VecDeque::new(),
            low: 0,
            next: 0,
            ahead: Self::MIN_AHEAD.min(max_ahead.max(1)),
            max_ahead: max_ahead.max(1),
            behind,
            highest: None,
            advertised: None,
            record: false,
            updates: Vec::new(),
        };
        window.extend_to(u64::from(window.ahead));
        window
    }

    fn extend_to(&mut self, end: u64) {
        let end = end.min(u64::from(u32::MAX) + 1);
        self.expected.reserve(end.saturating_sub(self.next) as usize);
        while self.next < end {
            let seq = self.next as u32;
            let l = label(&self.key, seq);
            self.expected.insert(l, (seq, false));
            self.order.push_back(l);
            if self.record {
                self.updates.push(LabelUpdate::Added(l));
            }
            self.next += 1;
        }
    }

    fn grow_towards(&mut self, end: u64) {
        self.extend_to(end.min(self.next + Self::MAX_NEW_PER_FRAME));
    }

    pub(crate) fn lookup(&self, l: &Label) -> Lookup {
        match self.expected.get(l) {
            Some(&(seq, false)) => Lookup::New(seq),
            Some(&(seq, true)) => Lookup::Seen(seq),
            None => Lookup::Unknown,
        }
    }

    /// Frame `seq` (named `label`) authenticated: remember it and slide the window.
    pub(crate) fn mark(&mut self, seen: &Label, seq: u32) {
        if let Some(entry) = self.expected.get_mut(seen) {
            entry.1 = true;
        }
        if self.highest.is_some_and(|h| h >= seq) {
            return;
        }
        // A frame in the upper half of the window, measured from what the sender last heard
        // we had seen: the sender runs further ahead than the window it was told of covers
        // well, and frames beyond it must carry an opening (a Diffie-Hellman each). Frames
        // that arrive in order never land in the upper half of the window of the highest
        // seen, so that alone would never grow it.
        let reference = self.advertised.or(self.highest).unwrap_or(0);
        if seq.saturating_sub(reference) > self.ahead / 2 {
            self.ahead = self.ahead.saturating_mul(2).min(self.max_ahead);
        }
        self.highest = Some(seq);
        // Out with the old first, so that the map never holds more than the window.
        let low = seq.saturating_sub(self.behind);
        while self.low < low {
            let Some(l) = self.order.pop_front() else { break };
            if self.expected.remove(&l).is_some() && self.record {
                self.updates.push(LabelUpdate::Removed(l));
            }
            self.low += 1;
        }
        self.grow_towards(u64::from(seq) + 1 + u64::from(self.ahead));
    }

    /// The sender asks for `labels` above the largest we acknowledged (it runs that far
    /// ahead of what it heard from us): expect them, up to the bound.
    pub(crate) fn expect_ahead(&mut self, labels: u32) {
        if labels <= self.ahead {
            return;
        }
        self.ahead = labels.min(self.max_ahead);
        self.grow_towards(self.highest.map_or(0, |h| u64::from(h) + 1) + u64::from(self.ahead));
    }

    /// An acknowledgement tells the sender that `largest` was seen and how many labels
    /// above it are expected: returns that number (what the window holds now, which may lag
    /// `ahead` by a few frames' growth). The top of the window never moves down, so the sender
    /// may send every frame up to `largest` plus that number without an opening.
    pub(crate) fn advertise(&mut self, largest: u32) -> u32 {
        self.advertised = Some(self.advertised.map_or(largest, |a| a.max(largest)));
        self.next.saturating_sub(u64::from(largest) + 1).min(u64::from(u32::MAX)) as u32
    }

    /// The highest sequence number seen.
    pub(crate) fn highest(&self) -> Option<u32> {
        self.highest
    }

    /// Looks for `l` among the labels of `from..=to` that are not in the window (for a
    /// receiver that knows the stream and can afford to compute them).
    pub(crate) fn search(&self, l: &Label, from: u32, to: u32) -> Option<u32> {
        (from..=to).find(|&seq| label(&self.key, seq) == *l)
    }

    /// Every label expected now.
    pub(crate) fn labels(&self) -> impl Iterator<Item = &Label> {
        self.expected.keys()
    }

    /// Labels expected now.
    pub(crate) fn len(&self) -> usize {
        self.expected.len()
    }

    /// From now on, keeps changes for [`Self::drain_updates`] (for an index over many
    /// streams, which starts from [`Self::labels`]).
    pub(crate) fn record_updates(&mut self) {
        self.record = true;
    }

    /// Changes since the last call (only when recording).
    pub(crate) fn drain_updates(&mut self) -> std::vec::Drain<'_, LabelUpdate> {
        self.updates.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_may_ask_for_labels_ahead_up_to_the_bound() {
        let key = Zeroizing::new([8u8; 32]);
        let mut w = LabelWindow::new(key.clone(), 1000, 16);
        w.mark(&label(&key, 10), 10);
        assert_eq!(w.advertise(10), LabelWindow::MIN_AHEAD);
        assert_eq!(w.lookup(&label(&key, 10 + 300)), Lookup::Unknown);
        // One frame adds at most MAX_NEW_PER_FRAME labels; the next frames add the rest.
        w.expect_ahead(300);
        assert_eq!(w.advertise(10), 64 + 128);
        w.mark(&label(&key, 11), 11);
        assert_eq!(w.advertise(11), 300);
        assert_eq!(w.lookup(&label(&key, 11 + 300)), Lookup::New(311));
        assert_eq!(w.lookup(&label(&key, 11 + 301)), Lookup::Unknown);
        // Never beyond the bound, never smaller than before.
        w.expect_ahead(60_000);
        for seq in 12..30 {
            w.mark(&label(&key, seq), seq);
        }
        assert_eq!(w.advertise(29), 1000);
        assert_eq!(w.lookup(&label(&key, 1029)), Lookup::New(1029));
        assert_eq!(w.lookup(&label(&key, 1030)), Lookup::Unknown);
        w.expect_ahead(5);
        assert_eq!(w.advertise(29), 1000);
    }

    #[test]
    fn a_frame_that_jumps_to_the_top_of_the_window_buys_a_bounded_growth() {
        let key = Zeroizing::new([9u8; 32]);
        let mut w = LabelWindow::new(key.clone(), 4096, 1024);
        w.record_updates();
        w.expect_ahead(4096);
        for seq in 0..40 {
            w.mark(&label(&key, seq), seq);
        }
        w.drain_updates();
        // The hostile frame: the highest label the window holds.
        let top = 39 + w.advertise(39);
        assert_eq!(top, 39 + 4096);
        assert_eq!(w.lookup(&label(&key, top)), Lookup::New(top));
        w.mark(&label(&key, top), top);
        let added = w.drain_updates().filter(|u| matches!(u, LabelUpdate::Added(_))).count();
        assert!(added as u64 <= LabelWindow::MAX_NEW_PER_FRAME, "{added} labels for one frame");
        assert!(w.len() <= 4096 + 1024 + 1, "{}", w.len());
    }

    #[test]
    fn the_window_slides_with_the_highest_seen_and_tells_duplicates() {
        let key = Zeroizing::new([7u8; 32]);
        let mut w = LabelWindow::new(key.clone(), 4, 2);
        w.record_updates();
        assert_eq!(w.len(), 4);
        let l3 = label(&key, 3);
        assert_eq!(w.lookup(&l3), Lookup::New(3));
        w.mark(&l3, 3);
        assert_eq!(w.lookup(&l3), Lookup::Seen(3));
        // Now [1, 8): 0 fell out, 4..8 came in.
        assert_eq!(w.lookup(&label(&key, 0)), Lookup::Unknown);
        assert_eq!(w.lookup(&label(&key, 1)), Lookup::New(1));
        assert_eq!(w.lookup(&label(&key, 7)), Lookup::New(7));
        assert_eq!(w.lookup(&label(&key, 8)), Lookup::Unknown);
        let updates: Vec<_> = w.drain_updates().collect();
        assert_eq!(updates.len(), 5);
        assert!(updates.contains(&LabelUpdate::Removed(label(&key, 0))));
        // Another key's labels are strangers.
        assert_eq!(w.lookup(&label(&[8u8; 32], 1)), Lookup::Unknown);
    }
}
