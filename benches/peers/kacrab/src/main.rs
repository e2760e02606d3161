//! kbench peer: the pure-Rust `kacrab` client. kbench builds it with
//! `cargo build --release --manifest-path benches/peers/kacrab/Cargo.toml` and runs it once per
//! measured run. Protocol (see benches/src/bin/kbench/spec.rs): `--name value` arguments,
//! `kbench-progress N` lines on stderr, one JSON result line on stdout.
//!
//! kacrab is configured with Java's property names (`acks`, `linger.ms`, `batch.size`, ...);
//! deliveries are counted through `Producer::send_with_callback`, kacrab's counterpart of Java's
//! `send(record, callback)`.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kacrab::common::TopicPartition;
use kacrab::consumer::{Consumer, ConsumerError};
use kacrab::producer::{Producer, ProducerRecord};

mod txn;

type Res<T> = Result<T, String>;

/// kacrab's version, pinned in Cargo.toml.
const KACRAB_VERSION: &str = "0.4.0";

/// `client.id` of every kacrab client kbench starts.
const CLIENT_ID: &str = "kbench-kacrab";

/// Java's `buffer.memory` default, as every peer is given.
const BUFFER_MEMORY: u64 = 32 << 20;

struct Args(HashMap<String, String>);

impl Args {
    fn parse(argv: &[String]) -> Args {
        let mut map = HashMap::new();
        for pair in argv.chunks(2) {
            if let [k, v] = pair {
                map.insert(k.trim_start_matches("--").to_string(), v.clone());
            }
        }
        Args(map)
    }
    fn get(&self, k: &str) -> Res<&str> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("missing --{k}"))
    }
    fn num(&self, k: &str) -> Res<u64> {
        self.get(k)?
            .parse()
            .map_err(|_| format!("--{k}: not a number"))
    }
    fn flag(&self, k: &str) -> Res<bool> {
        self.get(k)?
            .parse()
            .map_err(|_| format!("--{k}: not true/false"))
    }
}

struct Progress(Instant);

impl Progress {
    fn tick(&mut self, done: u64) {
        if self.0.elapsed() >= Duration::from_millis(200) {
            self.0 = Instant::now();
            let _ = writeln!(std::io::stderr(), "kbench-progress {done}");
        }
    }
}

fn pool(size: usize) -> Vec<Bytes> {
    let mut s: u64 = 0x6b62_656e_6368;
    let n = ((64usize << 20) / size.max(1)).clamp(1, 1024);
    (0..n)
        .map(|_| {
            (0..size)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                })
                .collect::<Vec<u8>>()
                .into()
        })
        .collect()
}

/// Percentiles (ms) of latencies in µs, as a JSON object.
fn percentiles(mut us: Vec<u64>) -> String {
    if us.is_empty() {
        return "null".into();
    }
    us.sort_unstable();
    let n = us.len();
    let at = |q: f64| us[((q * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0;
    format!(
        r#"{{"p50":{},"p90":{},"p99":{},"p999":{},"max":{}}}"#,
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        us[n - 1] as f64 / 1000.0
    )
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn settings_json(settings: &BTreeMap<String, String>) -> String {
    let kv: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!(r#""{}":"{}""#, esc(k), esc(v)))
        .collect();
    kv.join(",")
}

/// `bootstrap.servers` and `client.id`, the start of every kacrab configuration.
fn base_config(a: &Args) -> Res<Vec<(String, String)>> {
    Ok(vec![
        ("bootstrap.servers".into(), a.get("bootstrap")?.to_string()),
        ("client.id".into(), CLIENT_ID.into()),
    ])
}

async fn build_producer(config: Vec<(String, String)>) -> Res<Producer> {
    let mut b = Producer::builder();
    for (k, v) in config {
        b = b.set(k, v);
    }
    b.build().await.map_err(|e| format!("producer: {e}"))
}

async fn build_consumer(config: Vec<(String, String)>) -> Res<Consumer> {
    Consumer::from_map(config)
        .await
        .map_err(|e| format!("consumer: {e}"))
}

/// The workload's producer: the settings every peer gets, by their Java names.
async fn new_producer(a: &Args, settings: &mut BTreeMap<String, String>) -> Res<Producer> {
    let acks = match a.get("acks")? {
        "all" | "-1" => "all",
        "1" => "1",
        "0" => "0",
        other => return Err(format!("unknown acks {other:?}")),
    };
    let compression = a.get("compression")?;
    if !matches!(compression, "none" | "gzip" | "snappy" | "lz4" | "zstd") {
        return Err(format!("unknown compression {compression:?}"));
    }
    let chosen: [(&str, String); 6] = [
        ("acks", acks.into()),
        ("linger.ms", a.num("linger-ms")?.to_string()),
        ("batch.size", a.num("batch-size")?.to_string()),
        ("compression.type", compression.into()),
        ("enable.idempotence", a.flag("idempotence")?.to_string()),
        ("buffer.memory", BUFFER_MEMORY.to_string()),
    ];
    let mut config = base_config(a)?;
    for (k, v) in chosen {
        settings.insert(k.into(), v.clone());
        config.push((k.into(), v));
    }
    build_producer(config).await
}

/// A consumer assigned every partition of the topic, positioned at the start.
async fn new_consumer(a: &Args) -> Res<Consumer> {
    let mut config = base_config(a)?;
    config.push(("auto.offset.reset".into(), "earliest".into()));
    config.push(("enable.auto.commit".into(), "false".into()));
    let mut c = build_consumer(config).await?;
    let topic = a.get("topic")?;
    let tps: Vec<TopicPartition> = (0..a.num("partitions")? as i32)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    c.assign(tps.clone()).map_err(|e| format!("assign: {e}"))?;
    // kacrab 0.4.0 does not retry a retriable ListOffsets error (NOT_LEADER_OR_FOLLOWER comes
    // back for a topic created a moment ago): retry here, for up to 10 s.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match c.seek_to_beginning(&tps).await {
            Ok(()) => return Ok(c),
            Err(e) if retriable(&e) && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("seek: {e}")),
        }
    }
}

/// A broker error that goes away by itself (kacrab has no predicate of its own for these).
fn retriable(e: &ConsumerError) -> bool {
    matches!(e, ConsumerError::Broker { error, .. } if error.is_retriable())
}

/// A consumer in a fresh group (no committed offsets), not yet subscribed.
async fn new_group_consumer(a: &Args, settings: &mut BTreeMap<String, String>) -> Res<Consumer> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let group = format!("kbench-kacrab-{}-{nanos}", std::process::id());
    let mut config = base_config(a)?;
    config.push(("group.id".into(), group));
    for (k, v) in [
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("group.protocol", "classic"),
    ] {
        settings.insert(k.into(), v.into());
        config.push((k.into(), v.into()));
    }
    build_consumer(config).await
}

/// What the delivery callbacks collect: a latency per acknowledged record, the first failure.
#[derive(Default)]
struct Acks {
    lat: Vec<u64>,
    error: Option<String>,
}

/// Sends `records` records (at `rate`, if any) and waits for every acknowledgement; the
/// latency of each, µs, from its intended (or actual) send time.
async fn send_all(
    a: &Args,
    producer: &Producer,
    origin: Option<Instant>,
    show: bool,
) -> Res<Vec<u64>> {
    let topic: Arc<str> = Arc::from(a.get("topic")?);
    let records = a.num("records")?;
    let keys = a.flag("keys")?;
    let rate = a.num("rate")?;
    let p = pool(a.num("size")? as usize);
    let mut bar = Progress(Instant::now());
    let acks = Arc::new(Mutex::new(Acks {
        lat: Vec::with_capacity(records as usize),
        error: None,
    }));
    let all_acked = Arc::new(tokio::sync::Notify::new());
    let start = Instant::now();
    for i in 0..records {
        let intended = if rate > 0 {
            let due =
                start + Duration::from_nanos((i as u128 * 1_000_000_000 / rate as u128) as u64);
            tokio::time::sleep_until(due.into()).await;
            due
        } else {
            Instant::now()
        };
        let base = &p[(i % p.len() as u64) as usize];
        let value = match origin {
            Some(o) => {
                let mut v = base.to_vec();
                v[..8].copy_from_slice(
                    &(intended.duration_since(o).as_micros() as u64).to_be_bytes(),
                );
                Bytes::from(v)
            }
            None => base.clone(),
        };
        let mut rec = ProducerRecord::unassigned(Arc::clone(&topic)).value(value);
        if keys {
            rec = rec.key(Bytes::from(format!("k{}", i % 10_000)));
        }
        let (acks2, notify) = (Arc::clone(&acks), Arc::clone(&all_acked));
        // `send_with_callback` appends without awaiting; with a full buffer it waits (up to
        // max.block.ms) for the background sender to free space, as Java's `send` does.
        let _delivery = producer
            .send_with_callback(rec, move |res| {
                let us = intended.elapsed().as_micros() as u64;
                let mut g = acks2.lock().unwrap_or_else(|e| e.into_inner());
                match res {
                    Ok(_metadata) => g.lat.push(us),
                    Err(e) => {
                        g.error.get_or_insert_with(|| e.to_string());
                    }
                }
                if g.error.is_some() || g.lat.len() as u64 == records {
                    notify.notify_one();
                }
            })
            .map_err(|e| format!("send: {e}"))?;
        if show {
            bar.tick(i + 1);
        }
    }
    producer.flush().await.map_err(|e| format!("flush: {e}"))?;
    loop {
        {
            let mut g = acks.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = g.error.take() {
                return Err(format!("delivery failed: {e}"));
            }
            if g.lat.len() as u64 == records {
                return Ok(std::mem::take(&mut g.lat));
            }
        }
        // A callback may still be running after the flush returned.
        tokio::time::timeout(Duration::from_secs(30), all_acked.notified())
            .await
            .map_err(|_| {
                let n = acks.lock().map_or(0, |g| g.lat.len());
                format!("{n} of {records} acknowledged 30 s after the flush")
            })?;
    }
}

/// Reads until `records` records arrived; (records, value bytes).
async fn read_all(
    c: &mut Consumer,
    records: u64,
    start: Instant,
    timeout: Duration,
) -> Res<(u64, u64)> {
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut bar = Progress(Instant::now());
    while n < records {
        if start.elapsed() > timeout {
            return Err(format!("read {n} of {records} records before the timeout"));
        }
        let batch = c
            .poll(Duration::from_millis(500))
            .await
            .map_err(|e| format!("poll: {e}"))?;
        for r in &batch {
            n += 1;
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        bar.tick(n);
    }
    Ok((n, bytes))
}

async fn run() -> Res<String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.chunks(2).any(|p| p == ["--mode", "txn"]) {
        return txn::main(&argv).await;
    }
    let a = Args::parse(&argv);
    let mode = a.get("mode")?.to_string();
    let records = a.num("records")?;
    let size = a.num("size")?;
    let timeout = Duration::from_secs(a.num("timeout-s")?);
    let mut settings = BTreeMap::new();
    let (n, bytes, elapsed, latency) = match mode.as_str() {
        "produce" => {
            let producer = new_producer(&a, &mut settings).await?;
            let start = Instant::now();
            let lat = send_all(&a, &producer, None, true).await?;
            let elapsed = start.elapsed();
            let _ = producer.close().await;
            (records, records * size, elapsed, percentiles(lat))
        }
        "consume" => {
            let group = a.flag("group")?;
            let mut c = if group {
                new_group_consumer(&a, &mut settings).await?
            } else {
                new_consumer(&a).await?
            };
            settings.insert("group".into(), group.to_string());
            // With a group the clock starts before the subscribe: the join is measured.
            let start = Instant::now();
            if group {
                c.subscribe([a.get("topic")?])
                    .map_err(|e| format!("subscribe: {e}"))?;
            }
            let (n, bytes) = read_all(&mut c, records, start, timeout).await?;
            let elapsed = start.elapsed();
            if group {
                // Leave the group (outside the measured time).
                c.close().await;
            }
            (n, bytes, elapsed, "null".to_string())
        }
        "e2e" => {
            let mut c = new_consumer(&a).await?;
            let producer = new_producer(&a, &mut settings).await?;
            let origin = Instant::now();
            let reader = tokio::spawn(async move {
                let (mut n, mut bytes) = (0u64, 0u64);
                let mut lat = Vec::with_capacity(records as usize);
                let mut bar = Progress(Instant::now());
                while n < records {
                    if origin.elapsed() > timeout {
                        return Err(format!(
                            "consumed {n} of {records} records before the timeout"
                        ));
                    }
                    let batch = c
                        .poll(Duration::from_millis(100))
                        .await
                        .map_err(|e| format!("poll: {e}"))?;
                    for r in &batch {
                        let now = origin.elapsed().as_micros() as u64;
                        let v = r.value.as_deref().unwrap_or_default();
                        let stamp: [u8; 8] = v
                            .get(..8)
                            .and_then(|s| s.try_into().ok())
                            .ok_or("record without a timestamp")?;
                        lat.push(now.saturating_sub(u64::from_be_bytes(stamp)));
                        n += 1;
                        bytes += v.len() as u64;
                    }
                    bar.tick(n);
                }
                Ok::<_, String>((n, bytes, lat))
            });
            send_all(&a, &producer, Some(origin), false).await?;
            let (n, bytes, lat) = reader.await.map_err(|e| format!("consumer task: {e}"))??;
            let _ = producer.close().await;
            (n, bytes, origin.elapsed(), percentiles(lat))
        }
        other => return Err(format!("unknown mode {other:?}")),
    };
    Ok(format!(
        r#"{{"client":"kacrab {KACRAB_VERSION}","mode":"{}","records":{n},"bytes":{bytes},"elapsed_s":{},"latency_ms":{latency},"settings":{{{}}}}}"#,
        esc(&mode),
        elapsed.as_secs_f64(),
        settings_json(&settings)
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kacrab peer: {e}");
            ExitCode::FAILURE
        }
    }
}
