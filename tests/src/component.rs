//! A control-plane component (controller manager, scheduler) as a child process of a test:
//! its stderr in a log file, killed with SIGKILL on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running component.
pub struct Component {
    child: Option<Child>,
    log: PathBuf,
}

impl Component {
    /// Starts `command` with stderr appended to `log`.
    pub fn spawn(mut command: Command, log: PathBuf) -> Component {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("component log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting a component");
        Component {
            child: Some(child),
            log,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills it (SIGKILL) and waits for it, as a crashed node would leave it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
    }
}
