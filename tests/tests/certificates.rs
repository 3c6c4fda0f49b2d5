//! Certificate signing requests against the real API server and controller manager: a
//! kubelet's client certificate is approved and signed on its own and works; one for
//! another node is not; a node's serving certificate for its own names is signed with server
//! usage; other requests wait for a human, who needs `approve` on the signer; the server
//! records who asked, whatever the request claims; garbage is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on failure by design

use std::process::{Output, Stdio};
use std::time::Duration;

use basalt_tests::control_plane::{ControlPlane, KUBELET};
use basalt_tests::wait;
use base64::Engine;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use x509_parser::prelude::FromDer;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A request's PEM and its key's PEM.
fn request(cn: &str, org: Option<&str>, dns: &[&str], ips: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    for ip in ips {
        params
            .subject_alt_names
            .push(SanType::IpAddress(ip.parse().unwrap()));
    }
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (pem, key.serialize_pem())
}

fn csr_yaml(name: &str, pem: &str, signer: &str, usages: &[&str], extra: &str) -> String {
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\n\
         spec:\n  request: {}\n  signerName: {signer}\n  usages: [{}]\n{extra}",
        B64.encode(pem),
        usages
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn apply_as(plane: &ControlPlane, context: &str, yaml: &str) -> Output {
    use std::io::Write;
    let mut child = plane
        .kubectl_command(context)
        .args(["create", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn created(plane: &ControlPlane, context: &str, yaml: &str) {
    let out = apply_as(plane, context, yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn field(plane: &ControlPlane, name: &str, path: &str) -> String {
    plane.ok(&["get", "csr", name, "-o", &format!("jsonpath={{{path}}}")])
}

/// The certificate issued for `name`, waiting for it.
fn issued(plane: &ControlPlane, log: &dyn Fn() -> String, name: &str) -> String {
    wait::until(
        &format!("{name} signed"),
        Duration::from_secs(30),
        || !field(plane, name, ".status.certificate").is_empty(),
        log,
    );
    String::from_utf8(
        B64.decode(field(plane, name, ".status.certificate"))
            .unwrap(),
    )
    .unwrap()
}

/// Who the API server says a client with this certificate and key is.
fn whoami(plane: &ControlPlane, cert: &str, key: &str, tag: &str) -> String {
    let dir = plane.kubeconfig().parent().unwrap().to_owned();
    let cert_path = dir.join(format!("{tag}.crt"));
    let key_path = dir.join(format!("{tag}.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let admin = std::fs::read_to_string(plane.kubeconfig()).unwrap();
    let server = admin
        .split("server: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    let kubeconfig = dir.join(format!("{tag}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\", certificate-authority: {}}}\n\
             users:\n- name: u\n  user: {{client-certificate: {}, client-key: {}}}\n\
             contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
            plane.ca_file().display(),
            cert_path.display(),
            key_path.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubelet_certificates_are_approved_and_signed_and_others_wait_for_a_human() {
    let plane = ControlPlane::start();
    let manager = plane.start_controller_manager(
        "controller-manager.log",
        &["--controllers", "csrapproving,csrsigning"],
    );
    let log = || format!("--- controller manager ---\n{}", manager.log());
    plane.apply(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nstatus:\n  addresses:\n  - {type: InternalIP, address: 10.1.2.3}\n",
    );

    // The kubelet's own client certificate: approved, signed, and it works.
    let (pem, key) = request("system:node:n1", Some("system:nodes"), &[], &[]);
    let client = ["digital signature", "client auth"];
    created(
        &plane,
        KUBELET.context,
        &csr_yaml(
            "n1-client",
            &pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &client,
            "",
        ),
    );
    let cert = issued(&plane, &log, "n1-client");
    assert_eq!(
        field(
            &plane,
            "n1-client",
            ".status.conditions[?(@.type==\"Approved\")].reason"
        ),
        "AutoApproved"
    );
    assert_eq!(
        field(&plane, "n1-client", ".spec.username"),
        "system:node:n1"
    );
    assert_eq!(whoami(&plane, &cert, &key, "n1-client"), "system:node:n1");

    // A node's serving certificate for its own name and address: server usage only.
    let (pem, _) = request(
        "system:node:n1",
        Some("system:nodes"),
        &["n1"],
        &["10.1.2.3"],
    );
    let serving = ["digital signature", "server auth"];
    created(
        &plane,
        KUBELET.context,
        &csr_yaml(
            "n1-serving",
            &pem,
            "kubernetes.io/kubelet-serving",
            &serving,
            "",
        ),
    );
    let cert = issued(&plane, &log, "n1-serving");
    let (_, block) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&block.contents).unwrap();
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);

    // Not its own: another node's client certificate, an address it does not have.
    let (pem, _) = request("system:node:n2", Some("system:nodes"), &[], &[]);
    created(
        &plane,
        KUBELET.context,
        &csr_yaml(
            "n2-client",
            &pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &client,
            "",
        ),
    );
    let (pem, _) = request(
        "system:node:n1",
        Some("system:nodes"),
        &["n1"],
        &["10.9.9.9"],
    );
    created(
        &plane,
        KUBELET.context,
        &csr_yaml(
            "n1-elsewhere",
            &pem,
            "kubernetes.io/kubelet-serving",
            &serving,
            "",
        ),
    );

    // Bob's request claims to be the admin's; the server records Bob.
    let (pem, bob_key) = request("bob", None, &[], &[]);
    let forged = "  username: admin\n  groups: [system:masters]\n";
    created(
        &plane,
        "admin",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: csr-writer\nrules:\n\
         - {apiGroups: [certificates.k8s.io], resources: [certificatesigningrequests, certificatesigningrequests/approval], verbs: [create, get, list, update, patch]}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: csr-writer\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: csr-writer}\nsubjects:\n- {kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}\n",
    );
    created(
        &plane,
        "bob",
        &csr_yaml(
            "bob",
            &pem,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
            forged,
        ),
    );
    assert_eq!(field(&plane, "bob", ".spec.username"), "bob");
    assert_eq!(
        field(&plane, "bob", ".spec.groups"),
        "[\"system:authenticated\"]"
    );

    // Nothing of these is approved on its own.
    std::thread::sleep(Duration::from_secs(3));
    for name in ["n2-client", "n1-elsewhere", "bob"] {
        assert_eq!(
            field(&plane, name, ".status.conditions"),
            "",
            "{name} was decided"
        );
    }

    // Approving needs `approve` on the signer, not only the approval subresource.
    let refused = plane.kubectl_as("bob", &["certificate", "approve", "bob"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""
        ),
        "{stderr}"
    );
    plane.ok(&["certificate", "approve", "bob"]);
    let cert = issued(&plane, &log, "bob");
    assert_eq!(whoami(&plane, &cert, &bob_key, "bob"), "bob");

    // A denied request is never signed.
    plane.ok(&["certificate", "deny", "n2-client"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(field(&plane, "n2-client", ".status.certificate"), "");
    let listed = plane.ok(&["get", "csr"]);
    assert!(
        listed.contains("Approved,Issued") && listed.contains("Denied"),
        "{listed}"
    );

    // Garbage is refused, naming the field.
    let bad = apply_as(
        &plane,
        "admin",
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: bad\n\
         spec:\n  request: aGVsbG8=\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth]\n",
    );
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("spec.request")
            && stderr.contains("PEM block type must be CERTIFICATE REQUEST"),
        "{stderr}"
    );
}
