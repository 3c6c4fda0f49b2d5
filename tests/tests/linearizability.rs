//! Linearizability of the replicated store through leader kills: concurrent clients put,
//! get and compare-and-swap a few keys while the leader is SIGKILLed and restarted every few
//! seconds. The recorded history, ending with a read of every key through every member once
//! the cluster is healthy again, must be linearizable (checked by `basalt_tests::lincheck`);
//! and afterwards every member must still be running and hold the same data.
//!
//! Writes that fail (timeouts, "leader changed", broken connections) are recorded as unknown:
//! they may or may not have taken effect, as etcd's semantics allow. An acknowledged write
//! that is lost, a stale or resurrected read, or two compare-and-swaps winning from the same
//! value all make the history non-linearizable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on failure by design

use std::time::{Duration, Instant};

use basalt_tests::lincheck::{self, Call, Clock, Op, Outcome, Return};
use basalt_tests::{Cluster, ClusterOptions};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 8;
const KEYS: usize = 5;
const WORKLOAD: Duration = Duration::from_secs(20);
/// Every call gets this long; a call still pending then counts as failed (unknown).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn key(k: usize) -> String {
    format!("/lin/k{k}")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `call` against the store and returns its outcome; failures and timeouts are
/// `Unknown`.
async fn perform(client: &mut Client, call: &Call) -> Outcome {
    let result = tokio::time::timeout(CALL_TIMEOUT, async {
        match call {
            Call::Put { key, value } => client
                .put(key.as_str(), value.as_str(), None)
                .await
                .map(|_| Return::Put),
            Call::Get { key } => client
                .get(key.as_str(), None)
                .await
                .map(|r| Return::Get(r.kvs().first().map(|kv| text(kv.value())))),
            Call::Cas { key, expect, new } => {
                let compare = match expect {
                    Some(v) => Compare::value(key.as_str(), CompareOp::Equal, v.as_str()),
                    // etcd's way to say "absent": version 0.
                    None => Compare::version(key.as_str(), CompareOp::Equal, 0),
                };
                // The else branch reads the key in the same transaction, so a failed CAS
                // tells the checker what it saw (a stronger and much cheaper check than a
                // bare "false").
                let txn = Txn::new()
                    .when([compare])
                    .and_then([TxnOp::put(key.as_str(), new.as_str(), None)])
                    .or_else([TxnOp::get(key.as_str(), None)]);
                client.txn(txn).await.map(|r| {
                    if r.succeeded() {
                        return Return::Cas(true);
                    }
                    let seen = r.op_responses().into_iter().find_map(|op| match op {
                        TxnOpResponse::Get(get) => {
                            Some(get.kvs().first().map(|kv| text(kv.value())))
                        }
                        _ => None,
                    });
                    match seen {
                        Some(seen) => Return::CasSaw(seen),
                        None => Return::Cas(false),
                    }
                })
            }
        }
    })
    .await;
    match result {
        Ok(Ok(ret)) => Outcome::Ok(ret),
        Ok(Err(_)) | Err(_) => Outcome::Unknown,
    }
}

/// One client: random operations on random keys until `stop`, one at a time.
async fn client_loop(id: usize, mut client: Client, clock: Clock, stop: Instant) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(rand::random());
    // The last value this client saw per key: what its CASes expect, so they often win.
    let mut last: Vec<Option<String>> = vec![None; KEYS];
    let mut history = Vec::new();
    let mut n = 0usize;
    while Instant::now() < stop {
        let k = rng.random_range(0..KEYS);
        let value = format!("c{id}-{n}");
        n += 1;
        let call = match rng.random_range(0..10) {
            0..4 => Call::Get { key: key(k) },
            4..7 => Call::Put { key: key(k), value },
            _ => Call::Cas {
                key: key(k),
                expect: last[k].clone(),
                new: value,
            },
        };
        let invoke = clock.now();
        let outcome = perform(&mut client, &call).await;
        let ret = clock.now();
        match (&call, &outcome) {
            (Call::Put { value, .. }, Outcome::Ok(_)) => last[k] = Some(value.clone()),
            (_, Outcome::Ok(Return::Get(v) | Return::CasSaw(v))) => last[k] = v.clone(),
            (Call::Cas { new, .. }, Outcome::Ok(Return::Cas(true))) => last[k] = Some(new.clone()),
            _ => {}
        }
        let failed = outcome == Outcome::Unknown;
        history.push(Op {
            client: id,
            call,
            invoke,
            ret,
            outcome,
        });
        if failed {
            // Don't spin on a member that is down.
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..60))).await;
        }
    }
    history
}

/// Reads every key through every member, one after another, once no client writes any
/// more: the reads join the history, so a member that lost an acknowledged write, or applied
/// one that never committed, breaks linearizability.
async fn final_reads(cluster: &Cluster, members: &[usize], clock: Clock, history: &mut Vec<Op>) {
    for &member in members {
        let mut client = cluster.client_to(member).await;
        for k in 0..KEYS {
            let call = Call::Get { key: key(k) };
            for attempt in 1.. {
                let invoke = clock.now();
                let outcome = perform(&mut client, &call).await;
                let ret = clock.now();
                let done = outcome != Outcome::Unknown;
                history.push(Op {
                    client: CLIENTS + member,
                    call: call.clone(),
                    invoke,
                    ret,
                    outcome,
                });
                if done {
                    break;
                }
                assert!(
                    attempt < 10,
                    "the final read of {} through m{member} keeps failing\n{}",
                    key(k),
                    cluster.logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Each member's own view of the keys (serializable reads: its local state, no leader
/// involved) and its revision. After [`final_reads`] every member has applied everything
/// committed and nothing is written any more, so all views must be identical — down to the
/// revisions, which Kubernetes compares in every update.
async fn member_views(
    cluster: &Cluster,
    members: &[usize],
) -> Vec<(usize, Result<(i64, Vec<String>), String>)> {
    let mut views = Vec::new();
    for &member in members {
        let mut client = cluster.client_to(member).await;
        let mut revision = 0;
        let mut values = Vec::new();
        let mut failed = None;
        for k in 0..KEYS {
            let options = GetOptions::new().with_serializable();
            match tokio::time::timeout(CALL_TIMEOUT, client.get(key(k), Some(options))).await {
                Ok(Ok(r)) => {
                    revision = r.header().map_or(0, |h| h.revision());
                    values.push(r.kvs().first().map_or("(absent)".into(), |kv| {
                        format!("{}@{}", text(kv.value()), kv.mod_revision())
                    }));
                }
                Ok(Err(e)) => failed = Some(e.to_string()),
                Err(_) => failed = Some("timed out".into()),
            }
        }
        views.push((
            member,
            match failed {
                Some(e) => Err(e),
                None => Ok((revision, values)),
            },
        ));
    }
    views
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_under_leader_kills_is_linearizable() {
    // Build (or find) the binary first, so that the time limits below measure the test only.
    basalt_tests::binary("basalt-store");
    let began = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::basalt(3)).await;
    let clock = Clock::new();
    let stop = Instant::now() + WORKLOAD;

    // Half the clients talk to one member each (so followers forward, and the client of a
    // killed member sees its connection break), half balance over all endpoints.
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let client = if id % 2 == 0 {
            cluster.client_to(id / 2 % 3).await
        } else {
            basalt_tests::cluster::connect(&cluster.all_endpoints()).await
        };
        tasks.push(tokio::spawn(client_loop(id, client, clock, stop)));
    }

    // Chaos: every 3–4 s, SIGKILL whoever leads; restart it once the others have elected a
    // new leader (at least a second later). Restarting sooner often brings the old leader
    // back before anyone noticed it was gone, and nothing fails over.
    let mut rng = StdRng::seed_from_u64(rand::random());
    let mut kills = Vec::new();
    let mut next_kill = Instant::now() + Duration::from_millis(rng.random_range(3_000..4_000));
    while next_kill + Duration::from_secs(1) < stop {
        tokio::time::sleep_until(next_kill.into()).await;
        let leader = tokio::time::timeout(CALL_TIMEOUT, cluster.leader())
            .await
            .ok()
            .flatten();
        let Some(leader) = leader else {
            next_kill = Instant::now() + Duration::from_millis(200);
            continue;
        };
        cluster.kill(leader);
        kills.push((leader, clock.now()));
        next_kill += Duration::from_millis(rng.random_range(3_000..4_000));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let give_up = Instant::now() + Duration::from_secs(3);
        while Instant::now() < give_up {
            let successor = tokio::time::timeout(CALL_TIMEOUT, cluster.leader()).await;
            if matches!(successor, Ok(Some(l)) if l != leader) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.restart(leader);
    }

    let mut history = Vec::new();
    for task in tasks {
        history.extend(task.await.expect("client task"));
    }
    let kill_times: Vec<String> = kills
        .iter()
        .map(|(m, t)| format!("m{m} at {:.3}s", *t as f64 / 1e9))
        .collect();
    let kill_times = kill_times.join(", ");

    // Every member should have survived its restarts; one that stopped on a fatal error has
    // usually found its log inconsistent with the leader's. The others still get checked.
    cluster.wait_ready(Duration::from_secs(30)).await;
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for i in 0..cluster.members.len() {
        if cluster.members[i].is_running() {
            live.push(i);
        } else {
            dead.push(format!(
                "m{i} died after a restart:\n{}",
                cluster.members[i].log_tail(60)
            ));
        }
    }

    final_reads(&cluster, &live, clock, &mut history).await;
    cluster.assert_members_agree().await;

    let completed = history
        .iter()
        .filter(|o| o.outcome != Outcome::Unknown)
        .count();
    let unknown = history.len() - completed;
    let checking = Instant::now();
    let verdict = lincheck::check(&history);
    eprintln!(
        "{} operations ({completed} completed, {unknown} failed), {} leader kills \
         [{kill_times}], {} members died, checked in {:?}, test time so far {:?}: {verdict:?}",
        history.len(),
        kills.len(),
        dead.len(),
        checking.elapsed(),
        began.elapsed(),
    );
    if let Err(failure) = &verdict {
        // Keep the whole history for a closer look; the cluster's directory goes with it.
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "linearizability-history-{}.txt",
            std::process::id()
        ));
        let mut sorted: Vec<&Op> = history.iter().collect();
        sorted.sort_by_key(|o| o.invoke);
        let dump: Vec<String> = sorted.iter().map(|o| o.to_string()).collect();
        let _ = std::fs::write(&path, dump.join("\n"));
        panic!(
            "{failure}\nleader kills: {kill_times}\nfull history: {}\n{}\n{}",
            path.display(),
            dead.join("\n"),
            cluster.logs()
        );
    }
    assert!(
        dead.is_empty(),
        "leader kills: {kill_times}\n{}",
        dead.join("\n")
    );

    // A write whose client gave up may still be applied late, member by member; only a
    // disagreement that lasts is a divergence.
    let mut views = member_views(&cluster, &live).await;
    for _ in 0..10 {
        if views.iter().all(|(_, v)| v.is_ok() && *v == views[0].1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        views = member_views(&cluster, &live).await;
    }
    assert!(
        views.iter().all(|(_, v)| v.is_ok() && *v == views[0].1),
        "the members disagree after the chaos (revision, value@mod_revision per key):\n{}\n\
         leader kills: {kill_times}\n{}",
        views
            .iter()
            .map(|(i, v)| format!("  m{i}: {v:?}"))
            .collect::<Vec<_>>()
            .join("\n"),
        cluster.logs()
    );

    assert!(
        kills.len() >= 3,
        "only {} leader kills happened",
        kills.len()
    );
    assert!(
        completed >= 300,
        "only {completed} operations completed; the check proves little"
    );
    eprintln!("whole test: {:?}", began.elapsed());
}
