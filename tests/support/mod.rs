//! Helpers shared by the integration tests; each test file includes them with `mod support;`.

// Every test binary compiles all helpers but uses only some of them.
#![allow(dead_code)]

pub mod apiserver;
pub mod faults;
pub mod monitoring;
pub mod pulsar;
pub mod real_kube;
pub mod real_pulsar;

// The metrics-source tests call the monitoring helpers unqualified; other binaries do not.
#[allow(unused_imports)]
pub use monitoring::*;
