//! The ServiceAccount admission step for new pods: unless the pod or its account opts out
//! (`automountServiceAccountToken: false`), every container gets the API access volume at
//! `/var/run/secrets/kubernetes.io/serviceaccount` — a projected volume of a bound token the
//! kubelet renews, the cluster CA (`kube-root-ca.crt`) and the namespace — as
//! kube-apiserver adds it. **Does not** issue tokens (the kubelet asks for them) or check that
//! the account exists: a pod made before the namespace's `default` account waits in the
//! kubelet for its token instead of failing to be created.

use apiserver_registry::object::{Object, str_at};
use apiserver_registry::store::generate_name;
use apiserver_registry::{ApiError, Registry};
use serde_json::{Value, json};

/// Where containers find the API credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The token lifetime the kubelet asks for (kube's: an hour and seven seconds, so tokens
/// of this volume can be told apart).
const TOKEN_SECONDS: i64 = 3607;

/// Adds the API access volume to new `pod` in `namespace`, unless it opts out.
pub async fn admit(registry: &Registry, namespace: &str, pod: &mut Object) -> Result<(), ApiError> {
    let mirror = pod
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get("kubernetes.io/config.mirror"))
        .is_some();
    if mirror {
        return Ok(());
    }
    // The pod's own word wins over its account's.
    let automount = match pod_flag(pod) {
        Some(flag) => Some(flag),
        None => account_flag(registry, namespace, pod).await?,
    };
    if automount == Some(false) {
        return Ok(());
    }
    add_volume(pod, &generate_name("kube-api-access-"));
    Ok(())
}

fn pod_flag(pod: &Object) -> Option<bool> {
    pod.get("spec")
        .and_then(|s| s.get("automountServiceAccountToken"))
        .and_then(Value::as_bool)
}

/// The account's `automountServiceAccountToken`, if it exists and says.
async fn account_flag(
    registry: &Registry,
    namespace: &str,
    pod: &Object,
) -> Result<Option<bool>, ApiError> {
    let name = str_at(pod, "spec.serviceAccountName")
        .or_else(|| str_at(pod, "spec.serviceAccount"))
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    let accounts = registry
        .catalog()
        .get("", "v1", "serviceaccounts")
        .ok_or_else(ApiError::no_route)?;
    match registry.get(&accounts, Some(namespace), name).await {
        Ok(account) => Ok(account
            .get("automountServiceAccountToken")
            .and_then(Value::as_bool)),
        Err(e) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Adds volume `name` and mounts it in every container that does not already mount
/// something at [`MOUNT_PATH`].
fn add_volume(pod: &mut Object, name: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut mounted = false;
    for field in ["initContainers", "containers"] {
        let Some(Value::Array(containers)) = spec.get_mut(field) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH));
            if !taken {
                mounts.push(json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH}));
                mounted = true;
            }
        }
    }
    if !mounted {
        return;
    }
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    match spec.get_mut("volumes") {
        Some(Value::Array(volumes)) => volumes.push(volume),
        _ => {
            spec.insert("volumes".into(), json!([volume]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: Value) -> Object {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn every_container_gets_the_volume_unless_it_mounts_the_path_itself() {
        let mut p = pod(json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "a"},
                {"name": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]},
            ],
            "volumes": [{"name": "own", "emptyDir": {}}],
        }}));
        add_volume(&mut p, "kube-api-access-abcde");
        let mounts = |field: &str, i: usize| p["spec"][field][i]["volumeMounts"].clone();
        assert_eq!(
            mounts("containers", 0),
            json!([{"name": "kube-api-access-abcde", "readOnly": true, "mountPath": MOUNT_PATH}])
        );
        assert_eq!(
            mounts("containers", 1),
            json!([{"name": "own", "mountPath": MOUNT_PATH}])
        );
        assert_eq!(
            mounts("initContainers", 0).as_array().map(Vec::len),
            Some(1)
        );
        let volumes = p["spec"]["volumes"].as_array().cloned().unwrap_or_default();
        assert_eq!(volumes.len(), 2);
        assert_eq!(
            volumes[1]["projected"]["sources"][0]["serviceAccountToken"]["path"],
            "token"
        );
    }

    #[test]
    fn nothing_is_added_when_every_container_has_its_own() {
        let mut p = pod(json!({"spec": {"containers": [
            {"name": "a", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}]}}));
        add_volume(&mut p, "kube-api-access-abcde");
        assert!(p["spec"].get("volumes").is_none());
    }
}
