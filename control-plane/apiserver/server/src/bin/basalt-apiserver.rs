//! `basalt-apiserver`: the Kubernetes API server over an in-process store member.
//!
//! Flags follow kube-apiserver's names where they mean the same thing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use apiserver::auth::Access;
use apiserver::{ApiServer, system};
use apiserver_authn::TokenIssuer;
use apiserver_registry::allocation::ServiceAllocator;
use apiserver_registry::{Registry, builtin};
use apiserver_storage::encryption::{Encrypted, Encryption};
use apiserver_storage::{Backend, LocalBackend};
use clap::Parser;
use store_raft::{NodeConfig, StoreNode};
use tracing_subscriber::EnvFilter;

// The server allocates many small JSON maps from many threads; glibc's allocator spent a
// fifth of the CPU of the API server benchmark and grew arenas per thread (see
// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// An `EncryptionConfiguration` (apiserver.config.k8s.io/v1) naming the resources to
    /// encrypt at rest and their keys; without it nothing is encrypted.
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// The range Service cluster IPs come from; its first address is the `kubernetes` Service's.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: ipnet::Ipv4Net,
    /// The range of node ports, `first-last`.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// The address other members of the cluster reach this server at (the `kubernetes`
    /// Service's endpoint); the bind address when that is not a wildcard.
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// The store member's peer address (loopback for a single server).
    #[arg(long, default_value = "127.0.0.1:2380")]
    store_peer_address: SocketAddr,
    /// How long new pods tolerate their node being not ready, unless they say.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(0..))]
    default_not_ready_toleration_seconds: i64,
    /// How long new pods tolerate their node being unreachable, unless they say.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(0..))]
    default_unreachable_toleration_seconds: i64,
    /// The client certificate (PEM) the API server presents to kubelets for `kubectl logs`;
    /// kubelets let its common name through. With `--pki-dir`, one made there is the default.
    #[arg(long, requires = "kubelet_client_key")]
    kubelet_client_certificate: Option<PathBuf>,
    /// The key (PEM) of `--kubelet-client-certificate`.
    #[arg(long, requires = "kubelet_client_certificate")]
    kubelet_client_key: Option<PathBuf>,
    /// The CA (PEM) kubelets' serving certificates must chain to (default: the cluster CA,
    /// `--client-ca-file` or the one in `--pki-dir`).
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, default_value = "info")]
    log_level: String,
}

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
    let encryption = args
        .encryption_provider_config
        .as_ref()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            tracing::info!(config = %path.display(), "encrypting resources at rest");
            Encryption::from_yaml(&text).with_context(|| format!("loading {}", path.display()))
        })
        .transpose()?;
    let Serving {
        tls,
        pki_signing_key,
        client_ca,
        pki_kubelet_client,
    } = serving_tls(&args, addr)?;
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
    apiextensions::register(&catalog);
    let mut backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(store.clone()));
    if let Some(encryption) = encryption {
        backend = Arc::new(Encrypted::new(backend, encryption));
    }
    let allocator = Arc::new(ServiceAllocator::new(
        args.service_cluster_ip_range,
        args.service_node_port_range.clone(),
    ));
    let registry = Registry::new(backend, catalog).with_service_allocator(allocator.clone());
    system::priority_classes(&registry)
        .await
        .context("creating the system PriorityClasses")?;
    system::namespaces(&registry)
        .await
        .context("creating the system namespaces")?;
    let advertise = args
        .advertise_address
        .unwrap_or(args.bind_address)
        .to_canonical();
    anyhow::ensure!(
        !advertise.is_unspecified(),
        "--advertise-address is required when --bind-address is a wildcard"
    );
    system::kubernetes_service(
        &registry,
        allocator.kubernetes_ip().into(),
        advertise,
        args.secure_port,
    )
    .await
    .context("creating the kubernetes Service")?;
    tokio::spawn(system::repair_service_allocations(
        registry.clone(),
        std::time::Duration::from_secs(180),
    ));
    let access = Access::start(&registry, Arc::new(issuer)).await?;
    let definitions = apiextensions::Definitions::start(registry.clone())
        .await
        .context("serving the CustomResourceDefinitions")?;

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let mut server = ApiServer::new(registry, access, definitions, addr.to_string())
        .with_default_tolerations(apiserver::tolerations::DefaultTolerations {
            not_ready_seconds: args.default_not_ready_toleration_seconds,
            unreachable_seconds: args.default_unreachable_toleration_seconds,
        });
    let kubelet_client = match (&args.kubelet_client_certificate, &args.kubelet_client_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        _ => pki_kubelet_client,
    };
    if let Some((cert, key)) = kubelet_client {
        let ca = args
            .kubelet_certificate_authority
            .clone()
            .unwrap_or_else(|| client_ca.clone());
        let client = apiserver::kubelet_proxy::KubeletClient::new(&cert, &key, &ca)
            .context("the kubelet client (--kubelet-client-certificate, --kubelet-client-key, --kubelet-certificate-authority)")?;
        server = server.with_kubelet_client(client);
    } else {
        tracing::warn!("no --kubelet-client-certificate: kubectl logs will be refused");
    }
    let server = Arc::new(server);
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

/// What the server serves with, from the given files or a PKI in `--pki-dir`.
struct Serving {
    tls: rustls::ServerConfig,
    /// The service-account signing key in `--pki-dir`.
    pki_signing_key: Option<PathBuf>,
    /// The cluster CA (`--client-ca-file` or the one in `--pki-dir`).
    client_ca: PathBuf,
    /// The kubelet client certificate and key in `--pki-dir`.
    pki_kubelet_client: Option<(PathBuf, PathBuf)>,
}

/// The TLS configuration from the given files, or from a PKI created in `--pki-dir` (with the
/// service-account signing key and kubelet client certificate it holds).
fn serving_tls(args: &Args, addr: SocketAddr) -> Result<Serving> {
    let (cert, key, client_ca, signing_key, kubelet_client) = match (
        &args.tls_cert_file,
        &args.tls_private_key_file,
        &args.client_ca_file,
        &args.pki_dir,
    ) {
        (Some(cert), Some(key), Some(ca), _) => (cert.clone(), key.clone(), ca.clone(), None, None),
        (None, _, _, Some(dir)) => {
            let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
            let pki = apiserver::pki::ensure(
                dir,
                &[args.bind_address, loopback],
                &format!("https://{addr}"),
            )
            .context("creating the cluster PKI")?;
            tracing::info!(kubeconfig = %pki.admin_kubeconfig.display(), "administrator kubeconfig");
            (
                pki.cert,
                pki.key,
                pki.ca,
                Some(pki.service_account_key),
                Some((pki.kubelet_client_cert, pki.kubelet_client_key)),
            )
        }
        _ => anyhow::bail!(
            "give --tls-cert-file, --tls-private-key-file and --client-ca-file, or --pki-dir"
        ),
    };
    let tls = apiserver::tls::server_config(&cert, &key, &client_ca).context("serving TLS")?;
    Ok(Serving {
        tls,
        pki_signing_key: signing_key,
        client_ca,
        pki_kubelet_client: kubelet_client,
    })
}

fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a range like 30000-32767"))?;
    let first: u16 = first
        .trim()
        .parse()
        .map_err(|e| format!("{first:?}: {e}"))?;
    let last: u16 = last.trim().parse().map_err(|e| format!("{last:?}: {e}"))?;
    if first == 0 || first > last {
        return Err(format!("{text:?} is empty or starts at 0"));
    }
    Ok(first..=last)
}
