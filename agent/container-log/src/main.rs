//! `basalt-container-log container-log PATH`: run by containerd's shim for one container (the
//! argument pair comes from the `binary://…?container-log=PATH` URI the kubelet gives).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let path = match args.as_slice() {
        [_, flag, path] if flag == "container-log" => path,
        _ => {
            eprintln!("usage: basalt-container-log container-log PATH");
            return ExitCode::from(2);
        }
    };
    match container_log::run_writer(std::path::Path::new(path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("basalt-container-log: {path}: {error}");
            ExitCode::FAILURE
        }
    }
}
