//! `cargo xtask test`: the one command CI and developers run.
//!
//! It checks formatting and lints, builds every target once (the binaries the end-to-end tests
//! start and the tests themselves), then runs every test with nextest: unit tests, integration
//! tests against real kernels and processes, and end-to-end clusters (`.config/nextest.toml`
//! runs those one at a time). Extra arguments go to nextest (for example a test-name filter).

use std::process::Command;

use anyhow::Result;

use crate::cmd;

pub fn run(args: &[String]) -> Result<()> {
    let root = cmd::workspace_root();
    let cargo =
        |args: &[&str]| cmd::run_command(Command::new("cargo").current_dir(&root).args(args));
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // One build of every target: with only `--bins` the test build would compile every
    // dependency again with dev-dependency features unified in.
    cargo(&["build", "--workspace", "--all-targets"])?;
    cmd::run_command(
        Command::new("cargo")
            .current_dir(&root)
            .env("BASALT_SKIP_BUILD", "1")
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(args),
    )
}
