//! The fuzz target `mix_core`: `libp2p_mix::fuzzing::core` (its corpus is replayed by the
//! default tests).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    libp2p_mix::fuzzing::core(data);
});
