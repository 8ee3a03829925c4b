//! Bookie claims: expand before the disk fills, never shrink, never past maxSize, never while a
//! resize is in flight or the StorageClass forbids it, at most once per cooldown.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::{Action, Decision, Flags, Sample, cooldown_left, elapsed, sample_problem, units};
use crate::policy::BookiePolicy;

/// Expansions are rounded up to whole GiB: clouds bill and resize in GiB.
const GRANULE: u64 = 1 << 30;

/// What the engine knows about one claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimState {
    /// Claim name.
    pub name: String,
    /// `spec.resources.requests.storage` in bytes.
    pub requested: u64,
    /// `status.capacity.storage` in bytes, when reported.
    pub capacity: Option<u64>,
    /// Used space in percent of the filesystem, with its timestamp.
    pub usage: Option<Sample>,
    /// `status.phase == Bound`.
    pub bound: bool,
    /// Why a resize is still in progress, if one is (Resizing, FileSystemResizePending,
    /// or capacity behind the request).
    pub resize_in_progress: Option<String>,
    /// Why the last resize cannot complete (`ControllerResizeInfeasible`,
    /// `NodeResizeInfeasible`): a person must act; growing again would only fail again.
    pub resize_infeasible: Option<String>,
    /// The StorageClass's `allowVolumeExpansion`; `None` when it could not be read.
    pub expandable: Option<bool>,
    /// Last expansion carried out.
    pub last_expand: Option<Timestamp>,
}

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VolumeState {
    /// Below the threshold.
    Healthy,
    /// An expansion is decided now.
    Expanding,
    /// A previous expansion is still being applied.
    Resizing,
    /// Over the threshold, waiting for the cooldown.
    CoolingDown,
    /// Over the threshold at maxSize.
    AtMaxSize,
    /// Over the threshold and cannot be expanded (not Bound, StorageClass forbids it).
    Blocked,
    /// The storage system refused the last resize; nothing grows until a person fixes it.
    ResizeInfeasible,
    /// No usable usage data.
    MetricsMissing,
    /// Not evaluated.
    Suspended,
}

impl VolumeState {
    /// Name used in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Healthy => "Healthy",
            VolumeState::Expanding => "Expanding",
            VolumeState::Resizing => "Resizing",
            VolumeState::CoolingDown => "CoolingDown",
            VolumeState::AtMaxSize => "AtMaxSize",
            VolumeState::Blocked => "Blocked",
            VolumeState::ResizeInfeasible => "ResizeInfeasible",
            VolumeState::MetricsMissing => "MetricsMissing",
            VolumeState::Suspended => "Suspended",
        }
    }
}

/// The engine's conclusion about one claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimOutcome {
    /// The decision (`Expand` from → to bytes, or `Hold`).
    pub decision: Decision,
    /// The claim's state.
    pub state: VolumeState,
    /// Used percent, when known.
    pub used_percent: Option<f64>,
}

/// Decides whether one claim grows.
pub fn decide_claim(
    policy: &BookiePolicy,
    flags: Flags,
    max_staleness: Duration,
    claim: &ClaimState,
    now: Timestamp,
) -> ClaimOutcome {
    let target = format!("pvc/{}", claim.name);
    let hold = |state: VolumeState, used: Option<f64>, reason: String| ClaimOutcome {
        decision: Decision::hold(target.clone(), claim.requested, reason, flags.dry_run),
        state,
        used_percent: used,
    };
    if flags.suspend {
        return hold(
            VolumeState::Suspended,
            None,
            "suspended: spec.suspend is true".into(),
        );
    }
    if let Some(why) = &claim.resize_infeasible {
        return hold(
            VolumeState::ResizeInfeasible,
            claim.usage.map(|s| s.value.min(100.0)),
            format!(
                "the last resize cannot complete ({why}): fix the cause (quota, volume type, \
                 driver) or set the request back to the capacity; no further growth until then"
            ),
        );
    }
    if let Some(problem) = sample_problem(claim.usage.as_ref(), max_staleness, now) {
        return hold(
            VolumeState::MetricsMissing,
            None,
            format!("usage unknown ({problem}): no change"),
        );
    }
    let used = claim.usage.map(|s| s.value.min(100.0)).unwrap_or(0.0);
    let size = units::bytes(claim.capacity.unwrap_or(claim.requested) as f64);
    let threshold = policy.expand_at_used_percent;
    if used < threshold {
        return hold(
            VolumeState::Healthy,
            Some(used),
            format!(
                "{}% used of {size} < expandAtUsedPercent {}%",
                units::number(used),
                units::number(threshold)
            ),
        );
    }
    let over = format!(
        "{}% used of {size} ≥ expandAtUsedPercent {}%",
        units::number(used),
        units::number(threshold)
    );
    if !claim.bound {
        return hold(
            VolumeState::Blocked,
            Some(used),
            format!("{over}, but the claim is not Bound"),
        );
    }
    if let Some(why) = &claim.resize_in_progress {
        return hold(
            VolumeState::Resizing,
            Some(used),
            format!("{over}, waiting for the previous resize: {why}"),
        );
    }
    match claim.expandable {
        Some(true) => {}
        Some(false) => {
            return hold(
                VolumeState::Blocked,
                Some(used),
                format!("{over}, but its StorageClass does not set allowVolumeExpansion: true"),
            );
        }
        None => {
            return hold(
                VolumeState::Blocked,
                Some(used),
                format!(
                    "{over}, but its StorageClass could not be read to check allowVolumeExpansion"
                ),
            );
        }
    }
    // A sample taken before the last expansion describes the old size: growing on it again
    // would add a second increment for the same fill. Status times have whole seconds, so the
    // expansion is read as late as it may have been.
    if let (Some(last), Some(sample)) = (claim.last_expand, claim.usage)
        && sample.observed_at
            <= last
                .checked_add(jiff::SignedDuration::from_millis(999))
                .unwrap_or(last)
    {
        return hold(
            VolumeState::Resizing,
            Some(used),
            format!(
                "{over}, but the usage sample predates the last expansion: waiting for a newer one"
            ),
        );
    }
    // Growth starts from what the volume has: a capacity above the request (a provider that
    // rounds up, an earlier expansion by hand) is never grown back over.
    let base = claim.requested.max(claim.capacity.unwrap_or(0));
    if base >= policy.max_size {
        return hold(
            VolumeState::AtMaxSize,
            Some(used),
            format!(
                "{over}, but the claim is at maxSize {}",
                units::bytes(policy.max_size as f64)
            ),
        );
    }
    if let Some(last) = claim.last_expand {
        let since = elapsed(now, last);
        if since < policy.cooldown {
            return hold(
                VolumeState::CoolingDown,
                Some(used),
                format!(
                    "{over}, cooldown {}: last expansion {} ago ({} left)",
                    units::duration(policy.cooldown),
                    units::duration(since),
                    cooldown_left(policy.cooldown, since)
                ),
            );
        }
    }
    let to = expanded_size(policy, base);
    let capped = if to == policy.max_size {
        " (capped at maxSize)"
    } else {
        ""
    };
    ClaimOutcome {
        decision: Decision {
            target,
            action: Action::Expand,
            from: claim.requested,
            to,
            reasons: vec![format!(
                "{over} → grow {} to {}{capped}",
                units::bytes(claim.requested as f64),
                units::bytes(to as f64)
            )],
            dry_run: flags.dry_run,
        },
        state: VolumeState::Expanding,
        used_percent: Some(used),
    }
}

/// The next size: request + max(percent, minimum), rounded up to GiB, capped at maxSize.
pub fn expanded_size(policy: &BookiePolicy, requested: u64) -> u64 {
    let by_percent = (requested as f64 * policy.increase_percent / 100.0).ceil() as u64;
    let grown = requested.saturating_add(by_percent.max(policy.increase_minimum).max(1));
    let rounded = grown.div_ceil(GRANULE).saturating_mul(GRANULE);
    rounded.min(policy.max_size).max(requested)
}
