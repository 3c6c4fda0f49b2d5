//! Basalt's controller manager: the control loops that keep the cluster's objects true to
//! their specs, as kube-controller-manager's do. Every controller talks to the API server
//! with the `kube` crate, reads through shared [`informer`] caches, and works a
//! deduplicating [`queue`]; the rules themselves are pure functions next to each
//! controller (`replicaset::plan`, `garbage_collector::graph`) so they are unit tested
//! without a server.
//!
//! Leadership (one active manager per cluster) is the binary's business, not this library's.

pub mod adoption;
pub mod certificates;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod expectations;
pub mod garbage_collector;
pub mod informer;
pub mod job;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod pod_gc;
pub mod pods;
pub mod queue;
pub mod replicaset;
pub mod resource_quota;
pub mod resources;
pub mod revisions;
pub mod serviceaccounts;
pub mod statefulset;
pub mod taint_eviction;
pub mod ttl_after_finished;
pub mod workers;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ResourceQuota};
use kube::api::Api;

use crate::informer::Informer;
use crate::resources::Resources;

/// Why a controller could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or could not be reached.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// An owner reference names a kind the API does not serve.
    #[error("kind {kind} of apiVersion {api_version} is not served")]
    UnknownKind {
        /// The reference's apiVersion.
        api_version: String,
        /// The reference's kind.
        kind: String,
    },
    /// An object's spec cannot be acted on.
    #[error("{0}")]
    Invalid(String),
    /// Part of the work failed; it is retried.
    #[error("{0}")]
    Failed(String),
}

/// A write whose object is already gone has nothing left to do.
pub(crate) fn unless_gone<T>(result: Result<T, kube::Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

impl Error {
    /// Whether the API refused a write because the object changed meanwhile.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api(kube::Error::Api(status)) if status.code == 409)
    }
}

/// The controllers this manager runs, by the names `--controllers` takes.
pub const CONTROLLERS: &[&str] = &[
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "replicaset",
    "deployment",
    "endpointslice",
    "nodelifecycle",
    "taint-eviction-controller",
    "job",
    "ttl-after-finished",
    "cronjob",
    "daemonset",
    "statefulset",
    "nodeipam",
    "csrapproving",
    "csrsigning",
    "resourcequota",
    "podgc",
];

/// What the controllers need besides a client.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The cluster CA (PEM) published in every namespace as `kube-root-ca.crt`.
    pub root_ca: Option<String>,
    /// The controllers to run (names from [`CONTROLLERS`]); empty runs all.
    pub controllers: Vec<String>,
    /// The node lifecycle controller's timings and rates.
    pub node_lifecycle: node_lifecycle::Settings,
    /// The cluster CIDR and the prefix length of each node's block, when node IPAM
    /// allocates pod CIDRs (`--allocate-node-cidrs`).
    pub node_cidrs: Option<(ipnet::Ipv4Net, u8)>,
    /// The cluster CA the CSR signer issues certificates with; without it nothing is
    /// signed (`--cluster-signing-cert-file`/`--cluster-signing-key-file`).
    pub signer: Option<Arc<certificates::sign::Signer>>,
    /// How many finished pods to keep before the oldest are deleted (0 keeps all).
    pub terminated_pod_gc_threshold: usize,
}

impl Options {
    fn enabled(&self, name: &str) -> bool {
        self.controllers.is_empty() || self.controllers.iter().any(|c| c == name || c == "*")
    }
}

/// Runs the enabled controllers until one fails (they do not end otherwise).
pub async fn run(client: kube::Client, options: Options) -> Result<(), Error> {
    for name in &options.controllers {
        if name != "*" && !CONTROLLERS.contains(&name.as_str()) {
            return Err(Error::Invalid(format!(
                "unknown controller {name:?}; known: {}",
                CONTROLLERS.join(", ")
            )));
        }
    }
    let resources = Arc::new(Resources::new(client.clone()));
    let events = events::Recorder::start(client.clone(), "controller-manager");
    let namespaces = Informer::<Namespace>::start(Api::all(client.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    if options.enabled("garbagecollector") {
        let collector = garbage_collector::GarbageCollector::new(client.clone(), resources.clone());
        tasks.spawn(collector.run(8));
    }
    if options.enabled("namespace") {
        tasks.spawn(namespace::NamespaceController::run(
            client.clone(),
            resources.clone(),
            namespaces.clone(),
            2,
        ));
    }
    if options.enabled("serviceaccount") {
        tasks.spawn(serviceaccounts::NamespaceDefaults::run(
            client.clone(),
            namespaces.clone(),
            options.root_ca.clone(),
        ));
    }
    let pods = Informer::<Pod>::start(Api::all(client.clone()));
    let sets = Informer::<ReplicaSet>::start(Api::all(client.clone()));
    if options.enabled("replicaset") {
        tasks.spawn(replicaset::ReplicaSetController::run(
            client.clone(),
            sets.clone(),
            pods.clone(),
            5,
            events.as_component("replicaset-controller"),
        ));
    }
    if options.enabled("endpointslice") {
        tasks.spawn(endpoints::EndpointsController::run(
            client.clone(),
            pods.clone(),
            5,
        ));
    }
    let nodes = Informer::<Node>::start(Api::all(client.clone()));
    if let Some((cluster, prefix)) = options.node_cidrs
        && options.enabled("nodeipam")
    {
        let allocator = node_ipam::Allocator::new(cluster, prefix).map_err(Error::Invalid)?;
        tasks.spawn(node_ipam::run(client.clone(), nodes.clone(), allocator));
    }
    if options.enabled("podgc") {
        tasks.spawn(pod_gc::run(
            client.clone(),
            pods.clone(),
            nodes.clone(),
            options.terminated_pod_gc_threshold,
        ));
    }
    if options.enabled("nodelifecycle") {
        tasks.spawn(node_lifecycle::NodeLifecycleController::run(
            client.clone(),
            nodes.clone(),
            pods.clone(),
            options.node_lifecycle,
            events.as_component("node-controller"),
        ));
    }
    if options.enabled("taint-eviction-controller") {
        tasks.spawn(taint_eviction::TaintEvictionController::run(
            client.clone(),
            nodes.clone(),
            pods.clone(),
            events.as_component("taint-eviction-controller"),
        ));
    }
    if options.enabled("resourcequota") {
        let quotas = Informer::<ResourceQuota>::start(Api::all(client.clone()));
        tasks.spawn(resource_quota::run(
            client.clone(),
            quotas,
            pods.clone(),
            resources.clone(),
        ));
    }
    let signing = options
        .signer
        .clone()
        .filter(|_| options.enabled("csrsigning"));
    if options.enabled("csrapproving") || signing.is_some() {
        let requests = Informer::<CertificateSigningRequest>::start(Api::all(client.clone()));
        if options.enabled("csrapproving") {
            tasks.spawn(certificates::run_approver(
                client.clone(),
                requests.clone(),
                nodes.clone(),
            ));
        }
        if let Some(signer) = signing {
            tasks.spawn(certificates::run_signer(client.clone(), requests, signer));
        }
    }
    let revisions = Informer::<ControllerRevision>::start(Api::all(client.clone()));
    if options.enabled("daemonset") {
        tasks.spawn(daemonset::DaemonSetController::run(
            client.clone(),
            nodes.clone(),
            pods.clone(),
            revisions.clone(),
            events.as_component("daemonset-controller"),
        ));
    }
    if options.enabled("statefulset") {
        tasks.spawn(statefulset::StatefulSetController::run(
            client.clone(),
            pods.clone(),
            revisions.clone(),
            events.as_component("statefulset-controller"),
        ));
    }
    let jobs = Informer::<Job>::start(Api::all(client.clone()));
    if options.enabled("job") {
        tasks.spawn(job::JobController::run(
            client.clone(),
            jobs.clone(),
            pods.clone(),
            5,
            events.as_component("job-controller"),
        ));
    }
    if options.enabled("cronjob") {
        let cronjobs = Informer::<CronJob>::start(Api::all(client.clone()));
        tasks.spawn(cronjob::CronJobController::run(
            client.clone(),
            cronjobs,
            jobs.clone(),
            events.as_component("cronjob-controller"),
        ));
    }
    if options.enabled("ttl-after-finished") {
        tasks.spawn(ttl_after_finished::run(client.clone(), jobs.clone()));
    }
    if options.enabled("deployment") {
        let deployments = Informer::<Deployment>::start(Api::all(client.clone()));
        tasks.spawn(deployment::DeploymentController::run(
            client.clone(),
            deployments,
            sets,
            pods,
            5,
            events.as_component("deployment-controller"),
        ));
    }
    tracing::info!(controllers = tasks.len(), "controllers started");
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(panicked)) => Err(Error::Failed(format!("a controller stopped: {panicked}"))),
        None => Ok(()),
    }
}
