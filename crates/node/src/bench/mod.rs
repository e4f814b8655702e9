//! Benchmark programs. Each prints figures with a baseline measured in the same run (and JSON
//! with `--json`); none asserts on time.

mod measure;
pub(crate) mod node;
pub(crate) mod sphinx;
