//! The containers of a pod as containerd holds them: each container instance (one per start
//! attempt) is a containerd container labelled with its pod, name and attempt. Exit codes
//! and times are written back into the labels when the task is reaped, so what happened
//! survives the task, the shim and a kubelet restart.

use std::collections::HashMap;

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::runtime::{self, Runtime, TaskState};

pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER: &str = "io.kubernetes.container.name";
pub const ATTEMPT: &str = "io.basalt.attempt";
pub const INIT: &str = "io.basalt.init";
pub const IMAGE_ID: &str = "io.basalt.image-id";
pub const LOG_PATH: &str = "io.basalt.log-path";
pub const STARTED: &str = "io.basalt.started-at";
pub const EXIT_CODE: &str = "io.basalt.exit-code";
pub const FINISHED: &str = "io.basalt.finished-at";

/// What one start attempt of a container is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Created but never started (the kubelet stopped between the two).
    Unstarted,
    /// Its process runs.
    Running {
        /// When it started.
        started: Timestamp,
    },
    /// Its process exited.
    Exited {
        /// The exit code.
        code: i32,
        /// When it started, if it did.
        started: Option<Timestamp>,
        /// When it exited.
        finished: Timestamp,
    },
}

/// One start attempt of one container of a pod.
#[derive(Debug, Clone)]
pub struct Instance {
    /// containerd's container ID.
    pub id: String,
    /// The container's name in the pod.
    pub name: String,
    /// 0 for the first start, counting up.
    pub attempt: u32,
    /// The image's ID.
    pub image_id: String,
    /// What it is doing.
    pub state: State,
}

impl Instance {
    /// Whether its process runs.
    pub fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }
}

/// The containerd ID of attempt `attempt` of container `name` of pod `uid`: derived, not
/// random, so that a retried create finds what an interrupted one left.
pub fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    let digest = Sha256::digest(format!("{uid}/{name}/{attempt}").as_bytes());
    digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn timestamp(labels: &HashMap<String, String>, key: &str) -> Option<Timestamp> {
    labels.get(key).and_then(|value| value.parse().ok())
}

/// Every instance of pod `uid`'s containers, newest attempt first per container. Tasks that
/// exited are reaped on the way (their exit recorded in the labels).
pub async fn of_pod(runtime: &Runtime, uid: &str) -> Result<Vec<Instance>, runtime::Error> {
    let mut instances = Vec::new();
    for mut container in runtime.containers(&[(POD_UID, uid)]).await? {
        let labels = &container.labels;
        let name = labels.get(CONTAINER).cloned().unwrap_or_default();
        let attempt = labels
            .get(ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let image_id = labels.get(IMAGE_ID).cloned().unwrap_or_default();
        let started = timestamp(labels, STARTED);
        let state = if let Some(code) = labels.get(EXIT_CODE).and_then(|c| c.parse().ok()) {
            State::Exited {
                code,
                started,
                finished: timestamp(labels, FINISHED).unwrap_or_default(),
            }
        } else {
            match runtime.task(&container.id).await? {
                Some(TaskState::Running { .. }) => State::Running {
                    started: started.unwrap_or_else(Timestamp::now),
                },
                Some(TaskState::Exited { code, at }) => {
                    let finished = Timestamp::from_second(at).unwrap_or_else(|_| Timestamp::now());
                    container
                        .labels
                        .insert(EXIT_CODE.to_string(), (code as i32).to_string());
                    container
                        .labels
                        .insert(FINISHED.to_string(), finished.to_string());
                    let id = container.id.clone();
                    runtime.set_labels(container.clone()).await?;
                    runtime.delete_task(&id).await?;
                    State::Exited {
                        code: code as i32,
                        started,
                        finished,
                    }
                }
                None if started.is_some() => State::Exited {
                    // The task vanished without an exit on record (containerd lost it).
                    code: 255,
                    started,
                    finished: Timestamp::now(),
                },
                None => State::Unstarted,
            }
        };
        instances.push(Instance {
            id: container.id,
            name,
            attempt,
            image_id,
            state,
        });
    }
    instances.sort_by(|a, b| a.name.cmp(&b.name).then(b.attempt.cmp(&a.attempt)));
    Ok(instances)
}

/// The newest instance of container `name`, and the one before it.
pub fn latest<'a>(
    instances: &'a [Instance],
    name: &str,
) -> (Option<&'a Instance>, Option<&'a Instance>) {
    let mut of_name = instances.iter().filter(|i| i.name == name);
    (of_name.next(), of_name.next())
}
