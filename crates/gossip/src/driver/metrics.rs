//! Prometheus metrics of the gossip layer. Counts only: no label names a peer or a topic.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::proto::{DownReason, Route};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Bucket {
    bytes: u16,
}

/// The gossip layer's metrics; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    published: Family<Kind, Counter>,
    sent: Family<Kind, Counter>,
    received: Family<Kind, Counter>,
    delivered: Counter,
    neighbors: Gauge,
    neighbors_down: Family<Kind, Counter>,
    refused: Counter,
    dead: Counter,
    dropped: Family<Kind, Counter>,
    frames_written: Family<Bucket, Counter>,
}

impl Metrics {
    /// Registers every metric under `mix_gossip_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("mix_gossip");
        r.register("published", "Own publications, by route", self.published.clone());
        r.register("messages_sent", "Messages handed to connections, by kind", self.sent.clone());
        r.register("messages_received", "Messages received, by kind", self.received.clone());
        r.register(
            "delivered",
            "Publications delivered to the application",
            self.delivered.clone(),
        );
        r.register("neighbors", "Neighbours now, over all topics", self.neighbors.clone());
        r.register("neighbors_down", "Neighbours lost, by reason", self.neighbors_down.clone());
        r.register("refused", "Neighbour requests the filter refused", self.refused.clone());
        r.register(
            "peers_silent",
            "Connections closed because a needed peer stayed silent past the liveness timeout",
            self.dead.clone(),
        );
        r.register("dropped", "Frames dropped, by reason", self.dropped.clone());
        r.register(
            "frames_written",
            "Frames written, by bucket size in bytes",
            self.frames_written.clone(),
        );
    }

    pub(crate) fn published(&self, route: Route) {
        let kind = match route {
            Route::Direct => "direct",
            Route::Stem => "stem",
            Route::Mix => "mix",
        };
        self.published.get_or_create(&Kind { kind }).inc();
    }

    pub(crate) fn sent(&self, kind: &'static str) {
        self.sent.get_or_create(&Kind { kind }).inc();
    }

    pub(crate) fn received(&self, kind: &'static str) {
        self.received.get_or_create(&Kind { kind }).inc();
    }

    pub(crate) fn delivered(&self) {
        self.delivered.inc();
    }

    pub(crate) fn neighbor(&self, up: bool, reason: Option<DownReason>) {
        if up {
            self.neighbors.inc();
            return;
        }
        self.neighbors.dec();
        let kind = match reason {
            Some(DownReason::Remote) => "remote",
            Some(DownReason::Failed) => "failed",
            Some(DownReason::Rotated) => "rotated",
            Some(DownReason::Filtered) => "filtered",
            Some(DownReason::Evicted) => "evicted",
            Some(DownReason::Left) => "left",
            Some(DownReason::OutsideNeighbourhood) => "outside_neighbourhood",
            None => "unknown",
        };
        self.neighbors_down.get_or_create(&Kind { kind }).inc();
    }

    pub(crate) fn refused(&self) {
        self.refused.inc();
    }

    pub(crate) fn dead(&self) {
        self.dead.inc();
    }

    pub(crate) fn dropped(&self, kind: &'static str) {
        self.dropped.get_or_create(&Kind { kind }).inc();
    }

    pub(crate) fn frame(&self, len: usize) {
        let bytes = u16::try_from(len).unwrap_or(u16::MAX);
        self.frames_written.get_or_create(&Bucket { bytes }).inc();
    }
}
