//! Appending a run to the benchmark record (docs/benchmarks.md): where and how it ran, then
//! each cluster size's tables.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::bench::machine::Facts;
use crate::bench::report::TopologyReport;

/// Appends a Markdown section for one run of a benchmark against targets to `path`: `title`,
/// the command (`BASALT_BENCH_COMMAND`, else `default_command`), the machine, `setup` in a
/// line, then `table`.
pub fn append_run(
    path: &Path,
    facts: &Facts,
    title: &str,
    default_command: &str,
    setup: &str,
    table: &str,
) -> Result<()> {
    let command =
        std::env::var("BASALT_BENCH_COMMAND").unwrap_or_else(|_| default_command.to_owned());
    let section = format!(
        "\n## {date} — {title}\n\n\
         - command: `{command}`\n\
         - machine: {cpus}, {memory}, {kernel}\n\
         - {setup}\n\n{table}",
        date = facts.date,
        cpus = facts.cpus,
        memory = facts.memory,
        kernel = facts.kernel,
    );
    write(path, &section)
}

fn write(path: &Path, section: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(section.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Appends a Markdown section for one run to `path`; `plan` describes the phases in a line.
pub fn append(
    path: &Path,
    facts: &Facts,
    command: &str,
    plan: &str,
    reports: &[TopologyReport],
) -> Result<()> {
    let mut section = format!(
        "\n## {date}\n\n\
         - command: `{command}`\n\
         - machine: {cpus}, {memory}, {kernel}; member data on {fs}\n\
         - servers: basalt-store at {basalt}; {etcd} (Debian)\n\
         - plan: {plan}\n\n",
        date = facts.date,
        cpus = facts.cpus,
        memory = facts.memory,
        kernel = facts.kernel,
        fs = facts.filesystem,
        basalt = facts.basalt,
        etcd = facts.etcd,
    );
    for report in reports {
        section += &report.markdown();
        section += "\n";
    }
    write(path, &section)
}
