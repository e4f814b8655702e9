//! Benchmark programs. Each prints figures with a baseline measured in the same run (and JSON
//! with `--json`); none asserts on time.

pub(crate) mod flood;
mod measure;
pub(crate) mod node;
pub(crate) mod pow;
pub(crate) mod sphinx;
