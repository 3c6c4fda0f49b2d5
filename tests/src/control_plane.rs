//! A Basalt control plane for tests: `basalt-apiserver` on a loopback address of its own, a
//! throwaway CA with users in their own certificates, and a kubeconfig for the real kubectl.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};

use crate::component::Component;
use crate::process::binary;

/// A user of the test cluster, as its client certificate names it.
pub struct TestUser {
    /// The kubeconfig context (and user entry) that uses it.
    pub context: &'static str,
    /// The user name (certificate CN).
    pub name: &'static str,
    /// Its groups (certificate O).
    pub groups: &'static [&'static str],
}

/// The cluster administrator (in `system:masters`).
pub const ADMIN: TestUser = TestUser {
    context: "admin",
    name: "admin",
    groups: &["system:masters"],
};
/// A user no policy grants anything at first.
pub const BOB: TestUser = TestUser {
    context: "bob",
    name: "bob",
    groups: &[],
};
/// A user in the group `dev-team`.
pub const ALICE: TestUser = TestUser {
    context: "alice",
    name: "alice",
    groups: &["dev-team"],
};
/// The kubelet of node `n1`.
pub const KUBELET: TestUser = TestUser {
    context: "kubelet",
    name: "system:node:n1",
    groups: &["system:nodes"],
};

/// The controller manager (bound to `system:kube-controller-manager`).
pub const CONTROLLER_MANAGER: TestUser = TestUser {
    context: "controller-manager",
    name: "system:kube-controller-manager",
    groups: &[],
};

/// The scheduler (bound to `system:kube-scheduler`).
pub const SCHEDULER: TestUser = TestUser {
    context: "scheduler",
    name: "system:kube-scheduler",
    groups: &[],
};

/// The common name of the API server's client certificate towards kubelets.
pub const KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

/// A running API server; killed and its directory removed on drop.
pub struct ControlPlane {
    dir: PathBuf,
    child: Child,
    /// The flags every start of the server gets.
    base_args: Vec<std::ffi::OsString>,
    /// The HTTPS address.
    pub address: String,
}

fn write(dir: &Path, name: &str, pem: String) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("writing pem");
    path
}

impl ControlPlane {
    /// Starts an API server with a fresh store and waits until it serves.
    pub fn start() -> ControlPlane {
        ControlPlane::start_with(&[])
    }

    /// Like [`ControlPlane::start`], with more flags for the server.
    pub fn start_with(extra_args: &[&str]) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("basalt-apiserver-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let mut rng = rand::rng();
        let ip = Ipv4Addr::new(
            127,
            rng.random_range(1..=254u8),
            rng.random_range(0..=255u8),
            1,
        );
        let address = format!("{ip}:6443");

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "basalt test cluster ca");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca");
        let ca_path = write(&dir, "ca.pem", ca.pem());
        write(&dir, "ca-key.pem", ca.key().serialize_pem());

        let mut server =
            CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        server
            .distinguished_name
            .push(DnType::CommonName, "basalt-apiserver");
        server
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(ip)));
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = server.signed_by(&server_key, &ca).expect("server cert");
        let cert = write(&dir, "apiserver.pem", server_cert.pem());
        let key = write(&dir, "apiserver-key.pem", server_key.serialize_pem());

        let mut users = String::new();
        let mut contexts = String::new();
        for user in [
            &ADMIN,
            &BOB,
            &ALICE,
            &KUBELET,
            &CONTROLLER_MANAGER,
            &SCHEDULER,
        ] {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("user params");
            params
                .distinguished_name
                .push(DnType::CommonName, user.name);
            for group in user.groups {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, *group);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let user_key = KeyPair::generate().expect("user key");
            let user_cert = params.signed_by(&user_key, &ca).expect("user cert");
            let cert = write(&dir, &format!("{}.pem", user.context), user_cert.pem());
            let key = write(
                &dir,
                &format!("{}-key.pem", user.context),
                user_key.serialize_pem(),
            );
            users.push_str(&format!(
                "- name: {0}\n  user: {{client-certificate: {1}, client-key: {2}}}\n",
                user.context,
                cert.display(),
                key.display()
            ));
            contexts.push_str(&format!(
                "- name: {0}\n  context: {{cluster: basalt, user: {0}}}\n",
                user.context
            ));
        }
        // A token the server does not know: kubectl would prompt for a password without one.
        users.push_str("- name: anonymous\n  user: {token: not-a-valid-token}\n");
        contexts.push_str("- name: anonymous\n  context: {cluster: basalt, user: anonymous}\n");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: basalt\n  cluster: {{server: \"https://{address}\", certificate-authority: {}}}\nusers:\n{users}contexts:\n{contexts}current-context: admin\n",
            ca_path.display()
        );
        std::fs::write(dir.join("kubeconfig"), kubeconfig).expect("kubeconfig");

        let signing_key = write(
            &dir,
            "service-account-key.pem",
            KeyPair::generate()
                .expect("service-account key")
                .serialize_pem(),
        );
        // The API server's identity towards kubelets (for `kubectl logs`).
        let mut kubelet_client =
            CertificateParams::new(Vec::<String>::new()).expect("kubelet client params");
        kubelet_client
            .distinguished_name
            .push(DnType::CommonName, KUBELET_CLIENT);
        kubelet_client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let kubelet_client_key = KeyPair::generate().expect("kubelet client key");
        let kubelet_client_cert = kubelet_client
            .signed_by(&kubelet_client_key, &ca)
            .expect("kubelet client cert");
        let kubelet_client_cert = write(&dir, "kubelet-client.pem", kubelet_client_cert.pem());
        let kubelet_client_key = write(
            &dir,
            "kubelet-client-key.pem",
            kubelet_client_key.serialize_pem(),
        );
        let mut command = Command::new(binary("basalt-apiserver"));
        command
            .arg("--kubelet-client-certificate")
            .arg(&kubelet_client_cert)
            .arg("--kubelet-client-key")
            .arg(&kubelet_client_key)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--bind-address", &ip.to_string(), "--secure-port", "6443"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-private-key-file")
            .arg(&key)
            .arg("--client-ca-file")
            .arg(&ca_path)
            .arg("--service-account-signing-key-file")
            .arg(&signing_key)
            .args(["--store-peer-address", &format!("{ip}:2380")])
            .stdout(Stdio::null());
        let base_args = command.get_args().map(|a| a.to_os_string()).collect();
        command.args(extra_args);
        let child = spawn(&mut command, &dir);
        let mut plane = ControlPlane {
            dir,
            child,
            base_args,
            address,
        };
        plane.wait_ready();
        plane
    }

    /// Stops the server and starts it again on the same store, with `extra_args` replacing
    /// the flags it was given at start; returns whether it became ready.
    pub fn restart_with(&mut self, extra_args: &[&str]) -> bool {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut command = Command::new(binary("basalt-apiserver"));
        command
            .args(&self.base_args)
            .args(extra_args)
            .stdout(Stdio::null());
        self.child = spawn(&mut command, &self.dir);
        self.ready_within(Duration::from_secs(30))
    }

    fn wait_ready(&mut self) {
        if !self.ready_within(Duration::from_secs(30)) {
            panic!("the API server did not become ready; log:\n{}", self.log());
        }
    }

    /// Whether the server serves within `timeout` (false at once if it exited).
    fn ready_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            // The system namespaces exist once the server has finished starting.
            if self
                .kubectl(&["get", "namespace", "kube-system", "-o", "name"])
                .status
                .success()
            {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The kubeconfig file: a context per [`TestUser`] (`admin`, `bob`, `alice`, `kubelet`)
    /// and `anonymous`, with a token the server does not know.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A kubeconfig whose current context is `context`, for a component that takes only
    /// a kubeconfig.
    pub fn kubeconfig_for(&self, context: &str) -> PathBuf {
        let text = std::fs::read_to_string(self.kubeconfig()).expect("reading kubeconfig");
        let text = text.replace(
            "current-context: admin\n",
            &format!("current-context: {context}\n"),
        );
        let path = self.dir.join(format!("{context}.kubeconfig"));
        std::fs::write(&path, text).expect("writing kubeconfig");
        path
    }

    /// The cluster CA (PEM file).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a serving certificate for `ips` from the cluster CA, written as `NAME.pem` and
    /// `NAME-key.pem` in the server's directory; returns both paths.
    pub fn issue_serving_certificate(&self, name: &str, ips: &[Ipv4Addr]) -> (PathBuf, PathBuf) {
        let ca_key = std::fs::read_to_string(self.dir.join("ca-key.pem")).expect("reading ca key");
        let ca_pem = std::fs::read_to_string(self.ca_file()).expect("reading ca");
        let ca =
            rcgen::Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key).expect("ca key"))
                .expect("ca");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("serving params");
        params.distinguished_name.push(DnType::CommonName, name);
        for ip in ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(*ip)));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("serving key");
        let cert = params.signed_by(&key, &ca).expect("serving cert");
        (
            write(&self.dir, &format!("{name}.pem"), cert.pem()),
            write(&self.dir, &format!("{name}-key.pem"), key.serialize_pem()),
        )
    }

    /// Starts `basalt-controller-manager` against this server as
    /// `system:kube-controller-manager`, logging to `log_name` in the server's directory.
    pub fn start_controller_manager(&self, log_name: &str, extra_args: &[&str]) -> Component {
        let mut command = Command::new(binary("basalt-controller-manager"));
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig_for(CONTROLLER_MANAGER.context))
            .arg("--root-ca-file")
            .arg(self.ca_file())
            .arg("--cluster-signing-cert-file")
            .arg(self.ca_file())
            .arg("--cluster-signing-key-file")
            .arg(self.dir.join("ca-key.pem"))
            .args(extra_args);
        Component::spawn(command, self.dir.join(log_name))
    }

    /// Starts `basalt-scheduler` against this server as `system:kube-scheduler`, logging to
    /// `log_name` in the server's directory.
    pub fn start_scheduler(&self, log_name: &str, extra_args: &[&str]) -> Component {
        let mut command = Command::new(binary("basalt-scheduler"));
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig_for(SCHEDULER.context))
            .args(extra_args);
        Component::spawn(command, self.dir.join(log_name))
    }

    /// Writes an executable script into the control plane's directory and returns its path.
    pub fn write_script(&self, name: &str, contents: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("writing script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        path
    }

    /// Where the server's store keeps its files.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default()
    }

    /// A kubectl command for `context`.
    pub fn kubectl_command(&self, context: &str) -> Command {
        let mut command = Command::new("kubectl");
        command
            .env("KUBECONFIG", self.kubeconfig())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(["--context", context, "--request-timeout", "20s"]);
        command
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs kubectl in `context`.
    pub fn kubectl_as(&self, context: &str, args: &[&str]) -> Output {
        self.kubectl_command(context)
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// Runs kubectl as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command("admin")
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// Runs kubectl as the admin with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_command("admin")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        child
            .stdin
            .take()
            .expect("kubectl stdin")
            .write_all(input.as_bytes())
            .expect("writing kubectl stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// `kubectl apply -f -` of `yaml` as the admin, failing the test if it fails.
    pub fn apply(&self, yaml: &str) -> String {
        let output = self.kubectl_stdin(&["apply", "-f", "-"], yaml);
        assert!(
            output.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The holder of the Lease `name` in `kube-system` (empty when there is none).
    pub fn lease_holder(&self, name: &str) -> String {
        let output = self.kubectl(&[
            "get",
            "lease",
            name,
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs kubectl as the admin and returns its stdout, failing the test if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}\n--- server log tail ---\n{}",
            String::from_utf8_lossy(&output.stderr),
            tail(&self.log(), 20)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// Starts the server, appending its log to `apiserver.log` in `dir`.
fn spawn(command: &mut Command, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("apiserver.log"))
        .expect("log file");
    command
        .stderr(log)
        .spawn()
        .expect("starting basalt-apiserver")
}

/// The last `lines` lines of `text` (a log).
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("BASALT_KEEP_CLUSTERS").is_some() {
            eprintln!(
                "keeping the control plane's directory {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
