//! Running the real `etcdctl` (v3 API) against endpoints.

use std::process::{Command, Output};

/// The result of one etcdctl run.
#[derive(Debug)]
pub struct Run {
    /// Exit success.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `etcdctl --endpoints=… args…` and captures its output.
pub fn etcdctl(endpoints: &[String], args: &[&str]) -> Run {
    etcdctl_stdin(endpoints, args, None)
}

/// Runs etcdctl with `input` on its standard input (for `txn`).
pub fn etcdctl_stdin(endpoints: &[String], args: &[&str], input: Option<&str>) -> Run {
    use std::io::Write;
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command
        .spawn()
        .expect("etcdctl is installed (cargo xtask setup)");
    // Taking stdin closes it once written (or at once without input), so etcdctl sees EOF.
    if let Some(mut stdin) = child.stdin.take()
        && let Some(input) = input
    {
        stdin
            .write_all(input.as_bytes())
            .expect("writing etcdctl input");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("etcdctl output");
    Run {
        ok: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

impl Run {
    /// Asserts success and returns standard output.
    pub fn expect_ok(self, what: &str) -> String {
        assert!(
            self.ok,
            "etcdctl {what} failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    /// Standard output parsed as JSON (`-w json`).
    pub fn json(self, what: &str) -> serde_json::Value {
        let out = self.expect_ok(what);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("etcdctl {what}: not JSON ({e}): {out}"))
    }
}
