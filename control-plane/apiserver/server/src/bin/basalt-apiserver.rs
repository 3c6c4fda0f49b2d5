//! `basalt-apiserver`: the Kubernetes API server over an in-process store member.
//!
//! Flags follow kube-apiserver's names where they mean the same thing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use apiserver::ApiServer;
use apiserver::auth::Access;
use apiserver_authn::TokenIssuer;
use apiserver_registry::store::WriteOptions;
use apiserver_registry::{Registry, builtin};
use apiserver_storage::LocalBackend;
use clap::Parser;
use serde_json::json;
use store_raft::{NodeConfig, StoreNode};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "basalt-apiserver", about = "Basalt's Kubernetes API server")]
struct Args {
    /// Where the store keeps its log and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: std::net::IpAddr,
    /// Port to serve HTTPS on.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// The serving certificate (PEM, chain allowed).
    #[arg(long, requires_all = ["tls_private_key_file", "client_ca_file"])]
    tls_cert_file: Option<PathBuf>,
    /// The serving certificate's key (PEM).
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// CA whose client certificates authenticate users (CN user, O groups).
    #[arg(long, requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,
    /// Without the TLS flags: where to create (once) a cluster CA, the serving certificate and
    /// an administrator's kubeconfig, `admin.kubeconfig`.
    #[arg(long, conflicts_with = "tls_cert_file")]
    pki_dir: Option<PathBuf>,
    /// The PKCS#8 P-256 private key (PEM) that signs service-account tokens; every server of
    /// a cluster needs the same one. Created in `--pki-dir` when that is used.
    #[arg(long, required_unless_present = "pki_dir")]
    service_account_signing_key_file: Option<PathBuf>,
    /// The issuer (`iss`) of service-account tokens.
    #[arg(long, default_value = apiserver_authn::serviceaccount::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// The audiences tokens must name to authenticate to the API (the issuer when empty).
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// The store member's peer address (loopback for a single server).
    #[arg(long, default_value = "127.0.0.1:2380")]
    store_peer_address: SocketAddr,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// The namespaces every cluster has.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let addr = SocketAddr::new(args.bind_address, args.secure_port);
    let (tls, pki_signing_key) = serving_tls(&args, addr)?;
    let signing_key = args
        .service_account_signing_key_file
        .clone()
        .or(pki_signing_key)
        .context("--service-account-signing-key-file is required")?;
    let key_pem = std::fs::read_to_string(&signing_key)
        .with_context(|| format!("reading {}", signing_key.display()))?;
    let issuer = TokenIssuer::from_pem(&key_pem, &args.service_account_issuer, &args.api_audiences)
        .with_context(|| format!("loading {}", signing_key.display()))?;
    let peer_url = format!("http://{}", args.store_peer_address);
    let store = StoreNode::start(NodeConfig::new(
        "apiserver",
        args.data_dir.clone(),
        args.store_peer_address,
        &peer_url,
    ))
    .await
    .context("starting the store member")?;
    let catalog = Arc::new(builtin::catalog());
    let registry = Registry::new(Arc::new(LocalBackend::new(store.clone())), catalog);
    create_system_namespaces(&registry).await?;
    let access = Access::start(&registry, Arc::new(issuer)).await?;

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let server = Arc::new(ApiServer::new(registry, access, addr.to_string()));
    tracing::info!(%addr, "serving the Kubernetes API");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = server.serve(listener, tls) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        reason = store.fatal() => {
            tracing::error!("the store stopped on a fatal error: {reason}");
            std::process::exit(2);
        }
    }
    store.shutdown().await;
    Ok(())
}

/// The TLS configuration from the given files, or from a PKI created in `--pki-dir` (with the
/// service-account signing key it holds).
fn serving_tls(args: &Args, addr: SocketAddr) -> Result<(rustls::ServerConfig, Option<PathBuf>)> {
    let (cert, key, client_ca, signing_key) = match (
        &args.tls_cert_file,
        &args.tls_private_key_file,
        &args.client_ca_file,
        &args.pki_dir,
    ) {
        (Some(cert), Some(key), Some(ca), _) => (cert.clone(), key.clone(), ca.clone(), None),
        (None, _, _, Some(dir)) => {
            let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
            let pki = apiserver::pki::ensure(
                dir,
                &[args.bind_address, loopback],
                &format!("https://{addr}"),
            )
            .context("creating the cluster PKI")?;
            tracing::info!(kubeconfig = %pki.admin_kubeconfig.display(), "administrator kubeconfig");
            (pki.cert, pki.key, pki.ca, Some(pki.service_account_key))
        }
        _ => anyhow::bail!(
            "give --tls-cert-file, --tls-private-key-file and --client-ca-file, or --pki-dir"
        ),
    };
    let tls = apiserver::tls::server_config(&cert, &key, &client_ca).context("serving TLS")?;
    Ok((tls, signing_key))
}

async fn create_system_namespaces(registry: &Registry) -> Result<()> {
    let Some(namespaces) = registry.catalog().get("", "v1", "namespaces") else {
        return Ok(());
    };
    for name in SYSTEM_NAMESPACES {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let body = body.as_object().cloned().unwrap_or_default();
        match registry
            .create(&namespaces, None, body, &WriteOptions::default())
            .await
        {
            Ok(_) => tracing::info!(namespace = name, "created"),
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(anyhow::anyhow!("creating namespace {name}: {e}")),
        }
    }
    Ok(())
}
