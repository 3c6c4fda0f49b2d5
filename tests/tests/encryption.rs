//! Secrets encrypted at rest: with an `EncryptionConfiguration`, a secret's value never
//! reaches the store's files in the clear, reads return it unchanged, and keys rotate.

use std::path::Path;

use basalt_tests::control_plane::ControlPlane;

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "HxAdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

fn config(keys: &[(&str, &str)]) -> String {
    let mut text = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n".to_owned();
    for (name, secret) in keys {
        text.push_str(&format!("      - name: {name}\n        secret: {secret}\n"));
    }
    text
}

/// Whether any file under `dir` contains `needle`.
fn stored_anywhere(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            stored_anywhere(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        }
    })
}

#[test]
fn secrets_are_sealed_in_the_store_and_keys_rotate() {
    let configs = tempfile::tempdir().unwrap();
    let write = |name: &str, keys: &[(&str, &str)]| {
        let path = configs.path().join(name);
        std::fs::write(&path, config(keys)).unwrap();
        path
    };
    let a_only = write("a.yaml", &[("a", KEY_A)]);
    let b_then_a = write("ba.yaml", &[("b", KEY_B), ("a", KEY_A)]);
    let b_only = write("b.yaml", &[("b", KEY_B)]);
    let broken = write("bad.yaml", &[("a", "c2hvcnQ=")]);
    let flag = |path: &Path| format!("--encryption-provider-config={}", path.display());

    let mut plane = ControlPlane::start_with(&[&flag(&a_only)]);
    plane.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=hunter2-at-rest",
    ]);
    plane.ok(&[
        "create",
        "configmap",
        "plain",
        "--from-literal=note=visible-at-rest",
    ]);
    let data = plane.data_dir();
    // base64("hunter2-at-rest") as the secret's JSON holds it, and the config map's plain text.
    assert!(
        !stored_anywhere(&data, b"aHVudGVyMi1hdC1yZXN0"),
        "the secret leaked"
    );
    assert!(stored_anywhere(&data, b"k8s:enc:aesgcm:v1:a:"));
    assert!(
        stored_anywhere(&data, b"visible-at-rest"),
        "config maps are not encrypted"
    );
    let read = plane.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(read, "aHVudGVyMi1hdC1yZXN0");

    // Rotation: b seals new writes, a still opens the old ones.
    assert!(plane.restart_with(&[&flag(&b_then_a)]), "{}", plane.log());
    assert_eq!(
        plane.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]),
        "aHVudGVyMi1hdC1yZXN0"
    );
    plane.ok(&[
        "create",
        "secret",
        "generic",
        "api",
        "--from-literal=token=t",
    ]);
    assert!(stored_anywhere(&data, b"k8s:enc:aesgcm:v1:b:"));

    // Without key a, what it sealed cannot be read, and says why.
    assert!(plane.restart_with(&[&flag(&b_only)]), "{}", plane.log());
    plane.ok(&["get", "secret", "api"]);
    let failed = plane.kubectl(&["get", "secret", "db"]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(stderr.contains(r#"no key named "a""#), "{stderr}");

    // A configuration that cannot be used stops the server at start.
    assert!(!plane.restart_with(&[&flag(&broken)]));
    assert!(
        plane.log().contains("must be 16 or 32 bytes"),
        "{}",
        plane.log()
    );
}
