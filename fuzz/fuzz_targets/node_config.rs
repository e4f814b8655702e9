//! The fuzz target `node_config`: `mixnode::fuzzing::config`, a `node.toml` parsed and the
//! node assembled from it (its corpus is replayed by the default tests).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mixnode::fuzzing::config(data);
});
