//! Helpers shared by the integration tests; each test file includes them with `mod support;`.

// Every test binary compiles all helpers but uses only some of them.
#![allow(dead_code)]

pub mod apiserver;
