//! pulsar-autoscaler: scales Apache Pulsar brokers and grows bookie volumes from declared policies.

pub mod api;
pub mod decide;
pub mod emulator;
pub mod evaluate;
pub mod metrics;
pub mod policy;
pub mod quantity;
