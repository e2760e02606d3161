use std::time::{Duration, Instant};

use testkit::probe;
use testkit::{Cluster, ClusterConfig, NodeState};

use crate::util::{eventually, javas_of, pid_gone, START_TIMEOUT};

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_answers_stops_restarts_and_cleans_up() {
    let mut config = ClusterConfig::with_brokers(1);
    config.start_timeout = START_TIMEOUT;
    let started = Instant::now();
    let cluster = Cluster::start(config).await.expect("1-node cluster starts");
    eprintln!("1-node cluster ready in {:?}", started.elapsed());

    let node = cluster.node(1).expect("node 1");
    assert!(cluster.node(0).is_none() && cluster.node(2).is_none());
    assert_eq!(cluster.bootstrap(), node.addr().to_string());
    assert_eq!(node.state(), NodeState::Running);

    // ApiVersions through the proxy, and Metadata advertising the proxy's address.
    let versions = probe::api_versions(node.addr(), T)
        .await
        .expect("ApiVersions");
    assert!(
        versions.api_keys.len() > 20,
        "{} api keys",
        versions.api_keys.len()
    );
    let view = probe::metadata(node.addr(), T).await.expect("Metadata");
    assert_eq!(view.brokers, vec![(1, node.addr().to_string())]);
    assert_eq!(view.controller_id, 1);
    assert_eq!(view.cluster_id.as_deref(), Some(cluster.cluster_id()));
    assert!(
        node.dir()
            .join("server.log")
            .metadata()
            .expect("server.log")
            .len()
            > 0
    );

    // Graceful stop: the process ends and the proxy no longer reaches a broker.
    let pid = node.pid().expect("pid while running");
    let t = Instant::now();
    node.stop().await;
    eprintln!("graceful stop took {:?}", t.elapsed());
    assert_eq!(node.state(), NodeState::Stopped);
    assert!(pid_gone(pid), "java {pid} still alive after stop");
    assert!(probe::api_versions(node.addr(), T).await.is_err());
    let log = std::fs::read_to_string(node.dir().join("server.log")).expect("server.log");
    assert!(
        log.contains("shut down completed"),
        "no clean shutdown in server.log"
    );

    // Restart with the same data and ports.
    let t = Instant::now();
    node.restart().await.expect("restart");
    eprintln!("restart took {:?}", t.elapsed());
    assert_eq!(node.state(), NodeState::Running);
    let view = probe::metadata(node.addr(), T)
        .await
        .expect("Metadata after restart");
    assert_eq!(view.cluster_id.as_deref(), Some(cluster.cluster_id()));

    // Dropping kills the broker and removes the run directory.
    let run_dir = cluster.run_dir().to_path_buf();
    assert_eq!(javas_of(&run_dir).len(), 1);
    drop(cluster);
    assert!(
        eventually(Duration::from_secs(10), || javas_of(&run_dir).is_empty()),
        "java processes left behind"
    );
    assert!(!run_dir.exists(), "run dir not removed");
}

#[tokio::test]
async fn zero_brokers_is_a_config_error() {
    let err = Cluster::start(ClusterConfig::with_brokers(0))
        .await
        .err()
        .expect("0 brokers must fail");
    assert!(matches!(err, testkit::Error::Config(_)), "{err}");
}
