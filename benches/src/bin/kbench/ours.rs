//! The worker for our client (`kbench worker ...`, cargo feature `ours`).
//!
//! Configured from the same Java property names the peers use, so every client gets the same
//! settings spelled the same way.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::stream::{FuturesUnordered, StreamExt};
use kafka_client::config::{ConsumerConfig, ProducerConfig};
use kafka_client::consumer::Consumer;
use kafka_client::producer::{Producer, ProducerRecord};
use kafka_client::{Offset, TopicPartition};

use crate::spec::{Mode, WorkerResult, WorkerSpec};
use crate::worker::{key_for, read_stamp, Latency, PayloadPool, Progress, Schedule};

fn producer_props(spec: &WorkerSpec) -> Vec<(String, String)> {
    let w = &spec.workload;
    vec![
        ("bootstrap.servers".into(), spec.bootstrap.clone()),
        ("client.id".into(), "kbench-ours".into()),
        ("acks".into(), w.acks.clone()),
        ("linger.ms".into(), w.linger_ms.to_string()),
        ("batch.size".into(), w.batch_size.to_string()),
        ("compression.type".into(), w.compression.clone()),
        ("enable.idempotence".into(), w.idempotence.to_string()),
    ]
}

fn consumer_props(spec: &WorkerSpec) -> Vec<(String, String)> {
    vec![
        ("bootstrap.servers".into(), spec.bootstrap.clone()),
        ("client.id".into(), "kbench-ours".into()),
        ("enable.auto.commit".into(), "false".into()),
    ]
}

fn settings(props: &[(String, String)]) -> BTreeMap<String, String> {
    props
        .iter()
        .filter(|(k, _)| k != "bootstrap.servers" && k != "client.id")
        .cloned()
        .collect()
}

/// Runs the workload and returns the result line.
pub async fn run(spec: WorkerSpec) -> Result<WorkerResult> {
    match spec.mode {
        Mode::Produce => produce(&spec).await,
        Mode::Consume => consume(&spec).await,
        Mode::E2e => e2e(&spec).await,
    }
}

async fn new_producer(spec: &WorkerSpec) -> Result<Producer> {
    let cfg =
        ProducerConfig::from_properties(producer_props(spec)).context("producer configuration")?;
    Producer::new(cfg).await.context("creating the producer")
}

async fn new_consumer(spec: &WorkerSpec) -> Result<Consumer> {
    let cfg =
        ConsumerConfig::from_properties(consumer_props(spec)).context("consumer configuration")?;
    let consumer = Consumer::new(cfg).await.context("creating the consumer")?;
    let tps: Vec<TopicPartition> = (0..spec.workload.partitions)
        .map(|p| TopicPartition::new(spec.topic.clone(), p))
        .collect();
    consumer.assign(tps.clone()).await.context("assign")?;
    for tp in &tps {
        consumer.seek(tp, Offset::Earliest).await.context("seek")?;
    }
    Ok(consumer)
}

/// Sends `records` records following the schedule; returns (acknowledged, latency, end time).
async fn send_all(
    spec: &WorkerSpec,
    producer: &Producer,
    stamp_origin: Option<Instant>,
    progress: bool,
) -> Result<(u64, Latency)> {
    let w = &spec.workload;
    let pool = PayloadPool::new(w.size, 0x6b62_656e_6368);
    let start = Instant::now();
    let schedule = Schedule::new(start, w.rate);
    let mut pending = FuturesUnordered::new();
    let mut lat = Latency::new();
    let mut acked = 0u64;
    let mut bar = Progress::new();
    for i in 0..w.records {
        let intended = match schedule.due(i) {
            Some(due) => {
                // Drive acknowledgements while waiting for the next slot.
                loop {
                    if Instant::now() >= due {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => break,
                        Some((t, r)) = pending.next(), if !pending.is_empty() => {
                            let r: kafka_client::Result<_> = r;
                            r.context("delivery failed")?;
                            lat.record(Instant::now().saturating_duration_since(t));
                            acked += 1;
                        }
                    }
                }
                due
            }
            None => Instant::now(),
        };
        let value = match stamp_origin {
            Some(origin) => pool.stamped(i, intended.duration_since(origin).as_micros() as u64),
            None => pool.get(i),
        };
        let mut rec = ProducerRecord::new(spec.topic.clone()).value(value);
        if w.keys {
            rec = rec.key(key_for(i));
        }
        let delivery = producer.send(rec).await.context("send")?;
        pending.push(async move { (intended, delivery.await) });
        // Reap whatever is already acknowledged without waiting.
        while let Some(Some((t, r))) = futures_util::FutureExt::now_or_never(pending.next()) {
            let r: kafka_client::Result<_> = r;
            r.context("delivery failed")?;
            lat.record(Instant::now().saturating_duration_since(t));
            acked += 1;
        }
        if progress {
            bar.tick(i + 1);
        }
    }
    producer.flush().await.context("flush")?;
    while let Some((t, r)) = pending.next().await {
        let r: kafka_client::Result<_> = r;
        r.context("delivery failed")?;
        lat.record(Instant::now().saturating_duration_since(t));
        acked += 1;
    }
    Ok((acked, lat))
}

async fn produce(spec: &WorkerSpec) -> Result<WorkerResult> {
    let producer = new_producer(spec).await?;
    let start = Instant::now();
    let (acked, lat) = send_all(spec, &producer, None, true).await?;
    let elapsed = start.elapsed();
    if acked != spec.workload.records {
        bail!("{acked} of {} records acknowledged", spec.workload.records);
    }
    Ok(WorkerResult {
        client: format!("ours {}", env!("CARGO_PKG_VERSION")),
        mode: Mode::Produce,
        records: acked,
        bytes: acked * spec.workload.size as u64,
        elapsed_s: elapsed.as_secs_f64(),
        latency_ms: lat.percentiles(),
        settings: settings(&producer_props(spec)),
    })
}

async fn consume(spec: &WorkerSpec) -> Result<WorkerResult> {
    let consumer = new_consumer(spec).await?;
    let want = spec.workload.records;
    let deadline = Duration::from_secs(spec.workload.timeout_s);
    let start = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut bar = Progress::new();
    while records < want {
        if start.elapsed() > deadline {
            bail!("read {records} of {want} records before the timeout");
        }
        for r in consumer
            .poll(Duration::from_millis(500))
            .await
            .context("poll")?
        {
            records += 1;
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        bar.tick(records);
    }
    let elapsed = start.elapsed();
    Ok(WorkerResult {
        client: format!("ours {}", env!("CARGO_PKG_VERSION")),
        mode: Mode::Consume,
        records,
        bytes,
        elapsed_s: elapsed.as_secs_f64(),
        latency_ms: None,
        settings: settings(&consumer_props(spec)),
    })
}

async fn e2e(spec: &WorkerSpec) -> Result<WorkerResult> {
    let consumer = new_consumer(spec).await?;
    let producer = new_producer(spec).await?;
    let want = spec.workload.records;
    let deadline = Duration::from_secs(spec.workload.timeout_s);
    let origin = Instant::now();
    let reader = tokio::spawn(async move {
        let mut lat = Latency::new();
        let (mut records, mut bytes) = (0u64, 0u64);
        let mut bar = Progress::new();
        while records < want {
            if origin.elapsed() > deadline {
                bail!("consumed {records} of {want} records before the timeout");
            }
            for r in consumer
                .poll(Duration::from_millis(100))
                .await
                .context("poll")?
            {
                let now_us = origin.elapsed().as_micros() as u64;
                let value = r.value.as_deref().unwrap_or_default();
                let stamp = read_stamp(value).context("record without a timestamp")?;
                lat.record(Duration::from_micros(now_us.saturating_sub(stamp)));
                records += 1;
                bytes += value.len() as u64;
            }
            bar.tick(records);
        }
        Ok((records, bytes, lat, origin.elapsed()))
    });
    let (acked, _) = send_all(spec, &producer, Some(origin), false).await?;
    if acked != want {
        bail!("{acked} of {want} records acknowledged");
    }
    let (records, bytes, lat, elapsed) = reader.await.context("consumer task")??;
    Ok(WorkerResult {
        client: format!("ours {}", env!("CARGO_PKG_VERSION")),
        mode: Mode::E2e,
        records,
        bytes,
        elapsed_s: elapsed.as_secs_f64(),
        latency_ms: lat.percentiles(),
        settings: settings(&producer_props(spec)),
    })
}
