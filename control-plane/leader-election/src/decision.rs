//! The pure rule of leader election: given the lease as seen and when it was first seen in
//! that state, what this candidate does next. No IO, so every case is unit tested.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use tokio::time::Instant;

/// What a candidate needs to know of a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The holder; `None` or empty when released.
    pub holder: Option<String>,
    /// The term the holder asked for.
    pub duration: Duration,
}

impl Record {
    /// The record a lease carries.
    pub fn of(lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            duration: Duration::from_secs(
                spec.and_then(|s| s.lease_duration_seconds)
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(0),
            ),
        }
    }
}

/// The next step of a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No lease exists: create it, held by this candidate.
    Create,
    /// The lease is free or its term ran out: take it.
    Take,
    /// This candidate holds the lease: renew it.
    Renew,
    /// Another candidate holds a live term: wait.
    Wait,
}

/// Decides the next step for `me`. `observed` is the lease's record with the instant this
/// candidate first saw it unchanged; the term counts from then, on this candidate's clock.
pub fn next_step(observed: Option<(Record, Instant)>, me: &str, now: Instant) -> Step {
    let Some((record, seen_at)) = observed else {
        return Step::Create;
    };
    match record.holder.as_deref() {
        Some(holder) if holder == me => Step::Renew,
        None => Step::Take,
        Some(_) if now >= seen_at + record.duration => Step::Take,
        Some(_) => Step::Wait,
    }
}

/// When the term of the lease now at `current` (its resourceVersion) started for this
/// candidate: when it was first seen at that version, which is `previous` if that saw the
/// same version, else `now`.
pub fn first_seen(
    previous: Option<(Option<&str>, Instant)>,
    current: Option<&str>,
    now: Instant,
) -> Instant {
    match previous {
        Some((version, at)) if version.is_some() && version == current => at,
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, secs: u64) -> Record {
        Record {
            holder: Some(holder.into()),
            duration: Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_term_counts_from_the_first_sight_of_a_version() {
        let start = Instant::now();
        let later = start + Duration::from_secs(5);
        assert_eq!(first_seen(None, Some("7"), later), later);
        assert_eq!(
            first_seen(Some((Some("7"), start)), Some("7"), later),
            start,
            "unchanged: the term runs on"
        );
        assert_eq!(
            first_seen(Some((Some("7"), start)), Some("8"), later),
            later,
            "renewed: a new term"
        );
        assert_eq!(first_seen(Some((None, start)), None, later), later);
        // A holder that stopped renewing is waited out from the first sight, not the last.
        let record = held_by("b", 9);
        let seen = first_seen(
            Some((Some("7"), start)),
            Some("7"),
            start + Duration::from_secs(9),
        );
        assert_eq!(
            next_step(Some((record, seen)), "a", start + Duration::from_secs(9)),
            Step::Take
        );
    }

    #[test]
    fn a_missing_lease_is_created() {
        assert_eq!(next_step(None, "a", Instant::now()), Step::Create);
    }

    #[test]
    fn the_holder_renews_even_after_its_term() {
        let seen = Instant::now();
        let later = seen + Duration::from_secs(60);
        assert_eq!(
            next_step(Some((held_by("a", 12), seen)), "a", later),
            Step::Renew
        );
    }

    #[test]
    fn a_live_term_of_another_is_waited_out() {
        let seen = Instant::now();
        let record = held_by("b", 12);
        assert_eq!(
            next_step(
                Some((record.clone(), seen)),
                "a",
                seen + Duration::from_secs(11)
            ),
            Step::Wait
        );
        assert_eq!(
            next_step(Some((record, seen)), "a", seen + Duration::from_secs(12)),
            Step::Take
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let seen = Instant::now();
        for holder in [None, Some(String::new())] {
            let lease = Lease {
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: holder,
                    lease_duration_seconds: Some(1),
                    ..Default::default()
                }),
                ..Lease::default()
            };
            assert_eq!(
                next_step(Some((Record::of(&lease), seen)), "a", seen),
                Step::Take
            );
        }
    }

    #[test]
    fn a_lease_without_a_term_is_expired() {
        let seen = Instant::now();
        let lease = Lease {
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some("b".into()),
                ..Default::default()
            }),
            ..Lease::default()
        };
        assert_eq!(
            next_step(Some((Record::of(&lease), seen)), "a", seen),
            Step::Take
        );
    }
}
