//! The built-in resources Basalt serves, with their names, scope, subresources and strategy.

use std::sync::Arc;

use k8s_openapi::api::{
    apps, authentication, authorization, batch, coordination, core, discovery, events, scheduling,
};

use crate::catalog::{Catalog, Resource};
use crate::strategy::Typed;
use crate::types::certificates::CsrStrategy;
use crate::types::config::{ConfigMapStrategy, SecretStrategy};
use crate::types::limits::LimitRangeStrategy;
use crate::types::namespace::NamespaceStrategy;
use crate::types::node::NodeStrategy;
use crate::types::pod::PodStrategy;
use crate::types::rbac::{BindingStrategy, RoleStrategy};
use crate::types::service::ServiceStrategy;
use crate::types::workload::{Kind, WorkloadStrategy};
use crate::validation::NameRule;

fn typed<T>() -> Arc<Typed<T>>
where
    Typed<T>: crate::strategy::Strategy,
{
    Arc::new(Typed::new())
}

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// A catalog of every built-in resource.
pub fn catalog() -> Catalog {
    let catalog = Catalog::new();
    for resource in builtins() {
        catalog.insert(resource);
    }
    catalog
}

fn builtins() -> Vec<Resource> {
    use Resource as R;
    vec![
        // core/v1
        R::new(
            "",
            "v1",
            "Namespace",
            "namespaces",
            false,
            Arc::new(NamespaceStrategy),
        )
        .short(&["ns"])
        .names(NameRule::Label)
        .with_status()
        .with_sub("finalize", "Namespace", &["update"])
        .fields(&["status.phase"]),
        R::new("", "v1", "Pod", "pods", true, Arc::new(PodStrategy))
            .short(&["po"])
            .in_all()
            .with_status()
            .with_sub("binding", "Binding", &["create"])
            .with_sub("eviction", "Eviction", &["create"])
            .with_sub("log", "Pod", &["get"])
            .with_sub("exec", "PodExecOptions", &["create", "get"])
            .with_sub("attach", "PodAttachOptions", &["create", "get"])
            .with_sub("portforward", "PodPortForwardOptions", &["create", "get"])
            .fields(POD_FIELDS),
        R::new(
            "",
            "v1",
            "Service",
            "services",
            true,
            Arc::new(ServiceStrategy),
        )
        .short(&["svc"])
        .in_all()
        .names(NameRule::Label)
        .with_status(),
        R::new(
            "",
            "v1",
            "Endpoints",
            "endpoints",
            true,
            typed::<core::v1::Endpoints>(),
        )
        .short(&["ep"]),
        R::new("", "v1", "Node", "nodes", false, Arc::new(NodeStrategy))
            .short(&["no"])
            .with_status()
            .with_sub("proxy", "NodeProxyOptions", &["get"])
            .fields(&["spec.unschedulable"]),
        R::new(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            true,
            Arc::new(ConfigMapStrategy),
        )
        .short(&["cm"]),
        R::new(
            "",
            "v1",
            "Secret",
            "secrets",
            true,
            Arc::new(SecretStrategy),
        )
        .fields(&["type"]),
        R::new(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            typed::<core::v1::ServiceAccount>(),
        )
        .short(&["sa"])
        .with_sub_of(
            "token",
            "authentication.k8s.io/v1",
            "TokenRequest",
            &["create"],
        ),
        R::new(
            "",
            "v1",
            "Event",
            "events",
            true,
            typed::<core::v1::Event>(),
        )
        .short(&["ev"])
        .names(NameRule::PathSegment)
        .fields(EVENT_FIELDS),
        R::new(
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            true,
            typed::<core::v1::ResourceQuota>(),
        )
        .short(&["quota"])
        .with_status(),
        R::new(
            "",
            "v1",
            "LimitRange",
            "limitranges",
            true,
            Arc::new(LimitRangeStrategy),
        )
        .short(&["limits"]),
        // apps/v1
        R::new(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            Arc::new(WorkloadStrategy::<apps::v1::Deployment>::new(
                Kind::Deployment,
            )),
        )
        .short(&["deploy"])
        .in_all()
        .with_status()
        .with_scale(),
        R::new(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            true,
            Arc::new(WorkloadStrategy::<apps::v1::ReplicaSet>::new(
                Kind::ReplicaSet,
            )),
        )
        .short(&["rs"])
        .in_all()
        .with_status()
        .with_scale(),
        R::new(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            true,
            Arc::new(WorkloadStrategy::<apps::v1::StatefulSet>::new(
                Kind::StatefulSet,
            )),
        )
        .short(&["sts"])
        .in_all()
        .with_status()
        .with_scale(),
        R::new(
            "apps",
            "v1",
            "DaemonSet",
            "daemonsets",
            true,
            Arc::new(WorkloadStrategy::<apps::v1::DaemonSet>::new(
                Kind::DaemonSet,
            )),
        )
        .short(&["ds"])
        .in_all()
        .with_status(),
        R::new(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            true,
            typed::<apps::v1::ControllerRevision>(),
        ),
        // batch/v1
        R::new(
            "batch",
            "v1",
            "Job",
            "jobs",
            true,
            Arc::new(WorkloadStrategy::<batch::v1::Job>::new(Kind::Job)),
        )
        .in_all()
        .with_status(),
        R::new(
            "batch",
            "v1",
            "CronJob",
            "cronjobs",
            true,
            Arc::new(WorkloadStrategy::<batch::v1::CronJob>::new(Kind::CronJob)),
        )
        .short(&["cj"])
        .in_all()
        .with_status(),
        // discovery, coordination, events
        R::new(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            true,
            typed::<discovery::v1::EndpointSlice>(),
        ),
        R::new(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            false,
            typed::<scheduling::v1::PriorityClass>(),
        )
        .short(&["pc"]),
        R::new(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            typed::<coordination::v1::Lease>(),
        ),
        R::new(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            true,
            typed::<events::v1::Event>(),
        )
        .short(&["ev"])
        .names(NameRule::PathSegment),
        // rbac
        R::new(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            Arc::new(RoleStrategy { cluster: false }),
        )
        .names(NameRule::PathSegment),
        R::new(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            Arc::new(BindingStrategy { cluster: false }),
        )
        .names(NameRule::PathSegment),
        R::new(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            Arc::new(RoleStrategy { cluster: true }),
        )
        .names(NameRule::PathSegment),
        R::new(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            Arc::new(BindingStrategy { cluster: true }),
        )
        .names(NameRule::PathSegment),
        // reviews
        R::new(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
            typed::<authorization::v1::SelfSubjectAccessReview>(),
        )
        .review(),
        R::new(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            false,
            typed::<authorization::v1::SelfSubjectRulesReview>(),
        )
        .review(),
        R::new(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            false,
            typed::<authorization::v1::SubjectAccessReview>(),
        )
        .review(),
        R::new(
            "authorization.k8s.io",
            "v1",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            true,
            typed::<authorization::v1::LocalSubjectAccessReview>(),
        )
        .review(),
        R::new(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            false,
            typed::<authentication::v1::TokenReview>(),
        )
        .review(),
        R::new(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            false,
            typed::<authentication::v1::SelfSubjectReview>(),
        )
        .review(),
        // certificates
        R::new(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            false,
            Arc::new(CsrStrategy),
        )
        .short(&["csr"])
        .with_status()
        .with_sub(
            "approval",
            "CertificateSigningRequest",
            &["get", "patch", "update"],
        ),
    ]
}
