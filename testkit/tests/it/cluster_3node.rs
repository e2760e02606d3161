use std::time::{Duration, Instant};

use testkit::probe;
use testkit::{Cluster, ClusterConfig, NodeState};

use crate::util::{javas_of, pid_gone, START_TIMEOUT};

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_a_kill_and_restart() {
    let mut config = ClusterConfig::with_brokers(3);
    config.start_timeout = START_TIMEOUT;
    let started = Instant::now();
    let cluster = Cluster::start(config).await.expect("3-node cluster starts");
    eprintln!("3-node cluster ready in {:?}", started.elapsed());
    assert_eq!(javas_of(cluster.run_dir()).len(), 3);

    let advertised: Vec<(i32, String)> = cluster
        .nodes()
        .iter()
        .map(|n| (n.id(), n.addr().to_string()))
        .collect();
    assert_eq!(cluster.bootstrap().split(',').count(), 3);
    for node in cluster.nodes() {
        probe::api_versions(node.addr(), T)
            .await
            .unwrap_or_else(|e| panic!("node {} ApiVersions: {e}", node.id()));
        let view = probe::metadata(node.addr(), T)
            .await
            .unwrap_or_else(|e| panic!("node {} Metadata: {e}", node.id()));
        assert_eq!(view.brokers, advertised, "node {} sees", node.id());
        assert!((1..=3).contains(&view.controller_id));
    }
    let props = std::fs::read_to_string(cluster.node(1).unwrap().dir().join("server.properties"))
        .expect("server.properties");
    for line in [
        "offsets.topic.replication.factor=3",
        "transaction.state.log.replication.factor=3",
        "transaction.state.log.min.isr=2",
    ] {
        assert!(props.lines().any(|l| l == line), "missing {line}");
    }

    // SIGKILL node 3: the other two keep answering, and drop it from the live brokers.
    let victim = cluster.node(3).unwrap();
    let pid = victim.pid().expect("pid");
    victim.kill();
    assert_eq!(victim.state(), NodeState::Killed);
    assert!(pid_gone(pid), "java {pid} survived SIGKILL");
    assert!(probe::api_versions(victim.addr(), T).await.is_err());
    let t = Instant::now();
    let deadline = t + Duration::from_secs(60);
    loop {
        let mut all_answer = true;
        let mut without_3 = true;
        for node in &cluster.nodes()[..2] {
            match probe::metadata(node.addr(), T).await {
                Ok(v) => {
                    assert!(v.controller_id >= 1, "no controller: {v:?}");
                    without_3 &= v.brokers.iter().all(|b| b.0 != 3);
                }
                Err(e) => {
                    all_answer = false;
                    eprintln!("node {} after kill: {e}", node.id());
                }
            }
        }
        assert!(all_answer, "survivors must keep answering");
        if without_3 {
            break;
        }
        assert!(Instant::now() < deadline, "node 3 still listed after 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("node 3 fenced out after {:?}", t.elapsed());
    cluster.wait_ready().await.expect("two nodes ready");

    // Restart it: all three answer again.
    let t = Instant::now();
    victim.restart().await.expect("restart node 3");
    cluster.wait_ready().await.expect("three nodes ready again");
    eprintln!("node 3 back after {:?}", t.elapsed());
    for node in cluster.nodes() {
        let view = probe::metadata(node.addr(), T).await.expect("Metadata");
        assert_eq!(view.brokers, advertised, "node {} sees", node.id());
    }
    let run_dir = cluster.run_dir().to_path_buf();
    drop(cluster);
    assert!(javas_of(&run_dir).is_empty(), "java processes left behind");
}
