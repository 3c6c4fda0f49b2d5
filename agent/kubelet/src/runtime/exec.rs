//! Extra processes in a running container (what exec probes, hooks and `kubectl exec` run):
//! the container's own process spec with other arguments, started beside its main process.
//! **Does not** move the processes' bytes: callers give FIFO paths (see [`super::fifo`]) or
//! none.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use std::future::Future;
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

/// Where an exec'd process's standard streams go: FIFO paths, or none (`/dev/null`).
#[derive(Debug, Clone, Default)]
pub struct ExecIo {
    /// Its standard input.
    pub stdin: Option<String>,
    /// Its standard output (with a terminal, also its errors).
    pub stdout: Option<String>,
    /// Its standard error (unused with a terminal).
    pub stderr: Option<String>,
    /// Whether it runs on a terminal.
    pub terminal: bool,
    /// The terminal's size to start with (width, height).
    pub terminal_size: Option<(u16, u16)>,
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

    /// Creates (does not start) process `exec_id` running `argv` in container `id`, as its
    /// main process's user, environment and working directory, with the streams of `io`.
    pub async fn create_exec(
        &self,
        id: &str,
        exec_id: &str,
        argv: &[String],
        io: &ExecIo,
    ) -> Result<(), Error> {
        let spec = self.container_spec(id).await?;
        let mut process = spec.get("process").cloned().unwrap_or_default();
        process["args"] = serde_json::json!(argv);
        process["terminal"] = serde_json::json!(io.terminal);
        if io.terminal {
            add_default_term(&mut process);
            if let Some((width, height)) = io.terminal_size {
                process["consoleSize"] = serde_json::json!({"width": width, "height": height});
            }
        }
        let value = serde_json::to_vec(&process).map_err(|error| Error::BadImage {
            image: id.to_string(),
            reason: format!("its process spec does not serialize: {error}"),
        })?;
        TasksClient::new(self.channel.clone())
            .exec(self.request(ExecProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: io.stdin.clone().unwrap_or_default(),
                stdout: io.stdout.clone().unwrap_or_default(),
                stderr: io.stderr.clone().unwrap_or_default(),
                terminal: io.terminal,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE.to_string(),
                    value,
                }),
            }))
            .await
            .map_err(Error::rpc(format!("exec in {id}")))?;
        Ok(())
    }

    /// A future of process `exec_id`'s exit status. Ask for it before starting the process,
    /// so one that exits at once is not missed.
    pub fn exec_exit(
        &self,
        id: &str,
        exec_id: &str,
    ) -> impl Future<Output = Result<u32, Error>> + Send + 'static {
        let mut tasks = TasksClient::new(self.channel.clone());
        let request = self.request(WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        });
        let what = format!("waiting for exec in {id}");
        async move {
            tasks
                .wait(request)
                .await
                .map(|reply| reply.into_inner().exit_status)
                .map_err(Error::rpc(what))
        }
    }

    /// Starts created process `exec_id`.
    pub async fn start_exec(&self, id: &str, exec_id: &str) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .start(self.request(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(Error::rpc(format!("starting exec in {id}")))?;
        Ok(())
    }

    /// Sets the size of process `exec_id`'s terminal.
    pub async fn resize_exec(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .resize_pty(self.request(ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                width,
                height,
            }))
            .await
            .map_err(Error::rpc(format!("resizing the terminal of exec in {id}")))?;
        Ok(())
    }

    /// Closes process `exec_id`'s standard input.
    pub async fn close_exec_stdin(&self, id: &str, exec_id: &str) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .close_io(self.request(CloseIoRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            }))
            .await
            .map_err(Error::rpc(format!("closing the input of exec in {id}")))?;
        Ok(())
    }

    /// Kills process `exec_id` (which may have ended already).
    pub async fn kill_exec(&self, id: &str, exec_id: &str) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .kill(self.request(KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal: nix::libc::SIGKILL as u32,
                all: false,
            }))
            .await
            .map_err(Error::rpc(format!("killing exec in {id}")))?;
        Ok(())
    }

    /// Forgets ended process `exec_id`.
    pub async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<(), Error> {
        TasksClient::new(self.channel.clone())
            .delete_process(self.request(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(Error::rpc(format!("deleting exec in {id}")))?;
        Ok(())
    }

    /// Runs `argv` in container `id` without input or output, and waits up to `timeout` for
    /// it (killing it then).
    pub async fn exec_and_wait(
        &self,
        id: &str,
        exec_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, Error> {
        self.create_exec(id, exec_id, argv, &ExecIo::default())
            .await?;
        let outcome = self.start_and_wait(id, exec_id, timeout).await;
        if let Err(error) = self.delete_exec(id, exec_id).await {
            tracing::debug!(%error, "deleting an exec'd process");
        }
        outcome
    }

    async fn start_and_wait(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Duration,
    ) -> Result<ExecOutcome, Error> {
        let waiting = tokio::spawn(self.exec_exit(id, exec_id));
        self.start_exec(id, exec_id).await?;
        match tokio::time::timeout(timeout, waiting).await {
            Ok(Ok(exit)) => exit.map(ExecOutcome::Exited),
            Ok(Err(join)) => Err(Error::rpc(format!("waiting for exec in {id}"))(
                tonic::Status::internal(join.to_string()),
            )),
            Err(_) => {
                if let Err(error) = self.kill_exec(id, exec_id).await {
                    tracing::debug!(%error, "killing a timed-out exec");
                }
                Ok(ExecOutcome::TimedOut)
            }
        }
    }
}

/// Terminal programs need `TERM`; the container's environment wins when it sets one.
fn add_default_term(process: &mut serde_json::Value) {
    let env = process
        .get("env")
        .and_then(|e| e.as_array())
        .cloned()
        .unwrap_or_default();
    let has_term = env
        .iter()
        .filter_map(|v| v.as_str())
        .any(|v| v.starts_with("TERM="));
    if !has_term {
        let mut env = env;
        env.push(serde_json::json!("TERM=xterm"));
        process["env"] = serde_json::Value::Array(env);
    }
}
