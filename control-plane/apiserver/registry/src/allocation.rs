//! Cluster IPs and node ports for Services, allocated from configured ranges.
//!
//! Each allocated address or port is a key of its own in the store
//! (`/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`) naming the
//! Service that holds it; creating that key is the allocation, so two servers can never hand
//! out the same one. Keys are reserved before the Service is written and released if the write
//! fails or once the Service no longer needs them; [`ServiceAllocator::repair`] removes what a
//! crash leaked and re-reserves what a Service holds without a key.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use apiserver_storage::{Backend, ListRequest, StorageError};
use bytes::Bytes;
use ipnet::Ipv4Net;
use rand::Rng;
use serde_json::{Value, json};

use crate::error::{ApiError, FieldError, Subject};
use crate::object::{self, Object};

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
const SERVICES_PREFIX: &str = "/registry/core/services/";
/// Random picks before falling back to a scan of what is taken.
const RANDOM_TRIES: usize = 16;

/// The ranges Services draw from.
pub struct ServiceAllocator {
    cidr: Ipv4Net,
    node_ports: RangeInclusive<u16>,
    /// Leaked keys seen by the last repair, removed if still leaked at the next.
    suspects: parking_lot::Mutex<HashSet<String>>,
}

/// Whether a Service of this type gets node ports.
pub fn wants_node_ports(spec: &Object) -> bool {
    match spec.get("type").and_then(Value::as_str) {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false)),
        _ => false,
    }
}

/// The allocation keys a stored Service holds.
fn held_keys(service: &Object) -> Vec<String> {
    let Some(spec) = service.get("spec").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    if let Some(ip) = spec.get("clusterIP").and_then(Value::as_str)
        && ip.parse::<Ipv4Addr>().is_ok()
    {
        keys.push(format!("{IP_PREFIX}{ip}"));
    }
    for port in crate::types::list(spec, "ports") {
        if let Some(n) = port
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n > 0)
        {
            keys.push(format!("{PORT_PREFIX}{n}"));
        }
    }
    keys
}

fn invalid(service: &Object, field: &str, value: String, why: &str) -> ApiError {
    ApiError::invalid(
        Subject {
            group: "",
            kind: "Service",
            resource: "services",
            name: object::name(service),
        },
        &[FieldError::invalid(field, value, why)],
    )
}

impl ServiceAllocator {
    /// Allocates cluster IPs from `cidr` and node ports from `node_ports`.
    pub fn new(cidr: Ipv4Net, node_ports: RangeInclusive<u16>) -> ServiceAllocator {
        ServiceAllocator {
            cidr,
            node_ports,
            suspects: parking_lot::Mutex::new(HashSet::new()),
        }
    }

    /// The address of the `kubernetes` Service: the first of the range.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    /// The addresses handed out (the network and broadcast addresses excluded).
    fn ips(&self) -> RangeInclusive<u32> {
        let network = u32::from(self.cidr.network());
        let broadcast = u32::from(self.cidr.broadcast());
        (network + 1)..=broadcast.saturating_sub(1).max(network + 1)
    }

    /// Fills a Service's cluster IP and node ports, reserving each new one; `old` is the
    /// stored Service on an update (what it holds is kept). Returns the keys reserved now,
    /// which the caller releases if its write fails. With `dry_run` nothing is reserved.
    pub async fn assign(
        &self,
        backend: &dyn Backend,
        service: &mut Object,
        old: Option<&Object>,
        dry_run: bool,
    ) -> Result<Vec<String>, ApiError> {
        let owner = json!({"namespace": object::namespace(service), "name": object::name(service),
                           "uid": object::uid(service)});
        let held: HashSet<String> = old.map(held_keys).unwrap_or_default().into_iter().collect();
        let mut reserved = Vec::new();
        let result = self
            .assign_into(backend, service, &held, &owner, dry_run, &mut reserved)
            .await;
        if let Err(e) = result {
            self.release(backend, &reserved).await;
            return Err(e);
        }
        Ok(reserved)
    }

    async fn assign_into(
        &self,
        backend: &dyn Backend,
        service: &mut Object,
        held: &HashSet<String>,
        owner: &Value,
        dry_run: bool,
        reserved: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let snapshot = service.clone();
        let spec = object::map_mut(service, "spec");
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_owned();
        if ty == "ExternalName" {
            return Ok(());
        }
        // Clients may give the address as clusterIP, or only as the first of clusterIPs.
        let requested = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .or_else(|| spec.get("clusterIPs")?.get(0)?.as_str())
            .unwrap_or("")
            .to_owned();
        let ip = match requested.as_str() {
            "None" => "None".to_owned(),
            "" => {
                let ip = self.reserve_ip(backend, owner, dry_run).await?;
                if !dry_run {
                    reserved.push(format!("{IP_PREFIX}{ip}"));
                }
                ip.to_string()
            }
            text => {
                let ip: Ipv4Addr = text.parse().map_err(|_| {
                    invalid(
                        &snapshot,
                        "spec.clusterIPs",
                        format!("[\"{text}\"]"),
                        "must be a valid IP address",
                    )
                })?;
                let key = format!("{IP_PREFIX}{ip}");
                if !held.contains(&key) {
                    if !self.ips().contains(&u32::from(ip)) {
                        return Err(invalid(
                            &snapshot,
                            "spec.clusterIPs",
                            format!("[\"{ip}\"]"),
                            &format!(
                                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                                self.cidr
                            ),
                        ));
                    }
                    if !dry_run && !reserve(backend, &key, owner).await? {
                        return Err(invalid(
                            &snapshot,
                            "spec.clusterIPs",
                            format!("[\"{ip}\"]"),
                            &format!(
                                "failed to allocate IP {ip}: provided IP is already allocated"
                            ),
                        ));
                    }
                    if !dry_run {
                        reserved.push(key);
                    }
                }
                ip.to_string()
            }
        };
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        if ip != "None" || !spec.contains_key("ipFamilies") {
            spec.insert("ipFamilies".into(), json!(["IPv4"]));
        }
        if !spec.contains_key("ipFamilyPolicy") {
            spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
        }
        let node_ports = wants_node_ports(spec);
        let Some(Value::Array(ports)) = spec.get_mut("ports") else {
            return Ok(());
        };
        for (i, port) in ports
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .enumerate()
        {
            if !node_ports {
                port.remove("nodePort");
                continue;
            }
            let field = format!("spec.ports[{i}].nodePort");
            match port
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0)
            {
                Some(n) => {
                    let key = format!("{PORT_PREFIX}{n}");
                    if held.contains(&key) || reserved.contains(&key) {
                        continue;
                    }
                    let in_range = u16::try_from(n).is_ok_and(|n| self.node_ports.contains(&n));
                    if !in_range {
                        return Err(invalid(
                            &snapshot,
                            &field,
                            n.to_string(),
                            &format!(
                                "provided port is not in the valid range. The range of valid ports is {}-{}",
                                self.node_ports.start(),
                                self.node_ports.end()
                            ),
                        ));
                    }
                    if !dry_run {
                        if !reserve(backend, &key, owner).await? {
                            return Err(invalid(
                                &snapshot,
                                &field,
                                n.to_string(),
                                "provided port is already allocated",
                            ));
                        }
                        reserved.push(key);
                    }
                }
                None => {
                    let n = self.reserve_port(backend, owner, dry_run).await?;
                    if !dry_run {
                        reserved.push(format!("{PORT_PREFIX}{n}"));
                    }
                    port.insert("nodePort".into(), json!(n));
                }
            }
        }
        Ok(())
    }

    async fn reserve_ip(
        &self,
        backend: &dyn Backend,
        owner: &Value,
        dry_run: bool,
    ) -> Result<Ipv4Addr, ApiError> {
        let range = self.ips();
        let n = self
            .reserve_any(backend, IP_PREFIX, range, owner, dry_run, |n| {
                Ipv4Addr::from(n).to_string()
            })
            .await?
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "failed to allocate a serviceIP: range {} is full",
                    self.cidr
                ))
            })?;
        Ok(Ipv4Addr::from(n))
    }

    async fn reserve_port(
        &self,
        backend: &dyn Backend,
        owner: &Value,
        dry_run: bool,
    ) -> Result<u16, ApiError> {
        let range = u32::from(*self.node_ports.start())..=u32::from(*self.node_ports.end());
        let n = self
            .reserve_any(backend, PORT_PREFIX, range, owner, dry_run, |n| {
                n.to_string()
            })
            .await?
            .ok_or_else(|| ApiError::internal("failed to allocate a nodePort: range is full"))?;
        Ok(u16::try_from(n).unwrap_or_default())
    }

    /// Reserves a free member of `range`: random picks first, then a scan from a random
    /// point of what is taken. `None` when all are taken.
    async fn reserve_any(
        &self,
        backend: &dyn Backend,
        prefix: &str,
        range: RangeInclusive<u32>,
        owner: &Value,
        dry_run: bool,
        name: impl Fn(u32) -> String,
    ) -> Result<Option<u32>, ApiError> {
        let (low, high) = (*range.start(), *range.end());
        for _ in 0..RANDOM_TRIES {
            let n = rand::rng().random_range(low..=high);
            let key = format!("{prefix}{}", name(n));
            if dry_run {
                if backend
                    .get(&key)
                    .await
                    .map_err(ApiError::from_storage)?
                    .is_none()
                {
                    return Ok(Some(n));
                }
            } else if reserve(backend, &key, owner).await? {
                return Ok(Some(n));
            }
        }
        let taken = list_keys(backend, prefix).await?;
        let span = u64::from(high - low) + 1;
        let start = rand::rng().random_range(0..span);
        for offset in 0..span {
            let n = low + u32::try_from((start + offset) % span).unwrap_or_default();
            let key = format!("{prefix}{}", name(n));
            if taken.contains(&key) {
                continue;
            }
            if dry_run || reserve(backend, &key, owner).await? {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    /// Releases keys (best effort: a leak is repaired later).
    pub async fn release(&self, backend: &dyn Backend, keys: &[String]) {
        for key in keys {
            if let Err(e) = backend.delete(key, None).await
                && !matches!(e, StorageError::NotFound { .. })
            {
                tracing::warn!(key, "releasing a service allocation: {e}");
            }
        }
    }

    /// Releases what `old` held and `new` (if any) no longer does.
    pub async fn release_unused(&self, backend: &dyn Backend, old: &Object, new: Option<&Object>) {
        let kept: HashSet<String> = new.map(held_keys).unwrap_or_default().into_iter().collect();
        let gone: Vec<String> = held_keys(old)
            .into_iter()
            .filter(|k| !kept.contains(k))
            .collect();
        self.release(backend, &gone).await;
    }

    /// Reconciles allocations with Services: reserves what a Service holds without a key and
    /// removes keys no Service holds (once seen leaked twice, so an allocation whose Service
    /// is being written is not taken).
    pub async fn repair(&self, backend: &dyn Backend) -> Result<(), ApiError> {
        let mut allocated = list_keys(backend, IP_PREFIX).await?;
        allocated.extend(list_keys(backend, PORT_PREFIX).await?);
        let services = backend
            .list(&ListRequest {
                prefix: SERVICES_PREFIX.into(),
                start: String::new(),
                limit: 0,
                revision: 0,
                serializable: false,
            })
            .await
            .map_err(ApiError::from_storage)?;
        let mut held = HashSet::new();
        for kv in &services.kvs {
            let Ok(service) = serde_json::from_slice::<Object>(&kv.value) else {
                continue;
            };
            let owner = json!({"namespace": object::namespace(&service),
                               "name": object::name(&service), "uid": object::uid(&service)});
            for key in held_keys(&service) {
                if !allocated.contains(&key) && reserve(backend, &key, &owner).await? {
                    tracing::info!(key, "re-reserved an allocation a Service held without one");
                }
                held.insert(key);
            }
        }
        let leaked: HashSet<String> = allocated
            .into_iter()
            .filter(|k| !held.contains(k))
            .collect();
        let confirmed: Vec<String> = {
            let mut suspects = self.suspects.lock();
            let confirmed = leaked.intersection(&suspects).cloned().collect();
            *suspects = leaked;
            confirmed
        };
        if !confirmed.is_empty() {
            tracing::info!(
                count = confirmed.len(),
                "releasing leaked service allocations"
            );
            self.release(backend, &confirmed).await;
        }
        Ok(())
    }
}

/// Creates `key` for `owner`: `true` if it is now the owner's (also when it already was).
async fn reserve(backend: &dyn Backend, key: &str, owner: &Value) -> Result<bool, ApiError> {
    let value = Bytes::from(owner.to_string());
    match backend.create(key, value).await {
        Ok(_) => Ok(true),
        Err(StorageError::AlreadyExists { .. }) => {
            let current = backend.get(key).await.map_err(ApiError::from_storage)?;
            let holder = current.and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok());
            Ok(holder.is_some_and(|h| h.get("uid") == owner.get("uid")))
        }
        Err(e) => Err(ApiError::from_storage(e)),
    }
}

async fn list_keys(backend: &dyn Backend, prefix: &str) -> Result<HashSet<String>, ApiError> {
    let page = backend
        .list(&ListRequest {
            prefix: prefix.into(),
            start: String::new(),
            limit: 0,
            revision: 0,
            serializable: false,
        })
        .await
        .map_err(ApiError::from_storage)?;
    Ok(page
        .kvs
        .into_iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect())
}
