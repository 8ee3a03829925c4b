//! Whether this process may change the cluster right now. The Lease manager renews in the
//! background but keeps saying "leading" while its renewals fail; a leader cut off from the API
//! server would then go on acting after a standby took over. Here leadership is a deadline read
//! from the Lease itself: the renew time this process wrote, plus the lease duration, minus a
//! margin. Past it nothing is changed until a fresh read of the Lease shows a newer renewal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;

/// Longest wait for one read of the Lease; a hung connection must not extend leadership.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest wait for one read, when the last proof is about to run out or has.
const MIN_READ_TIMEOUT: Duration = Duration::from_millis(100);

/// The Lease this process competes for.
struct LeaseRef {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// Taken off the Lease's expiry: request latency and clock skew between replicas.
    margin: Duration,
}

/// The leadership of this process, checked before every mutating call.
pub struct Leadership {
    lease: Option<LeaseRef>,
    /// Until when the last read of the Lease proves leadership.
    valid_until: Mutex<Option<Instant>>,
}

impl Leadership {
    /// Without leader election: this process always leads.
    pub fn always() -> Self {
        Leadership {
            lease: None,
            valid_until: Mutex::new(None),
        }
    }

    /// Leadership proven by the Lease `namespace/name` held as `identity`.
    pub fn lease(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        grace: Duration,
    ) -> Self {
        Leadership {
            lease: Some(LeaseRef {
                api: Api::namespaced(client, namespace),
                name: name.to_string(),
                identity: identity.to_string(),
                duration,
                // Less than the manager's grace, so its renewal lands before the deadline.
                margin: grace / 2,
            }),
            valid_until: Mutex::new(None),
        }
    }

    /// Whether the last read of the Lease still proves leadership (no I/O).
    pub fn holds(&self) -> bool {
        if self.lease.is_none() {
            return true;
        }
        self.valid_until
            .lock()
            .ok()
            .and_then(|v| *v)
            .is_some_and(|until| Instant::now() < until)
    }

    /// Leading by the last proof, or else by a fresh read of the Lease (the renewal may have
    /// landed since the last read).
    pub async fn holds_or_confirm(&self) -> bool {
        self.holds() || self.confirm().await
    }

    /// Reads the Lease afresh: leading only if this process holds it and its renewal has not
    /// run out. A read that fails or hangs proves nothing new: the previous proof stands until
    /// its own deadline, never longer.
    pub async fn confirm(&self) -> bool {
        let Some(l) = &self.lease else {
            return true;
        };
        let sent = Instant::now();
        // Waiting past the current proof's end would only hide that it ended.
        let left = self
            .valid_until
            .lock()
            .ok()
            .and_then(|v| *v)
            .map_or(READ_TIMEOUT, |until| until.saturating_duration_since(sent));
        let wait = left.clamp(MIN_READ_TIMEOUT, READ_TIMEOUT);
        let read = tokio::time::timeout(wait, l.api.get(&l.name)).await;
        if let Ok(Ok(lease)) = read {
            let left = remaining(&lease, &l.identity, l.duration, l.margin, Timestamp::now());
            if let Ok(mut v) = self.valid_until.lock() {
                *v = left.map(|r| sent + r);
            }
        }
        self.holds()
    }
}

/// How long the Lease as read keeps `identity` the leader, if it does.
fn remaining(
    lease: &Lease,
    identity: &str,
    duration: Duration,
    margin: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let valid = duration.checked_sub(margin)?;
    let until = renewed
        .checked_add(jiff::SignedDuration::try_from(valid).ok()?)
        .ok()?;
    let left = now.duration_until(until);
    Duration::try_from(left).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: &str, renewed: i64) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn leadership_ends_before_the_lease_expires() {
        let (d, m) = (Duration::from_secs(15), Duration::from_secs(2));
        let now = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let l = lease("a", 1_800_000_000);
        assert_eq!(
            remaining(&l, "a", d, m, now(0)),
            Some(Duration::from_secs(13))
        );
        assert_eq!(
            remaining(&l, "a", d, m, now(12)),
            Some(Duration::from_secs(1))
        );
        // Renewals failed since: past duration minus margin nothing may be changed, though a
        // standby may take the Lease only at the full duration.
        assert_eq!(remaining(&l, "a", d, m, now(13)), None);
        assert_eq!(remaining(&l, "b", d, m, now(0)), None, "held by another");
        assert_eq!(remaining(&Lease::default(), "a", d, m, now(0)), None);
    }

    #[test]
    fn without_election_this_process_always_leads() {
        assert!(Leadership::always().holds());
    }
}
