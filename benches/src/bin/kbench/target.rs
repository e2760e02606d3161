//! The broker under test: an embedded testkit cluster started on the fly, or any broker given
//! with `--bootstrap`; and topic creation on it.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kafka_client::admin::{Admin, NewTopic};
use kafka_client::config::ClientConfig;
use kafka_client::Client;
use testkit::cluster::ExtraListener;
use testkit::{Cluster, ClusterConfig};

/// Name of the extra listener the embedded broker gets for benchmarks: advertised directly,
/// so clients do not pay for testkit's fault proxy.
const BENCH_LISTENER: &str = "BENCH";

/// Where the broker is. Dropping it stops an embedded cluster.
pub struct Target {
    pub bootstrap: String,
    /// `embedded (Apache Kafka <version>, 1 broker, JVM throughput profile)` or `external`.
    pub description: String,
    /// The embedded broker's JVM (for its CPU time); `None` for an external broker.
    pub broker_pid: Option<u32>,
    _cluster: Option<Cluster>,
}

impl Target {
    pub async fn external(bootstrap: String) -> Target {
        Target {
            description: format!("external broker at {bootstrap}"),
            bootstrap,
            broker_pid: None,
            _cluster: None,
        }
    }

    /// Starts a one-broker testkit cluster with the JVM tuned for throughput (G1, full JIT), as
    /// `testkit up --jvm throughput` does.
    pub async fn embedded() -> Result<Target> {
        let mut config = ClusterConfig::with_brokers(1);
        config.jvm_opts = Some(testkit::cluster::throughput_jvm_opts());
        config.extra_listeners.push(ExtraListener {
            name: BENCH_LISTENER.into(),
            security_protocol: "PLAINTEXT".into(),
        });
        config.start_timeout = Duration::from_secs(180);
        let cluster = Cluster::start(config)
            .await
            .map_err(|e| anyhow!("starting the embedded Kafka broker: {e}"))?;
        let node = cluster
            .node(1)
            .ok_or_else(|| anyhow!("embedded cluster has no node 1"))?;
        let port = node
            .listener_port(BENCH_LISTENER)
            .ok_or_else(|| anyhow!("embedded broker lacks the {BENCH_LISTENER} listener"))?;
        let broker_pid = node.pid();
        Ok(Target {
            bootstrap: format!("127.0.0.1:{port}"),
            broker_pid,
            description: format!(
                "embedded Apache Kafka {} (testkit, 1 broker, JVM throughput profile) at 127.0.0.1:{port}",
                testkit::dist::kafka_version()
            ),
            _cluster: Some(cluster),
        })
    }
}

/// Creates `name` with `partitions` partitions (replication factor 1) and waits until every
/// partition has a leader.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> Result<()> {
    create_topic_with(bootstrap, &NewTopic::new(name, partitions, 1)).await
}

/// The number of brokers in the cluster at `bootstrap`.
pub async fn broker_count(bootstrap: &str) -> Result<usize> {
    let mut cfg = ClientConfig::default();
    cfg.bootstrap_servers(vec![bootstrap.to_string()]);
    cfg.client_id("kbench-admin".to_string());
    let admin = Admin::new(cfg)
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    let n = admin.describe_cluster().await.map(|c| c.brokers.len());
    admin.client().close();
    n.context("describing the cluster")
}

/// Creates `topic` and waits until every partition has a leader.
pub async fn create_topic_with(bootstrap: &str, topic: &NewTopic) -> Result<()> {
    let (name, partitions) = (topic.name.as_str(), topic.partitions);
    let mut cfg = ClientConfig::default();
    cfg.bootstrap_servers(vec![bootstrap.to_string()]);
    cfg.client_id("kbench-admin".to_string());
    let client = Client::connect(cfg)
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    Admin::from_client(client.clone())
        .create_topic(topic)
        .await
        .with_context(|| format!("creating topic {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = client.refresh_metadata().await;
        if let Ok(md) = client.topic(name).await {
            if md.error.is_none()
                && md.partitions.len() == partitions as usize
                && md.partitions.iter().all(|p| p.leader >= 0)
            {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("topic {name} has no leader for every partition after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.close();
    Ok(())
}
