//! Mutual TLS on both of the store's APIs: members authenticate each other on the peer port
//! and clients on the client port; a client or would-be peer without a certificate from the
//! cluster's CA gets nothing, not even a plain-text error page.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on failure by design

use std::time::Duration;

use basalt_tests::etcdctl::etcdctl;
use basalt_tests::pki::Pki;
use basalt_tests::{Cluster, ClusterOptions};
use store_proto::peer::Frame;
use store_proto::peer::raft_peer_client::RaftPeerClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn peer_call(url: &str, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let mut endpoint = Channel::from_shared(url.to_string()).map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = RaftPeerClient::new(channel);
    // A decodable-or-not frame does not matter: the handshake must fail before it is read.
    client
        .forward(Frame::default())
        .await
        .map(drop)
        .map_err(|status| format!("{}: {}", status.code(), status.message()))
}

fn tls_with(pki: &Pki, own_identity: bool) -> ClientTlsConfig {
    let read = |p: &std::path::PathBuf| std::fs::read(p).expect("pem");
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&pki.ca)));
    if own_identity {
        tls = tls.identity(Identity::from_pem(
            read(&pki.member_cert),
            read(&pki.member_key),
        ));
    }
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_and_clients_must_present_certificates_from_the_cluster_ca() {
    let mut cluster = Cluster::start(ClusterOptions::basalt(3).with_tls()).await;
    let pki = cluster.pki.clone().expect("tls cluster");

    // Clients with the cluster's client certificate work, also across a failover (which
    // needs the members' mutual TLS on the peer port).
    let mut client = cluster.client().await;
    client
        .put("secret", "kept", None)
        .await
        .expect("put over mTLS");
    let leader = cluster.leader().await.expect("leader");
    cluster.kill(leader);
    let put = cluster.etcdctl(&["put", "after-failover", "yes"]);
    assert!(put.ok, "{put:?}");
    cluster.restart(leader);
    cluster.wait_ready(Duration::from_secs(30)).await;
    let got = cluster
        .etcdctl(&["get", "secret", "--print-value-only"])
        .expect_ok("get over mTLS");
    assert_eq!(got.trim(), "kept");

    let endpoints = cluster.endpoints();
    // No client certificate: the handshake is refused.
    let ca = format!("--cacert={}", pki.ca.display());
    let no_cert = etcdctl(
        &endpoints,
        &[
            &ca,
            "--dial-timeout=2s",
            "--command-timeout=2s",
            "get",
            "secret",
        ],
    );
    assert!(
        !no_cert.ok,
        "a client without a certificate was served: {no_cert:?}"
    );
    // A certificate from another CA: refused too.
    let stranger = Pki::issue(&cluster.dir().join("stranger"), &[]);
    let mut args = stranger.etcdctl_flags();
    args[0] = ca.clone(); // trust the real server, present the stranger's identity
    args.extend(["--dial-timeout=2s", "--command-timeout=2s", "get", "secret"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let foreign = etcdctl(&endpoints, &args);
    assert!(
        !foreign.ok,
        "a client with a foreign certificate was served: {foreign:?}"
    );
    // Plain text to a TLS port: refused.
    let plain = etcdctl(
        &endpoints,
        &["--dial-timeout=2s", "--command-timeout=2s", "get", "secret"],
    );
    assert!(!plain.ok, "a plain-text client was served: {plain:?}");

    // The peer port: only members (certificates from the cluster CA) get in.
    let peer = cluster.members[0].spec.peer_url();
    let stranger_peer = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).expect("ca")))
        .identity(Identity::from_pem(
            std::fs::read(&stranger.client_cert).expect("cert"),
            std::fs::read(&stranger.client_key).expect("key"),
        ));
    for (what, tls) in [
        ("no certificate", Some(tls_with(&pki, false))),
        ("a foreign certificate", Some(stranger_peer)),
    ] {
        let result = peer_call(&peer, tls).await;
        assert!(result.is_err(), "a peer with {what} was served");
    }
    let plain_peer = peer_call(&peer.replace("https://", "http://"), None).await;
    assert!(plain_peer.is_err(), "a plain-text peer was served");
    // A genuine member identity is accepted (the garbage frame is then refused as garbage).
    let member = peer_call(&peer, Some(tls_with(&pki, true))).await;
    assert!(
        member
            .as_ref()
            .is_err_and(|e| e.contains("malformed peer message")),
        "{member:?}"
    );
}
