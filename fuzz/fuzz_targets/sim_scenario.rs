//! The fuzz target `sim_scenario`: `mix_sim::fuzzing::scenario` (its corpus is replayed by the default tests).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mix_sim::fuzzing::scenario(data);
});
