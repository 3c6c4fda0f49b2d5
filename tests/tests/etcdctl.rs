//! etcdctl compatibility: the same etcdctl 3.4 commands against real etcd and against Basalt,
//! with outputs compared after removing what legitimately differs (member, cluster and lease
//! IDs, Raft terms, versions). Revisions, values, counts, errors and watch streams must match.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on failure by design

use basalt_tests::etcdctl::{Run, etcdctl, etcdctl_stdin};
use basalt_tests::{Cluster, ClusterOptions};
use serde_json::Value;

/// One etcdctl session against a single-member cluster.
struct Side {
    cluster: Cluster,
}

impl Side {
    fn run(&mut self, args: &[&str]) -> Run {
        etcdctl(&self.cluster.all_endpoints(), args)
    }

    fn run_stdin(&mut self, args: &[&str], input: &str) -> Run {
        etcdctl_stdin(&self.cluster.all_endpoints(), args, Some(input))
    }
}

/// Replaces hex IDs (16 hex digits, as etcdctl prints lease IDs) with a placeholder.
fn scrub_ids(text: &str) -> String {
    text.split_inclusive(|c: char| !c.is_ascii_hexdigit())
        .map(|token| {
            let hex_len = token.chars().take_while(char::is_ascii_hexdigit).count();
            if hex_len >= 12 && token[..hex_len].chars().any(|c| c.is_ascii_digit()) {
                format!("<id>{}", &token[hex_len..])
            } else {
                token.to_string()
            }
        })
        .collect()
}

/// Drops the header fields that name members, clusters and terms.
fn scrub_json(mut value: Value) -> Value {
    if let Some(header) = value.get_mut("header").and_then(Value::as_object_mut) {
        header.remove("cluster_id");
        header.remove("member_id");
        header.remove("raft_term");
    }
    value
}

/// Runs the same command on both sides and asserts equal (scrubbed) results.
fn same(etcd: &mut Side, basalt: &mut Side, args: &[&str]) -> String {
    let (e, b) = (etcd.run(args), basalt.run(args));
    compare(args, e, b)
}

fn same_stdin(etcd: &mut Side, basalt: &mut Side, args: &[&str], input: &str) -> String {
    let (e, b) = (etcd.run_stdin(args, input), basalt.run_stdin(args, input));
    compare(args, e, b)
}

fn compare(args: &[&str], e: Run, b: Run) -> String {
    assert_eq!(
        e.ok, b.ok,
        "etcdctl {args:?}: etcd ok={} basalt ok={}\netcd: {}{}\nbasalt: {}{}",
        e.ok, b.ok, e.stdout, e.stderr, b.stdout, b.stderr
    );
    if args.contains(&"json") && e.ok {
        let parse = |side: &str, out: &str| -> Value {
            serde_json::from_str(out).unwrap_or_else(|err| {
                panic!("etcdctl {args:?} on {side}: not JSON ({err}): {out:?}")
            })
        };
        let ej = scrub_json(parse("etcd", &e.stdout));
        let bj = scrub_json(parse("basalt", &b.stdout));
        assert_eq!(ej, bj, "etcdctl {args:?} differs");
    } else {
        assert_eq!(
            scrub_ids(&e.stdout),
            scrub_ids(&b.stdout),
            "etcdctl {args:?} differs"
        );
    }
    if !e.ok {
        // The last line of stderr carries the error; both must say the same thing.
        let last = |s: &str| s.lines().last().unwrap_or_default().to_string();
        assert_eq!(
            last(&e.stderr),
            last(&b.stderr),
            "etcdctl {args:?}: different errors"
        );
    }
    b.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_sees_etcd_semantics() {
    let mut etcd = Side {
        cluster: Cluster::start(ClusterOptions::etcd(1)).await,
    };
    let mut basalt = Side {
        cluster: Cluster::start(ClusterOptions::basalt(1)).await,
    };
    let e = &mut etcd;
    let b = &mut basalt;

    // put / get / revisions
    assert_eq!(same(e, b, &["put", "foo", "bar"]), "OK\n");
    same(e, b, &["put", "foo2", "bar2"]);
    same(e, b, &["put", "foo", "baz"]);
    assert_eq!(same(e, b, &["get", "foo"]), "foo\nbaz\n");
    same(e, b, &["get", "foo", "--rev", "2"]);
    same(e, b, &["get", "foo", "-w", "json"]);
    same(e, b, &["get", "--prefix", "foo", "-w", "json"]);
    same(
        e,
        b,
        &["get", "--prefix", "foo", "--limit", "1", "-w", "json"],
    );
    same(e, b, &["get", "--prefix", "foo", "--keys-only"]);
    same(
        e,
        b,
        &[
            "get",
            "--prefix",
            "foo",
            "--sort-by",
            "VALUE",
            "--order",
            "DESCEND",
        ],
    );
    same(e, b, &["get", "--from-key", "foo2"]);
    same(e, b, &["get", "--prefix", "nothing-here"]);
    same(e, b, &["get", "foo", "--rev", "99"]);
    same(e, b, &["put", "foo", "qux", "--prev-kv"]);

    // txn
    same_stdin(
        e,
        b,
        &["txn"],
        "value(\"foo\") = \"qux\"\n\nput t yes\n\nput t no\n\n",
    );
    same_stdin(
        e,
        b,
        &["txn"],
        "value(\"foo\") = \"nope\"\n\nput t yes\n\nget t\n\n",
    );
    same_stdin(
        e,
        b,
        &["txn", "-w", "json"],
        "mod(\"t\") > \"0\"\n\nget t\n\n\n",
    );
    same_stdin(
        e,
        b,
        &["txn"],
        "create(\"absent\") = \"0\"\n\nput absent now\n\n\n",
    );

    // del
    assert_eq!(same(e, b, &["del", "foo"]), "1\n");
    same(e, b, &["del", "--prefix", "foo", "--prev-kv"]);
    same(e, b, &["del", "never-existed"]);

    // watch replays history from a revision, then stops on the timeout
    let watch = &["watch", "--prefix", "", "--rev", "2", "--prev-kv"];
    let replay = |side: &mut Side| {
        let mut args = vec!["--dial-timeout=2s"];
        args.extend_from_slice(watch);
        std::process::Command::new("timeout")
            .arg("2")
            .arg("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!(
                "--endpoints={}",
                side.cluster.all_endpoints().join(",")
            ))
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .expect("etcdctl watch")
    };
    let (etcd_events, basalt_events) = (replay(e), replay(b));
    assert!(etcd_events.contains("PUT"), "{etcd_events}");
    assert_eq!(etcd_events, basalt_events, "watch history differs");

    // compaction
    same(e, b, &["compact", "5"]);
    same(e, b, &["get", "foo2", "--rev", "3"]);
    same(e, b, &["get", "t", "--rev", "5"]);
    same(e, b, &["compact", "4"]);

    // leases (IDs differ; TTLs, keys and behaviour must not)
    let grant = |side: &mut Side| -> String {
        let out = side
            .run(&["lease", "grant", "100"])
            .expect_ok("lease grant");
        out.split_whitespace().nth(1).expect("lease id").to_string()
    };
    let (el, bl) = (grant(e), grant(b));
    for (side, lease) in [(&mut *e, &el), (&mut *b, &bl)] {
        side.run(&["put", "leased", "v", "--lease", lease])
            .expect_ok("put --lease");
    }
    let ttl = |side: &mut Side, lease: &str| {
        scrub_ids(
            &side
                .run(&["lease", "timetolive", lease, "--keys"])
                .expect_ok("ttl"),
        )
    };
    assert_eq!(ttl(e, &el), ttl(b, &bl));
    let list = |side: &mut Side| scrub_ids(&side.run(&["lease", "list"]).expect_ok("lease list"));
    assert_eq!(list(e), list(b));
    let once = |side: &mut Side, lease: &str| {
        scrub_ids(
            &side
                .run(&["lease", "keep-alive", "--once", lease])
                .expect_ok("keep-alive"),
        )
    };
    assert_eq!(once(e, &el), once(b, &bl));
    let revoke = |side: &mut Side, lease: &str| {
        scrub_ids(&side.run(&["lease", "revoke", lease]).expect_ok("revoke"))
    };
    assert_eq!(revoke(e, &el), revoke(b, &bl));
    same(e, b, &["get", "leased"]);
    let gone = |side: &mut Side, lease: &str| {
        scrub_ids(
            &side
                .run(&["lease", "timetolive", lease])
                .expect_ok("ttl gone"),
        )
    };
    assert_eq!(gone(e, &el), gone(b, &bl));

    // endpoint and member commands
    for side in [&mut *e, &mut *b] {
        // etcdctl prints health to standard error.
        let health = side.run(&["endpoint", "health"]);
        assert!(
            health.ok && health.stderr.contains("is healthy"),
            "{health:?}"
        );
        let status = side
            .run(&["endpoint", "status", "-w", "json"])
            .json("endpoint status");
        let status = &status[0]["Status"];
        assert_eq!(
            status["leader"], status["header"]["member_id"],
            "single member leads: {status}"
        );
        let members = side
            .run(&["member", "list", "-w", "json"])
            .json("member list");
        assert_eq!(
            members["members"].as_array().map(Vec::len),
            Some(1),
            "{members}"
        );
    }
    // A learner added but never started, then removed.
    for side in [&mut *e, &mut *b] {
        let peer = side.cluster.next_spec().peer_url();
        let added = side
            .run(&["member", "add", "later", "--learner", "--peer-urls", &peer])
            .expect_ok("member add");
        assert!(added.contains("added to cluster"), "{added}");
        let members = side
            .run(&["member", "list", "-w", "json"])
            .json("member list");
        let learner = members["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["isLearner"] == Value::Bool(true)))
            .cloned()
            .unwrap_or_else(|| panic!("no learner in {members}"));
        let id = format!("{:x}", learner["ID"].as_u64().expect("member id"));
        side.run(&["member", "remove", &id])
            .expect_ok("member remove");
        let members = side
            .run(&["member", "list", "-w", "json"])
            .json("member list");
        assert_eq!(
            members["members"].as_array().map(Vec::len),
            Some(1),
            "{members}"
        );
    }

    // snapshot save
    for side in [&mut *e, &mut *b] {
        let path = side.cluster.dir().join("saved.db");
        let out = side.run(&["snapshot", "save", path.to_str().expect("path")]);
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(out.ok, "snapshot save failed: {text}");
        assert!(
            std::fs::metadata(&path)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        );
    }
}
