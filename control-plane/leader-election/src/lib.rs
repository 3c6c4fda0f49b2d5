//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's rules: a candidate
//! takes the lease when its holder has not renewed it for `leaseDurationSeconds` as measured
//! on the candidate's own clock (from when it last saw the record change, so clocks need not
//! agree), and every write carries the resourceVersion it read, so two candidates cannot both
//! win. The holder runs its work only while it keeps renewing; a holder that cannot renew
//! within the renew deadline stops its work and returns [`Error::Lost`], and the process is
//! expected to exit and start again as a candidate.
//!
//! This crate does not decide what a holder does; it runs the future it is given.

mod decision;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use rand::Rng;
use tokio::time::Instant;

pub use decision::{Record, Step, first_seen, next_step};

/// Where the lease lives, who is asking and how long a term lasts.
#[derive(Clone, Debug)]
pub struct Config {
    /// The lease's namespace (`kube-system` for the control plane's components).
    pub namespace: String,
    /// The lease's name (`kube-scheduler`, `kube-controller-manager`).
    pub name: String,
    /// This candidate, unique among candidates (host name and a random suffix).
    pub identity: String,
    /// How long a term lasts without renewal before a candidate may take the lease.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it gives up its work.
    pub renew_deadline: Duration,
    /// How often candidates try to take the lease and the holder renews it.
    pub retry_period: Duration,
}

impl Config {
    /// A lease in `kube-system` with terms that let a standby take over within 15 seconds of
    /// the holder's death: the standby may first see the last renewal up to one retry late,
    /// waits out the 9 s term, and notices on its next retry (2–2.5 s each).
    pub fn control_plane(name: &str, identity: String) -> Config {
        Config {
            namespace: "kube-system".into(),
            name: name.into(),
            identity,
            lease_duration: Duration::from_secs(9),
            renew_deadline: Duration::from_secs(6),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A candidate identity unique to this process: the host name and a random suffix, as
/// kube's components use.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}_{}", host.trim(), uuid::Uuid::new_v4())
}

/// Why leading ended without the work finishing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lease could not be renewed within the renew deadline, or another candidate holds it.
    #[error("lost the lease {namespace}/{name}: {reason}")]
    Lost {
        /// The lease's namespace.
        namespace: String,
        /// The lease's name.
        name: String,
        /// What happened.
        reason: String,
    },
    /// The configuration cannot work.
    #[error("invalid leader election config: {0}")]
    Config(String),
}

/// A candidate for one lease.
pub struct Elector {
    api: Api<Lease>,
    config: Config,
    /// The lease as last read, and when this candidate first saw that version of it.
    observed: Option<(Lease, Instant)>,
}

impl Elector {
    /// A candidate using `client`.
    pub fn new(client: kube::Client, config: Config) -> Result<Elector, Error> {
        if config.renew_deadline >= config.lease_duration
            || config.retry_period >= config.renew_deadline
            || config.identity.is_empty()
        {
            return Err(Error::Config(format!(
                "need a non-empty identity and retry period < renew deadline < lease duration, got {:?} < {:?} < {:?}",
                config.retry_period, config.renew_deadline, config.lease_duration
            )));
        }
        let api = Api::namespaced(client, &config.namespace);
        Ok(Elector {
            api,
            config,
            observed: None,
        })
    }

    /// Waits until this candidate holds the lease, then runs `work` while it keeps holding it.
    /// Returns the work's output, or [`Error::Lost`] (the work dropped) if the lease is lost.
    pub async fn run<T>(mut self, work: impl Future<Output = T>) -> Result<T, Error> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(lease = %self.config.name, %error, "cannot reach the lease")
                }
            }
            tokio::time::sleep(self.jittered_retry()).await;
        }
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
        let mut work = std::pin::pin!(work);
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                output = &mut work => {
                    self.release().await;
                    return Ok(output);
                }
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => return Err(self.lost("another candidate holds it")),
                Err(error) => {
                    tracing::warn!(lease = %self.config.name, %error, "cannot renew the lease");
                    if last_renewal.elapsed() >= self.config.renew_deadline {
                        return Err(self.lost(&format!(
                            "not renewed within {:?}: {error}",
                            self.config.renew_deadline
                        )));
                    }
                }
            }
        }
    }

    fn lost(&self, reason: &str) -> Error {
        tracing::error!(lease = %self.config.name, reason, "stopped leading");
        Error::Lost {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            reason: reason.into(),
        }
    }

    fn jittered_retry(&self) -> Duration {
        // Candidates do not retry in lockstep; a small jitter keeps the takeover time bounded.
        let base = self.config.retry_period;
        base + base.mul_f64(rand::rng().random_range(0.0..0.25))
    }

    /// One round: reads the lease and takes or renews it if this candidate may. `Ok(true)` when
    /// this candidate holds the lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.config.name).await?;
        let now = Instant::now();
        let seen_at = first_seen(
            self.observed
                .as_ref()
                .map(|(seen, at)| (seen.metadata.resource_version.as_deref(), *at)),
            current
                .as_ref()
                .and_then(|l| l.metadata.resource_version.as_deref()),
            now,
        );
        let step = next_step(
            current.as_ref().map(|lease| (Record::of(lease), seen_at)),
            &self.config.identity,
            now,
        );
        let wall = MicroTime(jiff::Timestamp::now());
        let result = match (step, current) {
            (Step::Wait, Some(lease)) => {
                self.remember(lease, seen_at);
                return Ok(false);
            }
            (Step::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(self.duration_seconds()),
                        acquire_time: Some(wall.clone()),
                        renew_time: Some(wall),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (step, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if step == Step::Take {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(wall.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(self.duration_seconds());
                spec.renew_time = Some(wall);
                // The resourceVersion read above makes this a compare-and-swap.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(lease) => {
                self.remember(lease, Instant::now());
                Ok(true)
            }
            // Another candidate wrote first; it holds the lease now.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn remember(&mut self, lease: Lease, seen_at: Instant) {
        self.observed = Some((lease, seen_at));
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Gives the lease up so a standby need not wait out the term: the holder is cleared
    /// and the term shortened to a second. Best effort; the term expires anyway.
    async fn release(&mut self) {
        let Some((mut lease, _)) = self.observed.take() else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        if let Err(error) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.config.name, %error, "could not release the lease");
        }
    }
}
