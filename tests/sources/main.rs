//! Metrics sources against real servers: Prometheus and VictoriaMetrics from Debian's packages
//! scraping the Pulsar emulator, Direct mode scraping it itself.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod emulator;
mod evaluate;
mod faults;
mod grouping;
mod presets;
mod vm_cluster;
