//! `cargo xtask store up`: a local store cluster on 127.0.0.1..N, for trying Basalt's store
//! with etcdctl. Members keep their data under `target/basalt-local/` and stop on Ctrl-C.

use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd;

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        _ => bail!("usage: cargo xtask store up [--nodes N] [--fresh]"),
    }
}

fn up(args: &[String]) -> Result<()> {
    let mut nodes = 3usize;
    let mut fresh = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--nodes" => {
                nodes = rest
                    .next()
                    .context("--nodes needs a number")?
                    .parse()
                    .context("--nodes needs a number")?;
            }
            "--fresh" => fresh = true,
            other => bail!("unknown argument {other:?}"),
        }
    }
    if !(1..=9).contains(&nodes) {
        bail!("--nodes must be between 1 and 9");
    }
    let root = cmd::workspace_root();
    cmd::run_command(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "store-server",
        "--bin",
        "basalt-store",
    ]))?;
    let binary = root.join("target/release/basalt-store");
    let data = root.join("target/basalt-local");
    if fresh && data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let initial = (1..=nodes)
        .map(|i| format!("m{i}=http://127.0.0.{i}:2380"))
        .collect::<Vec<_>>()
        .join(",");
    let mut children: Vec<Child> = Vec::new();
    for i in 1..=nodes {
        let name = format!("m{i}");
        let log = std::fs::File::create({
            std::fs::create_dir_all(&data)?;
            data.join(format!("{name}.log"))
        })?;
        let child = Command::new(&binary)
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(data.join(&name))
            .args(["--listen-client-urls", &format!("http://127.0.0.{i}:2379")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.{i}:2380")])
            .args(["--initial-cluster", &initial])
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        children.push(child);
    }
    let endpoints = (1..=nodes)
        .map(|i| format!("127.0.0.{i}:2379"))
        .collect::<Vec<_>>()
        .join(",");
    std::thread::sleep(Duration::from_secs(2));
    let etcdctl = |args: &[&str]| {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args);
        cmd::run_command(&mut command)
    };
    etcdctl(&["endpoint", "status", "-w", "table"])?;
    etcdctl(&["put", "/hello", "basalt"])?;
    etcdctl(&["get", "/hello", "-w", "json"])?;
    eprintln!(
        "\n{nodes} store members are running (logs and data in {}).\n\
         Talk to them:  ETCDCTL_API=3 etcdctl --endpoints={endpoints} member list -w table\n\
         Stop them with Ctrl-C.",
        data.display()
    );
    for mut child in children {
        let _ = child.wait();
    }
    Ok(())
}
