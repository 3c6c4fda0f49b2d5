//! Waiting for a cluster to reach a state: poll, and on timeout fail with what was awaited
//! and whatever explains it (a log tail, the objects seen).

use std::time::{Duration, Instant};

/// Polls `check` every 200 ms until it holds. Past `timeout` the test fails, naming `what`
/// and showing `context()`.
pub fn until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}\n{}", context());
}
