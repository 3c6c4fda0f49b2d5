//! A cluster PKI for a server started without certificates: a CA, the serving certificate,
//! an administrator's client certificate with a kubeconfig, and the service-account signing
//! key, written once and reused (as k3s does with its own). Keys are written readable by the
//! owner only.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// Where the generated files are.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA certificate (also the client CA).
    pub ca: PathBuf,
    /// The serving certificate.
    pub cert: PathBuf,
    /// The serving key.
    pub key: PathBuf,
    /// A kubeconfig for the administrator (`system:masters`).
    pub admin_kubeconfig: PathBuf,
    /// The service-account token signing key (PKCS#8 P-256).
    pub service_account_key: PathBuf,
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
        cert: dir.join("apiserver.pem"),
        key: dir.join("apiserver-key.pem"),
        admin_kubeconfig: dir.join("admin.kubeconfig"),
        service_account_key: dir.join("service-account-key.pem"),
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
    if pki.ca.exists() && pki.cert.exists() && pki.key.exists() && pki.admin_kubeconfig.exists() {
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

    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin.distinguished_name.push(DnType::CommonName, "admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_key = KeyPair::generate()?;
    let admin_cert = admin.signed_by(&admin_key, &issuer)?;
    let admin_cert_path = dir.join("admin.pem");
    let admin_key_path = dir.join("admin-key.pem");

    write(&pki.ca, &issuer.pem(), false)?;
    write(&pki.cert, &serving_cert.pem(), false)?;
    write(&pki.key, &serving_key.serialize_pem(), true)?;
    write(&admin_cert_path, &admin_cert.pem(), false)?;
    write(&admin_key_path, &admin_key.serialize_pem(), true)?;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: basalt\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: basalt\n  context: {{cluster: basalt, user: admin}}\ncurrent-context: basalt\n",
        pki.ca.display(),
        admin_cert_path.display(),
        admin_key_path.display()
    );
    write(&pki.admin_kubeconfig, &kubeconfig, true)?;
    Ok(pki)
}
