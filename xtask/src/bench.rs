//! `cargo xtask bench store|apiserver|scheduler|podstart [ARGS]`: the store benchmark against
//! etcd, the kubelet's pod start against `ctr run`, and the API server and scheduler benchmarks
//! against the targets, recorded.
//!
//! Builds the release binaries (benchmarks of a debug build measure the wrong thing), then runs
//! `store-bench`, `apiserver-bench` or `scheduler-bench` from the workspace root with ARGS. Unless ARGS name a `--markdown` file, the
//! results are appended to docs/benchmarks.md so that every run leaves a record;
//! `--no-record` skips that.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd;

const RECORD: &str = "docs/benchmarks.md";

pub fn run(args: &[String]) -> Result<()> {
    let Some((what, rest)) = args.split_first() else {
        bail!("usage: cargo xtask bench store|apiserver|scheduler|podstart [ARGS]");
    };
    match what.as_str() {
        "store" => bench("store", &["store-server"], rest),
        "apiserver" => bench("apiserver", &["apiserver"], rest),
        "scheduler" => bench("scheduler", &["apiserver", "scheduler"], rest),
        "podstart" => bench(
            "podstart",
            &[
                "apiserver",
                "controllers",
                "scheduler",
                "kubelet",
                "container-log",
            ],
            rest,
        ),
        other => {
            bail!(
                "unknown benchmark {other:?}; there are `store`, `apiserver`, `scheduler` and `podstart`"
            )
        }
    }
}

/// Builds `packages` (the servers) and the harness, then runs `<name>-bench`.
fn bench(name: &str, packages: &[&str], args: &[String]) -> Result<()> {
    let root = cmd::workspace_root();
    let mut build = Command::new("cargo");
    build
        .current_dir(&root)
        .args(["build", "--release", "-p", "basalt-tests", "--bins"]);
    for package in packages {
        build.args(["-p", package]);
    }
    cmd::run_command(&mut build)?;
    let record = !args.iter().any(|a| a == "--no-record");
    let mut bench_args: Vec<String> = args
        .iter()
        .filter(|a| *a != "--no-record")
        .cloned()
        .collect();
    if record
        && !bench_args
            .iter()
            .any(|a| a == "--markdown" || a.starts_with("--markdown="))
    {
        bench_args.extend(["--markdown".to_string(), RECORD.to_string()]);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    // What the record shows as "the command": what the user typed, not our expansion of it.
    let typed = std::iter::once(format!("cargo xtask bench {name}"))
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    cmd::run_command(
        Command::new(target.join("release").join(format!("{name}-bench")))
            .current_dir(&root)
            .args(&bench_args)
            // Just built; the harness need not run cargo again.
            .env("BASALT_SKIP_BUILD", "1")
            .env("BASALT_BENCH_COMMAND", typed),
    )
}
