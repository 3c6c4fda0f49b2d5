//! Startup, liveness and readiness probes (exec, httpGet, tcpSocket, grpc) with Kubernetes'
//! timing fields. Each running container instance with probes gets a task that runs them and
//! keeps a [`ProbeState`] the worker reads: whether the container has started, is ready, or
//! failed its liveness (or startup) probe and must be restarted. Killing and restarting is the
//! worker's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::runtime::{ExecOutcome, Runtime};

/// What the probes of one container instance found so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// The readiness probe passes (or there is none, once started).
    pub ready: bool,
    /// Why the liveness or startup probe gave up on the container, if it did.
    pub failed: Option<String>,
}

/// The probe task of one container instance; stopping it is dropping it.
pub struct Prober {
    state: Arc<Mutex<ProbeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Prober {
    /// What the probes found so far.
    pub fn state(&self) -> ProbeState {
        self.state.lock().clone()
    }
}

/// Whether `container` has any probe (a container without needs no task).
pub fn has_probes(container: &Container) -> bool {
    container.startup_probe.is_some()
        || container.liveness_probe.is_some()
        || container.readiness_probe.is_some()
}

/// Where probes go: the container (for exec) and the pod's address (for the network ones).
#[derive(Clone)]
pub struct Target {
    /// containerd.
    pub runtime: Runtime,
    /// The instance's containerd ID.
    pub container_id: String,
    /// The pod's IP.
    pub pod_ip: IpAddr,
    /// The container, for its probes and named ports.
    pub container: Container,
}

/// Starts probing `target`; `wake` is notified whenever the state changes.
pub fn start(target: Target, wake: Arc<Notify>) -> Prober {
    let state = Arc::new(Mutex::new(ProbeState {
        started: target.container.startup_probe.is_none(),
        ready: false,
        failed: None,
    }));
    let task = tokio::spawn(run(target, Arc::clone(&state), wake));
    Prober { state, task }
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.map(|v| v.max(0) as u64).unwrap_or(default))
}

struct Timing {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

fn timing(probe: &Probe) -> Timing {
    Timing {
        initial_delay: seconds(probe.initial_delay_seconds, 0),
        period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

async fn run(target: Target, state: Arc<Mutex<ProbeState>>, wake: Arc<Notify>) {
    let update = |change: &dyn Fn(&mut ProbeState)| {
        let mut current = state.lock();
        let before = current.clone();
        change(&mut current);
        if *current != before {
            wake.notify_one();
        }
    };
    if let Some(probe) = &target.container.startup_probe {
        let timing = timing(probe);
        tokio::time::sleep(timing.initial_delay).await;
        let mut failures = 0;
        loop {
            match check(&target, probe, timing.timeout).await {
                Ok(()) => break,
                Err(reason) => {
                    failures += 1;
                    if failures >= timing.failure_threshold {
                        update(&|s| s.failed = Some(format!("Startup probe failed: {reason}")));
                        return;
                    }
                }
            }
            tokio::time::sleep(timing.period).await;
        }
        update(&|s| s.started = true);
    }
    let liveness = async {
        let Some(probe) = &target.container.liveness_probe else {
            return std::future::pending::<()>().await;
        };
        let timing = timing(probe);
        tokio::time::sleep(timing.initial_delay).await;
        let mut failures = 0;
        loop {
            match check(&target, probe, timing.timeout).await {
                Ok(()) => failures = 0,
                Err(reason) => {
                    failures += 1;
                    if failures >= timing.failure_threshold {
                        update(&|s| s.failed = Some(format!("Liveness probe failed: {reason}")));
                        return;
                    }
                }
            }
            tokio::time::sleep(timing.period).await;
        }
    };
    let readiness = async {
        let Some(probe) = &target.container.readiness_probe else {
            update(&|s| s.ready = true);
            return std::future::pending::<()>().await;
        };
        let timing = timing(probe);
        tokio::time::sleep(timing.initial_delay).await;
        let (mut successes, mut failures) = (0, 0);
        loop {
            match check(&target, probe, timing.timeout).await {
                Ok(()) => {
                    failures = 0;
                    successes += 1;
                    if successes >= timing.success_threshold {
                        update(&|s| s.ready = true);
                    }
                }
                Err(_) => {
                    successes = 0;
                    failures += 1;
                    if failures >= timing.failure_threshold {
                        update(&|s| s.ready = false);
                    }
                }
            }
            tokio::time::sleep(timing.period).await;
        }
    };
    // Liveness ending means the container is to be killed; readiness never ends by itself.
    tokio::select! {
        _ = liveness => {}
        _ = readiness => {}
    }
}

/// The port a probe names: a number, or the name of one of the container's ports.
fn port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(number) => {
            u16::try_from(*number).map_err(|_| format!("invalid port {number}"))
        }
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("port {name:?} is not a port of the container")),
    }
}

static EXEC_IDS: AtomicU64 = AtomicU64::new(0);

/// Runs `probe` once against `target`.
async fn check(target: &Target, probe: &Probe, timeout: Duration) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        let id = format!("probe-{}", EXEC_IDS.fetch_add(1, Ordering::Relaxed));
        return match target
            .runtime
            .exec_and_wait(&target.container_id, &id, &argv, timeout)
            .await
        {
            Ok(ExecOutcome::Exited(0)) => Ok(()),
            Ok(ExecOutcome::Exited(code)) => Err(format!("command {argv:?} exited with {code}")),
            Ok(ExecOutcome::TimedOut) => Err(format!(
                "command {argv:?} timed out after {}s",
                timeout.as_secs()
            )),
            Err(error) => Err(error.to_string()),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port(&target.container, &tcp.port)?;
        let host = tcp
            .host
            .as_deref()
            .and_then(|h| h.parse().ok())
            .unwrap_or(target.pod_ip);
        let address = SocketAddr::new(host, port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("dial tcp {address}: {error}")),
            Err(_) => Err(format!("dial tcp {address}: i/o timeout")),
        };
    }
    if let Some(get) = &probe.http_get {
        return match tokio::time::timeout(
            timeout,
            http_action(&target.container, get, Some(target.pod_ip)),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err("HTTP probe timed out: context deadline exceeded".to_string()),
        };
    }
    if let Some(grpc) = &probe.grpc {
        let address = SocketAddr::new(
            target.pod_ip,
            u16::try_from(grpc.port).map_err(|_| "invalid port".to_string())?,
        );
        let service = grpc.service.clone().unwrap_or_default();
        return match tokio::time::timeout(timeout, grpc_check(address, service)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs()
            )),
        };
    }
    Err("the probe has no handler".to_string())
}

/// Runs an httpGet action (probe or hook) against the pod: success is a status from 200 to
/// 399, anything else an error in the kubelet's words.
pub(super) async fn http_action(
    container: &Container,
    get: &HTTPGetAction,
    pod_ip: Option<IpAddr>,
) -> Result<(), String> {
    let port = port(container, &get.port)?;
    let host = get
        .host
        .as_deref()
        .and_then(|h| h.parse().ok())
        .or(pod_ip)
        .ok_or("the pod has no address yet")?;
    if get
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
    {
        return Err("HTTPS is not supported yet for probes and hooks".to_string());
    }
    let path = get
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let headers: HashMap<String, String> = get
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let address = SocketAddr::new(host, port);
    match http_get(address, &path, &headers).await {
        Ok(code) if (200..400).contains(&code) => Ok(()),
        Ok(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
        Err(error) => Err(format!("Get \"http://{address}{path}\": {error}")),
    }
}

/// GETs `path` from `address` over plain HTTP; the status code.
pub(super) async fn http_get(
    address: SocketAddr,
    path: &str,
    headers: &HashMap<String, String>,
) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = http::Request::get(path)
        .header(http::header::HOST, address.to_string())
        .header(
            http::header::USER_AGENT,
            concat!("kube-probe/basalt-", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

async fn grpc_check(address: SocketAddr, service: String) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("failed to connect service {address:?}: {e}"))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|e| format!("health rpc failed: {}", e.message()))?;
    match reply.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!(
            "service unhealthy (responded with {:?})",
            other.as_str_name()
        )),
    }
}
