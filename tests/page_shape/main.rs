//! The emulator keeps a real Pulsar's page shape: its broker and bookie pages are compared with
//! pages captured from a real Apache Pulsar 4.0.7 (`tests/fixtures/real/`), and those captures
//! with what a live real broker and bookie serve now.

#[path = "../support/mod.rs"]
mod support;

mod emulator;
mod real;
mod shape;
