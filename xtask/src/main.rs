//! `cargo xtask`: the project's own commands — setup, test, a local store cluster, the API
//! server, benchmarks.
//!
//! xtask only orchestrates: it installs tools, builds and runs the project's binaries. It holds no
//! Basalt logic and keeps its dependencies to `anyhow` so that it builds in seconds.

mod apiserver;
mod bench;
mod cmd;
mod setup;
mod store;
mod test;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup                 install what this machine lacks (apt packages, rustup components, bpf-linker)
  test                  format check, clippy, and every test (unit, integration, end-to-end)
  apiserver up [--fresh] run the Kubernetes API server on 127.0.0.1:6443 with an admin kubeconfig
                        under target/basalt-apiserver/ until Ctrl-C
  store up [--nodes N] [--fresh]
                        run a local N-member store cluster on 127.0.0.1..N (default 3) until Ctrl-C
  bench store [ARGS]    the store against etcd 3.4 side by side, appended to docs/benchmarks.md
                        (--no-record: don't append; --help: the benchmark's own flags)
  bench apiserver [ARGS] the API server against the issue's targets, recorded the same way
  bench scheduler [ARGS] the scheduler: 1,000 nodes, 10,000 pods, pods/s and p99 to binding
  bench podstart [ARGS]  the kubelet: create → Running for 1, 10, 50 pods beside `ctr run --rm`,
                        and its CPU and RSS with 100 pods
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => {
            print!("{USAGE}");
            return Ok(());
        }
    };
    match command {
        "setup" => setup::run(),
        "test" => test::run(rest),
        "bench" => bench::run(rest),
        "apiserver" => apiserver::run(rest),
        "store" => store::run(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}
