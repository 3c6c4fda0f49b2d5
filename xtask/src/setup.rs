//! `cargo xtask setup`: installs everything a fresh machine of the project's kind lacks.
//!
//! Every step checks first and does nothing when its tool is already there, so running setup
//! twice is cheap. New issues add their packages here, not in CI scripts.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Debian packages the tests and benchmarks need: the real etcd and etcdctl are the store's
/// compatibility peers and its benchmark baseline; protoc and the protobuf well-known types
/// build the etcd-client crate that the benchmark's load generator and the tests use;
/// containerd and runc run the kubelet's containers in its end-to-end tests, whose image is
/// built from busybox-static (no registry is reachable, so images are made locally).
const APT_PACKAGES: &[&str] = &[
    "etcd-server",
    "etcd-client",
    "protobuf-compiler",
    "libprotobuf-dev",
    "containerd",
    "runc",
    "busybox-static",
];

/// The bpf-linker release TOOLCHAIN.md verified against the machine's nightly LLVM.
const BPF_LINKER_VERSION: &str = "0.13";

pub fn run() -> Result<()> {
    apt_packages()?;
    rustup_components()?;
    cargo_nextest()?;
    bpf_linker()?;
    eprintln!("setup: done");
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|package| !installed(package))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: apt packages present");
        return Ok(());
    }
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    let apt = |args: &[&str]| {
        cmd::run_command(
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    // A fresh machine may have empty package lists: update only when the first attempt fails.
    if apt(&install).is_err() {
        apt(&["update"])?;
        apt(&install)?;
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    cmd::output("dpkg-query", &["-W", "-f=${Status}", package])
        .is_ok_and(|status| status.ends_with("install ok installed"))
}

fn rustup_components() -> Result<()> {
    cmd::run("rustup", &["component", "add", "rustfmt", "clippy"])?;
    if !cmd::succeeds("rustc", &["+nightly", "--version"]) {
        cmd::run(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
        )?;
    }
    cmd::run(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
}

/// The oldest nextest `.config/nextest.toml` works with (test priorities).
const NEXTEST_MINIMUM: (u64, u64, u64) = (0, 9, 91);

fn cargo_nextest() -> Result<()> {
    // `cargo-nextest 0.9.143 (…)` → (0, 9, 143)
    let version = cmd::output("cargo", &["nextest", "--version"])
        .ok()
        .and_then(|out| {
            let number = out.split_whitespace().nth(1)?.to_owned();
            let mut parts = number.split('.').map(|p| p.parse::<u64>().ok());
            Some((parts.next()??, parts.next()??, parts.next()??))
        });
    if version.is_some_and(|v| v >= NEXTEST_MINIMUM) {
        eprintln!("setup: cargo-nextest present");
        return Ok(());
    }
    cmd::run("cargo", &["install", "cargo-nextest", "--locked"])
}

/// Builds bpf-linker against the nightly's own libLLVM, the recipe TOOLCHAIN.md verified: the
/// crate's default feature wants a newer LLVM than the nightly ships.
fn bpf_linker() -> Result<()> {
    let sysroot = cmd::output("rustc", &["+nightly", "--print", "sysroot"])?;
    let lib = Path::new(&sysroot).join("lib");
    let have = Command::new("bpf-linker")
        .arg("--version")
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout).contains(&format!(" {BPF_LINKER_VERSION}."))
        });
    if have {
        eprintln!("setup: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so.") || name.starts_with("libLLVM-"))
        .context("the nightly toolchain has no libLLVM shared library")?;
    let major = libllvm
        .trim_start_matches("libLLVM.so.")
        .trim_start_matches("libLLVM-")
        .split(['.', '-'])
        .next()
        .unwrap_or_default()
        .to_owned();
    if major.is_empty() {
        bail!("cannot tell the LLVM version of {libllvm}");
    }
    let prefix = std::env::temp_dir().join("basalt-llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    let link = prefix_lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(lib.join(&libllvm), &link)?;
    cmd::run_command(
        Command::new("cargo")
            .args([
                "+nightly",
                "install",
                "bpf-linker",
                "--version",
                &format!("^{BPF_LINKER_VERSION}"),
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )
}
