//! Delivery callbacks (`Producer::send_with`) against the shared broker: every record's callback
//! is called once, with the (partition, offset) the record really has, before `flush` returns;
//! a callback may use the producer; a panicking callback does not stop it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_client::{Consumer, Offset, ProducerRecord, TopicPartition};

use crate::consumer::{bootstrap, consumer_config, create_topic};
use crate::group::{producer, unique, value_of};

const RECORDS: u64 = 5_000;
const PARTITIONS: i32 = 3;
/// This record's callback panics after noting its delivery.
const PANICS_AT: u64 = 17;

/// (partition, offset), once the callback told.
type Where = Option<(i32, i64)>;

#[tokio::test]
async fn send_with_calls_each_callback_once_before_flush_returns() {
    crate::logs();
    let bootstrap = bootstrap().await;
    let topic = unique("callbacks");
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, PARTITIONS).await;
    // Per record: where its callback said it was written.
    let seen: Arc<Mutex<Vec<Where>>> = Arc::new(Mutex::new(vec![None; RECORDS as usize]));
    let twice = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let without_id = Arc::new(AtomicU64::new(0));
    for i in 0..RECORDS {
        let (seen, twice, errors, without_id) = (
            seen.clone(),
            twice.clone(),
            errors.clone(),
            without_id.clone(),
        );
        let probe = p.clone();
        let want_topic = topic.clone();
        let rec = ProducerRecord::new(topic.clone())
            .partition((i % PARTITIONS as u64) as i32)
            .value(i.to_string());
        p.send_with(rec, move |r| {
            // The producer's state is not locked while a callback runs.
            if probe.producer_id().is_none() {
                without_id.fetch_add(1, Ordering::Relaxed);
            }
            match r {
                Ok(md) => {
                    let mut s = seen.lock().unwrap();
                    if *md.topic != *want_topic {
                        errors
                            .lock()
                            .unwrap()
                            .push((i, format!("topic {}", md.topic)));
                    }
                    if s[i as usize].replace((md.partition, md.offset)).is_some() {
                        twice.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => errors.lock().unwrap().push((i, e.to_string())),
            }
            if i == PANICS_AT {
                panic!("a delivery callback that panics (expected by the test)");
            }
        })
        .await
        .expect("send_with");
    }
    p.flush().await.expect("flush");
    // flush returned: every callback has run, none twice.
    let seen = seen.lock().unwrap().clone();
    assert!(
        errors.lock().unwrap().is_empty(),
        "{:?}",
        errors.lock().unwrap()
    );
    assert_eq!(twice.load(Ordering::Relaxed), 0, "callbacks called twice");
    assert_eq!(without_id.load(Ordering::Relaxed), 0);
    let missing = seen.iter().filter(|s| s.is_none()).count();
    assert_eq!(
        missing, 0,
        "callbacks not called by the time flush returned"
    );
    let distinct: HashSet<(i32, i64)> = seen.iter().flatten().copied().collect();
    assert_eq!(
        distinct.len(),
        RECORDS as usize,
        "two records at one offset"
    );
    // The producer goes on after the panicking callback.
    let last = p
        .send(
            ProducerRecord::new(topic.clone())
                .partition(0)
                .value("after"),
        )
        .await
        .expect("send after a panicking callback")
        .await
        .expect("delivery after a panicking callback");
    assert_eq!(last.partition, 0);
    p.close().await.expect("close");

    // Each record is where its callback said.
    let consumer = Consumer::new(consumer_config(&bootstrap))
        .await
        .expect("consumer");
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|i| TopicPartition::new(topic.clone(), i))
        .collect();
    consumer.assign(tps.clone()).await.expect("assign");
    for tp in &tps {
        consumer.seek(tp, Offset::Earliest).await.expect("seek");
    }
    let until = Instant::now() + Duration::from_secs(60);
    let mut read = 0u64;
    while read < RECORDS {
        assert!(
            Instant::now() < until,
            "read {read} of {RECORDS} records in 60 s"
        );
        for r in consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("poll")
        {
            if r.value.as_deref() == Some(b"after".as_slice()) {
                continue;
            }
            let i = value_of(&r);
            assert_eq!(
                seen[i as usize],
                Some((r.partition, r.offset)),
                "record {i}: the callback's metadata and the log disagree"
            );
            read += 1;
        }
    }
    consumer.close().await;
}
