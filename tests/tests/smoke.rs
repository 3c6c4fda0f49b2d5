//! The harness itself: a cluster starts, serves, and loses a member without losing data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on failure by design

use basalt_tests::{Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread")]
async fn three_members_replicate_and_survive_a_kill() {
    let mut cluster = Cluster::start(ClusterOptions::basalt(3)).await;
    let mut client = cluster.client().await;
    client.put("hello", "world", None).await.unwrap();
    let leader = cluster.leader().await.expect("a leader");
    cluster.kill(leader);
    let mut survivor = cluster.client_to((leader + 1) % 3).await;
    let got = survivor.get("hello", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"world");
}
