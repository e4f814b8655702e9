//! The fuzz target `stream_conn`: `mix_stream::fuzzing::connection`, both sides of a stream
//! taking frames a key-holding peer forged (its corpus is replayed by the default tests).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mix_stream::fuzzing::connection(data);
});
