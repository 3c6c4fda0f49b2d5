//! The EndpointSlice and Endpoints controller: keeps each selector Service's slices (and its
//! legacy Endpoints object) listing the pods it selects, with their readiness, as pods come,
//! go and change. The contents are worked out in [`slices`]; this module writes them.

pub mod slices;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use parking_lot::Mutex;

use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::workers::{self, Key};
use crate::{Error, pods};

/// The controller's shared state.
pub struct EndpointsController {
    client: kube::Client,
    services: Arc<Informer<Service>>,
    slices: Arc<Informer<EndpointSlice>>,
    pods: Arc<Informer<Pod>>,
    /// The Services each pod was last listed in, so a pod whose labels no longer match
    /// still reaches them.
    listed_in: Mutex<HashMap<Key, HashSet<String>>>,
    queue: Arc<WorkQueue<Key>>,
}

impl EndpointsController {
    /// Runs until the process ends.
    pub async fn run(
        client: kube::Client,
        pods: Arc<Informer<Pod>>,
        workers: usize,
    ) -> Result<(), Error> {
        let services = Informer::<Service>::start(Api::all(client.clone()));
        let slices = Informer::<EndpointSlice>::start_with(
            Api::all(client.clone()),
            watcher::Config::default().labels(&format!(
                "{}={}",
                slices::MANAGED_BY,
                slices::CONTROLLER
            )),
        );
        let controller = Arc::new(EndpointsController {
            client,
            services: services.clone(),
            slices: slices.clone(),
            pods: pods.clone(),
            listed_in: Mutex::new(HashMap::new()),
            queue: WorkQueue::new(),
        });
        let on_service = controller.clone();
        tokio::spawn(follow(services.subscribe(), move |change| match change {
            Change::Applied(s) | Change::Deleted(s) => on_service.queue.add(Key::of(s.as_ref())),
            Change::Relisted => on_service.enqueue_all(),
        }));
        let on_slice = controller.clone();
        tokio::spawn(follow(slices.subscribe(), move |change| match change {
            Change::Applied(s) | Change::Deleted(s) => {
                let service = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(slices::SERVICE_NAME));
                if let (Some(namespace), Some(service)) = (&s.metadata.namespace, service) {
                    on_slice.queue.add(Key::namespaced(namespace, service));
                }
            }
            Change::Relisted => on_slice.enqueue_all(),
        }));
        let on_pod = controller.clone();
        tokio::spawn(follow(pods.subscribe(), move |change| match change {
            Change::Applied(p) => on_pod.pod_changed(&p),
            Change::Deleted(p) => {
                on_pod.pod_changed(&p);
                on_pod.listed_in.lock().remove(&Key::of(p.as_ref()));
            }
            Change::Relisted => on_pod.enqueue_all(),
        }));
        services.synced().await;
        slices.synced().await;
        pods.synced().await;
        controller.enqueue_all();
        let worker = controller.clone();
        workers::run(
            "endpointslice",
            controller.queue.clone(),
            workers,
            move |key| worker.clone().reconcile(key),
        )
        .await
    }

    fn enqueue_all(&self) {
        for service in self.services.store().state() {
            self.queue.add(Key::of(service.as_ref()));
        }
    }

    fn pod_changed(&self, pod: &Pod) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let key = Key::of(pod);
        let empty = Default::default();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        for service in self.services.store().state() {
            if service.metadata.namespace.as_deref() == Some(namespace.as_str())
                && selects(&service, labels)
            {
                self.queue.add(Key::of(service.as_ref()));
            }
        }
        if let Some(before) = self.listed_in.lock().get(&key) {
            for service in before {
                self.queue.add(Key::namespaced(&namespace, service));
            }
        }
    }

    async fn reconcile(self: Arc<Self>, key: Key) -> Result<Option<Duration>, Error> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let Some(service) = self.services.store().get(&key.object_ref()) else {
            // Its slices and Endpoints go with it (owner references, and the collector).
            return Ok(None);
        };
        let Some(selector) = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .filter(|s| !s.is_empty())
        else {
            // Without a selector the Service's endpoints are someone else's.
            return Ok(None);
        };
        let selected: Vec<_> = self
            .pods
            .in_namespace(&namespace)
            .into_iter()
            .filter(|p| {
                selector
                    .iter()
                    .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
            })
            .collect();
        {
            let mut listed_in = self.listed_in.lock();
            for pod in &selected {
                listed_in
                    .entry(Key::of(pod.as_ref()))
                    .or_default()
                    .insert(key.name.clone());
            }
        }
        let groups = slices::groups(&service, &selected);
        let existing: Vec<EndpointSlice> = self
            .slices
            .store()
            .state_filter(|s| {
                s.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(slices::SERVICE_NAME))
                        == Some(&key.name)
            })
            .into_iter()
            .map(|s| (*s).clone())
            .collect();
        let owner = pods::controller_reference(service.as_ref());
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &namespace);
        for change in slices::plan(&service, &groups, &existing, &owner) {
            match change {
                slices::Change::Create(slice) => {
                    api.create(&PostParams::default(), &slice).await?;
                }
                slices::Change::Update(slice) => {
                    let name = slice.metadata.name.clone().unwrap_or_default();
                    api.replace(&name, &PostParams::default(), &slice).await?;
                }
                slices::Change::Delete(name) => {
                    match api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 404 => {}
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        }
        self.write_endpoints(&slices::endpoints(&service, &groups))
            .await?;
        Ok(None)
    }

    async fn write_endpoints(&self, wanted: &Endpoints) -> Result<(), Error> {
        let namespace = wanted.metadata.namespace.clone().unwrap_or_default();
        let name = wanted.metadata.name.clone().unwrap_or_default();
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &namespace);
        match api.get_opt(&name).await? {
            None => {
                api.create(&PostParams::default(), wanted).await?;
            }
            Some(current)
                if current.subsets != wanted.subsets
                    || current.metadata.labels != wanted.metadata.labels =>
            {
                let mut updated = wanted.clone();
                updated.metadata.resource_version = current.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &updated).await?;
            }
            Some(_) => {}
        }
        Ok(())
    }
}

fn selects(service: &Service, labels: &std::collections::BTreeMap<String, String>) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
        .is_some_and(|selector| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
}
