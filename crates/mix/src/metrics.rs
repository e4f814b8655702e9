//! Prometheus metrics of a mix node. The driver updates them and exports the core's
//! [`crate::core::CoreStats`] into them; an application registers them in its own registry
//! with [`Metrics::register`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::core::stats::{DropReason, SentKind};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The metrics of one node. Clones share the same values.
#[derive(Debug, Clone)]
pub struct Metrics {
    packets_received: Counter,
    packets_sent: Family<KindLabel, Counter>,
    packets_dropped: Family<ReasonLabel, Counter>,
    deliveries: Counter,
    cover_received: Counter,
    loops: Family<OutcomeLabel, Counter>,
    cover_skipped: Counter,
    key_rotations: Counter,
    replies_received: Counter,
    requests_timed_out: Counter,
    exit_requests: Family<OutcomeLabel, Counter>,
    delay_queue: Gauge,
    outbound_queue: Gauge,
    hop_delay_seconds: Histogram,
    loop_rtt_seconds: Histogram,
    exit_jobs: Gauge,
    awaited_answers: Gauge,
    answers_dropped: Family<ReasonLabel, Counter>,
    replay_fill: Gauge<f64, AtomicU64>,
    replay_stages: Gauge,
    dial_failures: Family<OutcomeLabel, Counter>,
    pool_refused: Family<ReasonLabel, Counter>,
    reach_checks: Family<OutcomeLabel, Counter>,
    penalties: Counter,
    wire_mismatches: Family<KindLabel, Counter>,
    hop_jobs_in_flight: Gauge,
    hop_jobs_inline: Counter,
    build_jobs_inline: Counter,
    unsent_frames: Gauge,
    state_saves: Family<OutcomeLabel, Counter>,
    state_saved_at: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            packets_received: Counter::default(),
            packets_sent: Family::default(),
            packets_dropped: Family::default(),
            deliveries: Counter::default(),
            cover_received: Counter::default(),
            loops: Family::default(),
            cover_skipped: Counter::default(),
            key_rotations: Counter::default(),
            replies_received: Counter::default(),
            requests_timed_out: Counter::default(),
            exit_requests: Family::default(),
            delay_queue: Gauge::default(),
            outbound_queue: Gauge::default(),
            hop_delay_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
            loop_rtt_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            exit_jobs: Gauge::default(),
            awaited_answers: Gauge::default(),
            answers_dropped: Family::default(),
            replay_fill: Gauge::default(),
            replay_stages: Gauge::default(),
            dial_failures: Family::default(),
            pool_refused: Family::default(),
            reach_checks: Family::default(),
            penalties: Counter::default(),
            wire_mismatches: Family::default(),
            hop_jobs_in_flight: Gauge::default(),
            hop_jobs_inline: Counter::default(),
            build_jobs_inline: Counter::default(),
            unsent_frames: Gauge::default(),
            state_saves: Family::default(),
            state_saved_at: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the prefix `mix`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("mix");
        r.register(
            "packets_received",
            "Packets received on /mix/1.0.0",
            self.packets_received.clone(),
        );
        r.register(
            "packets_sent",
            "Packets sent, by kind (own, forward, reply, cover)",
            self.packets_sent.clone(),
        );
        r.register("packets_dropped", "Packets dropped, by reason", self.packets_dropped.clone());
        r.register("deliveries", "Messages delivered as an exit", self.deliveries.clone());
        r.register("cover_received", "Cover (loop) messages received", self.cover_received.clone());
        r.register("loops", "Own loop packets by outcome (returned, lost)", self.loops.clone());
        r.register(
            "cover_skipped",
            "Cover slots left empty because the outbound rate budget was used up",
            self.cover_skipped.clone(),
        );
        r.register(
            "loop_rtt_seconds",
            "Round-trip times of own loops",
            self.loop_rtt_seconds.clone(),
        );
        r.register("key_rotations", "Mix key rotations", self.key_rotations.clone());
        r.register(
            "replies_received",
            "SURB replies received for our requests",
            self.replies_received.clone(),
        );
        r.register(
            "requests_timed_out",
            "Requests that got no reply in time, or whose packets never left",
            self.requests_timed_out.clone(),
        );
        r.register(
            "exit_requests",
            "Exit deliveries to destinations, by outcome (ok, error, refused, evicted)",
            self.exit_requests.clone(),
        );
        r.register(
            "awaited_answers",
            "Delivered messages whose answer is awaited, as the exit",
            self.awaited_answers.clone(),
        );
        r.register(
            "answers_dropped",
            "Delivered messages whose SURBs were discarded unanswered, by reason (expired, \
             evicted by newer local ones, refused for a full exit budget)",
            self.answers_dropped.clone(),
        );
        r.register(
            "delay_queue_depth",
            "Packets held for their mixing delay",
            self.delay_queue.clone(),
        );
        r.register(
            "outbound_queue_depth",
            "Packets queued for a peer's stream",
            self.outbound_queue.clone(),
        );
        r.register(
            "hop_delay_seconds",
            "Sampled per-hop mixing delays",
            self.hop_delay_seconds.clone(),
        );
        r.register(
            "exit_jobs",
            "Deliveries to destinations queued or in flight at this exit",
            self.exit_jobs.clone(),
        );
        r.register(
            "replay_filter_fill_ratio",
            "Tags in the current key's replay filter over its design capacity (past 1.0 the \
             filter adds a stage, so that its false-positive rate stays at the design value)",
            self.replay_fill.clone(),
        );
        r.register(
            "replay_filter_stages",
            "Bloom filter stages of the current key's replay filter",
            self.replay_stages.clone(),
        );
        r.register(
            "dial_failures",
            "Failed dials to next hops, by whether they counted against the peer's liveness \
             (counted: at the address of its own record; ignored: at an address from a packet)",
            self.dial_failures.clone(),
        );
        r.register(
            "peer_penalties",
            "Peers whose frame budget was cut for sending mostly forged frames",
            self.penalties.clone(),
        );
        r.register(
            "pool_refused",
            "Discovery records the pool refused, by reason (subnet_24, subnet_16, full; \
             unreached: a node waiting to be reached gave its place to a newcomer; \
             local_address: a record naming a local address, on a node that takes none)",
            self.pool_refused.clone(),
        );
        r.register(
            "reach_checks",
            "Nodes found through discovery, dialed at their records' addresses before paths use \
             them, by outcome (reached; failed: suspended until a newer record; refused: reached \
             after their subnets filled up)",
            self.reach_checks.clone(),
        );
        r.register(
            "state_saves",
            "Saves of the replay state, by outcome (ok; failed: logged, the last good file \
             stays; skipped: the previous periodic save was still running)",
            self.state_saves.clone(),
        );
        r.register(
            "state_saved_timestamp_seconds",
            "Unix time of the last replay state save that succeeded (0: none yet). A node \
             killed now forgets the packets it processed since",
            self.state_saved_at.clone(),
        );
        r.register(
            "wire_mismatch_suspected",
            "Packets that may have been built for another wire format, by what failed \
             (payload: integrity at the exit; padding: framing at the exit; reply: a SURB \
             reply that does not decrypt)",
            self.wire_mismatches.clone(),
        );
        r.register(
            "unsent_frames",
            "Packets handed to connections and not yet written out",
            self.unsent_frames.clone(),
        );
        r.register(
            "hop_jobs_in_flight",
            "Jobs on hop workers: received packets being opened and own messages being built",
            self.hop_jobs_in_flight.clone(),
        );
        r.register(
            "hop_jobs_inline",
            "Received packets opened on the swarm's task because every hop worker was busy \
             (none are dropped for it: the swarm's task slows down instead)",
            self.hop_jobs_inline.clone(),
        );
        r.register(
            "build_jobs_inline",
            "Own messages built on the swarm's task because every hop worker was busy",
            self.build_jobs_inline.clone(),
        );
    }

    /// Adds what the core counted since `before` (and its latest levels and samples).
    pub(crate) fn export(
        &self,
        before: &crate::core::CoreStats,
        now: &crate::core::CoreStats,
        observations: crate::core::Observations,
    ) {
        let add = |counter: &Counter, now: u64, before: u64| {
            if now > before {
                counter.inc_by(now - before);
            }
        };
        add(&self.packets_received, now.packets_received, before.packets_received);
        add(&self.deliveries, now.deliveries, before.deliveries);
        add(&self.cover_received, now.cover_received, before.cover_received);
        add(&self.cover_skipped, now.cover_skipped, before.cover_skipped);
        add(&self.key_rotations, now.key_rotations, before.key_rotations);
        add(&self.replies_received, now.replies_received, before.replies_received);
        add(&self.requests_timed_out, now.requests_timed_out, before.requests_timed_out);
        for (reason, now, before) in [
            ("expired", now.answers_expired, before.answers_expired),
            ("evicted", now.answers_evicted, before.answers_evicted),
            ("refused", now.answers_refused, before.answers_refused),
        ] {
            add(&self.answers_dropped.get_or_create(&ReasonLabel { reason }), now, before);
        }
        self.awaited_answers.set(now.awaited_answers as i64);
        for (returned, outcome) in [(true, "returned"), (false, "lost")] {
            let counter = self.loops.get_or_create(&OutcomeLabel { outcome });
            add(&counter, now.loops(returned), before.loops(returned));
        }
        for kind in [SentKind::Own, SentKind::Forward, SentKind::Reply, SentKind::Cover] {
            let counter = self.packets_sent.get_or_create(&KindLabel { kind: kind.label() });
            add(&counter, now.sent(kind), before.sent(kind));
        }
        let before_drops: std::collections::BTreeMap<_, _> = before.drops().collect();
        for (reason, count) in now.drops() {
            let counter = self.packets_dropped.get_or_create(&ReasonLabel { reason });
            add(&counter, count, before_drops.get(reason).copied().unwrap_or(0));
        }
        let before_mismatches: std::collections::BTreeMap<_, _> = before.mismatches().collect();
        for (kind, count) in now.mismatches() {
            let counter = self.wire_mismatches.get_or_create(&KindLabel { kind });
            add(&counter, count, before_mismatches.get(kind).copied().unwrap_or(0));
        }
        self.delay_queue.set(now.delay_queue as i64);
        self.replay_fill.set(now.replay_fill);
        self.replay_stages.set(now.replay_stages as i64);
        for delay in observations.hop_delays {
            self.hop_delay_seconds.observe(delay.as_secs_f64());
        }
        for rtt in observations.loop_rtts {
            self.loop_rtt_seconds.observe(rtt.as_secs_f64());
        }
    }

    /// Frames handed to connections and not yet written out (or dropped).
    pub(crate) fn add_unsent(&self, delta: i64) {
        self.unsent_frames.inc_by(delta);
    }

    /// Frames handed to connections and not yet written out: what a stopping node waits for.
    pub fn unsent_frames(&self) -> i64 {
        self.unsent_frames.get()
    }

    pub(crate) fn set_hop_jobs_in_flight(&self, jobs: usize) {
        self.hop_jobs_in_flight.set(jobs as i64);
    }

    pub(crate) fn hop_job_inline(&self) {
        self.hop_jobs_inline.inc();
    }

    pub(crate) fn build_job_inline(&self) {
        self.build_jobs_inline.inc();
    }

    /// Own messages built on the swarm's task because the hop workers were all busy.
    pub fn build_jobs_inline(&self) -> u64 {
        self.build_jobs_inline.get()
    }

    /// Received packets opened on the swarm's task because the hop workers were all busy.
    pub fn hop_jobs_inline(&self) -> u64 {
        self.hop_jobs_inline.get()
    }

    /// Packets suspected so far of being built for another wire format, of `kind`.
    pub fn wire_mismatches(&self, kind: crate::core::Mismatch) -> u64 {
        self.wire_mismatches.get_or_create(&KindLabel { kind: kind.label() }).get()
    }

    pub(crate) fn penalized(&self) {
        self.penalties.inc();
    }

    /// Peers penalized for sending mostly forged frames so far.
    pub fn penalties(&self) -> u64 {
        self.penalties.get()
    }

    pub(crate) fn set_exit_jobs(&self, jobs: usize) {
        self.exit_jobs.set(jobs as i64);
    }

    pub(crate) fn dial_failed(&self, counted: bool) {
        let outcome = if counted { "counted" } else { "ignored" };
        self.dial_failures.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// A record the pool refused for `reason`.
    pub fn pool_refused(&self, reason: &'static str) {
        self.pool_refused_by(reason, 1);
    }

    pub(crate) fn pool_refused_by(&self, reason: &'static str, records: u64) {
        self.pool_refused.get_or_create(&ReasonLabel { reason }).inc_by(records);
    }

    pub(crate) fn reach_check(&self, outcome: &'static str) {
        self.reach_checks.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Nodes checked at their records' addresses so far with `outcome` (`reached`, `failed`,
    /// `refused`).
    pub fn reach_checks(&self, outcome: &'static str) -> u64 {
        self.reach_checks.get_or_create(&OutcomeLabel { outcome }).get()
    }

    /// Records refused by the pool for `reason` so far.
    pub fn pool_refusals(&self, reason: &'static str) -> u64 {
        self.pool_refused.get_or_create(&ReasonLabel { reason }).get()
    }

    /// Deliveries queued or in flight at this exit now.
    pub fn exit_jobs(&self) -> i64 {
        self.exit_jobs.get()
    }

    /// The current key's replay filter: tags over design capacity.
    pub fn replay_fill_ratio(&self) -> f64 {
        self.replay_fill.get()
    }

    /// Dials to next hops that failed, counted against liveness (`true`) or not.
    pub fn dial_failures(&self, counted: bool) -> u64 {
        let outcome = if counted { "counted" } else { "ignored" };
        self.dial_failures.get_or_create(&OutcomeLabel { outcome }).get()
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.packets_dropped.get_or_create(&ReasonLabel { reason: reason.label() }).inc();
    }

    /// A save of the replay state ended with `outcome` (`ok`, `failed`, `skipped`).
    pub(crate) fn state_saved(&self, outcome: &'static str) {
        self.state_saves.get_or_create(&OutcomeLabel { outcome }).inc();
        if outcome == "ok" {
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.state_saved_at.set(i64::try_from(unix).unwrap_or(i64::MAX));
        }
    }

    /// Saves of the replay state that ended with `outcome` so far.
    pub fn state_saves(&self, outcome: &'static str) -> u64 {
        self.state_saves.get_or_create(&OutcomeLabel { outcome }).get()
    }

    pub(crate) fn exit_request(&self, outcome: &'static str) {
        self.exit_requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub(crate) fn add_outbound_queue(&self, delta: i64) {
        self.outbound_queue.inc_by(delta);
    }

    /// Packets waiting in the connections' send queues now.
    pub fn outbound_queue(&self) -> i64 {
        self.outbound_queue.get()
    }

    /// Packets held for their mixing delay now.
    pub fn delay_queue(&self) -> i64 {
        self.delay_queue.get()
    }

    /// Every packet dropped so far, whatever the reason, by reason label.
    pub fn drops_by_reason(&self) -> Vec<(String, u64)> {
        let mut registry = Registry::default();
        registry.register("d", "", self.packets_dropped.clone());
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return Vec::new();
        }
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("d_total{reason=\"")?;
                let (reason, value) = rest.split_once("\"} ")?;
                Some((reason.to_owned(), value.trim().parse::<f64>().ok()? as u64))
            })
            .collect()
    }

    /// Packets received so far.
    pub fn packets_received(&self) -> u64 {
        self.packets_received.get()
    }

    /// Packets forwarded for other senders so far.
    pub fn packets_forwarded(&self) -> u64 {
        self.packets_sent.get_or_create(&KindLabel { kind: SentKind::Forward.label() }).get()
    }

    /// Packets this node originated so far (including requests' packets).
    pub fn packets_originated(&self) -> u64 {
        self.packets_sent.get_or_create(&KindLabel { kind: SentKind::Own.label() }).get()
    }

    /// Packets dropped for `reason` so far.
    pub fn packets_dropped(&self, reason: DropReason) -> u64 {
        self.packets_dropped.get_or_create(&ReasonLabel { reason: reason.label() }).get()
    }

    /// Messages delivered as an exit so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.get()
    }

    /// Loop packets sent so far.
    pub fn loops_sent(&self) -> u64 {
        self.packets_sent.get_or_create(&KindLabel { kind: SentKind::Cover.label() }).get()
    }

    /// Own loops that came back (`true`) or were lost (`false`) so far.
    pub fn loops(&self, returned: bool) -> u64 {
        let outcome = if returned { "returned" } else { "lost" };
        self.loops.get_or_create(&OutcomeLabel { outcome }).get()
    }

    /// Cover messages received as an exit (other nodes' loops, and own ones) so far.
    pub fn cover_received(&self) -> u64 {
        self.cover_received.get()
    }

    /// Mix key rotations so far.
    pub fn key_rotations(&self) -> u64 {
        self.key_rotations.get()
    }

    /// Requests that timed out so far.
    pub fn requests_timed_out(&self) -> u64 {
        self.requests_timed_out.get()
    }
}
