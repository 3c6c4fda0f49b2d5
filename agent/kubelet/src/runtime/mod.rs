//! containerd's native API, as much of it as the kubelet needs: images and their configs,
//! containers with their snapshots, tasks, and exit events. Every request carries the
//! kubelet's containerd namespace. This module knows nothing of pods: it takes and returns
//! containerd's own terms, and [`crate::pods`] maps pods onto them.

mod exec;
pub mod fifo;
mod image;

use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetRequest, KillRequest, ListContainersRequest, StartRequest,
    SubscribeRequest, UpdateContainerRequest,
};
use containerd_client::types::v1::Status;
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};

pub use exec::{ExecIo, ExecOutcome};
pub use image::ImageConfig;

/// The snapshotter every container's root filesystem comes from.
const SNAPSHOTTER: &str = "overlayfs";
/// The runtime shim: runc, through containerd's v2 shim.
const RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// What went wrong talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// containerd answered with an error.
    #[error("containerd: {action}: {status}")]
    Rpc {
        /// What was asked.
        action: String,
        /// containerd's answer.
        status: tonic::Status,
    },
    /// The socket could not be reached.
    #[error("connecting to containerd at {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The image is not in containerd's image store.
    #[error("image {0:?} is not in containerd's image store")]
    ImageNotPresent(String),
    /// An image's manifest or config could not be understood.
    #[error("image {image:?}: {reason}")]
    BadImage {
        /// The image.
        image: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    fn rpc(action: impl Into<String>) -> impl FnOnce(tonic::Status) -> Error {
        let action = action.into();
        move |status| Error::Rpc { action, status }
    }

    /// Whether containerd said the thing asked about does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Rpc { status, .. } if status.code() == Code::NotFound)
    }
}

/// Something that happened to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// Container `0`'s task exited.
    Exit(String),
    /// The kernel's OOM killer killed a process of container `0`.
    Oom(String),
}

/// A task's state as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Created or running (paused counts as running: the process exists).
    Running {
        /// The process's PID on the host.
        pid: u32,
    },
    /// Exited with `code` at `at` (seconds since the epoch).
    Exited {
        /// The exit status (128 + signal when killed by one).
        code: u32,
        /// When.
        at: i64,
    },
}

/// A connection to containerd, scoped to one containerd namespace.
#[derive(Clone)]
pub struct Runtime {
    channel: Channel,
    namespace: String,
}

impl Runtime {
    /// Connects to containerd's socket at `path`.
    pub async fn connect(path: &Path, namespace: &str) -> Result<Runtime, Error> {
        let channel = containerd_client::connect(path)
            .await
            .map_err(|source| Error::Connect {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Runtime {
            channel,
            namespace: namespace.to_string(),
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = self.namespace.parse() {
            request.metadata_mut().insert("containerd-namespace", value);
        }
        request
    }

    /// containerd's version, as the Node reports it (`containerd://1.6.20`).
    pub async fn version(&self) -> Result<String, Error> {
        let reply = VersionClient::new(self.channel.clone())
            .version(())
            .await
            .map_err(Error::rpc("asking the version"))?
            .into_inner();
        Ok(format!(
            "containerd://{}",
            reply.version.trim_start_matches('v')
        ))
    }

    /// Every container in the namespace whose labels include `selector`'s.
    pub async fn containers(&self, selector: &[(&str, &str)]) -> Result<Vec<Container>, Error> {
        let filter = selector
            .iter()
            .map(|(key, value)| format!("labels.\"{key}\"=={value}"))
            .collect::<Vec<_>>()
            .join(",");
        let filters = if filter.is_empty() {
            vec![]
        } else {
            vec![filter]
        };
        let reply = ContainersClient::new(self.channel.clone())
            .list(self.request(ListContainersRequest { filters }))
            .await
            .map_err(Error::rpc("listing containers"))?;
        Ok(reply.into_inner().containers)
    }

    /// Creates container `id` from `image` (prepared by [`Runtime::image`]) running `spec`
    /// (an OCI runtime spec), with `labels`. A container already there under that id, left by
    /// an interrupted earlier attempt, is replaced.
    pub async fn create_container(
        &self,
        id: &str,
        image: &ImageConfig,
        spec: &serde_json::Value,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        self.remove_container(id).await?;
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        snapshots
            .prepare(self.request(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
                parent: image.chain_id.clone(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(Error::rpc(format!("preparing the root filesystem of {id}")))?;
        let container = Container {
            id: id.to_string(),
            labels,
            image: image.name.clone(),
            runtime: Some(containerd_client::services::v1::container::Runtime {
                name: RUNTIME.to_string(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.to_string(),
                value: serde_json::to_vec(spec).unwrap_or_default(),
            }),
            snapshotter: SNAPSHOTTER.to_string(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        ContainersClient::new(self.channel.clone())
            .create(self.request(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(Error::rpc(format!("creating container {id}")))?;
        Ok(())
    }

    /// Starts container `id`'s process with its output going to `log_uri`; returns its PID.
    pub async fn start(&self, id: &str, log_uri: &str) -> Result<u32, Error> {
        let mounts = SnapshotsClient::new(self.channel.clone())
            .mounts(
                self.request(containerd_client::services::v1::snapshots::MountsRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: id.to_string(),
                }),
            )
            .await
            .map_err(Error::rpc(format!("finding the root filesystem of {id}")))?
            .into_inner()
            .mounts;
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .create(self.request(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdout: log_uri.to_string(),
                stderr: log_uri.to_string(),
                ..Default::default()
            }))
            .await
            .map_err(Error::rpc(format!("creating the task of {id}")))?;
        let started = tasks
            .start(self.request(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(Error::rpc(format!("starting {id}")))?;
        Ok(started.into_inner().pid)
    }

    /// The state of container `id`'s task, or `None` when it has none.
    pub async fn task(&self, id: &str) -> Result<Option<TaskState>, Error> {
        let reply = TasksClient::new(self.channel.clone())
            .get(self.request(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        let process = match reply {
            Ok(reply) => reply.into_inner().process,
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(Error::rpc(format!("inspecting {id}"))(status)),
        };
        Ok(process.map(|process| match process.status() {
            Status::Stopped => TaskState::Exited {
                code: process.exit_status,
                at: process.exited_at.map(|at| at.seconds).unwrap_or_default(),
            },
            _ => TaskState::Running { pid: process.pid },
        }))
    }

    /// Sends `signal` to every process of container `id`; a container with no running task
    /// is not an error.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), Error> {
        let reply = TasksClient::new(self.channel.clone())
            .kill(self.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal: signal as u32,
                all: true,
            }))
            .await;
        match reply {
            Ok(_) => Ok(()),
            Err(status) if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => {
                Ok(())
            }
            Err(status) => Err(Error::rpc(format!("signalling {id}"))(status)),
        }
    }

    /// Deletes container `id`'s exited task (which ends its shim), keeping the container.
    pub async fn delete_task(&self, id: &str) -> Result<(), Error> {
        let reply = TasksClient::new(self.channel.clone())
            .delete(self.request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        match reply {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(Error::rpc(format!("deleting the task of {id}"))(status)),
        }
    }

    /// Sets `labels` on container `id`, leaving its other labels as they are (each label is
    /// its own field in the update, so concurrent updates of different labels never clash).
    pub async fn set_labels(&self, id: &str, labels: HashMap<String, String>) -> Result<(), Error> {
        let paths = labels.keys().map(|key| format!("labels.{key}")).collect();
        ContainersClient::new(self.channel.clone())
            .update(self.request(UpdateContainerRequest {
                container: Some(Container {
                    id: id.to_string(),
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(Error::rpc(format!("labelling {id}")))?;
        Ok(())
    }

    /// Removes container `id`: its task (killed first if it still runs), the container and
    /// its snapshot. What is already gone is skipped.
    pub async fn remove_container(&self, id: &str) -> Result<(), Error> {
        if let Some(TaskState::Running { .. }) = self.task(id).await? {
            self.kill(id, nix::libc::SIGKILL).await?;
            for _ in 0..50 {
                if !matches!(self.task(id).await?, Some(TaskState::Running { .. })) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        self.delete_task(id).await?;
        let deleted = ContainersClient::new(self.channel.clone())
            .delete(self.request(DeleteContainerRequest { id: id.to_string() }))
            .await;
        if let Err(status) = deleted
            && status.code() != Code::NotFound
        {
            return Err(Error::rpc(format!("deleting container {id}"))(status));
        }
        let removed = SnapshotsClient::new(self.channel.clone())
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
            }))
            .await;
        if let Err(status) = removed
            && status.code() != Code::NotFound
        {
            return Err(Error::rpc(format!("removing the snapshot of {id}"))(status));
        }
        Ok(())
    }

    /// Task exits and OOM kills, as containerd reports them.
    pub async fn events(&self) -> Result<impl Stream<Item = TaskEvent> + use<>, Error> {
        let namespace = self.namespace.clone();
        let events = EventsClient::new(self.channel.clone())
            .subscribe(SubscribeRequest {
                filters: vec![
                    format!("namespace=={namespace},topic==\"/tasks/exit\""),
                    format!("namespace=={namespace},topic==\"/tasks/oom\""),
                ],
            })
            .await
            .map_err(Error::rpc("subscribing to task events"))?
            .into_inner();
        Ok(events.filter_map(|envelope| async move {
            let envelope = envelope.ok()?;
            let event = envelope.event?;
            match envelope.topic.as_str() {
                "/tasks/oom" => containerd_client::events::TaskOom::decode(event.value.as_slice())
                    .ok()
                    .map(|oom| TaskEvent::Oom(oom.container_id)),
                _ => containerd_client::events::TaskExit::decode(event.value.as_slice())
                    .ok()
                    .map(|exit| TaskEvent::Exit(exit.container_id)),
            }
        }))
    }
}
