//! Bodies encoded by `k8s-pb` (prost types of Kubernetes' protobuf schema, written by another
//! project) decode to the JSON Kubernetes would write.

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::json;

use super::*;

fn envelope(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn s(text: &str) -> Option<String> {
    Some(text.to_owned())
}

#[test]
fn the_schema_parses_and_every_type_exists() {
    let schema = parse_schema(schema::SCHEMA).unwrap();
    for (_, _, message) in schema::KINDS {
        assert!(schema.contains_key(message), "{message}");
    }
}

#[test]
fn a_deployment_as_kubectl_creates_it() {
    let labels: std::collections::BTreeMap<String, String> =
        [("app".to_owned(), "web".to_owned())].into_iter().collect();
    let deployment = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            namespace: s(""),
            labels: labels.clone(),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s("web"),
                        image: s("busybox:1.36"),
                        command: vec!["sleep".into(), "3600".into()],
                        ports: vec![core::ContainerPort {
                            container_port: Some(8080),
                            ..Default::default()
                        }],
                        env: vec![core::EnvVar {
                            name: s("MODE"),
                            value_from: Some(core::EnvVarSource {
                                config_map_key_ref: Some(core::ConfigMapKeySelector {
                                    local_object_reference: Some(core::LocalObjectReference {
                                        name: s("cfg"),
                                    }),
                                    key: s("mode"),
                                    optional: None,
                                }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        resources: Some(core::ResourceRequirements {
                            limits: [("cpu".to_owned(), Quantity { string: s("500m") })]
                                .into_iter()
                                .collect(),
                            ..Default::default()
                        }),
                        readiness_probe: Some(core::Probe {
                            handler: Some(core::ProbeHandler {
                                http_get: Some(core::HttpGetAction {
                                    path: s("/healthz"),
                                    port: Some(IntOrString {
                                        r#type: Some(1),
                                        int_val: Some(0),
                                        str_val: s("http"),
                                    }),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                            period_seconds: Some(5),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    termination_grace_period_seconds: Some(0),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_surge: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        str_val: s(""),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let object = decode(&envelope("apps/v1", "Deployment", &deployment)).unwrap();
    assert_eq!(
        Value::Object(object),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "creationTimestamp": "2023-11-14T22:13:20Z"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web", "image": "busybox:1.36", "command": ["sleep", "3600"],
                            "ports": [{"containerPort": 8080}],
                            "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}}],
                            "resources": {"limits": {"cpu": "500m"}},
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5}
                        }],
                        "terminationGracePeriodSeconds": 0
                    }
                },
                "strategy": {"rollingUpdate": {"maxSurge": 1}}
            },
            "status": {}
        })
    );
}

#[test]
fn secrets_and_services() {
    let secret = core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: s("s"),
            ..Default::default()
        }),
        data: [("k".to_owned(), b"v".to_vec())].into_iter().collect(),
        r#type: s("Opaque"),
        immutable: Some(false),
        ..Default::default()
    };
    let object = decode(&envelope("v1", "Secret", &secret)).unwrap();
    assert_eq!(
        Value::Object(object),
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s"}, "data": {"k": "dg=="}, "type": "Opaque", "immutable": false})
    );

    let service = core::Service {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            ..Default::default()
        }),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                name: s("http"),
                port: Some(80),
                target_port: Some(IntOrString {
                    r#type: Some(0),
                    int_val: Some(8080),
                    str_val: None,
                }),
                protocol: s("TCP"),
                ..Default::default()
            }],
            selector: [("app".to_owned(), "web".to_owned())].into_iter().collect(),
            r#type: s("ClusterIP"),
            ..Default::default()
        }),
        status: None,
    };
    let object = decode(&envelope("v1", "Service", &service)).unwrap();
    assert_eq!(
        object["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(object["spec"]["type"], "ClusterIP");
}

#[test]
fn reviews() {
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::api::authorization::v1 as authz;
    let review = authz::SubjectAccessReview {
        metadata: None,
        spec: Some(authz::SubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                namespace: s("team"),
                verb: s("get"),
                group: s("apps"),
                resource: s("deployments"),
                name: s("web"),
                ..Default::default()
            }),
            user: s("bob"),
            groups: vec!["dev".into()],
            uid: s("u"),
            ..Default::default()
        }),
        status: None,
    };
    let object = decode(&envelope(
        "authorization.k8s.io/v1",
        "SubjectAccessReview",
        &review,
    ))
    .unwrap();
    assert_eq!(
        object["spec"],
        json!({"resourceAttributes": {"namespace": "team", "verb": "get", "group": "apps",
               "resource": "deployments", "name": "web"},
               "user": "bob", "groups": ["dev"], "uid": "u"})
    );
    let token = authn::TokenReview {
        metadata: None,
        spec: Some(authn::TokenReviewSpec {
            token: s("t"),
            audiences: vec!["api".into()],
        }),
        status: None,
    };
    let object = decode(&envelope("authentication.k8s.io/v1", "TokenReview", &token)).unwrap();
    assert_eq!(object["spec"], json!({"token": "t", "audiences": ["api"]}));
}

#[test]
fn certificate_signing_requests_as_kubectl_approves_them() {
    use k8s_pb::api::certificates::v1 as certificates;
    let csr = certificates::CertificateSigningRequest {
        metadata: Some(meta::ObjectMeta {
            name: s("bob"),
            ..Default::default()
        }),
        spec: Some(certificates::CertificateSigningRequestSpec {
            request: Some(b"PEM".to_vec()),
            signer_name: s("kubernetes.io/kube-apiserver-client"),
            expiration_seconds: Some(600),
            usages: vec!["client auth".into()],
            username: s("bob"),
            groups: vec!["system:authenticated".into()],
            ..Default::default()
        }),
        status: Some(certificates::CertificateSigningRequestStatus {
            conditions: vec![certificates::CertificateSigningRequestCondition {
                r#type: s("Approved"),
                status: s("True"),
                reason: s("KubectlApprove"),
                message: s("This CSR was approved by kubectl certificate approve."),
                ..Default::default()
            }],
            certificate: None,
        }),
    };
    let object = decode(&envelope(
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        &csr,
    ))
    .unwrap();
    assert_eq!(
        object["spec"],
        json!({"request": "UEVN", "signerName": "kubernetes.io/kube-apiserver-client",
               "expirationSeconds": 600, "usages": ["client auth"], "username": "bob",
               "groups": ["system:authenticated"]})
    );
    assert_eq!(
        object["status"],
        json!({"conditions": [{"type": "Approved", "status": "True", "reason": "KubectlApprove",
               "message": "This CSR was approved by kubectl certificate approve."}]})
    );
}

#[test]
fn bad_bodies_are_refused_with_the_place() {
    assert_eq!(decode(b"{}").unwrap_err().path, "envelope");
    let node = core::Node::default();
    let refused = decode(&envelope("v1", "Node", &node)).unwrap_err();
    assert!(
        refused.why.contains("send it as application/json"),
        "{refused}"
    );
    // A field this server does not describe (a pod affinity) is refused, not dropped.
    let pod_spec = core::PodSpec {
        affinity: Some(core::Affinity::default()),
        ..Default::default()
    };
    let deployment = apps::Deployment {
        spec: Some(apps::DeploymentSpec {
            template: Some(core::PodTemplateSpec {
                metadata: None,
                spec: Some(pod_spec),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let refused = decode(&envelope("apps/v1", "Deployment", &deployment)).unwrap_err();
    assert_eq!(refused.path, "spec.template.spec");
    assert!(refused.why.contains("field number 18"), "{refused}");
    let mut truncated = envelope("v1", "Secret", &core::Secret::default());
    truncated.push(0x12);
    truncated.push(0x7f);
    assert!(decode(&truncated).is_err());
}
