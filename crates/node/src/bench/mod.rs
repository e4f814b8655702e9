//! Benchmark programs. Each prints figures with a baseline measured in the same run (and JSON
//! with `--json`); none asserts on time.

pub(crate) mod flood;
pub(crate) mod flood_stream;
pub(crate) mod loss;
mod measure;
pub(crate) mod node;
pub(crate) mod own;
pub(crate) mod pow;
pub(crate) mod scaling;
pub(crate) mod sphinx;
pub(crate) mod stream;
mod turns;
