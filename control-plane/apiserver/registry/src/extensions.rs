//! Kubernetes' merge extensions for the built-in types, which the k8s-openapi schemas leave
//! out: which lists are keyed maps (`x-kubernetes-list-type: map` and its keys) or sets, and
//! which objects are atomic (`x-kubernetes-map-type: atomic`). Server-side apply reads them.
//! The lists and maps come from k8s-openapi's merge strategies for Kubernetes 1.33; the keys of
//! port lists include the protocol, as Kubernetes' own OpenAPI has them, so one port number can
//! serve both TCP and UDP.

use serde_json::{Map, Value, json};

/// `(definition, field, key fields)` of every list that is a map.
const LIST_MAPS: &[(&str, &str, &[&str])] = &[
    (
        "io.k8s.api.admissionregistration.v1.MutatingWebhook",
        "matchConditions",
        &["name"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration",
        "webhooks",
        &["name"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec",
        "matchConditions",
        &["name"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec",
        "variables",
        &["name"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingWebhook",
        "matchConditions",
        &["name"],
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration",
        "webhooks",
        &["name"],
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        &["type"],
    ),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", &["type"]),
    (
        "io.k8s.api.certificates.v1.CertificateSigningRequestStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.ComponentStatus",
        "conditions",
        &["type"],
    ),
    ("io.k8s.api.core.v1.Container", "env", &["name"]),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        &["devicePath"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        &["mountPath"],
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        &["mountPath"],
    ),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", &["name"]),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        &["devicePath"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        &["mountPath"],
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        &["type"],
    ),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", &["type"]),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", &["type"]),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        &["type"],
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", &["name"]),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        &["name"],
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", &["ip"]),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", &["name"]),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", &["name"]),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        &["topologyKey", "whenUnsatisfiable"],
    ),
    ("io.k8s.api.core.v1.PodSpec", "volumes", &["name"]),
    ("io.k8s.api.core.v1.PodStatus", "conditions", &["type"]),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", &["ip"]),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", &["ip"]),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.core.v1.ResourceRequirements",
        "claims",
        &["name"],
    ),
    (
        "io.k8s.api.core.v1.ResourceStatus",
        "resources",
        &["resourceID"],
    ),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", &["name"]),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        &["port", "protocol"],
    ),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", &["type"]),
    (
        "io.k8s.api.flowcontrol.v1.FlowSchemaStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.flowcontrol.v1.PriorityLevelConfigurationStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.networking.v1.ServiceCIDRStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        &["type"],
    ),
    ("io.k8s.api.storage.v1.CSINodeSpec", "drivers", &["name"]),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus",
        "conditions",
        &["type"],
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
        "x-kubernetes-validations",
        &["rule"],
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        &["uid"],
    ),
];

/// `(definition, field)` of every list that is a set.
const LIST_SETS: &[(&str, &str)] = &[
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBindingSpec",
        "validationActions",
    ),
    (
        "io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement",
        "values",
    ),
    ("io.k8s.api.batch.v1.UncountedTerminatedPods", "failed"),
    ("io.k8s.api.batch.v1.UncountedTerminatedPods", "succeeded"),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs"),
    ("io.k8s.api.discovery.v1.Endpoint", "addresses"),
    (
        "io.k8s.api.flowcontrol.v1.NonResourcePolicyRule",
        "nonResourceURLs",
    ),
    ("io.k8s.api.flowcontrol.v1.NonResourcePolicyRule", "verbs"),
    ("io.k8s.api.flowcontrol.v1.ResourcePolicyRule", "apiGroups"),
    ("io.k8s.api.flowcontrol.v1.ResourcePolicyRule", "namespaces"),
    ("io.k8s.api.flowcontrol.v1.ResourcePolicyRule", "resources"),
    ("io.k8s.api.flowcontrol.v1.ResourcePolicyRule", "verbs"),
    (
        "io.k8s.api.storage.v1.CSIDriverSpec",
        "volumeLifecycleModes",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
    ),
];

/// `(definition, field)` of every map that is atomic.
const ATOMIC_MAPS: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "nodeSelector"),
    ("io.k8s.api.core.v1.ReplicationControllerSpec", "selector"),
    ("io.k8s.api.core.v1.ServiceSpec", "selector"),
    ("io.k8s.api.node.v1.Scheduling", "nodeSelector"),
];

/// Definitions whose objects are atomic wherever they appear (`+structType=atomic` in
/// Kubernetes' types): references and selectors, which mean something only as a whole.
const ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.TopologySelectorTerm",
];

/// Key fields that may be left out of a list item, and the value Kubernetes defaults them to.
const KEY_DEFAULTS: &[(&str, &str, &str)] = &[
    ("io.k8s.api.core.v1.ContainerPort", "protocol", "TCP"),
    ("io.k8s.api.core.v1.ServicePort", "protocol", "TCP"),
];

fn property<'a>(
    definitions: &'a mut Map<String, Value>,
    definition: &str,
    field: &str,
) -> Option<&'a mut Map<String, Value>> {
    definitions
        .get_mut(definition)?
        .get_mut("properties")?
        .get_mut(field)?
        .as_object_mut()
}

/// Adds the extensions to the definitions a type's schema generated.
pub fn annotate(definitions: &mut Map<String, Value>) {
    for (definition, field, keys) in LIST_MAPS {
        if let Some(p) = property(definitions, definition, field) {
            p.insert("x-kubernetes-list-type".into(), json!("map"));
            p.insert("x-kubernetes-list-map-keys".into(), json!(keys));
        }
    }
    for (definition, field) in LIST_SETS {
        if let Some(p) = property(definitions, definition, field) {
            p.insert("x-kubernetes-list-type".into(), json!("set"));
        }
    }
    for (definition, field) in ATOMIC_MAPS {
        if let Some(p) = property(definitions, definition, field) {
            p.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
    }
    for definition in ATOMIC_STRUCTS {
        if let Some(Value::Object(d)) = definitions.get_mut(*definition) {
            d.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
    }
    for (definition, field, default) in KEY_DEFAULTS {
        if let Some(p) = property(definitions, definition, field) {
            p.insert("default".into(), json!(default));
        }
    }
}
