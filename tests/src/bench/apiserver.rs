//! The API server benchmark's workloads, driven with the `kube` crate as controllers drive
//! the server: pod creates and gets with requests in flight, a full list of every pod, and
//! one write fanned out to many watchers.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

use crate::bench::stats::{Latencies, micros};

/// What one measured phase yielded.
#[derive(Debug)]
pub struct Outcome {
    /// Request (or delivery) latencies.
    pub latencies: Latencies,
    /// Wall time of the phase.
    pub elapsed: Duration,
    /// Failed requests.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Completed operations per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A pod as `kubectl run` would make it.
pub fn pod(name: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}
    }))?)
}

/// Creates the namespace `name`.
pub async fn namespace(client: &Client, name: &str) -> Result<()> {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Runs `count` operations with `in_flight` of them outstanding at a time; operation `i` is
/// `op(i)`. Records each one's latency.
pub async fn closed_loop<F, Fut>(count: usize, in_flight: usize, op: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let (op, next) = (op.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = (0u64, None::<String>);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let begun = Instant::now();
                match op(i).await {
                    Ok(()) => samples.push(micros(begun.elapsed())),
                    Err(e) => {
                        errors.0 += 1;
                        errors.1.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (samples, errors)
        }));
    }
    let mut samples = Vec::with_capacity(count);
    let (mut errors, mut first_error) = (0, None);
    for worker in workers {
        match worker.await {
            Ok((mine, (failed, first))) => {
                samples.extend(mine);
                errors += failed;
                first_error = first_error.or(first);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Outcome {
        latencies: Latencies::new(samples),
        elapsed: started.elapsed(),
        errors,
        first_error,
    }
}

/// Creates `count` pods named `<prefix>-<i>` with `in_flight` creates outstanding.
pub async fn create_pods(pods: &Api<Pod>, prefix: &str, count: usize, in_flight: usize) -> Outcome {
    let (pods, prefix) = (pods.clone(), prefix.to_owned());
    closed_loop(count, in_flight, move |i| {
        let (pods, name) = (pods.clone(), format!("{prefix}-{i}"));
        async move {
            pods.create(&PostParams::default(), &pod(&name)?).await?;
            Ok(())
        }
    })
    .await
}

/// `watchers` watches on the pods of `namespace`; then `events` pods created one at a time,
/// `gap` apart. Each delivery's latency runs from the create being sent to the event being
/// read by that watcher.
pub async fn fan_out(
    client: &Client,
    namespace: &str,
    watchers: usize,
    events: usize,
    gap: Duration,
) -> Result<Outcome> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let version = pods
        .list_metadata(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    // When each write was sent; set once, read by every watcher without a lock.
    let sent: Arc<[OnceLock<Instant>]> = (0..=events).map(|_| OnceLock::new()).collect();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers);
    let mut tasks = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let (client, version, ready, sent) = (
            client.clone(),
            version.clone(),
            ready_tx.clone(),
            sent.clone(),
        );
        let path = format!(
            "/api/v1/namespaces/{namespace}/pods?watch=true&resourceVersion={version}&timeoutSeconds=290"
        );
        tasks.push(tokio::spawn(async move {
            // Raw event lines, not typed Pods: decoding a thousand Pods per write on the same
            // two cores would measure the client, not the server's delivery.
            let request = http::Request::get(path).body(Vec::new())?;
            let mut lines = client.request_stream(request).await?.lines();
            let mut samples = Vec::with_capacity(events);
            let mut seen = 0;
            while let Some(line) = lines.try_next().await? {
                let received = Instant::now();
                if !line.starts_with(r#"{"type":"ADDED""#) {
                    continue;
                }
                // Pod 0 is the barrier that shows every watcher is listening.
                let index: usize = line
                    .split_once(r#""name":"event-"#)
                    .and_then(|(_, rest)| rest.split('"').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(usize::MAX);
                if index == 0 {
                    let _ = ready.send(()).await;
                } else if let Some(at) = sent.get(index).and_then(OnceLock::get) {
                    samples.push(micros(received.saturating_duration_since(*at)));
                }
                seen += 1;
                if seen > events {
                    break;
                }
            }
            anyhow::Ok(samples)
        }));
    }
    drop(ready_tx);
    // Watches start at `version`, so each sees the barrier however late it connects; timing
    // starts once all have, so every delivery measured is to a listening watcher.
    pods.create(&PostParams::default(), &pod("event-0")?)
        .await?;
    let mut ready = 0;
    while ready < watchers {
        match tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await {
            Ok(Some(())) => ready += 1,
            _ => anyhow::bail!("only {ready} of {watchers} watchers saw the first event"),
        }
    }
    let started = Instant::now();
    for i in 1..=events {
        if let Some(at) = sent.get(i) {
            let _ = at.set(Instant::now());
        }
        pods.create(&PostParams::default(), &pod(&format!("event-{i}"))?)
            .await?;
        tokio::time::sleep(gap).await;
    }
    let mut samples = Vec::with_capacity(watchers * events);
    let (mut errors, mut first_error) = (0u64, None);
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Ok(Ok(Ok(mine))) => samples.extend(mine),
            Ok(Ok(Err(e))) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                errors += 1;
                first_error.get_or_insert_with(|| "a watcher missed events".into());
            }
        }
    }
    Ok(Outcome {
        latencies: Latencies::new(samples),
        elapsed: started.elapsed(),
        errors,
        first_error,
    })
}

/// Reads every pod in one unpaged list; returns the latency and the body's size.
pub async fn list_all(client: &Client) -> Result<(Duration, usize, usize)> {
    let request = http::Request::get("/api/v1/pods").body(Vec::new())?;
    let begun = Instant::now();
    let body = client.request_text(request).await?;
    let elapsed = begun.elapsed();
    let items = serde_json::from_str::<serde_json::Value>(&body)?
        .get("items")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    Ok((elapsed, items, body.len()))
}
