//! kbench txn copier for krafka: the consume-transform-produce loop, in transactions
//! (`TransactionalProducer`: begin, send, `send_offsets` with the consumer's group metadata,
//! commit) or at least once (flush, then commit the offsets). Protocol: see the top of
//! benches/src/bin/kbench/txn.rs (`--mode txn ...`, `kbench-ready` on stderr once every input
//! partition is assigned, one JSON line on stdout).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use krafka::consumer::{
    AutoOffsetReset, ConsumerRecord, GroupProtocol, IsolationLevel, OffsetAndMetadata,
    TopicPartition,
};
use krafka::producer::{Acks, TopicPartitionOffset};
use krafka::Record;

use super::{connect, esc, percentiles, Args, Res, KRAFKA_VERSION};

fn copy_of(r: &ConsumerRecord, output: &str) -> Record {
    match &r.value {
        Some(v) => Record::new(output.to_string(), v.clone()),
        None => Record::new(output.to_string(), Vec::<u8>::new()).without_value(),
    }
    .partition(r.partition)
}

/// The copier: `--mode txn ...`; returns the JSON result line.
pub async fn main(argv: &[String]) -> Res<String> {
    let mut map = HashMap::new();
    for pair in argv.chunks(2) {
        if let [k, v] = pair {
            map.insert(k.trim_start_matches("--").to_string(), v.clone());
        }
    }
    let a = Args(map);
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
    let kafka = connect(&a).await?;

    let mut settings: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in [
        ("isolation_level", "read_committed"),
        ("auto_offset_reset", "earliest"),
        ("enable_auto_commit", "false"),
        ("fetch_max_wait", "5ms"),
        ("heartbeat_interval", "500ms"),
        ("group_protocol", "classic"),
        ("acks", "all"),
        ("linger", "1ms"),
        ("idempotent", "true"),
    ] {
        settings.insert(k.into(), v.into());
    }
    settings.insert(
        "transactional".into(),
        if exactly_once {
            "TransactionalProducer"
        } else {
            "no"
        }
        .into(),
    );
    let consumer = kafka
        .consumer(a.get("group")?)
        .isolation_level(IsolationLevel::ReadCommitted)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .fetch_max_wait(Duration::from_millis(5))
        .heartbeat_interval(Duration::from_millis(500))
        .group_protocol(GroupProtocol::Classic)
        .build()
        .await
        .map_err(|e| format!("consumer: {e}"))?;
    let builder = kafka
        .producer()
        .acks(Acks::All)
        .linger(Duration::from_millis(1))
        .idempotent(true);
    let (txn, plain) = if exactly_once {
        let p = builder
            .build_transactional(a.get("transactional-id")?)
            .await
            .map_err(|e| format!("transactional producer: {e}"))?;
        (Some(p), None)
    } else {
        let p = builder
            .build()
            .await
            .map_err(|e| format!("producer: {e}"))?;
        (None, Some(p))
    };

    consumer
        .subscribe([input.as_str()])
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    // Wait for every partition; keep whatever a poll returns meanwhile.
    let mut early: Vec<ConsumerRecord> = Vec::new();
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let owned: usize = consumer.assignment().await.values().map(Vec::len).sum();
        if owned >= partitions {
            break;
        }
        if Instant::now() > ready_by {
            return Err(format!(
                "the copier was not assigned every partition within 60 s ({owned} of {partitions})"
            ));
        }
        early.extend(
            consumer
                .poll(Duration::from_millis(20))
                .await
                .map_err(|e| format!("poll: {e}"))?,
        );
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
        let records = if early.is_empty() {
            let wait = started.map_or(interval, |t| interval.saturating_sub(t.elapsed()));
            consumer
                .poll(wait.max(Duration::from_micros(100)))
                .await
                .map_err(|e| format!("poll: {e}"))?
        } else {
            std::mem::take(&mut early)
        };
        if !records.is_empty() {
            let now = Instant::now();
            started.get_or_insert(now);
            first.get_or_insert(now);
        }
        for r in &records {
            if let Some(p) = &txn {
                if !in_txn {
                    p.begin().map_err(|e| format!("begin: {e}"))?;
                    in_txn = true;
                }
                // The commit waits for every queued record and refuses if one failed.
                let _handle = p
                    .enqueue(copy_of(r, &output))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            } else if let Some(p) = &plain {
                deliveries.push(
                    p.enqueue(copy_of(r, &output))
                        .await
                        .map_err(|e| format!("send: {e}"))?,
                );
            }
            offsets.insert(r.partition, r.offset + 1);
        }
        pending += records.len() as u64;
        if !started.is_some_and(|t| t.elapsed() >= interval) {
            continue;
        }
        let t = Instant::now();
        if let Some(p) = &txn {
            let tpos: Vec<TopicPartitionOffset> = offsets
                .iter()
                .map(|(&part, &o)| TopicPartitionOffset::new(input.clone(), part, o))
                .collect();
            let cgm = consumer
                .group_metadata()
                .await
                .ok_or("the consumer has no group metadata")?;
            let ended = match p.send_offsets(&tpos, &cgm).await {
                Ok(()) => p.commit().await,
                Err(e) => Err(e),
            };
            match ended {
                Ok(()) => {
                    commits += 1;
                    done += pending;
                }
                Err(e) if !e.is_fatal() => {
                    // Abort, then rewind to the committed offsets and copy again.
                    p.abort()
                        .await
                        .map_err(|a| format!("abort after {e}: {a}"))?;
                    aborts += 1;
                    let parts: Vec<(&str, i32)> =
                        offsets.keys().map(|&part| (input.as_str(), part)).collect();
                    let committed = consumer
                        .committed(&parts)
                        .await
                        .map_err(|e| format!("committed offsets: {e}"))?;
                    for &(topic, part) in &parts {
                        match committed.get(&(topic.to_string(), part)) {
                            Some(c) => consumer.seek(topic, part, c.offset).await,
                            None => consumer.seek_to_beginning(topic, part).await,
                        }
                        .map_err(|e| format!("seek: {e}"))?;
                    }
                }
                Err(e) => return Err(format!("commit: {e}")),
            }
            in_txn = false;
        } else if let Some(p) = &plain {
            p.flush().await.map_err(|e| format!("flush: {e}"))?;
            for d in deliveries.drain(..) {
                let _metadata = d.await.map_err(|e| format!("copy delivery: {e}"))?;
            }
            let commit: Vec<(TopicPartition, OffsetAndMetadata)> = offsets
                .iter()
                .map(|(&part, &o)| {
                    (
                        TopicPartition::new(input.clone(), part),
                        OffsetAndMetadata::new(o),
                    )
                })
                .collect();
            consumer
                .commit_offsets(commit)
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
    let _ = consumer.close().await;
    if let Some(p) = &txn {
        let _ = p.close().await;
    }
    if let Some(p) = &plain {
        let _ = p.close().await;
    }
    let settings: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!(r#""{}":"{}""#, esc(k), esc(v)))
        .collect();
    Ok(format!(
        r#"{{"client":"krafka {KRAFKA_VERSION}","records":{done},"commits":{commits},"aborts":{aborts},"elapsed_s":{elapsed},"commit_ms":{},"settings":{{{}}}}}"#,
        percentiles(commit_us),
        settings.join(",")
    ))
}
