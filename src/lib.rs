//! pulsar-autoscaler: scales Apache Pulsar brokers and grows bookie volumes from declared policies.

pub mod actuate;
pub mod admin;
pub mod api;
pub mod backtest;
pub mod controller;
pub mod decide;
pub mod emulator;
pub mod evaluate;
pub mod fuzzing;
pub mod guard;
pub mod metrics;
pub mod policy;
pub mod quantity;
pub mod recorder;
pub mod schema;
pub mod telemetry;
