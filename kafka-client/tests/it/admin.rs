//! Admin operations against a real single-node broker (`testkit::shared_cluster(1)`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_client::admin::{Admin, AlterConfigOp, ConfigResource, NewTopic};
use kafka_client::config::{ClientConfig, IsolationLevel};
use kafka_client::kafka_wire::messages::join_group::JoinGroupRequestProtocol;
use kafka_client::kafka_wire::messages::offset_commit::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_client::kafka_wire::messages::produce::{PartitionProduceData, TopicProduceData};
use kafka_client::kafka_wire::messages::sync_group::SyncGroupRequestAssignment;
use kafka_client::kafka_wire::messages::{
    JoinGroupRequest, OffsetCommitRequest, ProduceRequest, SyncGroupRequest,
};
use kafka_client::kafka_wire::records::{BatchBuilder, BatchOptions};
use kafka_client::kafka_wire::{ErrorCode, KString};
use kafka_client::{Offset, Purpose, TopicPartition};

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{n}")
}

async fn admin() -> Admin {
    let cluster = testkit::shared_cluster(1).await.expect("shared cluster");
    let mut cfg = ClientConfig::default();
    cfg.bootstrap_servers(vec![cluster.bootstrap()])
        .client_id("admin-it".to_string())
        .request_timeout(Duration::from_secs(20));
    Admin::new(cfg).await.expect("admin connects")
}

/// Appends `n` records to `topic`/`partition` with a raw Produce request to its leader.
async fn produce(admin: &Admin, topic: &str, partition: i32, n: usize) {
    let client = admin.client();
    let t = client.topic(topic).await.expect("topic metadata");
    let leader = t.partition(partition).expect("partition").leader;
    let topic_id = t.topic_id;
    let mut b = BatchBuilder::new(BatchOptions::default());
    for i in 0..n {
        b.append(0, Some(format!("k{i}").as_bytes()), Some(b"v"), &[])
            .unwrap();
    }
    let batch = b.finish().unwrap();
    let name = topic.to_string();
    let resp = client
        .send(leader, Purpose::Produce, move |v| ProduceRequest {
            acks: -1,
            timeout_ms: 10_000,
            topic_data: vec![TopicProduceData {
                name: if v >= 13 {
                    KString::new()
                } else {
                    KString::from(name.as_str())
                },
                topic_id: if v >= 13 {
                    topic_id
                } else {
                    Default::default()
                },
                partition_data: vec![PartitionProduceData {
                    index: partition,
                    records: Some(batch),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("produce");
    let code = resp.responses[0].partition_responses[0].error_code;
    assert_eq!(code, 0, "produce error {code}");
}

#[tokio::test]
async fn create_describe_and_already_exists() {
    let admin = admin().await;
    let name = unique("adm-create");
    let created = admin
        .create_topic(&NewTopic::new(&name, 3, 1).config("cleanup.policy", "compact"))
        .await
        .expect("create");
    assert_eq!(created.partitions, 3);
    assert_ne!(created.topic_id, Default::default());

    let d = admin.describe_topics(&[&name]).await.expect("describe");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].name, name);
    assert_eq!(d[0].topic_id, created.topic_id);
    assert_eq!(d[0].partitions.len(), 3);
    for (i, p) in d[0].partitions.iter().enumerate() {
        assert_eq!(p.partition, i as i32);
        assert_eq!(p.leader, 1, "create_topics waits for leaders");
        assert_eq!(p.replicas, vec![1]);
        assert_eq!(p.isr, vec![1]);
    }

    // Again: TOPIC_ALREADY_EXISTS, typed and with the topic name.
    let err = admin
        .create_topic(&NewTopic::new(&name, 3, 1))
        .await
        .expect_err("exists");
    assert_eq!(err.broker_code(), Some(ErrorCode::TOPIC_ALREADY_EXISTS));
    match &err {
        kafka_client::Error::Broker(b) => assert_eq!(b.topic.as_deref(), Some(name.as_str())),
        other => panic!("expected a broker error, got {other:?}"),
    }
    assert!(!admin
        .create_topic_if_absent(&NewTopic::new(&name, 3, 1))
        .await
        .unwrap());
    let other = unique("adm-absent");
    assert!(admin
        .create_topic_if_absent(&NewTopic::new(&other, 1, 1))
        .await
        .unwrap());

    // Per-topic results in one request: one bad (RF 3 on one broker), one good.
    let bad = unique("adm-bad-rf");
    let good = unique("adm-good");
    let results = admin
        .create_topics(&[NewTopic::new(&bad, 1, 3), NewTopic::new(&good, 2, 1)])
        .await
        .expect("request");
    assert_eq!(results[0].0, bad);
    assert_eq!(
        results[0].1.as_ref().unwrap_err().broker_code(),
        Some(ErrorCode::INVALID_REPLICATION_FACTOR)
    );
    assert_eq!(results[1].0, good);
    assert_eq!(results[1].1.as_ref().unwrap().partitions, 2);

    // The config given at creation is visible.
    let configs = admin
        .describe_configs(&ConfigResource::Topic(name.clone()))
        .await
        .unwrap();
    let policy = configs.iter().find(|c| c.name == "cleanup.policy").unwrap();
    assert_eq!(policy.value.as_deref(), Some("compact"));
    assert!(!policy.is_default);
}

/// Describes `resource` until `key` has `value` (at most 10 s), then returns the entries.
async fn describe_until(
    admin: &Admin,
    resource: &ConfigResource,
    key: &str,
    value: Option<&str>,
) -> Vec<kafka_client::admin::ConfigEntry> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let entries = admin.describe_configs(resource).await.unwrap();
        let got = entries
            .iter()
            .find(|c| c.name == key)
            .map(|c| c.value.clone());
        if got.as_ref().map(|v| v.as_deref()) == Some(value) || std::time::Instant::now() > deadline
        {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn alter_and_describe_configs() {
    let admin = admin().await;
    let name = unique("adm-config");
    admin
        .create_topic(&NewTopic::new(&name, 1, 1))
        .await
        .unwrap();
    let resource = ConfigResource::Topic(name.clone());

    let before = admin.describe_configs(&resource).await.unwrap();
    let retention = before.iter().find(|c| c.name == "retention.ms").unwrap();
    assert!(retention.is_default, "{retention:?}");
    assert_eq!(retention.value.as_deref(), Some("604800000"));

    admin
        .alter_configs(
            &resource,
            &[
                AlterConfigOp::set("retention.ms", "123456"),
                AlterConfigOp::set("max.message.bytes", "200000"),
            ],
        )
        .await
        .unwrap();
    // The controller commits the change; the broker answering DescribeConfigs applies it from
    // the metadata log a moment later.
    let after = describe_until(&admin, &resource, "retention.ms", Some("123456")).await;
    let get = |k: &str| after.iter().find(|c| c.name == k).unwrap().clone();
    assert_eq!(get("retention.ms").value.as_deref(), Some("123456"));
    assert!(!get("retention.ms").is_default);
    assert_eq!(get("max.message.bytes").value.as_deref(), Some("200000"));

    // Delete one override: back to the default, the other one stays.
    admin
        .alter_configs(&resource, &[AlterConfigOp::delete("retention.ms")])
        .await
        .unwrap();
    let after = describe_until(&admin, &resource, "retention.ms", Some("604800000")).await;
    let get = |k: &str| after.iter().find(|c| c.name == k).unwrap().clone();
    assert_eq!(get("retention.ms").value.as_deref(), Some("604800000"));
    assert!(get("retention.ms").is_default);
    assert_eq!(get("max.message.bytes").value.as_deref(), Some("200000"));

    // A bad value: typed error with the topic.
    let err = admin
        .alter_configs(
            &resource,
            &[AlterConfigOp::set("retention.ms", "not-a-number")],
        )
        .await
        .expect_err("invalid value");
    assert_eq!(err.broker_code(), Some(ErrorCode::INVALID_CONFIG));

    // Broker configs come from the broker itself.
    let broker = admin
        .describe_configs(&ConfigResource::Broker(1))
        .await
        .unwrap();
    let auto = broker
        .iter()
        .find(|c| c.name == "auto.create.topics.enable")
        .unwrap();
    assert_eq!(auto.value.as_deref(), Some("false"));
    assert!(broker.iter().any(|c| c.name == "node.id" && c.read_only));

    // Unknown topic.
    let err = admin
        .describe_configs(&ConfigResource::Topic(unique("adm-missing")))
        .await
        .expect_err("missing topic");
    assert_eq!(
        err.broker_code(),
        Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
    );
}

#[tokio::test]
async fn create_partitions_grows_the_topic() {
    let admin = admin().await;
    let name = unique("adm-parts");
    admin
        .create_topic(&NewTopic::new(&name, 2, 1))
        .await
        .unwrap();
    admin.create_partitions(&name, 5).await.unwrap();
    let d = admin.describe_topics(&[&name]).await.unwrap();
    assert_eq!(d[0].partitions.len(), 5);
    assert!(d[0].partitions.iter().all(|p| p.leader == 1));
    // Shrinking is refused with a typed error.
    let err = admin.create_partitions(&name, 3).await.expect_err("shrink");
    assert_eq!(err.broker_code(), Some(ErrorCode::INVALID_PARTITIONS));
}

#[tokio::test]
async fn delete_records_moves_the_low_watermark() {
    let admin = admin().await;
    let name = unique("adm-delrec");
    admin
        .create_topic(&NewTopic::new(&name, 2, 1))
        .await
        .unwrap();
    produce(&admin, &name, 0, 10).await;
    produce(&admin, &name, 1, 4).await;
    let tp0 = TopicPartition::new(&name, 0);
    let tp1 = TopicPartition::new(&name, 1);

    let earliest = |admin: Admin, tp: TopicPartition| async move {
        admin
            .list_offsets(
                &[(tp.clone(), Offset::Earliest)],
                IsolationLevel::ReadUncommitted,
            )
            .await
            .unwrap()[&tp]
            .offset
    };
    assert_eq!(earliest(admin.clone(), tp0.clone()).await, 0);
    let latest = admin
        .list_offsets(
            &[(tp0.clone(), Offset::Latest)],
            IsolationLevel::ReadUncommitted,
        )
        .await
        .unwrap();
    assert_eq!(latest[&tp0].offset, 10);

    let lw = admin
        .delete_records(&[(tp0.clone(), 7), (tp1.clone(), -1)])
        .await
        .unwrap();
    assert_eq!(lw[&tp0], 7);
    assert_eq!(lw[&tp1], 4, "-1 deletes up to the high watermark");
    assert_eq!(earliest(admin.clone(), tp0.clone()).await, 7);
    assert_eq!(earliest(admin.clone(), tp1.clone()).await, 4);

    // Past the high watermark: typed error with the partition.
    let err = admin
        .delete_records(&[(tp0.clone(), 100)])
        .await
        .expect_err("beyond the end");
    assert_eq!(err.broker_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
    // A partition the topic does not have.
    let err = admin
        .delete_records(&[(TopicPartition::new(&name, 9), 0)])
        .await
        .expect_err("no partition 9");
    assert_eq!(
        err.broker_code(),
        Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
    );
}

#[tokio::test]
async fn delete_topics_then_describe_is_unknown() {
    let admin = admin().await;
    let name = unique("adm-delete");
    admin
        .create_topic(&NewTopic::new(&name, 1, 1))
        .await
        .unwrap();
    let missing = unique("adm-never");
    let results = admin.delete_topics(&[&name, &missing]).await.unwrap();
    assert_eq!(results.len(), 2);
    assert!(results[0].1.is_ok(), "{:?}", results[0]);
    assert_eq!(
        results[1].1.as_ref().unwrap_err().broker_code(),
        Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
    );
    let err = admin.describe_topics(&[&name]).await.expect_err("deleted");
    assert_eq!(
        err.broker_code(),
        Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
    );
    match err {
        kafka_client::Error::Broker(b) => assert_eq!(b.topic.as_deref(), Some(name.as_str())),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn describe_cluster_lists_the_node() {
    let admin = admin().await;
    let cluster = testkit::shared_cluster(1).await.unwrap();
    let d = admin.describe_cluster().await.unwrap();
    assert_eq!(d.cluster_id, cluster.cluster_id());
    assert_eq!(d.brokers.len(), 1);
    assert_eq!(d.brokers[0].id, 1);
    assert_eq!(
        format!("{}:{}", d.brokers[0].host, d.brokers[0].port),
        cluster.node(1).unwrap().addr().to_string()
    );
    assert_eq!(d.controller, Some(1));
}

#[tokio::test]
async fn list_and_describe_groups() {
    let admin = admin().await;
    let client = admin.client().clone();
    let topic = unique("adm-groups");
    admin
        .create_topic(&NewTopic::new(&topic, 1, 1))
        .await
        .unwrap();

    // A group with only committed offsets (standalone commit: generation -1, no member).
    let offsets_group = unique("adm-offsets-group");
    let topic_id = client.topic(&topic).await.unwrap().topic_id;
    // The offsets topic may still be loading on first use: retry retriable codes (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let coord = admin.find_group_coordinator(&offsets_group).await.unwrap();
        let (g, t) = (offsets_group.clone(), topic.clone());
        let resp = client
            .send(coord, Purpose::Group, move |v| OffsetCommitRequest {
                group_id: KString::from(g.as_str()),
                generation_id_or_member_epoch: -1,
                topics: vec![OffsetCommitRequestTopic {
                    name: if v >= 10 {
                        KString::new()
                    } else {
                        KString::from(t.as_str())
                    },
                    topic_id: if v >= 10 {
                        topic_id
                    } else {
                        Default::default()
                    },
                    partitions: vec![OffsetCommitRequestPartition {
                        partition_index: 0,
                        committed_offset: 5,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        let code = ErrorCode(resp.topics[0].partitions[0].error_code);
        if code == ErrorCode::NONE {
            break;
        }
        assert!(
            code.is_retriable() && std::time::Instant::now() < deadline,
            "OffsetCommit failed: {code:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A classic group with one member: JoinGroup (twice: MEMBER_ID_REQUIRED), then SyncGroup.
    let classic = unique("adm-classic");
    let coord = admin.find_group_coordinator(&classic).await.unwrap();
    let join = |member: String| {
        let g = classic.clone();
        let client = client.clone();
        async move {
            client
                .send(coord, Purpose::Group, move |_| JoinGroupRequest {
                    group_id: KString::from(g.as_str()),
                    session_timeout_ms: 30_000,
                    rebalance_timeout_ms: 10_000,
                    member_id: KString::from(member.as_str()),
                    protocol_type: KString::from("consumer"),
                    protocols: vec![JoinGroupRequestProtocol {
                        name: KString::from("range"),
                        metadata: bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0]),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let first = join(String::new()).await;
    let member_id = if first.error_code == ErrorCode::MEMBER_ID_REQUIRED.0 {
        let again = join(first.member_id.to_string()).await;
        assert_eq!(again.error_code, 0);
        again
    } else {
        assert_eq!(first.error_code, 0);
        first
    };
    let generation = member_id.generation_id;
    let member = member_id.member_id.to_string();
    let (g, m) = (classic.clone(), member.clone());
    let sync = client
        .send(coord, Purpose::Group, move |_| SyncGroupRequest {
            group_id: KString::from(g.as_str()),
            generation_id: generation,
            member_id: KString::from(m.as_str()),
            protocol_type: Some(KString::from("consumer")),
            protocol_name: Some(KString::from("range")),
            assignments: vec![SyncGroupRequestAssignment {
                member_id: KString::from(m.as_str()),
                assignment: bytes::Bytes::new(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sync.error_code, 0);

    let groups = admin.list_groups().await.unwrap();
    let listed_offsets = groups
        .iter()
        .find(|g| g.group_id == offsets_group)
        .unwrap_or_else(|| panic!("{offsets_group} not in {groups:?}"));
    assert_eq!(listed_offsets.protocol_type, "");
    let listed_classic = groups.iter().find(|g| g.group_id == classic).unwrap();
    assert_eq!(listed_classic.protocol_type, "consumer");
    assert_eq!(listed_classic.state.as_deref(), Some("Stable"));

    let d = admin
        .describe_groups(&[&classic, &offsets_group])
        .await
        .unwrap();
    assert_eq!(d[0].group_id, classic);
    assert_eq!(d[0].state, "Stable");
    assert_eq!(d[0].protocol_type, "consumer");
    assert_eq!(d[0].protocol, "range");
    assert_eq!(d[0].members.len(), 1);
    assert_eq!(d[0].members[0].member_id, member);
    assert_eq!(d[0].members[0].client_id, "admin-it");
    assert!(!d[0].members[0].host.is_empty());
    assert_eq!(d[1].group_id, offsets_group);
    assert_eq!(d[1].state, "Empty");
    assert!(d[1].members.is_empty());

    // Committed offsets (OffsetFetch; v10 names topics by id, resolved to names).
    let committed = admin.list_group_offsets(&offsets_group).await.unwrap();
    assert_eq!(
        committed.into_iter().collect::<Vec<_>>(),
        vec![(TopicPartition::new(&topic, 0), 5)]
    );
    assert!(admin.list_group_offsets(&classic).await.unwrap().is_empty());

    // Deleting: the empty group goes, the one with a member is refused, a missing one is
    // GROUP_ID_NOT_FOUND.
    let missing = unique("adm-no-such-group");
    let deleted = admin
        .delete_groups(&[&offsets_group, &classic, &missing])
        .await
        .unwrap();
    assert!(deleted[0].1.is_ok(), "{deleted:?}");
    assert_eq!(
        deleted[1].1.as_ref().unwrap_err().broker_code(),
        Some(ErrorCode::NON_EMPTY_GROUP)
    );
    assert_eq!(
        deleted[2].1.as_ref().unwrap_err().broker_code(),
        Some(ErrorCode::GROUP_ID_NOT_FOUND)
    );
    let groups = admin.list_groups().await.unwrap();
    assert!(
        !groups.iter().any(|g| g.group_id == offsets_group),
        "{groups:?}"
    );
    assert!(groups.iter().any(|g| g.group_id == classic));
}

#[tokio::test]
async fn describe_kip848_consumer_group() {
    use kafka_client::kafka_wire::messages::ConsumerGroupHeartbeatRequest;
    let admin = admin().await;
    let client = admin.client().clone();
    let topic = unique("adm-848");
    admin
        .create_topic(&NewTopic::new(&topic, 2, 1))
        .await
        .unwrap();
    let group = unique("adm-848-group");
    // KIP-848: the member id is made by the client (a UUID-like string), epoch 0 joins.
    let member_id = format!("m{}", unique("x").replace('-', ""));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let coord = admin.find_group_coordinator(&group).await.unwrap();
        let (g, m, t) = (group.clone(), member_id.clone(), topic.clone());
        let resp = client
            .send(coord, Purpose::Group, move |_| {
                ConsumerGroupHeartbeatRequest {
                    group_id: KString::from(g.as_str()),
                    member_id: KString::from(m.as_str()),
                    member_epoch: 0,
                    rebalance_timeout_ms: 30_000,
                    subscribed_topic_names: Some(vec![KString::from(t.as_str())]),
                    topic_partitions: Some(Vec::new()),
                    ..Default::default()
                }
            })
            .await
            .unwrap();
        let code = ErrorCode(resp.error_code);
        if code == ErrorCode::NONE {
            break;
        }
        assert!(
            code.is_retriable() && std::time::Instant::now() < deadline,
            "ConsumerGroupHeartbeat failed: {code:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = admin.list_groups().await.unwrap();
    let l = listed.iter().find(|l| l.group_id == group).unwrap();
    assert_eq!(l.group_type.as_deref(), Some("consumer"));

    let d = admin.describe_groups(&[&group]).await.unwrap();
    assert_eq!(d[0].group_id, group);
    assert!(d[0].is_consumer_protocol);
    assert_eq!(d[0].protocol_type, "consumer");
    assert_eq!(d[0].members.len(), 1);
    assert_eq!(d[0].members[0].member_id, member_id);
    assert_eq!(d[0].members[0].client_id, "admin-it");

    // A group nobody created: a typed error with the group id, not a panic.
    let missing = unique("adm-no-group");
    match admin.describe_groups(&[&missing]).await {
        Ok(d) => assert_eq!(d[0].state, "Dead", "{d:?}"),
        Err(e) => {
            assert_eq!(
                e.broker_code(),
                Some(ErrorCode::GROUP_ID_NOT_FOUND),
                "{e:?}"
            );
            match e {
                kafka_client::Error::Broker(b) => {
                    assert_eq!(b.group.as_deref(), Some(missing.as_str()))
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
