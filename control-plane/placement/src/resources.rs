//! Resource amounts as the scheduler and the quota controller count them: every quantity in
//! thousandths of its unit (millicores for cpu, milli-bytes for memory) so cpu and memory
//! share one integer type, and what a pod asks for — the larger of its containers' sum and
//! its largest init container (sidecars counted alongside), plus its overhead — in requests
//! and in limits alike.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_quantity::ParsedQuantity;

/// Amounts of resources, in thousandths: the four every pod and node has as fields (decisions
/// read them for every node, so no map lookups), extended resources by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// cpu, in millicores.
    pub cpu: i64,
    /// memory, in thousandths of a byte.
    pub memory: i64,
    /// ephemeral-storage, in thousandths of a byte.
    pub ephemeral_storage: i64,
    /// pods, in thousandths of a pod.
    pub pods: i64,
    /// Everything else (extended resources such as GPUs), by name.
    pub extended: BTreeMap<String, i64>,
}

/// What a container without a cpu request counts as when spreading load (not when fitting).
pub const DEFAULT_CPU_MILLI: i64 = 100;
/// What a container without a memory request counts as when spreading load.
pub const DEFAULT_MEMORY_MILLI: i64 = 200 * 1024 * 1024 * 1000;

impl Resources {
    /// The amount of `name` (0 when absent).
    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            "pods" => self.pods,
            other => self.extended.get(other).copied().unwrap_or(0),
        }
    }

    fn slot(&mut self, name: &str) -> &mut i64 {
        match name {
            "cpu" => &mut self.cpu,
            "memory" => &mut self.memory,
            "ephemeral-storage" => &mut self.ephemeral_storage,
            "pods" => &mut self.pods,
            other => self.extended.entry(other.to_owned()).or_default(),
        }
    }

    /// Every amount with its name, the fixed four first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        [
            ("cpu", self.cpu),
            ("memory", self.memory),
            ("ephemeral-storage", self.ephemeral_storage),
            ("pods", self.pods),
        ]
        .into_iter()
        .chain(self.extended.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    /// Adds `other` in.
    pub fn add(&mut self, other: &Resources) {
        self.cpu += other.cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (name, amount) in &other.extended {
            *self.extended.entry(name.clone()).or_default() += amount;
        }
    }

    /// Takes `other` out.
    pub fn subtract(&mut self, other: &Resources) {
        self.cpu -= other.cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (name, amount) in &other.extended {
            *self.extended.entry(name.clone()).or_default() -= amount;
        }
    }

    /// Raises each amount to at least `other`'s.
    fn at_least(&mut self, other: &Resources) {
        for (name, amount) in other.iter() {
            let slot = self.slot(name);
            *slot = (*slot).max(amount);
        }
    }

    /// Amounts from a resource list (capacity, allocatable, requests); quantities that do
    /// not parse count as zero.
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut resources = Resources::default();
        for (name, quantity) in list.into_iter().flatten() {
            *resources.slot(name) = milli(quantity);
        }
        resources
    }
}

/// A quantity in thousandths, rounded up (a request of 1.5m cpu needs 2m).
pub fn milli(quantity: &Quantity) -> i64 {
    ParsedQuantity::try_from(quantity)
        .ok()
        .and_then(|q| q.to_bytes_f64())
        .map(|value| (value * 1000.0).ceil())
        .filter(|value| value.is_finite() && *value >= 0.0 && *value < i64::MAX as f64)
        .map(|value| value as i64)
        .unwrap_or(0)
}

/// Which of a container's resource lists to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `resources.requests`.
    Requests,
    /// `resources.limits`.
    Limits,
}

fn container_amounts(container: &Container, side: Side) -> Resources {
    Resources::from_list(container.resources.as_ref().and_then(|r| match side {
        Side::Requests => r.requests.as_ref(),
        Side::Limits => r.limits.as_ref(),
    }))
}

fn container_requests(container: &Container) -> Resources {
    container_amounts(container, Side::Requests)
}

/// What a pod needs from a node to fit, counting one pod.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    pod_amounts(spec, Side::Requests)
}

/// What a pod's requests or limits come to, counting one pod.
pub fn pod_amounts(spec: &PodSpec, side: Side) -> Resources {
    let mut total = Resources::default();
    for container in &spec.containers {
        total.add(&container_amounts(container, side));
    }
    // Sidecars (init containers that keep running) add to everything after them; a plain
    // init container runs alone with the sidecars started before it.
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for init in spec.init_containers.iter().flatten() {
        let requests = container_amounts(init, side);
        if init.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&requests);
        } else {
            let mut running = requests;
            running.add(&sidecars);
            init_peak.at_least(&running);
        }
    }
    total.add(&sidecars);
    total.at_least(&init_peak);
    total.add(&Resources::from_list(spec.overhead.as_ref()));
    total.pods = 1000;
    total
}

/// The cpu and memory a pod counts for when spreading load: containers without requests
/// count the defaults.
pub fn pod_nonzero_requests(spec: &PodSpec) -> (i64, i64) {
    let mut cpu = 0;
    let mut memory = 0;
    for container in &spec.containers {
        let requests = container_requests(container);
        cpu += match requests.cpu {
            0 => DEFAULT_CPU_MILLI,
            n => n,
        };
        memory += match requests.memory {
            0 => DEFAULT_MEMORY_MILLI,
            n => n,
        };
    }
    (cpu, memory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn container(cpu: &str, memory: &str) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_owned(), Quantity(cpu.into())),
                        ("memory".to_owned(), Quantity(memory.into())),
                    ]
                    .into(),
                ),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        }
    }

    #[test]
    fn quantities_in_thousandths() {
        assert_eq!(milli(&Quantity("100m".into())), 100);
        assert_eq!(milli(&Quantity("2".into())), 2000);
        assert_eq!(milli(&Quantity("0.5".into())), 500);
        assert_eq!(milli(&Quantity("1Ki".into())), 1_024_000);
        assert_eq!(milli(&Quantity("bogus".into())), 0);
    }

    #[test]
    fn a_pod_asks_for_its_containers_or_its_largest_init_container() {
        let spec = PodSpec {
            containers: vec![container("100m", "1Mi"), container("200m", "1Mi")],
            init_containers: Some(vec![container("500m", "1Ki")]),
            ..PodSpec::default()
        };
        let requests = pod_requests(&spec);
        assert_eq!(requests.get("cpu"), 500);
        assert_eq!(requests.get("memory"), 2 * 1024 * 1024 * 1000);
        assert_eq!(requests.get("pods"), 1000);
        let bare = PodSpec {
            containers: vec![Container::default()],
            ..PodSpec::default()
        };
        assert_eq!(pod_requests(&bare).get("cpu"), 0);
        assert_eq!(
            pod_nonzero_requests(&bare),
            (DEFAULT_CPU_MILLI, DEFAULT_MEMORY_MILLI)
        );
    }
}
