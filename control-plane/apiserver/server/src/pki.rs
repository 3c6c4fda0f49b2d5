//! A cluster PKI for a server started without certificates: a CA, the serving certificate,
//! an administrator's client certificate with a kubeconfig, the client certificate the server
//! presents to kubelets, and the service-account signing key, written once and reused (as k3s
//! does with its own). Keys are written readable by the owner only.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SigningKey,
};

/// The user the API server's kubelet client certificate names (kubeadm's name, which kubelets
/// let through by default).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// Where the generated files are.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA certificate (also the client CA).
    pub ca: PathBuf,
    /// The CA's key, for the controller manager's CSR signer (owner-readable only).
    pub ca_key: PathBuf,
    /// The serving certificate.
    pub cert: PathBuf,
    /// The serving key.
    pub key: PathBuf,
    /// A kubeconfig for the administrator (`system:masters`).
    pub admin_kubeconfig: PathBuf,
    /// A kubeconfig for the controller manager (`system:kube-controller-manager`).
    pub controller_manager_kubeconfig: PathBuf,
    /// The service-account token signing key (PKCS#8 P-256).
    pub service_account_key: PathBuf,
    /// The client certificate the server presents to kubelets ([`KUBELET_CLIENT_USER`]).
    pub kubelet_client_cert: PathBuf,
    /// Its key.
    pub kubelet_client_key: PathBuf,
}

/// Why the PKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Writing or reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Generating a key or certificate failed.
    #[error("generating certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))
}

/// Creates the PKI in `dir` unless it is already there; the serving certificate is valid for
/// `addresses` and `localhost`. `server` is the URL clients use.
pub fn ensure(dir: &Path, addresses: &[IpAddr], server: &str) -> Result<Pki, PkiError> {
    let pki = Pki {
        ca: dir.join("ca.pem"),
        ca_key: dir.join("ca-key.pem"),
        cert: dir.join("apiserver.pem"),
        key: dir.join("apiserver-key.pem"),
        admin_kubeconfig: dir.join("admin.kubeconfig"),
        controller_manager_kubeconfig: dir.join("controller-manager.kubeconfig"),
        service_account_key: dir.join("service-account-key.pem"),
        kubelet_client_cert: dir.join("kubelet-client.pem"),
        kubelet_client_key: dir.join("kubelet-client-key.pem"),
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    // Older PKI directories predate the signing key; adding one invalidates no certificate.
    if !pki.service_account_key.exists() {
        write(
            &pki.service_account_key,
            &KeyPair::generate()?.serialize_pem(),
            true,
        )?;
    }
    let complete = [
        &pki.ca,
        &pki.ca_key,
        &pki.cert,
        &pki.key,
        &pki.admin_kubeconfig,
        &pki.controller_manager_kubeconfig,
    ];
    // A missing piece means a new PKI altogether.
    if complete.iter().all(|path| path.exists()) {
        // Older PKI directories predate the kubelet client certificate; the CA signs one.
        if !(pki.kubelet_client_cert.exists() && pki.kubelet_client_key.exists()) {
            let ca_pem = fs::read_to_string(&pki.ca).map_err(io(&pki.ca))?;
            let ca_key_pem = fs::read_to_string(&pki.ca_key).map_err(io(&pki.ca_key))?;
            let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key_pem)?)?;
            kubelet_client(&pki, &issuer)?;
        }
        return Ok(pki);
    }

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "basalt-ca");
    let issuer = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let mut serving = CertificateParams::new(vec![
        "localhost".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "basalt-apiserver");
    serving
        .subject_alt_names
        .extend(addresses.iter().map(|ip| SanType::IpAddress(*ip)));
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate()?;
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    write(&pki.ca, &issuer.pem(), false)?;
    write(&pki.ca_key, &issuer.key().serialize_pem(), true)?;
    write(&pki.cert, &serving_cert.pem(), false)?;
    write(&pki.key, &serving_key.serialize_pem(), true)?;
    let client = |user: &str, groups: &[&str], kubeconfig: &Path| -> Result<(), PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let stem = kubeconfig.with_extension("");
        let cert_path = stem.with_extension("pem");
        let key_path = PathBuf::from(format!("{}-key.pem", stem.display()));
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: basalt\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: basalt\n  context: {{cluster: basalt, user: {user}}}\ncurrent-context: basalt\n",
            pki.ca.display(),
            cert_path.display(),
            key_path.display()
        );
        write(kubeconfig, &text, true)
    };
    client("admin", &["system:masters"], &pki.admin_kubeconfig)?;
    client(
        "system:kube-controller-manager",
        &[],
        &pki.controller_manager_kubeconfig,
    )?;
    kubelet_client(&pki, &issuer)?;
    Ok(pki)
}

/// Writes the kubelet client certificate and key, signed by `issuer`.
fn kubelet_client(pki: &Pki, issuer: &Issuer<'_, impl SigningKey>) -> Result<(), PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, KUBELET_CLIENT_USER);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write(&pki.kubelet_client_key, &key.serialize_pem(), true)?;
    write(&pki.kubelet_client_cert, &cert.pem(), false)
}
