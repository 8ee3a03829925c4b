#![no_main]
//! Coverage-guided fuzzing of pulsar_autoscaler::fuzzing::run("range_response", ..).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pulsar_autoscaler::fuzzing::run("range_response", data);
});
