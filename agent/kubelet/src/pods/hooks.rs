//! Container lifecycle hooks: postStart runs right after a container starts (and a failure
//! kills it), preStop runs before it is sent SIGTERM, within its grace period. Handlers are
//! exec, httpGet and sleep, as the API defines them.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

use super::probes;
use crate::runtime::{ExecOutcome, Runtime};

static HOOK_IDS: AtomicU64 = AtomicU64::new(0);

/// Which hook.
#[derive(Debug, Clone, Copy)]
pub enum Hook {
    /// After the container started.
    PostStart,
    /// Before the container is stopped.
    PreStop,
}

/// Runs `container`'s `hook`, if it has one, in container instance `id`, giving up after
/// `timeout`. An error says what failed, in the kubelet's words.
pub async fn run(
    runtime: &Runtime,
    container: &Container,
    id: &str,
    pod_ip: Option<IpAddr>,
    hook: Hook,
    timeout: Duration,
) -> Result<(), String> {
    let lifecycle = container.lifecycle.as_ref();
    let handler = match hook {
        Hook::PostStart => lifecycle.and_then(|l| l.post_start.as_ref()),
        Hook::PreStop => lifecycle.and_then(|l| l.pre_stop.as_ref()),
    };
    let Some(handler) = handler else {
        return Ok(());
    };
    match tokio::time::timeout(
        timeout,
        handle(runtime, container, id, pod_ip, handler, timeout),
    )
    .await
    {
        Ok(result) => result.map_err(|error| format!("{hook:?} hook failed: {error}")),
        Err(_) => Err(format!(
            "{hook:?} hook did not finish within {}s",
            timeout.as_secs()
        )),
    }
}

async fn handle(
    runtime: &Runtime,
    container: &Container,
    id: &str,
    pod_ip: Option<IpAddr>,
    handler: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        let argv = exec.command.clone().unwrap_or_default();
        let exec_id = format!("hook-{}", HOOK_IDS.fetch_add(1, Ordering::Relaxed));
        return match runtime.exec_and_wait(id, &exec_id, &argv, timeout).await {
            Ok(ExecOutcome::Exited(0)) => Ok(()),
            Ok(ExecOutcome::Exited(code)) => Err(format!("command {argv:?} exited with {code}")),
            Ok(ExecOutcome::TimedOut) => Err(format!("command {argv:?} timed out")),
            Err(error) => Err(error.to_string()),
        };
    }
    if let Some(get) = &handler.http_get {
        return probes::http_action(container, get, pod_ip).await;
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        return Ok(());
    }
    Err("the hook has no handler".to_string())
}
