//! Faults a store must survive without losing an acknowledged write: SIGKILL of the leader
//! while clients write, SIGKILL of a lone member at random moments, a member far behind that
//! must catch up by snapshot, and members joining a cluster under load.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on failure by design

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_tests::etcdctl::etcdctl;
use basalt_tests::{Cluster, ClusterOptions};
use etcd_client::{Client, GetOptions};
use rand::Rng;
use tokio::sync::Mutex;

/// Acknowledged keys with their value and the revision and member named in the reply.
type Acked = Arc<Mutex<BTreeMap<String, (String, i64, u64)>>>;

/// Writes unique keys until `stop`, recording every acknowledged one. Errors are expected
/// during failover; an errored write may or may not have happened, so it is not recorded.
async fn writer(mut client: Client, id: usize, acked: Acked, stop: Instant) -> usize {
    let mut n = 0;
    let mut errors = 0;
    while Instant::now() < stop {
        let key = format!("w{id}/{n:06}");
        let value = format!("v{n}");
        match tokio::time::timeout(
            Duration::from_secs(5),
            client.put(key.as_str(), value.as_str(), None),
        )
        .await
        {
            Ok(Ok(resp)) => {
                let (revision, member) = resp
                    .header()
                    .map(|h| (h.revision(), h.member_id()))
                    .unwrap_or_default();
                acked.lock().await.insert(key, (value, revision, member));
            }
            _ => errors += 1,
        }
        n += 1;
    }
    errors
}

/// Acknowledged writes that a linearizable read through `client` does not return, and the
/// revision that read was served at.
async fn missing_writes(client: &mut Client, acked: &Acked) -> (Vec<String>, i64) {
    let acked = acked.lock().await;
    let resp = client
        .get("w", Some(GetOptions::new().with_prefix()))
        .await
        .expect("reading everything back");
    let mut stored = BTreeMap::new();
    for kv in resp.kvs() {
        stored.insert(kv.key_str().expect("utf-8"), kv.value_str().expect("utf-8"));
    }
    let missing = acked
        .iter()
        .filter(|(k, (v, _, _))| stored.get(k.as_str()) != Some(&v.as_str()))
        .map(|(k, (v, rev, member))| format!("{k}={v} acked at revision {rev} by {member:x}"))
        .collect();
    (
        missing,
        resp.header().map(|h| h.revision()).unwrap_or_default(),
    )
}

/// Every acknowledged key, read back linearizably through each of `clients`.
async fn assert_all_present(clients: Vec<Client>, acked: &Acked, logs: &str) {
    let mut report = String::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let (missing, revision) = missing_writes(&mut client, acked).await;
        if !missing.is_empty() {
            report += &format!(
                "client {i} (read at revision {revision}): {} of {} acknowledged writes missing \
                 or wrong, e.g. {:?}\n",
                missing.len(),
                acked.lock().await.len(),
                &missing[..missing.len().min(5)]
            );
        }
    }
    assert!(report.is_empty(), "{report}{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_leader_kills() {
    let mut cluster = Cluster::start(ClusterOptions::basalt(3)).await;
    let acked: Acked = Arc::default();
    let stop = Instant::now() + Duration::from_secs(12);
    let mut writers = Vec::new();
    for id in 0..6 {
        // Half the writers talk to one member only, so forwarding from followers is exercised.
        let client = if id % 2 == 0 {
            cluster.client().await
        } else {
            cluster.client_to(id % 3).await
        };
        writers.push(tokio::spawn(writer(client, id, acked.clone(), stop)));
    }
    let mut kills = 0;
    while Instant::now() + Duration::from_secs(3) < stop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Some(leader) = cluster.leader().await {
            cluster.kill(leader);
            kills += 1;
            tokio::time::sleep(Duration::from_millis(800)).await;
            cluster.restart(leader);
        }
    }
    for w in writers {
        w.await.expect("writer task");
    }
    assert!(kills >= 3, "only {kills} leader kills happened");
    cluster.wait_ready(Duration::from_secs(30)).await;
    assert!(
        acked.lock().await.len() > 200,
        "too few writes acknowledged to mean anything"
    );
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client_to(i).await);
    }
    assert_all_present(clients, &acked, &cluster.logs()).await;
    cluster.assert_members_agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_member_killed_at_random_moments_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start(ClusterOptions::basalt(1)).await;
    let acked: Acked = Arc::default();
    let mut rng = rand::rng();
    for round in 0..5 {
        let stop = Instant::now() + Duration::from_secs(30);
        let mut writers = Vec::new();
        for id in 0..8 {
            let client = cluster.client().await;
            writers.push(tokio::spawn(writer(
                client,
                round * 100 + id,
                acked.clone(),
                stop,
            )));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        cluster.kill(0);
        for w in writers {
            w.abort();
        }
        cluster.restart(0);
        cluster.wait_ready(Duration::from_secs(30)).await;
        let client = cluster.client().await;
        assert_all_present(vec![client], &acked, &cluster.logs()).await;
    }
    assert!(
        acked.lock().await.len() > 500,
        "too few writes acknowledged to mean anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_far_behind_catches_up_by_snapshot() {
    let options = ClusterOptions::basalt(3).with(&[
        "--snapshot-count",
        "200",
        "--snapshot-catchup-entries",
        "50",
    ]);
    let mut cluster = Cluster::start(options).await;
    let leader = cluster.leader().await.expect("leader");
    let behind = (leader + 1) % 3;
    cluster.kill(behind);
    let mut client = cluster.client_to(leader).await;
    // One client writing in sequence makes one log entry per put: far more than the log keeps.
    for n in 0..1500 {
        client
            .put(format!("k{n:05}"), format!("v{n}"), None)
            .await
            .expect("put");
    }
    cluster.restart(behind);
    cluster.wait_ready(Duration::from_secs(30)).await;
    let mut lagging = cluster.client_to(behind).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let serial = GetOptions::new()
            .with_prefix()
            .with_count_only()
            .with_serializable();
        let count = lagging
            .get("k", Some(serial))
            .await
            .map(|r| r.count())
            .unwrap_or(0);
        if count == 1500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "caught up to only {count} keys\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&cluster.members[behind].spec.log).expect("member log");
    assert!(
        log.contains("snapshot received from the leader and installed"),
        "the member caught up without a snapshot:\n{}",
        cluster.members[behind].log_tail(40)
    );
    // The leader purged its log behind the snapshot: far fewer segment bytes than 1500 entries.
    let value = lagging.get("k01499", None).await.expect("get");
    assert_eq!(value.kvs()[0].value(), b"v1499");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_join_under_load_without_losing_availability() {
    let mut cluster = Cluster::start(ClusterOptions::basalt(3)).await;
    let acked: Acked = Arc::default();
    let stop = Instant::now() + Duration::from_secs(10);
    let mut writers = Vec::new();
    for id in 0..4 {
        let client = cluster.client().await;
        writers.push(tokio::spawn(writer(client, id, acked.clone(), stop)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A voter added the usual way joins as a learner and is promoted once caught up.
    let endpoints = cluster.endpoints();
    let spec = cluster.next_spec();
    let added = etcdctl(
        &endpoints,
        &["member", "add", &spec.name, "--peer-urls", &spec.peer_url()],
    );
    assert!(added.ok, "member add: {added:?}");
    let voter = cluster.join(spec);

    // A learner added explicitly stays one until promoted.
    let spec = cluster.next_spec();
    let added = etcdctl(
        &endpoints,
        &[
            "member",
            "add",
            &spec.name,
            "--learner",
            "--peer-urls",
            &spec.peer_url(),
        ],
    );
    assert!(added.ok, "member add --learner: {added:?}");
    let learner = cluster.join(spec);

    let mut errors = 0;
    for w in writers {
        errors += w.await.expect("writer");
    }
    assert_eq!(
        errors,
        0,
        "writes failed while members joined\n{}",
        cluster.logs()
    );

    let members = |cluster: &mut Cluster| {
        let out =
            etcdctl(&cluster.endpoints(), &["member", "list", "-w", "json"]).json("member list");
        out["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or("").to_string(),
                    m["isLearner"] == true,
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let voter_name = cluster.members[voter].spec.name.clone();
    let learner_name = cluster.members[learner].spec.name.clone();
    loop {
        let list = members(&mut cluster);
        if list.get(&voter_name) == Some(&false) && list.get(&learner_name) == Some(&true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members never settled: {list:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = etcdctl(&cluster.endpoints(), &["member", "list", "-w", "json"]).json("member list");
    let learner_id = out["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == learner_name.as_str()))
        .and_then(|m| m["ID"].as_u64())
        .expect("learner id");
    let promoted = etcdctl(
        &cluster.endpoints(),
        &["member", "promote", &format!("{learner_id:x}")],
    );
    assert!(promoted.ok, "member promote: {promoted:?}");
    assert_eq!(members(&mut cluster).get(&learner_name), Some(&false));

    // The new members hold everything.
    let clients = vec![
        cluster.client_to(voter).await,
        cluster.client_to(learner).await,
    ];
    assert_all_present(clients, &acked, &cluster.logs()).await;
    cluster.assert_members_agree().await;
}
