//! The fuzz target `gossip_state`: `mix_gossip::fuzzing::state` (its corpus is replayed by the default tests).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mix_gossip::fuzzing::state(data);
});
