//! Throwaway certificate authorities for tests of mutual TLS: a CA, one certificate for the
//! members of a cluster (valid for every address of its subnet, as server and as client), and
//! a client certificate.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};

/// PEM files of one test PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The members' certificate and key.
    pub member_cert: PathBuf,
    /// See `member_cert`.
    pub member_key: PathBuf,
    /// A client's certificate and key.
    pub client_cert: PathBuf,
    /// See `client_cert`.
    pub client_key: PathBuf,
}

impl Pki {
    /// Issues a fresh CA and certificates into `dir`, the members' valid for `ips`.
    pub fn issue(dir: &Path, ips: &[Ipv4Addr]) -> Pki {
        std::fs::create_dir_all(dir).expect("pki directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "basalt test ca");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca");

        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("writing pem");
            path
        };
        let mut member =
            CertificateParams::new(vec!["localhost".to_string()]).expect("member params");
        member
            .distinguished_name
            .push(DnType::CommonName, "basalt member");
        member
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(IpAddr::V4(*ip))));
        member.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let member_key = KeyPair::generate().expect("member key");
        let member_cert = member.signed_by(&member_key, &ca).expect("member cert");

        let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
        client
            .distinguished_name
            .push(DnType::CommonName, "basalt test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().expect("client key");
        let client_cert = client.signed_by(&client_key, &ca).expect("client cert");

        Pki {
            ca: write("ca.pem", ca.pem()),
            member_cert: write("member.pem", member_cert.pem()),
            member_key: write("member-key.pem", member_key.serialize_pem()),
            client_cert: write("client.pem", client_cert.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
        }
    }

    /// The flags that make a member use this PKI for both its client and peer APIs, with
    /// client certificates required on both.
    pub fn member_flags(&self) -> Vec<String> {
        let p = |path: &PathBuf| path.to_string_lossy().into_owned();
        vec![
            "--cert-file".into(),
            p(&self.member_cert),
            "--key-file".into(),
            p(&self.member_key),
            "--trusted-ca-file".into(),
            p(&self.ca),
            "--client-cert-auth".into(),
            "--peer-cert-file".into(),
            p(&self.member_cert),
            "--peer-key-file".into(),
            p(&self.member_key),
            "--peer-trusted-ca-file".into(),
            p(&self.ca),
        ]
    }

    /// etcdctl's flags for this PKI's client identity.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        let p = |path: &PathBuf| path.to_string_lossy().into_owned();
        vec![
            format!("--cacert={}", p(&self.ca)),
            format!("--cert={}", p(&self.client_cert)),
            format!("--key={}", p(&self.client_key)),
        ]
    }

    /// etcd-client's TLS options for this PKI's client identity.
    pub fn client_tls(&self) -> etcd_client::TlsOptions {
        let read = |path: &PathBuf| std::fs::read(path).expect("reading pem");
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&self.ca)))
            .identity(etcd_client::Identity::from_pem(
                read(&self.client_cert),
                read(&self.client_key),
            ))
    }
}
