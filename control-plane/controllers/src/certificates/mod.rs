//! CertificateSigningRequests: the approver (`csrapproving`) grants what kubelets may be
//! given without a human ([`approve`]); the signer (`csrsigning`) issues certificates from
//! the cluster CA for approved requests ([`sign`]); [`request`] reads what a request asks
//! for. Both work one shared cache of requests.

pub mod approve;
pub mod request;
pub mod sign;

use std::sync::Arc;

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::workers::{self, Key};
use crate::{Error, unless_gone};

fn queue_changes(
    requests: &Arc<Informer<CertificateSigningRequest>>,
    wanted: fn(&CertificateSigningRequest) -> bool,
) -> Arc<WorkQueue<Key>> {
    let queue: Arc<WorkQueue<Key>> = WorkQueue::new();
    let on_change = queue.clone();
    let cache = requests.clone();
    tokio::spawn(follow(requests.subscribe(), move |change| match change {
        Change::Applied(csr) if wanted(&csr) => on_change.add(Key::of(csr.as_ref())),
        Change::Applied(_) | Change::Deleted(_) => {}
        Change::Relisted => {
            for csr in cache.store().state().iter().filter(|c| wanted(c)) {
                on_change.add(Key::of(csr.as_ref()));
            }
        }
    }));
    queue
}

/// A condition appended to the request's list (merge patches replace lists whole).
fn with_condition(
    csr: &CertificateSigningRequest,
    kind: &str,
    reason: &str,
    message: &str,
) -> serde_json::Value {
    let mut conditions: Vec<serde_json::Value> = csr
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let now = jiff::Timestamp::now().to_string();
    conditions.push(
        json!({"type": kind, "status": "True", "reason": reason, "message": message,
                           "lastUpdateTime": now, "lastTransitionTime": now}),
    );
    json!({"status": {"conditions": conditions}})
}

/// Runs the approver until the process ends.
pub async fn run_approver(
    client: kube::Client,
    requests: Arc<Informer<CertificateSigningRequest>>,
    nodes: Arc<Informer<Node>>,
) -> Result<(), Error> {
    let queue = queue_changes(&requests, |csr| !approve::decided(csr));
    requests.synced().await;
    nodes.synced().await;
    for csr in requests.store().state() {
        queue.add(Key::of(csr.as_ref()));
    }
    workers::run("csrapproving", queue, 2, move |key| {
        let client = client.clone();
        let requests = requests.clone();
        let nodes = nodes.clone();
        async move {
            let Some(csr) = requests.store().get(&key.object_ref()) else {
                return Ok(None);
            };
            if approve::decided(&csr) {
                return Ok(None);
            }
            let Ok(asked) = request::read(&csr) else {
                return Ok(None);
            };
            let node = approve::serving_node(&csr, &asked)
                .and_then(|name| nodes.store().get(&kube::runtime::reflector::ObjectRef::new(&name)));
            let Some(grounds) = approve::grounds(&csr, &asked, node.as_deref()) else {
                return Ok(None);
            };
            if let approve::Grounds::ClientIfAllowed(subresource) = grounds {
                let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
                let review = reviews
                    .create(&PostParams::default(), &approve::review(&csr, subresource))
                    .await?;
                if !review.status.is_some_and(|s| s.allowed) {
                    tracing::info!(csr = %key, subresource, "not approved: the requester may not create it");
                    return Ok(None);
                }
            }
            let api: Api<CertificateSigningRequest> = Api::all(client);
            let patch = with_condition(&csr, "Approved", "AutoApproved", grounds.message());
            unless_gone(
                api.patch_subresource("approval", &key.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await,
            )?;
            tracing::info!(csr = %key, "approved");
            Ok(None)
        }
    })
    .await
}

fn approved_unsigned(csr: &CertificateSigningRequest) -> bool {
    let conditions = csr
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten());
    let mut approved = false;
    for condition in conditions {
        match condition.type_.as_str() {
            "Approved" if condition.status == "True" => approved = true,
            "Denied" | "Failed" if condition.status == "True" => return false,
            _ => {}
        }
    }
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    approved && !issued
}

/// Runs the signer until the process ends.
pub async fn run_signer(
    client: kube::Client,
    requests: Arc<Informer<CertificateSigningRequest>>,
    signer: Arc<sign::Signer>,
) -> Result<(), Error> {
    let queue = queue_changes(&requests, approved_unsigned);
    requests.synced().await;
    for csr in requests.store().state() {
        queue.add(Key::of(csr.as_ref()));
    }
    workers::run("csrsigning", queue, 2, move |key| {
        let client = client.clone();
        let requests = requests.clone();
        let signer = signer.clone();
        async move {
            let Some(csr) = requests.store().get(&key.object_ref()) else {
                return Ok(None);
            };
            // Requests to other signers are theirs to sign.
            if !approved_unsigned(&csr)
                || !request::SIGNERS.contains(&csr.spec.signer_name.as_str())
            {
                return Ok(None);
            }
            let outcome = request::read(&csr).and_then(|asked| {
                request::signable(&csr, &asked)?;
                signer.sign(&csr, &asked)
            });
            let api: Api<CertificateSigningRequest> = Api::all(client);
            let patch = match outcome {
                Err(why) => {
                    tracing::info!(csr = %key, %why, "not signed");
                    with_condition(&csr, "Failed", "SignerValidationFailure", &why)
                }
                Ok(certificate) => {
                    use base64::Engine;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(certificate);
                    tracing::info!(csr = %key, "signed");
                    json!({"status": {"certificate": encoded}})
                }
            };
            unless_gone(
                api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await,
            )?;
            Ok(None)
        }
    })
    .await
}
