//! kbench peer: the pure-Rust `krafka` client. kbench builds it with
//! `cargo build --release --manifest-path benches/peers/krafka/Cargo.toml` and runs it once per
//! measured run. Protocol (see benches/src/bin/kbench/spec.rs): `--name value` arguments,
//! `kbench-progress N` lines on stderr, one JSON result line on stdout.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use krafka::consumer::{AutoOffsetReset, Consumer};
use krafka::producer::{Acks, Producer};
use krafka::{Compression, Kafka, Record};

mod txn;

type Res<T> = Result<T, String>;

/// krafka's version, pinned in Cargo.toml.
const KRAFKA_VERSION: &str = "0.28.1";

struct Args(HashMap<String, String>);

impl Args {
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

async fn connect(a: &Args) -> Res<Kafka> {
    Kafka::builder(a.get("bootstrap")?)
        .client_id("kbench-krafka")
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))
}

async fn new_producer(
    a: &Args,
    kafka: &Kafka,
    settings: &mut BTreeMap<String, String>,
) -> Res<Producer> {
    let acks = match a.get("acks")? {
        "all" | "-1" => Acks::All,
        "1" => Acks::Leader,
        "0" => Acks::None,
        other => return Err(format!("unknown acks {other:?}")),
    };
    let compression = match a.get("compression")? {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => return Err(format!("unknown compression {other:?}")),
    };
    let linger = Duration::from_millis(a.num("linger-ms")?);
    let batch = a.num("batch-size")? as usize;
    let idempotent = a.flag("idempotence")?;
    for (k, v) in [
        ("acks", a.get("acks")?.to_string()),
        ("linger", format!("{linger:?}")),
        ("batch_size", batch.to_string()),
        ("compression", a.get("compression")?.to_string()),
        ("idempotent", idempotent.to_string()),
        ("buffer_memory", (32u64 << 20).to_string()),
    ] {
        settings.insert(k.into(), v);
    }
    kafka
        .producer()
        .acks(acks)
        .compression(compression)
        .linger(linger)
        .batch_size(batch)
        .idempotent(idempotent)
        .buffer_memory(32 << 20)
        .build()
        .await
        .map_err(|e| format!("producer: {e}"))
}

async fn new_consumer(a: &Args, kafka: &Kafka) -> Res<Consumer> {
    let c = kafka
        .consumer_without_group()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .build()
        .await
        .map_err(|e| format!("consumer: {e}"))?;
    let partitions = a.num("partitions")? as i32;
    let topic = a.get("topic")?;
    c.assign(topic, (0..partitions).collect())
        .await
        .map_err(|e| format!("assign: {e}"))?;
    for p in 0..partitions {
        c.seek_to_beginning(topic, p)
            .await
            .map_err(|e| format!("seek: {e}"))?;
    }
    Ok(c)
}

/// A consumer in a fresh group (no committed offsets), not yet subscribed.
async fn new_group_consumer(
    kafka: &Kafka,
    settings: &mut BTreeMap<String, String>,
) -> Res<Consumer> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let group = format!("kbench-krafka-{}-{nanos}", std::process::id());
    for (k, v) in [
        ("auto_offset_reset", "earliest"),
        ("enable_auto_commit", "false"),
        ("group_protocol", "classic"),
    ] {
        settings.insert(k.into(), v.into());
    }
    kafka
        .consumer(group)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .build()
        .await
        .map_err(|e| format!("consumer: {e}"))
}

async fn send_all(
    a: &Args,
    producer: &Producer,
    origin: Option<Instant>,
    show: bool,
) -> Res<Vec<u64>> {
    let topic = a.get("topic")?.to_string();
    let records = a.num("records")?;
    let keys = a.flag("keys")?;
    let rate = a.num("rate")?;
    let p = pool(a.num("size")? as usize);
    let mut bar = Progress(Instant::now());
    let mut pending = FuturesUnordered::new();
    let mut lat = Vec::with_capacity(records as usize);
    let start = Instant::now();
    let done = |r: (Instant, krafka::Result<krafka::producer::RecordMetadata>),
                lat: &mut Vec<u64>|
     -> Res<()> {
        let (t, res) = r;
        let _metadata = res.map_err(|e| format!("delivery failed: {e}"))?;
        lat.push(t.elapsed().as_micros() as u64);
        Ok(())
    };
    for i in 0..records {
        let intended = if rate > 0 {
            let due =
                start + Duration::from_nanos((i as u128 * 1_000_000_000 / rate as u128) as u64);
            loop {
                if Instant::now() >= due {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => break,
                    Some(r) = pending.next(), if !pending.is_empty() => done(r, &mut lat)?,
                }
            }
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
        let mut rec = Record::new(topic.clone(), value);
        if keys {
            rec = rec.key(Bytes::from(format!("k{}", i % 10_000)));
        }
        let handle = producer
            .enqueue(rec)
            .await
            .map_err(|e| format!("enqueue: {e}"))?;
        pending.push(async move { (intended, handle.await) });
        while let Some(Some(r)) = pending.next().now_or_never() {
            done(r, &mut lat)?;
        }
        if show {
            bar.tick(i + 1);
        }
    }
    producer.flush().await.map_err(|e| format!("flush: {e}"))?;
    while let Some(r) = pending.next().await {
        done(r, &mut lat)?;
    }
    if lat.len() as u64 != records {
        return Err(format!("{} of {records} acknowledged", lat.len()));
    }
    Ok(lat)
}

async fn run() -> Res<String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.chunks(2).any(|p| p == ["--mode", "txn"]) {
        return txn::main(&argv).await;
    }
    let mut map = HashMap::new();
    for pair in argv.chunks(2) {
        if let [k, v] = pair {
            map.insert(k.trim_start_matches("--").to_string(), v.clone());
        }
    }
    let a = Args(map);
    let mode = a.get("mode")?.to_string();
    let records = a.num("records")?;
    let size = a.num("size")?;
    let timeout = Duration::from_secs(a.num("timeout-s")?);
    let mut settings = BTreeMap::new();
    let kafka = connect(&a).await?;
    let (n, bytes, elapsed, latency) = match mode.as_str() {
        "produce" => {
            let producer = new_producer(&a, &kafka, &mut settings).await?;
            let start = Instant::now();
            let lat = send_all(&a, &producer, None, true).await?;
            let elapsed = start.elapsed();
            let _ = producer.close().await;
            (records, records * size, elapsed, percentiles(lat))
        }
        "consume" => {
            let group = a.flag("group")?;
            let c = if group {
                new_group_consumer(&kafka, &mut settings).await?
            } else {
                new_consumer(&a, &kafka).await?
            };
            settings.insert("group".into(), group.to_string());
            // With a group the clock starts before the subscribe: the join is measured.
            let start = Instant::now();
            if group {
                c.subscribe([a.get("topic")?])
                    .await
                    .map_err(|e| format!("subscribe: {e}"))?;
            }
            let (mut n, mut bytes) = (0u64, 0u64);
            let mut bar = Progress(Instant::now());
            while n < records {
                if start.elapsed() > timeout {
                    return Err(format!("read {n} of {records} records before the timeout"));
                }
                for r in c
                    .poll(Duration::from_millis(500))
                    .await
                    .map_err(|e| format!("poll: {e}"))?
                {
                    n += 1;
                    bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
                }
                bar.tick(n);
            }
            let elapsed = start.elapsed();
            if group {
                // Leave the group (outside the measured time).
                let _ = c.close().await;
            }
            (n, bytes, elapsed, "null".to_string())
        }
        "e2e" => {
            let c = new_consumer(&a, &kafka).await?;
            let producer = new_producer(&a, &kafka, &mut settings).await?;
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
                    for r in c
                        .poll(Duration::from_millis(100))
                        .await
                        .map_err(|e| format!("poll: {e}"))?
                    {
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
    let settings: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!(r#""{}":"{}""#, esc(k), esc(v)))
        .collect();
    Ok(format!(
        r#"{{"client":"krafka {KRAFKA_VERSION}","mode":"{}","records":{n},"bytes":{bytes},"elapsed_s":{},"latency_ms":{latency},"settings":{{{}}}}}"#,
        esc(&mode),
        elapsed.as_secs_f64(),
        settings.join(",")
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
            eprintln!("krafka peer: {e}");
            ExitCode::FAILURE
        }
    }
}
