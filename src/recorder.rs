//! Publishes Events so that each distinct one stays visible. kube's `Recorder` folds every
//! Event with the same type, reason and action about an object into one series that keeps the
//! first note: a second scale-up would show as the first, three claim expansions as one. Here
//! what the note is about is part of the identity: a note says what first and why after the
//! first `": "` (`statefulset/pulsar-broker 3 → 5: throughput …`, `pvc/ledgers-bookie-0 50 GiB →
//! 60 GiB: …`); the part before it identifies the Event. The same subject again joins its series
//! (a dropped action retried every interval, whose wait time changes, stays one Event with a
//! count), another subject is an Event of its own.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Reporter};

/// How long a note's series is continued; kube's recorder uses six minutes as well.
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// Series remembered at most; older ones are forgotten first (a repeat then starts a new Event).
const MAX_SERIES: usize = 4096;

/// An Event publisher with one kube `Recorder` series per distinct (object, type, reason,
/// action, note).
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    series: Mutex<HashMap<u64, (kube::runtime::events::Recorder, Instant)>>,
}

impl Recorder {
    /// A publisher reporting as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorder {
            client,
            reporter,
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `ev` about `reference`: a repeat of the same note continues its series, any
    /// other note is a new Event.
    pub async fn publish(
        &self,
        ev: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = identity(ev, reference);
        let recorder = {
            let mut series = match self.series.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            series.retain(|_, (_, at)| at.elapsed() < SERIES_TTL);
            if series.len() >= MAX_SERIES
                && let Some(oldest) = series
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| *k)
            {
                series.remove(&oldest);
            }
            let entry = series.entry(key).or_insert_with(|| {
                (
                    kube::runtime::events::Recorder::new(
                        self.client.clone(),
                        self.reporter.clone(),
                    ),
                    Instant::now(),
                )
            });
            entry.1 = Instant::now();
            entry.0.clone()
        };
        recorder.publish(ev, reference).await
    }
}

fn identity(ev: &Event, reference: &ObjectReference) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &reference.namespace,
        &reference.name,
        &reference.uid,
        matches!(ev.type_, EventType::Warning),
        &ev.reason,
        &ev.action,
        ev.note.as_deref().map(subject),
    )
        .hash(&mut h);
    h.finish()
}

/// What a note is about: the text before its first `": "` (all of it when there is none).
fn subject(note: &str) -> &str {
    note.split_once(": ").map_or(note, |(what, _)| what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "ScaledUp".into(),
            note: Some(note.into()),
            action: "ScaleUp".into(),
            secondary: None,
        }
    }

    #[test]
    fn the_note_is_part_of_an_events_identity() {
        let policy = ObjectReference {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        };
        let first = identity(&event("statefulset/b 3 → 5: load"), &policy);
        assert_eq!(
            first,
            identity(&event("statefulset/b 3 → 5: load"), &policy)
        );
        assert_ne!(
            first,
            identity(&event("statefulset/b 5 → 7: load"), &policy)
        );
        // The same action dropped again, with a new wait time, is the same Event.
        let dropped = |wait: &str| {
            let mut e = event(&format!(
                "statefulset/b 3 → 5 not carried out: rate limit; next in {wait}"
            ));
            e.reason = "ActionDropped".into();
            identity(&e, &policy)
        };
        assert_eq!(dropped("12s"), dropped("8s"));
        assert_ne!(
            identity(&event("pvc/ledgers-b-0 50 GiB → 60 GiB: 85%"), &policy),
            identity(&event("pvc/ledgers-b-1 50 GiB → 60 GiB: 85%"), &policy)
        );
        let other = ObjectReference {
            name: Some("q".into()),
            ..policy.clone()
        };
        assert_ne!(first, identity(&event("statefulset/b 3 → 5: load"), &other));
    }
}
