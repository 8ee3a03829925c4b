#![no_main]
//! Coverage-guided fuzzing of pulsar_autoscaler::fuzzing::run("trace_csv", ..).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pulsar_autoscaler::fuzzing::run("trace_csv", data);
});
