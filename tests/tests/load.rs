//! The failure modes of the store Basalt replaces: k8s-dqlite pinned CPUs on mass deletes of a
//! thousand objects and grew to a gigabyte of memory for megabytes of data; kine on SQLite grew
//! to gigabytes under lease churn. Here a mass delete under a watch must cost little CPU, and a
//! long create/update/delete/lease churn must leave memory and disk flat after compaction.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on failure by design

use std::time::{Duration, Instant};

use basalt_tests::procfs::{disk_bytes, rss, usage};
use basalt_tests::{Cluster, ClusterOptions};
use etcd_client::{DeleteOptions, EventType, GetOptions, PutOptions, WatchOptions};
use rand::{Rng, SeedableRng};

async fn fill(client: &mut etcd_client::Client, prefix: &str, n: usize) {
    let value = "x".repeat(1024);
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let mut c = client.clone();
        let key = format!("{prefix}{i:04}");
        let value = value.clone();
        pending.push(async move { c.put(key, value, None).await.expect("put") });
        if pending.len() >= 32 {
            futures::StreamExt::next(&mut pending).await;
        }
    }
    while futures::StreamExt::next(&mut pending).await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_thousand_watched_keys_costs_little_cpu() {
    let mut cluster = Cluster::start(ClusterOptions::basalt(1)).await;
    let pid = cluster.members[0].pid().expect("running");
    let mut client = cluster.client().await;

    for (round, single_deletes) in [(0, false), (1, true)] {
        let prefix = format!("/registry/pods/round{round}/");
        fill(&mut client, &prefix, 1000).await;
        let mut stream = client
            .watch(
                prefix.as_str(),
                Some(WatchOptions::new().with_prefix().with_prev_key()),
            )
            .await
            .expect("watch");
        let created = stream.message().await.expect("created").expect("stream");
        assert!(created.created());

        let cpu_before = usage(pid).expect("cpu").cpu;
        let started = Instant::now();
        if single_deletes {
            let mut pending = futures::stream::FuturesUnordered::new();
            for i in 0..1000 {
                let mut c = client.clone();
                let key = format!("{prefix}{i:04}");
                pending.push(async move { c.delete(key, None).await.expect("delete") });
                if pending.len() >= 32 {
                    futures::StreamExt::next(&mut pending).await;
                }
            }
            while futures::StreamExt::next(&mut pending).await.is_some() {}
        } else {
            let deleted = client
                .delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
                .await
                .expect("delete range");
            assert_eq!(deleted.deleted(), 1000);
        }
        let mut deletes = 0;
        while deletes < 1000 {
            let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("watch events in time")
                .expect("watch")
                .expect("stream open");
            for event in response.events() {
                assert_eq!(event.event_type(), EventType::Delete);
                assert!(event.prev_kv().is_some(), "prev_kv requested");
                deletes += 1;
            }
        }
        let elapsed = started.elapsed();
        let cpu = (usage(pid).expect("cpu").cpu - cpu_before).as_secs_f64();
        eprintln!(
            "1000 deletes ({}) under a watch: {elapsed:?} wall, {cpu:.3} s server CPU",
            if single_deletes {
                "one request each"
            } else {
                "one range"
            }
        );
        // Generous bounds for a debug build on a shared two-core machine; the point is that
        // the work is linear and small (k8s-dqlite spent seconds of CPU at 100% here).
        let cpu_limit = if single_deletes { 3.0 } else { 0.5 };
        assert!(cpu < cpu_limit, "{cpu:.3} s of server CPU for 1000 deletes");
        assert!(
            elapsed < Duration::from_secs(10),
            "{elapsed:?} for 1000 deletes"
        );
        let left = client
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .expect("count");
        assert_eq!(left.count(), 0);
    }
}

/// How long the churn runs: 10 minutes by default (the CI setting), `BASALT_SOAK_SECONDS` to
/// change it.
fn soak_duration() -> Duration {
    let seconds = std::env::var("BASALT_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    Duration::from_secs(seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_churn_leaves_memory_and_disk_flat_after_compaction() {
    let options = ClusterOptions::basalt(1).with(&[
        "--snapshot-count",
        "2000",
        "--snapshot-catchup-entries",
        "500",
    ]);
    let mut cluster = Cluster::start(options).await;
    let pid = cluster.members[0].pid().expect("running");
    let data = cluster.members[0].spec.data_dir.clone();
    let duration = soak_duration();
    let started = Instant::now();
    let stop = started + duration;

    let mut workers = Vec::new();
    for w in 0..8 {
        let mut client = cluster.client().await;
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::from_os_rng();
            let mut ops = 0u64;
            // Paced (about 500 writes a second in all, a busy cluster's event and heartbeat
            // churn) so the soak can share the machine with the other end-to-end tests
            // instead of running alone for ten minutes.
            let mut pace = tokio::time::interval(Duration::from_millis(150));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < stop {
                pace.tick().await;
                // Objects with a lease (like Kubernetes events and node heartbeats): created,
                // updated a few times, some deleted, some revoked, the rest left to expire.
                let ttl = rng.random_range(1..4);
                let Ok(lease) = client.lease_grant(ttl, None).await else {
                    continue;
                };
                let value = "v".repeat(rng.random_range(100..2000));
                for k in 0..5 {
                    let key = format!("/churn/{w}/{}", rng.random_range(0..400));
                    let opts = PutOptions::new().with_lease(lease.id());
                    if client
                        .put(key.as_str(), value.as_str(), Some(opts))
                        .await
                        .is_ok()
                    {
                        ops += 1;
                    }
                    if k % 2 == 0 {
                        let _ = client
                            .put(
                                key.as_str(),
                                "updated",
                                Some(PutOptions::new().with_ignore_lease()),
                            )
                            .await;
                        ops += 1;
                    }
                    if k == 4 {
                        let _ = client.delete(key.as_str(), None).await;
                        ops += 1;
                    }
                }
                if rng.random_bool(0.5) {
                    let _ = client.lease_revoke(lease.id()).await;
                }
            }
            ops
        }));
    }

    // Compact every few seconds to the head, as kube-apiserver does every five minutes.
    let mut compactor = cluster.client().await;
    let mut samples: Vec<(Duration, u64, u64)> = Vec::new();
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if let Ok(status) = compactor.status().await
            && let Some(header) = status.header()
        {
            let _ = compactor.compact(header.revision(), None).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        samples.push((started.elapsed(), rss(pid).expect("rss"), disk_bytes(&data)));
    }
    let mut ops = 0;
    for w in workers {
        ops += w.await.expect("worker");
    }
    // Let every lease expire, then compact once more and give snapshots a moment to purge.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let status = compactor.status().await.expect("status");
    compactor
        .compact(status.header().expect("header").revision(), None)
        .await
        .expect("compact");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = (rss(pid).expect("rss"), disk_bytes(&data));
    let leases = compactor.leases().await.expect("leases").leases().len();

    // "Warm" is the largest reading in the second quarter of the run, after start-up growth.
    let quarter = |q: u32| duration * q / 4;
    let warm = samples
        .iter()
        .filter(|(at, _, _)| *at >= quarter(1) && *at < quarter(2))
        .fold((0, 0), |acc, s| (acc.0.max(s.1), acc.1.max(s.2)));
    let late = samples
        .iter()
        .filter(|(at, _, _)| *at >= quarter(3))
        .fold((0, 0), |acc, s| (acc.0.max(s.1), acc.1.max(s.2)));
    eprintln!(
        "{ops} churn ops in {duration:?}: RSS warm {} MiB, late {} MiB, end {} MiB; disk warm {} MiB, late {} MiB, end {} MiB; {leases} leases left",
        warm.0 >> 20,
        late.0 >> 20,
        end.0 >> 20,
        warm.1 >> 20,
        late.1 >> 20,
        end.1 >> 20
    );
    assert!(
        ops > 1000,
        "the churn did too little to mean anything: {ops} ops"
    );
    assert_eq!(leases, 0, "expired leases were not revoked");
    // Flat: the last quarter holds no more than the second, with headroom for allocator noise
    // and one log segment (64 MiB) plus a snapshot in flight on disk.
    assert!(
        late.0 <= warm.0 + warm.0 / 2 + (16 << 20),
        "RSS grew: warm {} late {}",
        warm.0,
        late.0
    );
    assert!(
        end.0 <= warm.0 + warm.0 / 2 + (16 << 20),
        "RSS grew: warm {} end {}",
        warm.0,
        end.0
    );
    assert!(
        late.1 <= warm.1 * 2 + (80 << 20),
        "disk grew: warm {} late {}",
        warm.1,
        late.1
    );
    assert!(
        end.1 <= warm.1 * 2 + (80 << 20),
        "disk grew: warm {} end {}",
        warm.1,
        end.1
    );
}
