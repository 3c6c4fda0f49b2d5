//! Extra processes in a running container (what exec probes and, later, `kubectl exec` run):
//! the container's own process spec with other arguments, started beside its main process,
//! waited for and removed.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest, StartRequest,
    WaitRequest,
};
use std::time::Duration;

use super::{Error, Runtime};

const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// How an exec'd process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    /// It exited with this code.
    Exited(u32),
    /// It was still running at the deadline and was killed.
    TimedOut,
}

impl Runtime {
    /// The OCI runtime spec container `id` was created with.
    pub async fn container_spec(&self, id: &str) -> Result<serde_json::Value, Error> {
        let container = ContainersClient::new(self.channel.clone())
            .get(self.request(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(Error::rpc(format!("reading container {id}")))?
            .into_inner()
            .container
            .and_then(|c| c.spec)
            .ok_or_else(|| Error::BadImage {
                image: id.to_string(),
                reason: "the container has no spec".to_string(),
            })?;
        serde_json::from_slice(&container.value).map_err(|error| Error::BadImage {
            image: id.to_string(),
            reason: format!("its spec is not JSON: {error}"),
        })
    }

    /// Runs `argv` in container `id` as its main process's user and environment, without
    /// input or output, and waits up to `timeout` for it.
    pub async fn exec_and_wait(
        &self,
        id: &str,
        exec_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, Error> {
        let spec = self.container_spec(id).await?;
        let mut process = spec.get("process").cloned().unwrap_or_default();
        process["args"] = serde_json::json!(argv);
        process["terminal"] = serde_json::json!(false);
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .exec(self.request(ExecProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE.to_string(),
                    value: serde_json::to_vec(&process).unwrap_or_default(),
                }),
                ..Default::default()
            }))
            .await
            .map_err(Error::rpc(format!("exec in {id}")))?;
        let outcome = self.start_and_wait(id, exec_id, timeout).await;
        let _ = tasks
            .delete_process(self.request(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await;
        outcome
    }

    async fn start_and_wait(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Duration,
    ) -> Result<ExecOutcome, Error> {
        let mut tasks = TasksClient::new(self.channel.clone());
        // Wait is asked for before Start so a process that exits at once is not missed.
        let waiting = {
            let mut tasks = tasks.clone();
            let request = self.request(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            });
            async move { tasks.wait(request).await }
        };
        let waiting = tokio::spawn(waiting);
        tasks
            .start(self.request(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(Error::rpc(format!("starting exec in {id}")))?;
        match tokio::time::timeout(timeout, waiting).await {
            Ok(Ok(Ok(reply))) => Ok(ExecOutcome::Exited(reply.into_inner().exit_status)),
            Ok(Ok(Err(status))) => Err(Error::rpc(format!("waiting for exec in {id}"))(status)),
            Ok(Err(join)) => Err(Error::rpc(format!("waiting for exec in {id}"))(
                tonic::Status::internal(join.to_string()),
            )),
            Err(_) => {
                let _ = tasks
                    .kill(self.request(KillRequest {
                        container_id: id.to_string(),
                        exec_id: exec_id.to_string(),
                        signal: nix::libc::SIGKILL as u32,
                        all: false,
                    }))
                    .await;
                Ok(ExecOutcome::TimedOut)
            }
        }
    }
}
