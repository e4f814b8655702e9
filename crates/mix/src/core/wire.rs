//! The generations of LIBP2P-MIX a network can speak, and the diagnosis of a node that speaks
//! another one than its senders.
//!
//! The header of a Sphinx packet is the same in every generation, so packets of the wrong
//! generation travel the whole path and fail only where the payload is read: at the exit (its
//! integrity prefix, or its framing) or back at the creator of a SURB. Nothing on the way can
//! tell; the exit is the first node that can count, and it explains what it saw in the log.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use mix_sphinx::{Padding, PayloadCipher, WireFormat};

use super::delay::DelaySemantics;

/// A wire generation of LIBP2P-MIX, named by the code that speaks it. Every node of a network
/// must use the same one: a packet built for another generation is lost at its exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Wire {
    /// LIONESS payload, no sequence-number trailer, delays written as means: the current
    /// specification (LIP-183) and the newest nim-libp2p-mix.
    #[default]
    Lip183,
    /// AES-CTR payload, a 4-byte sequence-number trailer, delays written as the exact delay of
    /// each hop: nim-libp2p-mix up to commit 48c77ad.
    V1,
}

impl Wire {
    /// Every generation, newest first.
    pub const ALL: &'static [Self] = &[Self::Lip183, Self::V1];

    /// The packet format: payload cipher and inner padding.
    pub const fn format(self) -> WireFormat {
        match self {
            Self::Lip183 => WireFormat::LIP_183,
            Self::V1 => WireFormat::LIBP2P_MIX_V1,
        }
    }

    /// What the delay written for a hop means.
    pub const fn delay_semantics(self) -> DelaySemantics {
        match self {
            Self::Lip183 => DelaySemantics::Mean,
            Self::V1 => DelaySemantics::Exact,
        }
    }

    /// The name in configuration files and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Lip183 => "lip-183",
            Self::V1 => "v1",
        }
    }

    /// What speaks it, for humans.
    pub const fn spoken_by(self) -> &'static str {
        match self {
            Self::Lip183 => "LIONESS payload, no trailer: LIP-183 and the newest nim-libp2p-mix",
            Self::V1 => "AES-CTR payload, sequence-number trailer: nim-libp2p-mix up to 48c77ad",
        }
    }

    /// The generation whose packet format is `format`, if any (the longest path aside).
    pub fn of_format(format: &WireFormat) -> Option<Self> {
        Self::ALL.iter().copied().find(|w| {
            let f = w.format();
            f.cipher() == format.cipher() && f.padding() == format.padding()
        })
    }
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`Wire`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown wire format {0:?}: expected \"lip-183\" or \"v1\"")]
pub struct UnknownWire(pub String);

impl FromStr for Wire {
    type Err = UnknownWire;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|w| w.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownWire(s.to_owned()))
    }
}

/// How a node describes the format it runs, in its diagnostics.
pub(crate) fn describe(format: &WireFormat, delays: DelaySemantics) -> String {
    match Wire::of_format(format) {
        Some(wire) if wire.delay_semantics() == delays => format!("wire = \"{wire}\""),
        _ => format!(
            "a custom format (payload_cipher = \"{}\", padding = \"{}\", delay_semantics = \"{}\")",
            match format.cipher() {
                PayloadCipher::AesCtr => "aes-ctr",
                _ => "lioness",
            },
            match format.padding() {
                Padding::SeqNo => "seqno",
                _ => "plain",
            },
            delays.name()
        ),
    }
}

/// What failed in a packet that may have been built for another generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mismatch {
    /// At the exit: a valid header, but the payload's integrity prefix is not zero. The sender
    /// (or a hop on the way) uses another payload cipher, or the payload was tampered with.
    Payload,
    /// At the exit: the payload is intact, but its framing cannot be ours (a padding length
    /// that cannot fit, a trailer that cannot be a sequence number, lengths that overrun). The
    /// sender pads differently.
    Padding,
    /// At the creator of a SURB: a known SURB id, but the reply does not decrypt. The replier
    /// (or a hop of the return path) uses another payload cipher.
    Reply,
}

impl Mismatch {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Payload => "payload",
            Self::Padding => "padding",
            Self::Reply => "reply",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Payload => 0,
            Self::Padding => 1,
            Self::Reply => 2,
        }
    }
}

/// Suspected mismatches within this window count towards a warning.
const WINDOW: Duration = Duration::from_secs(60);
/// Suspicions within [`WINDOW`] that make a steady rate, not a stray packet.
const THRESHOLD: usize = 5;
/// At most one warning per kind in this long.
const LOG_INTERVAL: Duration = Duration::from_secs(600);

/// Counts suspected mismatches and decides when they are frequent enough to explain.
#[derive(Debug, Default)]
pub(crate) struct MismatchMonitor {
    kinds: [KindState; 3],
}

#[derive(Debug, Default)]
struct KindState {
    /// The last [`THRESHOLD`] suspicions within [`WINDOW`].
    recent: VecDeque<Instant>,
    last_warning: Option<Instant>,
    /// Suspicions since the last warning (or the start).
    since_warning: u64,
}

impl MismatchMonitor {
    /// Records one suspicion. When a warning is due, returns how many there were since the
    /// last one (or the start).
    pub(crate) fn record(&mut self, kind: Mismatch, now: Instant) -> Option<u64> {
        let state = &mut self.kinds[kind.index()];
        state.since_warning = state.since_warning.saturating_add(1);
        while state.recent.front().is_some_and(|&t| now.saturating_duration_since(t) > WINDOW) {
            state.recent.pop_front();
        }
        // Bounded: only the last THRESHOLD instants matter.
        if state.recent.len() == THRESHOLD {
            state.recent.pop_front();
        }
        state.recent.push_back(now);
        let due = state.recent.len() >= THRESHOLD
            && state.last_warning.is_none_or(|t| now.saturating_duration_since(t) >= LOG_INTERVAL);
        if !due {
            return None;
        }
        state.last_warning = Some(now);
        Some(std::mem::take(&mut state.since_warning))
    }
}

/// Logs what a steady rate of `kind` suggests, naming the setting to change. `seen` counts
/// them since the last warning; at least [`THRESHOLD`] came within [`WINDOW`].
pub(crate) fn warn(kind: Mismatch, seen: u64, running: &str) {
    let (threshold, window) = (THRESHOLD, WINDOW.as_secs());
    let others: Vec<String> =
        Wire::ALL.iter().map(|w| format!("\"{w}\" ({})", w.spoken_by())).collect();
    let others = others.join(", ");
    match kind {
        Mismatch::Payload => tracing::warn!(
            target: "libp2p_mix::wire",
            kind = kind.label(),
            "{seen} packets ({threshold} or more within {window} s) reached this exit with a \
             valid header but a payload that fails its integrity check. Their senders (or hops on their paths) may use \
             another wire format: this node runs {running}, and the formats are {others}. \
             Every node of a network must use the same one: set `wire` under [mix] in \
             node.toml (`Config::with_wire` in the library). If the network's format matches, \
             someone is tampering with payloads in transit."
        ),
        Mismatch::Padding => tracing::warn!(
            target: "libp2p_mix::wire",
            kind = kind.label(),
            "{seen} messages ({threshold} or more within {window} s) reached this node intact \
             but framed in a way its padding cannot produce (a padding length that cannot fit, \
             or a trailer that cannot be a sequence number). Their senders may pad for another wire \
             format: this node runs {running}, and the formats are {others}. Set `wire` \
             under [mix] in node.toml (`Config::with_wire` in the library) to the network's, and \
             drop any `padding` override."
        ),
        Mismatch::Reply => tracing::warn!(
            target: "libp2p_mix::wire",
            kind = kind.label(),
            "{seen} replies ({threshold} or more within {window} s) came back through this \
             node's SURBs but do not decrypt. The repliers (or hops of the return paths) may \
             use another wire format: this node runs {running}, and the formats are {others}. \
             Set `wire` under [mix] in node.toml (`Config::with_wire` in the library) to the \
             network's. If it matches, a replier is sending junk through the SURBs it holds."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for &wire in Wire::ALL {
            assert_eq!(wire.name().parse::<Wire>(), Ok(wire));
            assert_eq!(Wire::of_format(&wire.format()), Some(wire));
        }
        assert_eq!("LIP-183".parse::<Wire>(), Ok(Wire::Lip183));
        let err = "v2".parse::<Wire>().unwrap_err();
        assert!(err.to_string().contains("\"lip-183\" or \"v1\""), "{err}");
        assert_eq!(Wire::default().format(), WireFormat::default());
    }

    #[test]
    fn a_steady_rate_warns_once_per_interval_and_strays_never() {
        let mut monitor = MismatchMonitor::default();
        let t0 = Instant::now();
        // One stray a minute and a half apart never makes a rate.
        for i in 0..20 {
            assert_eq!(monitor.record(Mismatch::Payload, t0 + Duration::from_secs(90 * i)), None);
        }
        let t1 = t0 + Duration::from_secs(3600);
        let warned: Vec<_> = (0..100)
            .filter_map(|i| monitor.record(Mismatch::Payload, t1 + Duration::from_secs(i)))
            .collect();
        // The strays count too: the warning tells how many since the start.
        assert_eq!(warned, vec![20 + THRESHOLD as u64]);
        // Kinds are separate; after the interval the warning comes again.
        assert_eq!(monitor.record(Mismatch::Reply, t1), None);
        let later = t1 + LOG_INTERVAL + Duration::from_secs(1);
        let warned: Vec<_> = (0..THRESHOLD as u64)
            .map(|i| monitor.record(Mismatch::Payload, later + Duration::from_secs(i)))
            .collect();
        // The 95 after the first warning, and these.
        assert_eq!(warned.last(), Some(&Some(95 + THRESHOLD as u64)));
        assert!(warned[..THRESHOLD - 1].iter().all(Option::is_none));
    }

    #[test]
    fn custom_formats_are_described_by_their_knobs() {
        assert_eq!(describe(&WireFormat::LIP_183, DelaySemantics::Mean), "wire = \"lip-183\"");
        assert_eq!(describe(&WireFormat::LIBP2P_MIX_V1, DelaySemantics::Exact), "wire = \"v1\"");
        let custom = WireFormat::new(PayloadCipher::AesCtr, Padding::Plain);
        let text = describe(&custom, DelaySemantics::Mean);
        assert!(text.contains("payload_cipher = \"aes-ctr\", padding = \"plain\""), "{text}");
    }
}
