//! What the two measures of `bench node --cores` share: nodes under test that take turns in
//! segments (this machine's speed drifts by tens of percent within seconds, so each node's
//! segments are interleaved with the others'), their CPU time, and the scaling figures.

use std::time::Duration;

use serde::Serialize;

/// One node under test's segments.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    /// Each segment's rate (per second of wall time).
    pub(crate) segment_pps: Vec<f64>,
    /// Packets over all segments.
    pub(crate) count: usize,
    /// Wall time over all segments.
    pub(crate) busy: Duration,
    /// CPU time of the node's threads over all segments (`None` where it cannot be read).
    pub(crate) cpu: Option<Duration>,
}

impl Turns {
    pub(crate) fn new() -> Self {
        Self { cpu: Some(Duration::ZERO), ..Self::default() }
    }

    /// One segment: `count` packets in `elapsed`, with the CPU time read before and after.
    pub(crate) fn record(
        &mut self,
        count: usize,
        elapsed: Duration,
        cpu_before: Option<Duration>,
        cpu_after: Option<Duration>,
    ) {
        add(&mut self.cpu, cpu_before, cpu_after);
        self.busy += elapsed;
        self.count += count;
        self.segment_pps.push((count as f64 / elapsed.as_secs_f64()).round());
    }

    /// Packets per second over all segments.
    pub(crate) fn pps(&self) -> f64 {
        (self.count as f64 / self.busy.as_secs_f64()).round()
    }

    pub(crate) fn cpu_s(&self) -> Option<f64> {
        self.cpu.map(|c| round3(c.as_secs_f64()))
    }

    /// Cores the node kept busy on average: its CPU time over the wall time.
    pub(crate) fn cores_busy(&self) -> Option<f64> {
        self.cpu.map(|c| round3(c.as_secs_f64() / self.busy.as_secs_f64()))
    }

    /// Packets per CPU-second.
    pub(crate) fn per_cpu_s(&self) -> Option<f64> {
        self.cpu.map(|c| (self.count as f64 / c.as_secs_f64()).round())
    }
}

/// The scaling of the node on the most cores over the node on one, as the reports print it.
#[derive(Debug, Serialize)]
pub(crate) struct ScalingFigures {
    /// Each segment's N-core rate over the 1-core rate of the same segment.
    #[serde(rename = "scaling_per_segment")]
    pub(crate) per_segment: Vec<f64>,
    /// The median of [`Self::per_segment`].
    #[serde(rename = "scaling")]
    pub(crate) median: f64,
    /// The N-core node's rate over the 1-core node's, over all their segments.
    #[serde(rename = "scaling_overall")]
    pub(crate) overall: f64,
    /// The N-core node's packets per CPU-second over the 1-core node's: how much of the work
    /// the hand-over to hop workers adds (1.0: none). With the cores each node kept busy this
    /// separates the node's own scaling from the cores the load generator takes.
    pub(crate) parallel_efficiency: Option<f64>,
}

pub(crate) fn scaling(one: &Turns, most: &Turns) -> ScalingFigures {
    let per_segment: Vec<f64> = one
        .segment_pps
        .iter()
        .zip(&most.segment_pps)
        .map(|(a, b)| round3(b / a.max(1.0)))
        .collect();
    let mut sorted = per_segment.clone();
    sorted.sort_by(f64::total_cmp);
    let median = median(&sorted);
    let parallel_efficiency =
        one.per_cpu_s().zip(most.per_cpu_s()).map(|(one, most)| round3(most / one.max(1.0)));
    ScalingFigures {
        per_segment,
        median,
        overall: round3(most.pps() / one.pps().max(1.0)),
        parallel_efficiency,
    }
}

/// The median of `sorted`: with an even count, the mean of the two middle values (taking the
/// upper one would favour the target).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => round3((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The order the nodes take their turns in segment `segment`: every other segment reversed,
/// so that a drift of the machine's speed favours none.
pub(crate) fn order(segment: usize, nodes: usize) -> Vec<usize> {
    if segment.is_multiple_of(2) { (0..nodes).collect() } else { (0..nodes).rev().collect() }
}

/// A node's threads for CPU accounting: its swarm's thread and the hop workers that appeared
/// since `before` was read.
pub(crate) fn node_threads(before: &[u32], node_thread: Option<u32>) -> Option<Vec<u32>> {
    node_thread.map(|t| {
        let mut threads: Vec<u32> = crate::cpu::threads_named("mix-hop-")
            .into_iter()
            .filter(|t| !before.contains(t))
            .collect();
        threads.push(t);
        threads
    })
}

pub(crate) fn cpu_of(threads: Option<&[u32]>) -> Option<Duration> {
    threads?.iter().map(|t| crate::cpu::thread_cpu_time(*t)).sum()
}

pub(crate) fn add(total: &mut Option<Duration>, before: Option<Duration>, after: Option<Duration>) {
    *total = total.zip(before.zip(after)).map(|(t, (b, a))| t + a.saturating_sub(b));
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_is_the_median_of_the_segments_ratios() {
        let mut one = Turns::new();
        let mut two = Turns::new();
        let s = |ms| Some(Duration::from_millis(ms));
        for (a, b) in [(100, 150), (100, 200), (100, 170)] {
            one.record(a, Duration::from_secs(1), s(0), s(1000));
            two.record(b, Duration::from_secs(1), s(0), s(1000));
        }
        let figures = scaling(&one, &two);
        assert_eq!(figures.per_segment, vec![1.5, 2.0, 1.7]);
        assert_eq!(figures.median, 1.7);
        assert_eq!(figures.overall, 1.73);
        assert_eq!(figures.parallel_efficiency, Some(1.73));
        assert_eq!(order(1, 3), vec![2, 1, 0]);
    }

    #[test]
    fn an_even_number_of_segments_takes_the_mean_of_the_middle_two() {
        assert_eq!(median(&[1.5, 1.6, 1.8, 1.9]), 1.7);
        assert!(median(&[]).is_nan());
    }
}
