//! Watch robustness, the class of bugs etcd's own robustness suite found most: a watcher that
//! lives through leader kills and compactions must see every revision exactly once and in
//! order — resuming after a broken stream from the next revision — or be told precisely which
//! revisions were compacted away; and a progress notification must never be followed by an
//! event it claims to cover.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on failure by design

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use basalt_tests::{Cluster, ClusterOptions};
use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::Mutex;

/// A change: key and value (`None` for a delete).
type Change = (String, Option<String>);
/// Acknowledged changes by revision.
type Acked = Arc<Mutex<BTreeMap<i64, Change>>>;

/// What the watcher observed.
#[derive(Default, Debug)]
struct Seen {
    /// (revision, key, value or None for a delete), in arrival order.
    events: Vec<(i64, String, Option<String>)>,
    /// Ranges of revisions reported compacted: [from, compact_revision).
    compacted: Vec<(i64, i64)>,
    /// Progress notifications received (header revision).
    progress: Vec<i64>,
    /// Events that arrived after a progress notification covering them.
    late: Vec<(i64, i64)>,
    resumes: usize,
}

/// Watches `/w/` from revision 1 through one member at a time (published in `member` so the
/// chaos can kill it), resuming on the next member whenever the stream breaks.
async fn watch_everything(
    endpoints: Vec<String>,
    member: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    stop: Instant,
) {
    let mut next = 1i64;
    let mut max_progress = 0i64;
    let mut attempt = 0usize;
    while Instant::now() < stop {
        attempt += 1;
        let target = attempt % endpoints.len();
        member.store(target, Ordering::SeqCst);
        let Ok(mut client) = basalt_tests::cluster::try_connect(&endpoints[target..=target]).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(next)
            .with_prev_key()
            .with_progress_notify();
        let Ok(mut stream) = client.watch("/w/", Some(options)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        seen.lock().await.resumes += 1;
        let mut last_progress_request = Instant::now();
        loop {
            if last_progress_request.elapsed() > Duration::from_millis(300) {
                let _ = stream.request_progress().await;
                last_progress_request = Instant::now();
            }
            let message = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
            let response = match message {
                Err(_) if Instant::now() < stop => continue,
                Err(_) => return,
                Ok(Ok(Some(response))) => response,
                Ok(_) => break, // stream broken: resume from `next` on another connection
            };
            let mut seen = seen.lock().await;
            if response.canceled() {
                if response.compact_revision() > 0 {
                    seen.compacted.push((next, response.compact_revision()));
                    next = response.compact_revision();
                }
                break;
            }
            if response.events().is_empty() && !response.created() {
                let revision = response.header().map_or(0, |h| h.revision());
                seen.progress.push(revision);
                max_progress = max_progress.max(revision);
                continue;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let revision = kv.mod_revision();
                if revision <= max_progress {
                    seen.late.push((revision, max_progress));
                }
                let key = kv.key_str().unwrap_or_default().to_string();
                let value = match event.event_type() {
                    EventType::Put => Some(kv.value_str().unwrap_or_default().to_string()),
                    EventType::Delete => None,
                };
                seen.events.push((revision, key, value));
                next = revision + 1;
            }
        }
    }
}

async fn writer(mut client: Client, acked: Acked, stop: Instant) {
    let mut n = 0u64;
    while Instant::now() < stop {
        let key = format!("/w/{}", n % 50);
        let delete = n % 7 == 6;
        let result = if delete {
            tokio::time::timeout(Duration::from_secs(3), client.delete(key.as_str(), None))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|r| {
                    (r.deleted() > 0)
                        .then(|| r.header().map(|h| (h.revision(), None)))
                        .flatten()
                })
        } else {
            let value = format!("v{n}");
            tokio::time::timeout(
                Duration::from_secs(3),
                client.put(key.as_str(), value.as_str(), None),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|r| r.header().map(|h| (h.revision(), Some(value))))
        };
        if let Some((revision, value)) = result {
            acked.lock().await.insert(revision, (key, value));
        }
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_sees_every_revision_once_through_leader_kills_and_compaction() {
    let mut cluster = Cluster::start(ClusterOptions::basalt(3)).await;
    let endpoints = cluster.all_endpoints();
    let stop = Instant::now() + Duration::from_secs(20);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let watched = Arc::new(AtomicUsize::new(0));
    let watch = tokio::spawn(watch_everything(
        endpoints.clone(),
        watched.clone(),
        seen.clone(),
        stop + Duration::from_secs(5),
    ));
    let write = tokio::spawn(writer(cluster.client().await, acked.clone(), stop));

    let mut kills = 0;
    let mut compactions = 0;
    while Instant::now() + Duration::from_secs(2) < stop {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // Compact close behind the head, so a watcher resuming after a failover may land
        // below the compaction point and must be told so.
        if let Ok(mut client) = basalt_tests::cluster::try_connect(&endpoints).await
            && let Ok(status) = client.status().await
            && let Some(header) = status.header()
            && client.compact(header.revision() - 5, None).await.is_ok()
        {
            compactions += 1;
        }
        // Alternate: the leader (failover under the writer), then the member the watcher is
        // connected to (the stream breaks and must resume elsewhere).
        let victim = if kills % 2 == 0 {
            cluster.leader().await
        } else {
            Some(watched.load(Ordering::SeqCst))
        };
        if let Some(victim) = victim {
            cluster.kill(victim);
            kills += 1;
            tokio::time::sleep(Duration::from_millis(700)).await;
            cluster.restart(victim);
        }
    }
    write.await.expect("writer");
    cluster.wait_ready(Duration::from_secs(30)).await;
    watch.await.expect("watcher");
    cluster.assert_members_agree().await;

    let seen = seen.lock().await;
    let acked = acked.lock().await;
    let logs = cluster.logs();
    assert!(
        kills >= 4 && compactions >= 4,
        "only {kills} kills and {compactions} compactions"
    );
    assert!(acked.len() > 100, "too few writes: {}", acked.len());
    assert!(seen.resumes >= 2, "the watch never had to resume");

    eprintln!(
        "{} writes acknowledged, {} events delivered over {} watch streams, {} compacted gaps, \
         {} progress notifications, {kills} kills, {compactions} compactions",
        acked.len(),
        seen.events.len(),
        seen.resumes,
        seen.compacted.len(),
        seen.progress.len()
    );
    // Exactly once, in order.
    let revisions: Vec<i64> = seen.events.iter().map(|e| e.0).collect();
    for pair in revisions.windows(2) {
        assert!(
            pair[0] < pair[1],
            "revision {} followed by {}\n{logs}",
            pair[0],
            pair[1]
        );
    }
    // Every acknowledged change arrived with its content, unless reported compacted.
    let received: BTreeMap<i64, (String, Option<String>)> = seen
        .events
        .iter()
        .map(|(r, k, v)| (*r, (k.clone(), v.clone())))
        .collect();
    let in_gap = |revision: i64| {
        seen.compacted
            .iter()
            .any(|(from, to)| *from <= revision && revision < *to)
    };
    for (revision, change) in acked.iter() {
        if in_gap(*revision) {
            continue;
        }
        assert_eq!(
            received.get(revision),
            Some(change),
            "acknowledged revision {revision} not delivered\n{logs}"
        );
    }
    // Nothing invented: every delivered change is one a writer made (or may have made).
    for (revision, (key, value)) in &received {
        if let Some((k, v)) = acked.get(revision) {
            assert_eq!(
                (k, v),
                (key, value),
                "revision {revision} delivered with different content"
            );
        }
    }
    // A watch resuming below the compaction point is told where history now starts.
    let mut client = cluster.client().await;
    let status = client.status().await.expect("status");
    let head = status.header().expect("header").revision();
    client.compact(head, None).await.expect("compact");
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(head - 10);
    let mut stream = client.watch("/w/", Some(options)).await.expect("watch");
    let canceled = loop {
        let response = stream
            .message()
            .await
            .expect("watch response")
            .expect("open stream");
        if response.canceled() {
            break response;
        }
    };
    assert_eq!(canceled.compact_revision(), head, "{canceled:?}");
    assert!(
        !seen.progress.is_empty(),
        "no progress notification arrived"
    );
    assert!(
        seen.late.is_empty(),
        "events arrived after progress covering them: {:?}",
        seen.late
    );
}
