//! kbench txn copier for kacrab: the consume-transform-produce loop, in transactions
//! (`init_transactions` once, then `begin_transaction`, sends, `send_offsets_to_transaction` with
//! the consumer's group metadata, `commit_transaction`) or at least once (flush, then
//! `commit_sync_offsets`). Protocol: see the top of benches/src/bin/kbench/txn.rs
//! (`--mode txn ...`, `kbench-ready` on stderr once every input partition is assigned, one JSON
//! line on stdout).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kacrab::common::{OffsetAndMetadata, TopicPartition};
use kacrab::consumer::ConsumerRecord;
use kacrab::producer::{Producer, ProducerRecord};

use super::{
    base_config, build_consumer, build_producer, percentiles, retriable, settings_json, Args, Res,
    KACRAB_VERSION,
};

fn copy_of(r: &ConsumerRecord, output: &str) -> ProducerRecord {
    let out = ProducerRecord::new(output, r.partition);
    match &r.value {
        Some(v) => out.value(v.clone()),
        None => out,
    }
}

/// Ends the open transaction with the input offsets; `Ok(false)` if it had to be aborted.
async fn end_transaction(
    p: &Producer,
    offsets: &BTreeMap<i32, i64>,
    input: &str,
    group: kacrab::common::ConsumerGroupMetadata,
) -> Res<bool> {
    let tpos: Vec<(TopicPartition, OffsetAndMetadata)> = offsets
        .iter()
        .map(|(&part, &o)| (TopicPartition::new(input, part), OffsetAndMetadata::new(o)))
        .collect();
    // Flush first: kacrab 0.4.0 fails AddOffsetsToTxn and TxnOffsetCommit with "wire
    // backpressure" (instead of queueing them) when the broker connection, shared with the
    // produce requests, is busy; the resulting aborts then led to OUT_OF_ORDER_SEQUENCE_NUMBER
    // and a fatal abort. `commit_transaction` flushes anyway, so the commit does the same work,
    // only without overlapping the flush with the offsets.
    let ended = match p.flush().await {
        Ok(()) => match p.send_offsets_to_transaction(tpos, group).await {
            Ok(()) => p.commit_transaction().await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match ended {
        Ok(()) => Ok(true),
        // kacrab has no fatal/abortable predicate: an error the abort recovers from is
        // abortable, one the abort fails on too is fatal.
        Err(e) => {
            eprintln!("kacrab copier: ending the transaction failed ({e}); aborting");
            p.abort_transaction()
                .await
                .map_err(|a| format!("abort after {e}: {a}"))?;
            Ok(false)
        }
    }
}

/// The copier: `--mode txn ...`; returns the JSON result line.
pub async fn main(argv: &[String]) -> Res<String> {
    let a = Args::parse(argv);
    let input = a.get("input")?.to_string();
    let output = a.get("output")?.to_string();
    let interval = Duration::from_millis(a.num("interval-ms")?);
    let exactly_once = a.flag("exactly-once")?;
    let want = a.num("records")?;
    let partitions = a.num("partitions")? as usize;
    let timeout = Duration::from_secs(a.num("timeout-s")?);
    if interval.is_zero() || want == 0 || partitions == 0 {
        return Err("--interval-ms, --records and --partitions must be positive".into());
    }
    let deadline = Instant::now() + timeout;

    let mut settings: BTreeMap<String, String> = BTreeMap::new();
    let mut consumer_config = base_config(&a)?;
    consumer_config.push(("group.id".into(), a.get("group")?.to_string()));
    for (k, v) in [
        ("isolation.level", "read_committed"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("fetch.max.wait.ms", "5"),
        ("heartbeat.interval.ms", "500"),
        ("group.protocol", "classic"),
    ] {
        settings.insert(k.into(), v.into());
        consumer_config.push((k.into(), v.into()));
    }
    let mut producer_config = base_config(&a)?;
    for (k, v) in [
        ("acks", "all"),
        ("linger.ms", "1"),
        ("enable.idempotence", "true"),
    ] {
        settings.insert(k.into(), v.into());
        producer_config.push((k.into(), v.into()));
    }
    if exactly_once {
        producer_config.push((
            "transactional.id".into(),
            a.get("transactional-id")?.to_string(),
        ));
    }
    if exactly_once {
        settings.insert(
            "commit".into(),
            "flush, send_offsets_to_transaction, commit_transaction".into(),
        );
    }
    settings.insert(
        "transactional".into(),
        if exactly_once {
            "transactional.id"
        } else {
            "no"
        }
        .into(),
    );
    let mut consumer = build_consumer(consumer_config).await?;
    let producer = build_producer(producer_config).await?;
    if exactly_once {
        producer
            .init_transactions()
            .await
            .map_err(|e| format!("init_transactions: {e}"))?;
    }

    consumer
        .subscribe([input.as_str()])
        .map_err(|e| format!("subscribe: {e}"))?;
    // Wait for every partition; keep whatever a poll returns meanwhile.
    let mut early: Vec<ConsumerRecord> = Vec::new();
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let owned = consumer.assignment().len();
        if owned >= partitions {
            break;
        }
        if Instant::now() > ready_by {
            return Err(format!(
                "the copier was not assigned every partition within 60 s ({owned} of {partitions})"
            ));
        }
        match consumer.poll(Duration::from_millis(20)).await {
            Ok(records) => early.extend(records),
            // Positions of a just-created input may not resolve at once (see `new_consumer`).
            Err(e) if retriable(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
    eprintln!("kbench-ready");

    let (mut commits, mut aborts, mut done, mut pending) = (0u64, 0u64, 0u64, 0u64);
    let mut commit_us: Vec<u64> = Vec::new();
    let mut first: Option<Instant> = None;
    let mut started: Option<Instant> = None;
    let mut last_commit = Instant::now();
    let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let mut deliveries = Vec::new();
    let mut in_txn = false;
    while done < want {
        if Instant::now() > deadline {
            return Err(format!(
                "copied {done} of {want} records before the timeout"
            ));
        }
        let records: Vec<ConsumerRecord> = if early.is_empty() {
            let wait = started.map_or(interval, |t| interval.saturating_sub(t.elapsed()));
            consumer
                .poll(wait.max(Duration::from_micros(100)))
                .await
                .map_err(|e| format!("poll: {e}"))?
                .into_iter()
                .collect()
        } else {
            std::mem::take(&mut early)
        };
        if !records.is_empty() {
            let now = Instant::now();
            started.get_or_insert(now);
            first.get_or_insert(now);
        }
        for r in &records {
            if exactly_once {
                if !in_txn {
                    producer
                        .begin_transaction()
                        .map_err(|e| format!("begin_transaction: {e}"))?;
                    in_txn = true;
                }
                // The commit flushes and fails if a record of the transaction failed.
                let _delivery = producer
                    .send(copy_of(r, &output))
                    .map_err(|e| format!("send: {e}"))?;
            } else {
                deliveries.push(
                    producer
                        .send(copy_of(r, &output))
                        .map_err(|e| format!("send: {e}"))?,
                );
            }
            offsets.insert(r.partition, r.offset + 1);
        }
        pending += records.len() as u64;
        if started.is_none_or(|t| t.elapsed() < interval) {
            continue;
        }
        let t = Instant::now();
        if exactly_once {
            if end_transaction(&producer, &offsets, &input, consumer.group_metadata()).await? {
                commits += 1;
                done += pending;
            } else {
                aborts += 1;
                // Rewind to the committed offsets and copy again.
                let parts: Vec<TopicPartition> = offsets
                    .keys()
                    .map(|&part| TopicPartition::new(input.as_str(), part))
                    .collect();
                let committed = consumer
                    .committed(&parts)
                    .await
                    .map_err(|e| format!("committed offsets: {e}"))?;
                for tp in &parts {
                    match committed.get(tp) {
                        Some(c) => consumer.seek(tp, c.offset),
                        None => consumer.seek_to_beginning(std::slice::from_ref(tp)).await,
                    }
                    .map_err(|e| format!("seek: {e}"))?;
                }
            }
            in_txn = false;
        } else {
            producer.flush().await.map_err(|e| format!("flush: {e}"))?;
            for d in deliveries.drain(..) {
                let _metadata = d.await.map_err(|e| format!("copy delivery: {e}"))?;
            }
            let commit: HashMap<TopicPartition, OffsetAndMetadata> = offsets
                .iter()
                .map(|(&part, &o)| {
                    (
                        TopicPartition::new(input.as_str(), part),
                        OffsetAndMetadata::new(o),
                    )
                })
                .collect();
            consumer
                .commit_sync_offsets(commit)
                .await
                .map_err(|e| format!("commit offsets: {e}"))?;
            commits += 1;
            done += pending;
        }
        last_commit = Instant::now();
        commit_us.push(t.elapsed().as_micros() as u64);
        offsets.clear();
        pending = 0;
        started = None;
    }
    let elapsed = first.map_or(0.0, |f| {
        last_commit.saturating_duration_since(f).as_secs_f64()
    });
    consumer.close().await;
    let _ = producer.close().await;
    Ok(format!(
        r#"{{"client":"kacrab {KACRAB_VERSION}","records":{done},"commits":{commits},"aborts":{aborts},"elapsed_s":{elapsed},"commit_ms":{},"settings":{{{}}}}}"#,
        percentiles(commit_us),
        settings_json(&settings)
    ))
}
