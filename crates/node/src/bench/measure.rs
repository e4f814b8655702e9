//! Timing harness for the benchmark programs.
//!
//! Operations are timed in interleaved rounds (one batch of each op per round), and each op's
//! figure is the median over rounds. Noise from the other core or the scheduler then hits the
//! baseline and the measured ops alike, so ratios to the baseline stay stable on a busy machine.

use std::time::{Duration, Instant};

/// One operation to time.
pub(crate) struct Op<'a> {
    run: Box<dyn FnMut() + 'a>,
    iterations: u64,
    samples_us: Vec<f64>,
}

impl<'a> Op<'a> {
    pub(crate) fn new(run: impl FnMut() + 'a) -> Self {
        Self { run: Box::new(run), iterations: 1, samples_us: Vec::new() }
    }
}

/// Times every op for `rounds` rounds of about `batch` each and returns the median µs per call
/// of each op, in order.
pub(crate) fn interleaved(ops: &mut [Op<'_>], rounds: usize, batch: Duration) -> Vec<f64> {
    for op in ops.iter_mut() {
        // Warm up and size the batch.
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < batch / 4 || n < 3 {
            (op.run)();
            n += 1;
        }
        let per_call = start.elapsed().as_secs_f64() / n as f64;
        op.iterations = ((batch.as_secs_f64() / per_call) as u64).max(1);
    }
    for _ in 0..rounds {
        for op in ops.iter_mut() {
            let start = Instant::now();
            for _ in 0..op.iterations {
                (op.run)();
            }
            op.samples_us.push(start.elapsed().as_secs_f64() * 1e6 / op.iterations as f64);
        }
    }
    ops.iter_mut().map(|op| median(&mut op.samples_us)).collect()
}

pub(crate) fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 { samples[mid] } else { (samples[mid - 1] + samples[mid]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
