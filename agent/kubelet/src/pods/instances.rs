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
pub const TERMINATION_LOG: &str = "io.basalt.termination-log";
pub const FALLBACK_TO_LOGS: &str = "io.basalt.fallback-to-logs";
pub const MESSAGE: &str = "io.basalt.termination-message";
pub const OOM_KILLED: &str = "io.basalt.oom-killed";

/// The most of a termination message kept (the API's limit).
const MAX_MESSAGE: usize = 4096;
/// With FallbackToLogsOnError, the most of the log's tail used as the message.
const MAX_LOG_MESSAGE: usize = 2048;

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
        /// What it left in its termination message file (or log, by its policy).
        message: String,
        /// The kernel's OOM killer ended it.
        oom_killed: bool,
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
    for container in runtime.containers(&[(POD_UID, uid)]).await? {
        let labels = &container.labels;
        let name = labels.get(CONTAINER).cloned().unwrap_or_default();
        let attempt = labels
            .get(ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let image_id = labels.get(IMAGE_ID).cloned().unwrap_or_default();
        let started = timestamp(labels, STARTED);
        let oom_killed = labels.get(OOM_KILLED).is_some_and(|v| v == "true");
        let state = if let Some(code) = labels.get(EXIT_CODE).and_then(|c| c.parse().ok()) {
            State::Exited {
                code,
                started,
                finished: timestamp(labels, FINISHED).unwrap_or_default(),
                message: labels.get(MESSAGE).cloned().unwrap_or_default(),
                oom_killed,
            }
        } else {
            match runtime.task(&container.id).await? {
                Some(TaskState::Running { .. }) => State::Running {
                    started: started.unwrap_or_else(Timestamp::now),
                },
                Some(TaskState::Exited { code, at }) => {
                    let finished = Timestamp::from_second(at).unwrap_or_else(|_| Timestamp::now());
                    let message = termination_message(&container.labels, code);
                    let exit = HashMap::from([
                        (EXIT_CODE.to_string(), (code as i32).to_string()),
                        (FINISHED.to_string(), finished.to_string()),
                        (MESSAGE.to_string(), message.clone()),
                    ]);
                    let id = container.id.clone();
                    runtime.set_labels(&id, exit).await?;
                    runtime.delete_task(&id).await?;
                    State::Exited {
                        code: code as i32,
                        started,
                        finished,
                        message,
                        oom_killed,
                    }
                }
                None if started.is_some() => State::Exited {
                    // The task vanished without an exit on record (containerd lost it).
                    code: 255,
                    started,
                    finished: Timestamp::now(),
                    message: String::new(),
                    oom_killed,
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

/// What a container that exited with `code` leaves as its message: its termination message
/// file, or with FallbackToLogsOnError and a failure, the tail of its log.
fn termination_message(labels: &HashMap<String, String>, code: u32) -> String {
    let read_tail = |path: &str, limit: usize| -> Vec<u8> {
        let bytes = std::fs::read(path).unwrap_or_default();
        bytes[bytes.len().saturating_sub(limit)..].to_vec()
    };
    let file = labels
        .get(TERMINATION_LOG)
        .map(|p| read_tail(p, MAX_MESSAGE))
        .unwrap_or_default();
    let mut message = String::from_utf8_lossy(&file).into_owned();
    let fallback = labels.get(FALLBACK_TO_LOGS).is_some_and(|v| v == "true");
    if message.is_empty() && fallback && code != 0 {
        let log = labels
            .get(LOG_PATH)
            .map(|p| read_tail(p, MAX_LOG_MESSAGE * 4))
            .unwrap_or_default();
        let text: String = String::from_utf8_lossy(&log)
            .lines()
            .filter_map(|line| line.splitn(4, ' ').nth(3).map(|t| format!("{t}\n")))
            .collect();
        message = text[text.len().saturating_sub(MAX_LOG_MESSAGE)..].to_string();
    }
    // containerd keeps labels small; the message must fit beside the others.
    message.truncate(MAX_MESSAGE.min(3800));
    message
}

/// The newest instance of container `name`, and the one before it.
pub fn latest<'a>(
    instances: &'a [Instance],
    name: &str,
) -> (Option<&'a Instance>, Option<&'a Instance>) {
    let mut of_name = instances.iter().filter(|i| i.name == name);
    (of_name.next(), of_name.next())
}
