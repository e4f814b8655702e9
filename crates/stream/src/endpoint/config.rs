//! The endpoint's settings: limits on what peers may make it hold and do.

use std::time::Duration;

use crate::StreamConfig;

/// Settings of the stream layer.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings of the streams this node opens (unless given per stream) and of its side of
    /// the streams it accepts.
    pub stream: StreamConfig,
    /// Streams accepted and open at once; frames opening more are dropped.
    pub max_accepted: usize,
    /// Streams opened by this node and open at once.
    pub max_opened: usize,
    /// Accepted streams waiting for `Control::accept_stream`; more are reset.
    pub accept_backlog: usize,
    /// Received messages waiting for `Control::next_message` (and at most
    /// [`Self::max_accepted_bytes`] of them); more are dropped, counted as
    /// `message_backlog_full`.
    pub message_backlog: usize,
    /// The largest message accepted; a longer one is reset when it crosses the limit.
    pub max_message_len: usize,
    /// Bytes all accepted streams and messages may hold together (messages being received,
    /// and what streams received that the application has not read). Past it, new openings
    /// are refused and messages that grow are reset; each stream's own receive window bounds
    /// the rest.
    pub max_accepted_bytes: usize,
    /// An accepted stream or message that received no data this long after its opening is
    /// reset: it held a slot for nothing.
    pub opening_deadline: Duration,
    /// Frames read per second from one peer (an exit delivering them), with bursts of as
    /// many; more are dropped. `None`: no limit.
    pub peer_frame_rate: Option<f64>,
    /// New streams accepted per second from one peer's deliveries (each costs a
    /// Diffie-Hellman), with bursts of as many; on top of [`Self::accept_rate`] for all.
    pub peer_accept_rate: f64,
    /// Accepted streams and messages open at once whose opening a peer outside the mix pool
    /// delivered, all such peers together. Honest openings come through exits, which are mix
    /// nodes of the pool; strangers that deliver their own openings (and feed them just
    /// enough data to keep them) share these slots and cannot take the others.
    pub max_accepted_from_strangers: usize,
    /// Of those, at most this many from any one stranger.
    pub max_accepted_per_stranger: usize,
    /// New streams accepted per second at most from openings that strangers (peers outside
    /// the mix pool) delivered, all together; they draw on this budget instead of
    /// [`Self::accept_rate`], so junk from many stranger identities does not use up the
    /// Diffie-Hellmans that openings through the pool's exits need.
    pub stranger_accept_rate: f64,
    /// When every slot for accepted streams is taken, a new opening takes the slot of one
    /// that ended and lingers, or else of the one that has gone longest without a new block
    /// either way, if that is at least this long (counted as `stalled_evicted`); strangers'
    /// streams go first, and a stranger's opening takes only a stranger's slot. Slots held by
    /// streams that barely move (one frame now and then keeps a stream from its idle timeout)
    /// would otherwise keep every new stream out. An honest stream quiet this long loses its
    /// slot only when all are taken. The default is the interactive preset's longest
    /// retransmission backoff (`max_rto`), so such a stream waiting out losses keeps it; the
    /// high-anonymity preset backs off to 60 s.
    pub stalled_after: Duration,
    /// How long a stream that ended (either side) is kept, to acknowledge late
    /// retransmissions.
    pub linger: Duration,
    /// New streams accepted per second at most (each costs a Diffie-Hellman).
    pub accept_rate: f64,
    /// Inbound frame streams read at once per connection.
    pub max_inbound_reads: usize,
    /// How long an exit may take to deliver one frame.
    pub frame_timeout: Duration,
    /// Own mix packets waiting in the mix node's delay queue above which streams wait.
    pub max_queued_packets: usize,
    /// How far the time in an opening may lie behind this node's clock; older openings are
    /// refused, and openings are remembered this long to refuse replays.
    pub opening_freshness: Duration,
    /// How far the time in an opening may lie ahead of this node's clock (a sender whose
    /// clock runs fast); openings dated later are refused. Short, because an opening accepted
    /// just before a restart could pass again after it while its date is still ahead of the
    /// new run's start (see [`Self::after_restart`]).
    pub opening_future_slack: Duration,
    /// This endpoint takes over from an earlier run with the same keys (the node restarted).
    /// The openings that run accepted are not remembered, and the ones dated up to
    /// [`Self::opening_future_slack`] after this start could be among them: they are refused
    /// too (`opened_before_start`), so a stream opened in the first seconds after a restart
    /// waits for its next opening frame. Without it, only openings dated before this start are
    /// refused, and an opening from a sender with a fast clock, accepted just before a restart,
    /// can be replayed just after it.
    pub after_restart: bool,
    /// Openings remembered at most (see [`Self::opening_freshness`]); when the window holds
    /// more, new openings are refused until old ones age out. About 48 bytes each.
    pub max_recent_openings: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream: StreamConfig::default(),
            max_accepted: 256,
            max_opened: 1024,
            accept_backlog: 64,
            message_backlog: 256,
            max_message_len: 16 << 20,
            max_accepted_bytes: 256 << 20,
            opening_deadline: Duration::from_secs(10),
            peer_frame_rate: Some(4000.0),
            peer_accept_rate: 200.0,
            max_accepted_from_strangers: 32,
            max_accepted_per_stranger: 4,
            stranger_accept_rate: 200.0,
            stalled_after: Duration::from_secs(30),
            linger: Duration::from_secs(30),
            accept_rate: 2000.0,
            max_inbound_reads: 256,
            frame_timeout: Duration::from_secs(10),
            max_queued_packets: 512,
            opening_freshness: Duration::from_secs(120),
            opening_future_slack: Duration::from_secs(10),
            after_restart: false,
            max_recent_openings: 1 << 18,
        }
    }
}
