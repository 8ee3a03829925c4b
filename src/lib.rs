//! pulsar-autoscaler: scales Apache Pulsar brokers and grows bookie volumes from declared policies.

pub mod api;
pub mod backtest;
pub mod decide;
pub mod guard;
pub mod policy;
pub mod quantity;
