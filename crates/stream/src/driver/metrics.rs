//! Prometheus metrics of the stream layer. Counts only: no label names a peer or a stream.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::time::Duration;

use crate::EndpointStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// The stream layer's metrics; clones share them.
#[derive(Debug, Clone)]
pub struct Metrics {
    opened: Family<Kind, Counter>,
    accepted: Family<Kind, Counter>,
    active: Family<Kind, Gauge>,
    ended: Family<Kind, Counter>,
    frames_sent: Counter,
    frames_received: Counter,
    frames_dropped: Family<Kind, Counter>,
    bytes_sent: Counter,
    bytes_received: Counter,
    shards_resent: Counter,
    blocks_recovered: Counter,
    surbs_sent: Counter,
    rtt: Histogram,
    loss: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            opened: Family::default(),
            accepted: Family::default(),
            active: Family::default(),
            ended: Family::default(),
            frames_sent: Counter::default(),
            frames_received: Counter::default(),
            frames_dropped: Family::default(),
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            shards_resent: Counter::default(),
            blocks_recovered: Counter::default(),
            surbs_sent: Counter::default(),
            rtt: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            loss: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under `mix_stream_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("mix_stream");
        r.register("opened", "Streams and messages this node opened, by kind", self.opened.clone());
        r.register(
            "accepted",
            "Streams and messages this node accepted, by kind",
            self.accepted.clone(),
        );
        r.register("active", "Streams open now, by role", self.active.clone());
        r.register("ended", "Streams that ended, by outcome", self.ended.clone());
        r.register(
            "frames_sent",
            "Frames sent (mix messages and SURB replies)",
            self.frames_sent.clone(),
        );
        r.register(
            "frames_received",
            "Frames received and authenticated",
            self.frames_received.clone(),
        );
        r.register("frames_dropped", "Frames dropped, by reason", self.frames_dropped.clone());
        r.register("bytes_sent", "Application bytes written to streams", self.bytes_sent.clone());
        r.register(
            "bytes_received",
            "Application bytes read from streams",
            self.bytes_received.clone(),
        );
        r.register("shards_resent", "Shards sent again", self.shards_resent.clone());
        r.register("blocks_recovered", "Blocks rebuilt with parity", self.blocks_recovered.clone());
        r.register("surbs_sent", "SURBs sent ahead to acceptors", self.surbs_sent.clone());
        r.register(
            "rtt_seconds",
            "Smoothed round-trip time of streams when they end",
            self.rtt.clone(),
        );
        r.register("loss_ratio", "Frame loss measured on the mixnet", self.loss.clone());
    }

    /// Streams open now, both roles.
    pub fn active_total(&self) -> i64 {
        ["opener", "acceptor"]
            .iter()
            .map(|kind| self.active.get_or_create(&Kind { kind }).get())
            .sum()
    }

    /// Streams and messages accepted so far.
    pub fn accepted_total(&self) -> u64 {
        ["stream", "message"]
            .iter()
            .map(|kind| self.accepted.get_or_create(&Kind { kind }).get())
            .sum()
    }

    pub(crate) fn dropped(&self, reason: &'static str) {
        self.frames_dropped.get_or_create(&Kind { kind: reason }).inc();
    }

    /// Adds what the endpoint counted between two snapshots of its figures.
    pub(crate) fn export(&self, before: &EndpointStats, now: &EndpointStats, rtts: &[Duration]) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        for (i, kind) in ["stream", "message"].into_iter().enumerate() {
            self.opened.get_or_create(&Kind { kind }).inc_by(d(before.opened[i], now.opened[i]));
            self.accepted
                .get_or_create(&Kind { kind })
                .inc_by(d(before.accepted[i], now.accepted[i]));
        }
        for (i, kind) in ["opener", "acceptor"].into_iter().enumerate() {
            self.active.get_or_create(&Kind { kind }).set(now.active[i] as i64);
        }
        for (outcome, count) in now.endings() {
            let kind = outcome.label();
            self.ended.get_or_create(&Kind { kind }).inc_by(d(before.ended(outcome), count));
        }
        for (kind, count) in now.drops() {
            self.frames_dropped
                .get_or_create(&Kind { kind })
                .inc_by(d(before.dropped(kind), count));
        }
        self.frames_sent.inc_by(d(before.frames_sent, now.frames_sent));
        self.frames_received.inc_by(d(before.frames_received, now.frames_received));
        self.bytes_sent.inc_by(d(before.bytes_sent, now.bytes_sent));
        self.bytes_received.inc_by(d(before.bytes_received, now.bytes_received));
        self.shards_resent.inc_by(d(before.shards_resent, now.shards_resent));
        self.blocks_recovered.inc_by(d(before.blocks_recovered, now.blocks_recovered));
        self.surbs_sent.inc_by(d(before.surbs_sent, now.surbs_sent));
        for rtt in rtts {
            self.rtt.observe(rtt.as_secs_f64());
        }
        self.loss.set(now.loss);
    }

    /// Shards sent again so far.
    pub fn shards_resent(&self) -> u64 {
        self.shards_resent.get()
    }

    /// Frames sent so far.
    pub fn frames_sent_total(&self) -> u64 {
        self.frames_sent.get()
    }

    /// Frames dropped, by reason (for tests and reports).
    pub fn frames_dropped(&self, reason: &'static str) -> u64 {
        self.frames_dropped.get_or_create(&Kind { kind: reason }).get()
    }

    /// Streams that ended with this outcome.
    pub fn streams_ended(&self, outcome: &'static str) -> u64 {
        self.ended.get_or_create(&Kind { kind: outcome }).get()
    }
}
