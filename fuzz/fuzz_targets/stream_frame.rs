//! The fuzz target `stream_frame`: `mix_stream::fuzzing::frame` (its corpus is replayed by the default tests).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mix_stream::fuzzing::frame(data);
});
