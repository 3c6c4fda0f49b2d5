//! `cargo xtask bench store [ARGS]`: the store benchmark against etcd, recorded.
//!
//! Builds the release binaries (benchmarks of a debug build measure the wrong thing), then runs
//! `store-bench` from the workspace root with ARGS. Unless ARGS name a `--markdown` file, the
//! results are appended to docs/benchmarks.md so that every run leaves a record;
//! `--no-record` skips that.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd;

const RECORD: &str = "docs/benchmarks.md";

pub fn run(args: &[String]) -> Result<()> {
    let Some((what, rest)) = args.split_first() else {
        bail!("usage: cargo xtask bench store [ARGS] (store is the only benchmark so far)");
    };
    match what.as_str() {
        "store" => store(rest),
        other => bail!("unknown benchmark {other:?}; there is `store`"),
    }
}

fn store(args: &[String]) -> Result<()> {
    let root = cmd::workspace_root();
    cmd::run_command(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "store-server",
        "-p",
        "basalt-tests",
        "--bins",
    ]))?;
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
    let typed = std::iter::once("cargo xtask bench store".to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    cmd::run_command(
        Command::new(target.join("release").join("store-bench"))
            .current_dir(&root)
            .args(&bench_args)
            // Just built; the harness need not run cargo again.
            .env("BASALT_SKIP_BUILD", "1")
            .env("BASALT_BENCH_COMMAND", typed),
    )
}
