//! One pod's worker: it makes containerd run what the pod asks for — network, files, init
//! containers in order, then the app containers, restarted by the pod's policy with
//! exponential back-off — reports the pod's status, and tears everything down, honouring the
//! grace period, when the pod is deleted or vanishes. Watching the API is the manager's.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::Context;
use super::env::{self, Sources};
use super::files::{self, Prepared};
use super::hooks;
use super::instances::{self, Instance, State};
use super::probes::{self, ProbeState, Prober};
use super::status::{self, Waiting};
use super::tokens::TokenCache;
use crate::runtime::{self, ImageConfig};
use crate::spec::{self, BindMount};

/// The first restart delay after a crash, doubled per crash up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting starts its back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often a pod is looked at when nothing happens (files refreshed, missed exits seen).
const RESYNC: Duration = Duration::from_secs(10);
/// The grace period of a pod that vanished from the API without one.
const VANISHED_GRACE: Duration = Duration::from_secs(2);

/// How a sync ended.
enum Outcome {
    /// Sync again within this long.
    Again(Duration),
    /// The pod is gone and everything of it cleaned up.
    Gone,
}

/// A restart back-off: the delay the next restart waits after an exit.
#[derive(Clone, Copy)]
struct Backoff {
    delay: Duration,
}

/// What to do with one container now.
enum Next {
    /// It runs.
    Running,
    /// Start attempt `n`.
    Start(u32),
    /// It waits for its back-off.
    Wait(Duration),
    /// It finished for good with this code.
    Finished(i32),
}

/// One pod's worker state.
pub struct Worker {
    ctx: Arc<Context>,
    uid: String,
    crash_backoff: HashMap<String, Backoff>,
    pull_backoff: HashMap<String, (Backoff, Timestamp)>,
    waiting: HashMap<String, Waiting>,
    pod_ip: Option<String>,
    reported: Option<Value>,
    /// Probe tasks by containerd ID of the instance they probe.
    probers: HashMap<String, Prober>,
    tokens: TokenCache,
    wake: Arc<Notify>,
}

/// Runs pod `uid`'s worker until the pod is gone and cleaned up.
pub async fn run(
    ctx: Arc<Context>,
    uid: String,
    mut pods: watch::Receiver<Option<Pod>>,
    wake: Arc<Notify>,
) {
    let mut worker = Worker {
        ctx,
        uid,
        crash_backoff: HashMap::new(),
        pull_backoff: HashMap::new(),
        waiting: HashMap::new(),
        pod_ip: None,
        reported: None,
        probers: HashMap::new(),
        tokens: TokenCache::default(),
        wake: Arc::clone(&wake),
    };
    loop {
        let pod = pods.borrow_and_update().clone();
        let after = match worker.sync(pod.as_ref()).await {
            Ok(Outcome::Gone) => return,
            Ok(Outcome::Again(after)) => after,
            Err(error) => {
                tracing::warn!(pod = %worker.uid, error = format!("{error:#}"), "pod sync failed; retrying");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            changed = pods.changed() => if changed.is_err() { return },
            _ = wake.notified() => {}
            _ = tokio::time::sleep(after) => {}
        }
    }
}

/// When to look again after starting a container: soon to see it run, later when it could
/// not be started (a missing ConfigMap or image does not appear within a second).
fn retry_after(started: bool) -> Duration {
    if started {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    }
}

/// The ConfigMaps, Secrets and tokens a pod's environment and volumes refer to, read once
/// per sync.
struct Fetched {
    config_maps: files::Data,
    secrets: files::Data,
    tokens: files::Tokens,
}

fn text(data: &Option<BTreeMap<String, Vec<u8>>>) -> Option<BTreeMap<String, String>> {
    data.as_ref().map(|data| {
        data.iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    })
}

impl Sources for Fetched {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps.get(name).and_then(text)
    }
    fn secret(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.secrets.get(name).and_then(text)
    }
}

/// One key → bytes map from an object's text and binary data (binary wins a clash).
fn merge(
    text: Option<BTreeMap<String, String>>,
    binary: Option<BTreeMap<String, Vec<u8>>>,
) -> BTreeMap<String, Vec<u8>> {
    let mut all: BTreeMap<String, Vec<u8>> = text
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    all.extend(binary.unwrap_or_default());
    all
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn meta(pod: &Pod) -> (String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

impl Worker {
    async fn sync(&mut self, pod: Option<&Pod>) -> Result<Outcome> {
        let Some(pod) = pod else {
            self.tear_down(None, VANISHED_GRACE).await?;
            return Ok(Outcome::Gone);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30)
                .max(0) as u64;
            self.tear_down(Some(pod), Duration::from_secs(grace))
                .await?;
            self.finish_deletion(pod).await?;
            return Ok(Outcome::Again(RESYNC));
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        if matches!(phase, "Succeeded" | "Failed") {
            // Its containers stay for their logs; its address goes back to the pool.
            self.release_network(pod).await?;
            return Ok(Outcome::Again(RESYNC * 6));
        }

        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let netns = if host_network {
            self.pod_ip = Some(self.ctx.node_ip.clone());
            None
        } else {
            let address = self
                .ctx
                .network
                .set_up(&self.uid)
                .await
                .context("setting up the pod's network")?;
            self.pod_ip = Some(address.ip.to_string());
            Some(address.netns)
        };

        let fetched = self.fetch(pod).await?;
        let pod_dir = self.ctx.root_dir.join("pods").join(&self.uid);
        let hostname = spec::pod_hostname(pod);
        let etc = files::write_etc(
            &pod_dir.join("etc"),
            pod,
            &hostname,
            self.pod_ip.as_deref().unwrap_or_default(),
            &self.ctx.dns,
        )
        .context("writing the pod's /etc files")?;
        let volumes = self.prepare_volumes(pod, &pod_dir, &fetched)?;

        let instances = instances::of_pod(&self.ctx.runtime, &self.uid).await?;
        let mut after = RESYNC;
        let spec_ = pod.spec.clone().unwrap_or_default();
        let mut phase = "Pending";
        let policy = restart_policy(pod).to_string();

        // Init containers, in order; a sidecar (restartPolicy Always) only has to be running.
        let mut initialized = true;
        for container in spec_.init_containers.iter().flatten() {
            let sidecar = container.restart_policy.as_deref() == Some("Always");
            let rule = if sidecar {
                "Always"
            } else if policy == "Never" {
                "Never"
            } else {
                "OnFailure"
            };
            match self.next(container, &instances, rule) {
                Next::Running if sidecar => continue,
                Next::Finished(0) => continue,
                Next::Finished(_) => {
                    phase = "Failed";
                    initialized = false;
                    break;
                }
                Next::Running => {}
                Next::Start(attempt) => {
                    let started = self
                        .start(
                            pod,
                            container,
                            attempt,
                            true,
                            netns.clone(),
                            &etc,
                            &volumes,
                            &fetched,
                        )
                        .await;
                    after = after.min(retry_after(started));
                }
                Next::Wait(wait) => after = after.min(wait),
            }
            initialized = false;
            break;
        }

        if initialized {
            let mut finished = Vec::new();
            let mut any_ran = false;
            for container in &spec_.containers {
                match self.next(container, &instances, &policy) {
                    Next::Running => any_ran = true,
                    Next::Finished(code) => finished.push(code),
                    Next::Start(attempt) => {
                        any_ran |= attempt > 0;
                        let started = self
                            .start(
                                pod,
                                container,
                                attempt,
                                false,
                                netns.clone(),
                                &etc,
                                &volumes,
                                &fetched,
                            )
                            .await;
                        after = after.min(retry_after(started));
                    }
                    Next::Wait(wait) => {
                        any_ran = true;
                        after = after.min(wait);
                    }
                }
            }
            phase = if finished.len() == spec_.containers.len() {
                if finished.iter().all(|code| *code == 0) {
                    "Succeeded"
                } else {
                    "Failed"
                }
            } else if any_ran || !finished.is_empty() {
                "Running"
            } else {
                "Pending"
            };
        }

        let instances = instances::of_pod(&self.ctx.runtime, &self.uid).await?;
        if phase == "Pending"
            && instances
                .iter()
                .any(|i| i.running() && spec_.containers.iter().any(|c| c.name == i.name))
        {
            phase = "Running";
        }
        if matches!(phase, "Succeeded" | "Failed") {
            // Sidecars and anything still running stop once the pod is done.
            for instance in instances.iter().filter(|i| i.running()) {
                self.ctx
                    .runtime
                    .kill(&instance.id, nix::libc::SIGTERM)
                    .await?;
            }
        }
        let probed = self.probe(pod, &instances).await?;
        self.report(pod, &instances, &probed, phase).await?;
        Ok(Outcome::Again(after))
    }

    /// Decides what container `container` needs under restart rule `rule`.
    fn next(&mut self, container: &Container, instances: &[Instance], rule: &str) -> Next {
        let (latest, _) = instances::latest(instances, &container.name);
        let Some(latest) = latest else {
            return Next::Start(0);
        };
        match &latest.state {
            State::Running { .. } => {
                self.waiting.remove(&container.name);
                Next::Running
            }
            State::Unstarted => Next::Start(latest.attempt),
            State::Exited {
                code,
                started,
                finished,
                ..
            } => {
                let restart = rule == "Always" || (rule == "OnFailure" && *code != 0);
                if !restart {
                    self.waiting.remove(&container.name);
                    return Next::Finished(*code);
                }
                let ran = started
                    .map(|s| finished.duration_since(s).unsigned_abs())
                    .unwrap_or_default();
                if ran >= BACKOFF_RESET {
                    self.crash_backoff.remove(&container.name);
                }
                let Some(backoff) = self.crash_backoff.get(&container.name).copied() else {
                    // The first restart is immediate.
                    self.crash_backoff.insert(
                        container.name.clone(),
                        Backoff {
                            delay: FIRST_BACKOFF,
                        },
                    );
                    return Next::Start(latest.attempt + 1);
                };
                let due = finished.checked_add(backoff.delay).unwrap_or(*finished);
                let now = Timestamp::now();
                if now < due {
                    let wait = due.duration_since(now).unsigned_abs();
                    self.waiting.insert(
                        container.name.clone(),
                        Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: format!(
                                "back-off {}s restarting failed container={} pod={}",
                                backoff.delay.as_secs(),
                                container.name,
                                self.uid
                            ),
                        },
                    );
                    return Next::Wait(wait);
                }
                let delay = (backoff.delay * 2).min(MAX_BACKOFF);
                self.crash_backoff
                    .insert(container.name.clone(), Backoff { delay });
                Next::Start(latest.attempt + 1)
            }
        }
    }

    /// Reads the ConfigMaps and Secrets the pod's environment and volumes name.
    async fn fetch(&mut self, pod: &Pod) -> Result<Fetched> {
        let (namespace, _) = meta(pod);
        let mut config_maps: BTreeMap<String, ()> = BTreeMap::new();
        let mut secrets: BTreeMap<String, ()> = BTreeMap::new();
        let spec = pod.spec.clone().unwrap_or_default();
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for from in container.env_from.iter().flatten() {
                if let Some(cm) = &from.config_map_ref {
                    config_maps.insert(cm.name.clone(), ());
                }
                if let Some(s) = &from.secret_ref {
                    secrets.insert(s.name.clone(), ());
                }
            }
            for var in container.env.iter().flatten() {
                let Some(from) = &var.value_from else {
                    continue;
                };
                if let Some(cm) = &from.config_map_key_ref {
                    config_maps.insert(cm.name.clone(), ());
                }
                if let Some(s) = &from.secret_key_ref {
                    secrets.insert(s.name.clone(), ());
                }
            }
        }
        for volume in spec.volumes.iter().flatten() {
            if let Some(cm) = &volume.config_map {
                config_maps.insert(cm.name.clone(), ());
            }
            if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                secrets.insert(name, ());
            }
            for source in volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
            {
                if let Some(cm) = &source.config_map {
                    config_maps.insert(cm.name.clone(), ());
                }
                if let Some(secret) = &source.secret {
                    secrets.insert(secret.name.clone(), ());
                }
            }
        }
        let cm_api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let secret_api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let mut fetched = Fetched {
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            tokens: self.tokens.refresh(&self.ctx.client, pod).await,
        };
        for name in config_maps.into_keys() {
            let found = cm_api
                .get_opt(&name)
                .await
                .with_context(|| format!("reading configmap {namespace}/{name}"))?;
            let data = found.map(|cm| {
                merge(
                    cm.data,
                    cm.binary_data
                        .map(|b| b.into_iter().map(|(k, v)| (k, v.0)).collect()),
                )
            });
            fetched.config_maps.insert(name, data);
        }
        for name in secrets.into_keys() {
            let found = secret_api
                .get_opt(&name)
                .await
                .with_context(|| format!("reading secret {namespace}/{name}"))?;
            let data = found.map(|s| {
                merge(
                    s.string_data,
                    s.data
                        .map(|b| b.into_iter().map(|(k, v)| (k, v.0)).collect()),
                )
            });
            fetched.secrets.insert(name, data);
        }
        Ok(fetched)
    }

    /// Prepares every volume; a volume that cannot be is recorded against the pod's
    /// containers that mount it.
    fn prepare_volumes(
        &mut self,
        pod: &Pod,
        pod_dir: &std::path::Path,
        fetched: &Fetched,
    ) -> Result<HashMap<String, Result<PathBuf, String>>> {
        let dir = pod_dir.join("volumes");
        let mut prepared = HashMap::new();
        for volume in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
        {
            let inputs = files::Inputs {
                pod,
                host_ip: &self.ctx.node_ip,
                config_maps: &fetched.config_maps,
                secrets: &fetched.secrets,
                tokens: &fetched.tokens,
            };
            let result = match files::prepare(&dir, volume, &inputs) {
                Ok(Prepared::Dir(path)) => Ok(path),
                Ok(Prepared::Unsupported(reason)) => Err(reason),
                Err(error) => Err(format!("volume {:?}: {error}", volume.name)),
            };
            prepared.insert(volume.name.clone(), result);
        }
        Ok(prepared)
    }

    /// The image `container` runs, honouring its pull policy.
    async fn image(&mut self, container: &Container) -> std::result::Result<ImageConfig, Waiting> {
        let image = container.image.clone().unwrap_or_default();
        let policy = container.image_pull_policy.clone().unwrap_or_else(|| {
            let full = placement::image::normalize(&image);
            if full.ends_with(":latest") && !image.contains('@') {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        match self.ctx.runtime.image(&image).await {
            Ok(config) => {
                self.pull_backoff.remove(&container.name);
                Ok(config)
            }
            Err(runtime::Error::ImageNotPresent(_)) if policy == "Never" => Err(Waiting {
                reason: "ErrImageNeverPull".into(),
                message: format!(
                    "Container image \"{image}\" is not present with pull policy of Never"
                ),
            }),
            Err(runtime::Error::ImageNotPresent(full)) => {
                // Registries are out of reach from this kubelet: every pull fails, and a
                // repeated failure backs off exactly as a failing pull would.
                let now = Timestamp::now();
                let entry = self.pull_backoff.get(&container.name).copied();
                match entry {
                    Some((backoff, since))
                        if now < since.checked_add(backoff.delay).unwrap_or(since) =>
                    {
                        Err(Waiting {
                            reason: "ImagePullBackOff".into(),
                            message: format!("Back-off pulling image \"{image}\""),
                        })
                    }
                    _ => {
                        let delay = entry
                            .map(|(b, _)| (b.delay * 2).min(MAX_BACKOFF))
                            .unwrap_or(FIRST_BACKOFF);
                        self.pull_backoff
                            .insert(container.name.clone(), (Backoff { delay }, now));
                        Err(Waiting {
                            reason: "ErrImagePull".into(),
                            message: format!(
                                "failed to pull image \"{image}\": {full} is not in the node's image store and this kubelet does not pull from registries"
                            ),
                        })
                    }
                }
            }
            Err(error) => Err(Waiting {
                reason: "ErrImagePull".into(),
                message: error.to_string(),
            }),
        }
    }

    /// Starts attempt `attempt` of `container` and says whether it did; a failure is recorded
    /// as its waiting reason.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        &mut self,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        init: bool,
        netns: Option<PathBuf>,
        etc: &[BindMount],
        volumes: &HashMap<String, Result<PathBuf, String>>,
        fetched: &Fetched,
    ) -> bool {
        match self
            .try_start(pod, container, attempt, init, netns, etc, volumes, fetched)
            .await
        {
            Ok(()) => {
                self.waiting.remove(&container.name);
                true
            }
            Err(waiting) => {
                tracing::info!(pod = %self.uid, container = %container.name, reason = %waiting.reason, message = %waiting.message, "container not started");
                self.waiting.insert(container.name.clone(), waiting);
                false
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn try_start(
        &mut self,
        pod: &Pod,
        container: &Container,
        attempt: u32,
        init: bool,
        netns: Option<PathBuf>,
        etc: &[BindMount],
        volumes: &HashMap<String, Result<PathBuf, String>>,
        fetched: &Fetched,
    ) -> std::result::Result<(), Waiting> {
        let config_error = |message: String| Waiting {
            reason: "CreateContainerConfigError".into(),
            message,
        };
        let image = self.image(container).await?;
        let env = env::resolve(pod, container, &self.ctx.node_ip, fetched).map_err(config_error)?;
        let mut mounts = etc.to_vec();
        for mount in container.volume_mounts.iter().flatten() {
            let source = match volumes.get(&mount.name) {
                Some(Ok(path)) => path.clone(),
                Some(Err(reason)) => return Err(config_error(reason.clone())),
                None => {
                    return Err(config_error(format!(
                        "volume {:?} is not declared by the pod",
                        mount.name
                    )));
                }
            };
            let source = match mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
                Some(sub) if sub.split('/').any(|part| part == "..") => {
                    return Err(config_error(format!(
                        "subPath {sub:?} must not contain '..'"
                    )));
                }
                Some(sub) => {
                    let path = source.join(sub);
                    let _ = std::fs::create_dir_all(&path);
                    path
                }
                None => source,
            };
            mounts.push(BindMount {
                source,
                destination: mount.mount_path.clone(),
                read_only: mount.read_only == Some(true),
            });
        }
        let id = instances::container_id(&self.uid, &container.name, attempt);
        let termination_log = self
            .ctx
            .root_dir
            .join("pods")
            .join(&self.uid)
            .join("containers")
            .join(&container.name)
            .join(format!("{attempt}-termination-log"));
        if let Some(dir) = termination_log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| config_error(format!("creating {}: {e}", dir.display())))?;
        }
        std::fs::write(&termination_log, b"")
            .map_err(|e| config_error(format!("creating {}: {e}", termination_log.display())))?;
        mounts.push(BindMount {
            source: termination_log.clone(),
            destination: container
                .termination_message_path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/dev/termination-log".into()),
            read_only: false,
        });
        let cgroup = format!("{}/pod{}/{id}", self.ctx.cgroup_parent, self.uid);
        let inputs = spec::Inputs {
            pod,
            container,
            image: &image,
            env,
            netns,
            cgroup,
            mounts,
        };
        let spec = spec::build(&inputs).map_err(|e| config_error(e.to_string()))?;

        let (namespace, name) = meta(pod);
        let log_path = self
            .ctx
            .log_dir
            .join(format!("{namespace}_{name}_{}", self.uid))
            .join(&container.name)
            .join(format!("{attempt}.log"));
        let labels = HashMap::from([
            (instances::POD_UID.to_string(), self.uid.clone()),
            (instances::POD_NAME.to_string(), name),
            (instances::POD_NAMESPACE.to_string(), namespace),
            (instances::CONTAINER.to_string(), container.name.clone()),
            (instances::ATTEMPT.to_string(), attempt.to_string()),
            (instances::INIT.to_string(), init.to_string()),
            (instances::IMAGE_ID.to_string(), image.id.clone()),
            (
                instances::LOG_PATH.to_string(),
                log_path.display().to_string(),
            ),
            (instances::STARTED.to_string(), Timestamp::now().to_string()),
            (
                instances::TERMINATION_LOG.to_string(),
                termination_log.display().to_string(),
            ),
            (
                instances::FALLBACK_TO_LOGS.to_string(),
                (container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"))
                    .to_string(),
            ),
        ]);
        let run_error = |error: runtime::Error| Waiting {
            reason: "RunContainerError".into(),
            message: error.to_string(),
        };
        self.ctx
            .runtime
            .create_container(&id, &image, &spec, labels)
            .await
            .map_err(run_error)?;
        let uri = crate::logs::uri(&self.ctx.log_program, &log_path);
        if let Err(error) = self.ctx.runtime.start(&id, &uri).await {
            let _ = self.ctx.runtime.remove_container(&id).await;
            return Err(run_error(error));
        }
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(1) as u64;
        let pod_ip = self.pod_ip.as_deref().and_then(|ip| ip.parse().ok());
        if let Err(message) = hooks::run(
            &self.ctx.runtime,
            container,
            &id,
            pod_ip,
            hooks::Hook::PostStart,
            Duration::from_secs(grace),
        )
        .await
        {
            // A container whose postStart hook failed is killed; its restart policy decides.
            let _ = self.ctx.runtime.kill(&id, nix::libc::SIGKILL).await;
            return Err(Waiting {
                reason: "PostStartHookError".into(),
                message,
            });
        }
        tracing::info!(pod = %self.uid, container = %container.name, attempt, "container started");
        // Only the newest two instances are kept: the running one and the last exited.
        let older = instances::of_pod(&self.ctx.runtime, &self.uid)
            .await
            .map_err(run_error)?;
        for old in older
            .iter()
            .filter(|i| i.name == container.name && i.attempt + 2 <= attempt)
        {
            self.ctx
                .runtime
                .remove_container(&old.id)
                .await
                .map_err(run_error)?;
        }
        Ok(())
    }

    /// Keeps a probe task on every running container that has probes, and kills those whose
    /// liveness or startup probe gave up (the restart policy then restarts them). Returns
    /// what the probes found, by container name.
    async fn probe(
        &mut self,
        pod: &Pod,
        instances: &[Instance],
    ) -> Result<HashMap<String, ProbeState>> {
        let spec = pod.spec.clone().unwrap_or_default();
        let containers: Vec<&Container> = spec
            .containers
            .iter()
            .chain(
                spec.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| c.restart_policy.as_deref() == Some("Always")),
            )
            .collect();
        let running: HashMap<&str, &Instance> = instances
            .iter()
            .filter(|i| i.running())
            .map(|i| (i.id.as_str(), i))
            .collect();
        self.probers
            .retain(|id, _| running.contains_key(id.as_str()));
        let pod_ip = self.pod_ip.as_deref().and_then(|ip| ip.parse().ok());
        let mut found = HashMap::new();
        for container in containers.iter().filter(|c| probes::has_probes(c)) {
            let (Some(latest), _) = instances::latest(instances, &container.name) else {
                continue;
            };
            if !latest.running() {
                continue;
            }
            let Some(pod_ip) = pod_ip else { continue };
            let prober = self.probers.entry(latest.id.clone()).or_insert_with(|| {
                probes::start(
                    probes::Target {
                        runtime: self.ctx.runtime.clone(),
                        container_id: latest.id.clone(),
                        pod_ip,
                        container: (*container).clone(),
                    },
                    Arc::clone(&self.wake),
                )
            });
            let state = prober.state();
            if let Some(reason) = &state.failed {
                tracing::info!(pod = %self.uid, container = %container.name, %reason, "container will be restarted");
                let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64;
                self.kill_gracefully(container, &latest.id, Duration::from_secs(grace));
                self.probers.remove(&latest.id);
            }
            found.insert(container.name.clone(), state);
        }
        Ok(found)
    }

    /// preStop hook and SIGTERM, then SIGKILL once `grace` is over if it still runs — in the
    /// background: the worker must not stall on one container.
    fn kill_gracefully(&self, container: &Container, id: &str, grace: Duration) {
        let (runtime, id, container) =
            (self.ctx.runtime.clone(), id.to_string(), container.clone());
        let pod_ip = self.pod_ip.as_deref().and_then(|ip| ip.parse().ok());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + grace;
            if let Err(error) = hooks::run(
                &runtime,
                &container,
                &id,
                pod_ip,
                hooks::Hook::PreStop,
                grace,
            )
            .await
            {
                tracing::info!(container = %container.name, %error, "preStop hook");
            }
            let _ = runtime.kill(&id, nix::libc::SIGTERM).await;
            tokio::time::sleep_until(deadline).await;
            if matches!(
                runtime.task(&id).await,
                Ok(Some(runtime::TaskState::Running { .. }))
            ) {
                let _ = runtime.kill(&id, nix::libc::SIGKILL).await;
            }
        });
    }

    /// Patches the pod's status when it changed.
    async fn report(
        &mut self,
        pod: &Pod,
        instances: &[Instance],
        probed: &HashMap<String, ProbeState>,
        phase: &str,
    ) -> Result<()> {
        let inputs = status::Inputs {
            pod,
            instances,
            probes: probed,
            waiting: &self.waiting,
            pod_ip: self.pod_ip.clone(),
            host_ip: self.ctx.node_ip.clone(),
            phase,
        };
        let status = status::compute(&inputs);
        if self.reported.as_ref() == Some(&status) {
            return Ok(());
        }
        let (namespace, name) = meta(pod);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .with_context(|| format!("reporting the status of pod {namespace}/{name}"))?;
        self.reported = Some(status);
        Ok(())
    }

    /// Stops the pod's containers (preStop hooks, SIGTERM, then SIGKILL once `grace` is
    /// over) and removes them, its network, files, logs and cgroup.
    async fn tear_down(&mut self, pod: Option<&Pod>, grace: Duration) -> Result<()> {
        self.probers.clear();
        let runtime = &self.ctx.runtime;
        let running: Vec<Instance> = instances::of_pod(runtime, &self.uid)
            .await?
            .into_iter()
            .filter(|i| i.running())
            .collect();
        let deadline = tokio::time::Instant::now() + grace;
        let pod_ip = self.pod_ip.as_deref().and_then(|ip| ip.parse().ok());
        let containers: Vec<Container> = pod
            .and_then(|p| p.spec.as_ref())
            .map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let uid = &self.uid;
        let stops = running.iter().filter_map(|instance| {
            let container = containers.iter().find(|c| c.name == instance.name)?;
            Some(async move {
                if let Err(error) = hooks::run(
                    runtime,
                    container,
                    &instance.id,
                    pod_ip,
                    hooks::Hook::PreStop,
                    grace,
                )
                .await
                {
                    tracing::info!(pod = %uid, container = %instance.name, %error, "preStop hook");
                }
            })
        });
        futures::future::join_all(stops).await;
        for instance in &running {
            runtime.kill(&instance.id, nix::libc::SIGTERM).await?;
        }
        loop {
            let mut alive = Vec::new();
            for instance in &running {
                if matches!(
                    runtime.task(&instance.id).await?,
                    Some(runtime::TaskState::Running { .. })
                ) {
                    alive.push(instance);
                }
            }
            if alive.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for instance in alive {
                    tracing::info!(pod = %self.uid, container = %instance.name, "grace period over; killing");
                    runtime.kill(&instance.id, nix::libc::SIGKILL).await?;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for instance in instances::of_pod(runtime, &self.uid).await? {
            runtime.remove_container(&instance.id).await?;
        }
        self.ctx
            .network
            .tear_down(&self.uid)
            .await
            .context("tearing down the pod's network")?;
        let pod_dir = self.ctx.root_dir.join("pods").join(&self.uid);
        files::unmount_volumes(&pod_dir.join("volumes"))
            .with_context(|| format!("unmounting the volumes of {}", pod_dir.display()))?;
        remove_dir(&pod_dir)?;
        if let Ok(entries) = std::fs::read_dir(&self.ctx.log_dir) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .ends_with(&format!("_{}", self.uid))
                {
                    remove_dir(&entry.path())?;
                }
            }
        }
        crate::cgroups::remove(&format!("{}/pod{}", self.ctx.cgroup_parent, self.uid));
        Ok(())
    }

    async fn release_network(&mut self, pod: &Pod) -> Result<()> {
        if pod.spec.as_ref().and_then(|s| s.host_network) != Some(true) {
            self.ctx
                .network
                .tear_down(&self.uid)
                .await
                .context("releasing the pod's network")?;
        }
        Ok(())
    }

    /// Removes the pod object now that nothing of it runs.
    async fn finish_deletion(&self, pod: &Pod) -> Result<()> {
        let (namespace, name) = meta(pod);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(error) => Err(error).with_context(|| format!("deleting pod {namespace}/{name}")),
        }
    }
}

fn remove_dir(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("removing {}", path.display())),
    }
}
