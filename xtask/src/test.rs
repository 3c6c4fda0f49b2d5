//! `cargo xtask test`: the one command CI and developers run.
//!
//! It checks formatting and lints, then runs every test with nextest: unit tests, integration
//! tests against real kernels and processes, and end-to-end clusters. Extra arguments go to
//! nextest (for example a test-name filter).

use std::process::Command;

use anyhow::Result;

use crate::cmd;

pub fn run(args: &[String]) -> Result<()> {
    let root = cmd::workspace_root();
    cmd::run_command(
        Command::new("cargo")
            .current_dir(&root)
            .args(["fmt", "--all", "--", "--check"]),
    )?;
    cmd::run_command(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    cmd::run_command(
        Command::new("cargo")
            .current_dir(&root)
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(args),
    )
}
