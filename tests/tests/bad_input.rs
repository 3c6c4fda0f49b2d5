//! Bad input and full disks: every malformed or oversized request gets `InvalidArgument` (or
//! etcd's code for it) with a message naming the field, garbage on the peer port is refused
//! without harm, a full disk gives clients "database space exceeded" — and through all of it
//! nothing stored is lost or changed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on failure by design

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use basalt_tests::etcdctl::etcdctl;
use basalt_tests::process::{MemberProcess, MemberSpec, Server};
use basalt_tests::{Cluster, ClusterOptions};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use store_proto::peer::Frame;
use store_proto::peer::raft_peer_client::RaftPeerClient;

fn code(error: &etcd_client::Error) -> Option<tonic::Code> {
    match error {
        etcd_client::Error::GRpcStatus(status) => Some(status.code()),
        _ => None,
    }
}

fn message(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => status.message().to_string(),
        other => other.to_string(),
    }
}

async fn snapshot_of_everything(client: &mut Client) -> (i64, Vec<(Vec<u8>, Vec<u8>)>) {
    let all = client
        .get("\0", Some(GetOptions::new().with_from_key()))
        .await
        .expect("read everything");
    let revision = all.header().expect("header").revision();
    (
        revision,
        all.kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_are_refused_naming_the_field_and_change_nothing() {
    let mut cluster = Cluster::start(ClusterOptions::basalt(3)).await;
    let mut client = cluster.client().await;
    for i in 0..20 {
        client
            .put(format!("keep/{i}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    let before = snapshot_of_everything(&mut client).await;

    let limit = 1536 * 1024;
    let err = client
        .put("big", vec![0u8; limit + 1], None)
        .await
        .expect_err("oversized value");
    assert_eq!(code(&err), Some(tonic::Code::InvalidArgument), "{err}");
    assert!(
        message(&err).contains("value is 1572865 bytes"),
        "{}",
        message(&err)
    );

    // Far beyond the limit the gRPC layer refuses it before decoding; the server survives.
    let err = client
        .put("huge", vec![0u8; 4 << 20], None)
        .await
        .expect_err("huge request");
    assert!(
        matches!(
            code(&err),
            Some(
                tonic::Code::ResourceExhausted
                    | tonic::Code::OutOfRange
                    | tonic::Code::InvalidArgument
            )
        ),
        "{err}"
    );

    for err in [
        client.put("", "v", None).await.expect_err("empty key"),
        client.get("", None).await.map(drop).expect_err("empty key"),
        client
            .delete("", None)
            .await
            .map(drop)
            .expect_err("empty key"),
    ] {
        assert_eq!(code(&err), Some(tonic::Code::InvalidArgument), "{err}");
        assert!(
            message(&err).contains("key is not provided"),
            "{}",
            message(&err)
        );
    }

    let too_many: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("t{i}"), "v", None))
        .collect();
    let err = client
        .txn(Txn::new().and_then(too_many))
        .await
        .expect_err("129 ops");
    assert_eq!(code(&err), Some(tonic::Code::InvalidArgument));
    assert!(
        message(&err).contains("too many operations"),
        "{}",
        message(&err)
    );

    let dup = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    let err = client.txn(dup).await.expect_err("duplicate key");
    assert!(message(&err).contains("duplicate key"), "{}", message(&err));

    let missing_lease = client
        .put(
            "leased",
            "v",
            Some(etcd_client::PutOptions::new().with_lease(12345)),
        )
        .await
        .expect_err("no such lease");
    assert_eq!(
        code(&missing_lease),
        Some(tonic::Code::NotFound),
        "{missing_lease}"
    );

    let err = client.lease_grant(0, None).await.expect_err("TTL 0");
    assert_eq!(code(&err), Some(tonic::Code::InvalidArgument));
    assert!(message(&err).contains("TTL"), "{}", message(&err));

    let err = client
        .txn(Txn::new().when([Compare::value("", CompareOp::Equal, "x")]))
        .await
        .expect_err("compare without key");
    assert_eq!(code(&err), Some(tonic::Code::InvalidArgument));

    let future = client
        .get(
            "keep/1",
            Some(GetOptions::new().with_revision(before.0 + 1000)),
        )
        .await
        .expect_err("future revision");
    assert_eq!(code(&future), Some(tonic::Code::OutOfRange));

    // A watch on nothing is created and canceled with a reason, not left hanging.
    let mut stream = client.watch("", None).await.expect("watch stream");
    let created = stream.message().await.expect("response").expect("open");
    assert!(
        created.canceled() && created.cancel_reason().contains("key is not provided"),
        "{created:?}"
    );
    let _ = WatchOptions::new();

    // etcdctl checks URLs itself, so these go straight to the API.
    for urls in [
        vec!["not a url".to_string()],
        vec!["ftp://127.0.0.9:1".into()],
        vec![],
        vec!["http://a:1".into(), "http://b:1".into()],
    ] {
        let err = client
            .member_add(urls.clone(), None)
            .await
            .expect_err("bad peer URL");
        assert_eq!(
            code(&err),
            Some(tonic::Code::InvalidArgument),
            "{urls:?}: {err}"
        );
        assert!(message(&err).contains("peerURLs"), "{}", message(&err));
    }

    // Garbage on the peer port: refused, nothing breaks.
    let peer = cluster.members[0].spec.peer_url();
    let mut raw = RaftPeerClient::connect(peer)
        .await
        .expect("peer connection");
    for payload in [vec![], vec![0xff; 64], b"not postcard at all".to_vec()] {
        let frame = Frame {
            payload: payload.into(),
        };
        let status = raw
            .append_entries(frame.clone())
            .await
            .expect_err("garbage append");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        let status = raw.forward(frame).await.expect_err("garbage forward");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    }

    // Nothing stored changed, and the cluster still works.
    let after = snapshot_of_everything(&mut client).await;
    assert_eq!(before, after, "a refused request changed the store");
    client
        .put("still", "works", None)
        .await
        .expect("put after bad input");
    cluster.wait_ready(Duration::from_secs(10)).await;
}

/// A small tmpfs mounted for one test and unmounted when dropped, also if the test fails.
/// The member's log lives beside it, outside the full file system, and goes with it.
struct TmpFs {
    path: PathBuf,
}

impl TmpFs {
    fn mount(size: &str) -> Option<TmpFs> {
        let dir = tempfile::Builder::new()
            .prefix("basalt-tmpfs-")
            .tempdir()
            .expect("mount point")
            .keep();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .ok()?;
        if !status.success() {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(TmpFs { path: dir })
    }
}

impl TmpFs {
    fn log(&self) -> PathBuf {
        self.path.with_extension("log")
    }
}

impl Drop for TmpFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
        let _ = std::fs::remove_file(self.log());
    }
}

fn member_on(fs: &TmpFs, extra: &[&str]) -> MemberProcess {
    let ip = std::net::Ipv4Addr::new(127, 77, rand::random_range(0..=255), 1);
    let spec = MemberSpec {
        name: "full".into(),
        ip,
        client_port: 2379,
        peer_port: 2380,
        data_dir: fs.path.join("data"),
        log: fs.log(),
        tls: false,
    };
    let initial = format!("full={}", spec.peer_url());
    let mut flags: Vec<String> = vec!["--initial-cluster".into(), initial];
    flags.extend(extra.iter().map(|s| s.to_string()));
    MemberProcess::start(Server::Basalt, spec, flags)
}

/// Connects once the member answers reads.
async fn serving(endpoint: &str) -> Client {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut client = basalt_tests::cluster::connect(&[endpoint.to_string()]).await;
        if client.get("probe", None).await.is_ok() {
            return client;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "member at {endpoint} never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write_until_refused(client: &mut Client, acked: &mut Vec<String>) -> etcd_client::Error {
    let value = vec![b'x'; 256 << 10];
    for n in 0.. {
        let key = format!("fill/{n:05}");
        match tokio::time::timeout(
            Duration::from_secs(10),
            client.put(key.as_str(), value.clone(), None),
        )
        .await
        {
            Ok(Ok(_)) => acked.push(key),
            Ok(Err(e)) => return e,
            Err(_) => panic!("a write hung on a full disk"),
        }
    }
    unreachable!()
}

async fn assert_acked_present(client: &mut Client, acked: &[String]) {
    for key in acked {
        let got = client.get(key.as_str(), None).await.expect("read back");
        assert_eq!(
            got.kvs().first().map(|kv| kv.value().len()),
            Some(256 << 10),
            "{key} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_writes_clearly_and_loses_nothing() {
    let Some(fs) = TmpFs::mount("48m") else {
        return;
    };
    let mut member = member_on(&fs, &["--disk-reserve-bytes", "12582912"]);
    let endpoint = member.spec.endpoint();
    let mut client = serving(&endpoint).await;
    let mut acked = Vec::new();
    let err = write_until_refused(&mut client, &mut acked).await;
    assert_eq!(code(&err), Some(tonic::Code::ResourceExhausted), "{err}");
    assert!(
        message(&err).contains("database space exceeded"),
        "{}",
        message(&err)
    );
    assert!(
        acked.len() > 10,
        "only {} writes before the disk filled",
        acked.len()
    );

    // Reads go on, the alarm says why, and deletes (which free space) are accepted.
    assert_acked_present(&mut client, &acked).await;
    let alarms = etcdctl(std::slice::from_ref(&endpoint), &["alarm", "list"]);
    assert!(alarms.stdout.contains("NOSPACE"), "{alarms:?}");
    client
        .delete(acked.pop().expect("a key").as_str(), None)
        .await
        .expect("delete on a full disk");

    // A restart finds everything that was acknowledged.
    member.restart(None);
    let mut client = serving(&endpoint).await;
    assert_acked_present(&mut client, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hitting_enospc_in_the_log_corrupts_nothing() {
    let Some(fs) = TmpFs::mount("40m") else {
        return;
    };
    // Some ballast to free later, and no reserve: the log itself runs into ENOSPC.
    std::fs::write(fs.path.join("ballast"), vec![0u8; 8 << 20]).expect("ballast");
    let mut member = member_on(&fs, &["--disk-reserve-bytes", "0"]);
    let endpoint = member.spec.endpoint();
    let mut client = serving(&endpoint).await;
    let mut acked = Vec::new();
    let err = write_until_refused(&mut client, &mut acked).await;
    eprintln!("after {} writes: {err}", acked.len());
    assert!(
        acked.len() > 10,
        "only {} writes before the disk filled",
        acked.len()
    );
    // The member stops itself (Raft cannot continue after a failed log write) ...
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while member.is_running() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !member.is_running(),
        "the member kept running after a failed log write\n{}",
        member.log_tail(20)
    );
    // ... and once space is freed, comes back with every acknowledged write.
    std::fs::remove_file(fs.path.join("ballast")).expect("free space");
    member.restart(None);
    let mut client = serving(&endpoint).await;
    assert_acked_present(&mut client, &acked).await;
    client
        .put("after", "recovery", None)
        .await
        .expect("writes work again");
}
