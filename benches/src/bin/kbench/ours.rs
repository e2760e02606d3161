//! The worker for our client (`kbench worker ...`, cargo feature `ours`).
//!
//! Configured from the same Java property names the peers use, so every client gets the same
//! settings spelled the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
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

/// The consumer's properties, without `group.id` (a fresh one per run, see [`new_consumer`]).
fn consumer_props(spec: &WorkerSpec) -> Vec<(String, String)> {
    let mut props = vec![
        ("bootstrap.servers".into(), spec.bootstrap.clone()),
        ("client.id".into(), "kbench-ours".into()),
        ("enable.auto.commit".into(), "false".into()),
    ];
    if spec.workload.group {
        props.push(("auto.offset.reset".into(), "earliest".into()));
        props.push(("group.protocol".into(), "classic".into()));
    }
    props
}

/// A group id no earlier run used, so a group run always starts without committed offsets.
fn fresh_group_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("kbench-ours-{}-{nanos}", std::process::id())
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

/// Direct assignment: every partition assigned and sought to the start. With `group` the
/// consumer is in a fresh group and not yet subscribed: [`consume`] subscribes on its clock.
async fn new_consumer(spec: &WorkerSpec) -> Result<Consumer> {
    let mut props = consumer_props(spec);
    if spec.workload.group {
        props.push(("group.id".into(), fresh_group_id()));
    }
    let cfg = ConsumerConfig::from_properties(props).context("consumer configuration")?;
    let consumer = Consumer::new(cfg).await.context("creating the consumer")?;
    if spec.workload.group {
        return Ok(consumer);
    }
    let tps: Vec<TopicPartition> = (0..spec.workload.partitions)
        .map(|p| TopicPartition::new(spec.topic.clone(), p))
        .collect();
    consumer.assign(tps.clone()).await.context("assign")?;
    for tp in &tps {
        consumer.seek(tp, Offset::Earliest).await.context("seek")?;
    }
    Ok(consumer)
}

/// Acknowledgements as the delivery callbacks report them.
struct Acks {
    acked: u64,
    latency: Latency,
    error: Option<String>,
}

/// Sends `records` records following the schedule; returns (acknowledged, latency). Deliveries
/// are reported by callbacks ([`Producer::send_with`]), as every peer's are (Java's callback,
/// franz-go's promise, librdkafka's delivery report).
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
    let acks = Arc::new(Mutex::new(Acks {
        acked: 0,
        latency: Latency::new(),
        error: None,
    }));
    let failed = |acks: &Mutex<Acks>| acks.lock().unwrap().error.clone();
    let mut bar = Progress::new();
    for i in 0..w.records {
        let intended = match schedule.due(i) {
            Some(due) => {
                tokio::time::sleep_until(due.into()).await;
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
        let sink = acks.clone();
        producer
            .send_with(rec, move |r| {
                let mut a = sink.lock().unwrap();
                match r {
                    Ok(_) => {
                        a.latency
                            .record(Instant::now().saturating_duration_since(intended));
                        a.acked += 1;
                    }
                    Err(e) => {
                        a.error.get_or_insert_with(|| e.to_string());
                    }
                }
            })
            .await
            .context("send")?;
        if i % 4096 == 0 {
            if let Some(e) = failed(&acks) {
                bail!("delivery failed: {e}");
            }
        }
        if progress {
            bar.tick(i + 1);
        }
    }
    producer.flush().await.context("flush")?;
    // Every record is acknowledged or failed once flush returns; its callback has run.
    let mut a = acks.lock().unwrap();
    if let Some(e) = a.error.take() {
        bail!("delivery failed: {e}");
    }
    Ok((a.acked, std::mem::replace(&mut a.latency, Latency::new())))
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
    // With a group the clock starts before the subscribe, as for every peer: the join (and the
    // offset reset to earliest) is part of the measured time.
    let start = Instant::now();
    if spec.workload.group {
        consumer
            .subscribe([spec.topic.clone()])
            .await
            .context("subscribe")?;
    }
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
    if spec.workload.group {
        // Leave the group (outside the measured time).
        consumer.close().await;
    }
    let mut settings = settings(&consumer_props(spec));
    settings.insert("group".into(), spec.workload.group.to_string());
    Ok(WorkerResult {
        client: format!("ours {}", env!("CARGO_PKG_VERSION")),
        mode: Mode::Consume,
        records,
        bytes,
        elapsed_s: elapsed.as_secs_f64(),
        latency_ms: None,
        settings,
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
