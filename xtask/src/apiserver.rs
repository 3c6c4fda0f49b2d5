//! `cargo xtask apiserver up`: the Kubernetes API server on 127.0.0.1:6443 over an in-process
//! store, with a cluster PKI and an administrator kubeconfig under `target/basalt-apiserver/`,
//! and the controller manager beside it, shown answering kubectl, until Ctrl-C.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd;

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("up") => up(&args[1..]),
        _ => bail!("usage: cargo xtask apiserver up [--fresh]"),
    }
}

fn up(args: &[String]) -> Result<()> {
    let fresh = match args {
        [] => false,
        [flag] if flag == "--fresh" => true,
        _ => bail!("usage: cargo xtask apiserver up [--fresh]"),
    };
    let root = cmd::workspace_root();
    cmd::run_command(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "apiserver",
        "--package",
        "controllers",
        "--bin",
        "basalt-apiserver",
        "--bin",
        "basalt-controller-manager",
    ]))?;
    let dir = root.join("target/basalt-apiserver");
    if fresh && dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("apiserver.log"))?;
    let mut child = Command::new(root.join("target/release/basalt-apiserver"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--pki-dir")
        .arg(dir.join("pki"))
        .stderr(log)
        .spawn()
        .context("starting basalt-apiserver")?;
    let kubeconfig = dir.join("pki/admin.kubeconfig");
    let kubectl = |args: &[&str]| {
        let mut command = Command::new("kubectl");
        command.env("KUBECONFIG", &kubeconfig).args(args);
        command
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if kubeconfig.exists()
            && kubectl(&["get", "--raw", "/readyz"])
                .output()
                .is_ok_and(|o| o.status.success())
        {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "basalt-apiserver exited ({status}); see {}",
                dir.join("apiserver.log").display()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "basalt-apiserver did not become ready; see {}",
                dir.join("apiserver.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let pki = dir.join("pki");
    let mut controllers = Command::new(root.join("target/release/basalt-controller-manager"))
        .arg("--kubeconfig")
        .arg(pki.join("controller-manager.kubeconfig"))
        .arg("--root-ca-file")
        .arg(pki.join("ca.pem"))
        .arg("--cluster-signing-cert-file")
        .arg(pki.join("ca.pem"))
        .arg("--cluster-signing-key-file")
        .arg(pki.join("ca-key.pem"))
        .stderr(std::fs::File::create(dir.join("controller-manager.log"))?)
        .spawn()
        .context("starting basalt-controller-manager")?;
    cmd::run_command(&mut kubectl(&["get", "namespaces"]))?;
    eprintln!(
        "\nThe API server and the controller manager are running on https://127.0.0.1:6443 (logs and data in {}).\n\
         Talk to it:  export KUBECONFIG={}\n              kubectl create deployment web --image=busybox\n\
         Stop it with Ctrl-C.",
        dir.display(),
        kubeconfig.display()
    );
    let _ = child.wait();
    let _ = controllers.kill();
    let _ = controllers.wait();
    Ok(())
}
