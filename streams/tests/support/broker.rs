//! What the broker tests share: the shared 1-node cluster, unique names, client settings and
//! topic creation.

use std::time::{SystemTime, UNIX_EPOCH};

use streams::kafka_client::admin::{Admin, NewTopic};
use streams::kafka_client::config::ClientConfig;
use streams::kafka_client::Client;

/// The bootstrap of testkit's shared 1-node cluster (the test fails if it cannot start).
pub async fn bootstrap() -> String {
    testkit::shared_cluster(1)
        .await
        .expect("the shared 1-node cluster must start")
        .bootstrap()
}

/// `{prefix}-{nanoseconds}`: a name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{n}")
}

/// Client settings for `bootstrap` (`host:port[,host:port...]`).
pub fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::default();
    c.bootstrap_servers(bootstrap.split(',').map(str::to_string).collect::<Vec<_>>());
    c
}

/// Creates `topic` (RF 1) unless it exists.
pub async fn create(bootstrap: &str, topic: &str, partitions: i32) {
    let c = Client::connect(client(bootstrap)).await.unwrap();
    Admin::from_client(c)
        .create_topic_if_absent(&NewTopic::new(topic, partitions, 1))
        .await
        .unwrap();
}
