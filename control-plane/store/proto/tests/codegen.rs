//! Keeps the committed code in `src/generated/` in step with `proto/`.
//!
//! The Rust code is generated here, in a test, rather than in a build script
//! so that ordinary builds need neither protox nor tonic-prost-build. The test
//! regenerates into a temporary directory and fails if the result differs
//! from what is committed. Run it with `UPDATE_GENERATED=1` to overwrite the
//! committed files instead:
//!
//! ```text
//! UPDATE_GENERATED=1 cargo test -p store-proto --test codegen
//! ```

use std::collections::BTreeMap;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

/// Proto sources, relative to `proto/`, which is also the import root.
const PROTOS: [&str; 4] = [
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "peer/peer.proto",
];

const REFRESH_HINT: &str = "run `UPDATE_GENERATED=1 cargo test -p store-proto --test codegen` \
                            to refresh src/generated/";

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the generator, writing one `<package>.rs` per proto package into `out`.
fn generate(out: &Path) -> Result<()> {
    let proto_dir = crate_dir().join("proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_dir.join(p)).collect();
    let fds = protox::compile(&files, [&proto_dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        // Every proto `bytes` field becomes `bytes::Bytes`, so the server can
        // hand out slices of stored values without copying.
        .bytes(".")
        .codec_path("crate::codec::LeanCodec")
        .out_dir(out)
        .compile_fds(fds)?;
    Ok(())
}

/// All `*.rs` files directly in `dir`, by file name.
fn read_rs_files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    if !dir.exists() {
        return Ok(files);
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or("generated file name is not utf-8")?
                .to_owned();
            files.insert(name, fs::read(&path)?);
        }
    }
    Ok(files)
}

#[test]
fn generated_code_is_fresh() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    generate(tmp.path())?;
    let fresh = read_rs_files(tmp.path())?;
    assert_eq!(
        fresh.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "authpb.rs",
            "basalt.store.peer.v1.rs",
            "etcdserverpb.rs",
            "mvccpb.rs"
        ],
        "generator produced an unexpected set of files"
    );

    let committed_dir = crate_dir().join("src/generated");
    if std::env::var_os("UPDATE_GENERATED").is_some_and(|v| v == "1") {
        fs::create_dir_all(&committed_dir)?;
        // Drop files for packages that no longer exist so stale code cannot linger.
        for name in read_rs_files(&committed_dir)?.keys() {
            if !fresh.contains_key(name) {
                fs::remove_file(committed_dir.join(name))?;
            }
        }
        for (name, contents) in &fresh {
            fs::write(committed_dir.join(name), contents)?;
        }
        return Ok(());
    }

    let committed = read_rs_files(&committed_dir)?;
    let mut problems = Vec::new();
    for (name, contents) in &fresh {
        match committed.get(name) {
            None => problems.push(format!("src/generated/{name} is missing")),
            Some(old) if old != contents => problems.push(format!("src/generated/{name} is stale")),
            Some(_) => {}
        }
    }
    for name in committed.keys() {
        if !fresh.contains_key(name) {
            problems.push(format!("src/generated/{name} is no longer generated"));
        }
    }
    assert!(
        problems.is_empty(),
        "generated code is out of date with proto/: {}; {REFRESH_HINT}",
        problems.join(", ")
    );
    Ok(())
}
