//! The fuzz target `gossip_codec`: `mix_gossip::fuzzing::codec` (its corpus is replayed by the default tests).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mix_gossip::fuzzing::codec(data);
});
