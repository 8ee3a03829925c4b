//! The controller's reads and actions against a real Apache Pulsar 4.0.7 (brokers, bookies,
//! ZooKeeper from Maven Central) under real client load: presets in every source mode, the
//! freshness of the broker's rates, bookie disk usage, and the controller scaling real brokers.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod bookie;
mod common;
mod controller;
mod drain;
mod freshness;
mod lifecycle;
mod presets;
mod rebalance;
