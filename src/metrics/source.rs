//! The `MetricsSource` trait every source implements, and what one grouped read returns.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use jiff::Timestamp;

use super::error::MetricsError;
use super::preset::Preset;
use super::response::Point;

/// `(namespace, pod)` or `(namespace, claim)`.
pub type ObjectKey = (String, String);

/// One preset read for every object the source sees, across all namespaces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grouped {
    /// Value and measurement time per object.
    pub points: BTreeMap<ObjectKey, Point>,
    /// Objects that could not be read, with why (Direct mode: one failed pod).
    pub failures: BTreeMap<ObjectKey, String>,
}

/// What a `Custom` query returned: its value (the sum of every series) and the `pod` labels
/// its series carried, so a per-pod query (`sum by (pod) (…)`) tells which brokers reported.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomValue {
    /// The sum of every series, at the oldest series' time.
    pub point: Point,
    /// Distinct values of the `pod` label among the series; empty when none carried one.
    pub pods: BTreeSet<String>,
}

/// A place metrics come from. One call of [`MetricsSource::fetch`] per evaluation round serves
/// every policy that uses the source: the work depends on the presets asked for, not on the
/// number of policies.
pub trait MetricsSource: Send + Sync {
    /// What the source is, for messages (`Prometheus at http://…`).
    fn describe(&self) -> String;

    /// Reads each preset once; `result[i]` belongs to `presets[i]`.
    fn fetch<'a>(
        &'a self,
        presets: &'a [Preset],
        at: Timestamp,
    ) -> BoxFuture<'a, Vec<Result<Grouped, MetricsError>>>;

    /// Evaluates a rendered `Custom` query to one value (the sum of what it returns) with the
    /// pods its series name, or `None` when it returns nothing.
    fn custom<'a>(
        &'a self,
        query: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<Option<CustomValue>, MetricsError>>;
}
