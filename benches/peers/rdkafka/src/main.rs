//! kbench peer: librdkafka through the `rdkafka` crate. kbench builds it with
//! `cargo build --release --manifest-path benches/peers/rdkafka/Cargo.toml` and runs it once per
//! measured run. Protocol (see benches/src/bin/kbench/spec.rs): `--name value` arguments,
//! `kbench-progress N` lines on stderr, one JSON result line on stdout.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

mod txn;

type Res<T> = Result<T, String>;

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

fn pool(size: usize) -> Vec<Vec<u8>> {
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
                .collect()
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

struct Ctx {
    lat: Vec<AtomicU64>,
    acked: AtomicU64,
    error: Mutex<Option<String>>,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<(usize, Instant)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (idx, intended) = *opaque;
        match result {
            Ok(_) => {
                if let Some(slot) = self.lat.get(idx) {
                    slot.store(intended.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                let mut g = self.error.lock().unwrap_or_else(|e| e.into_inner());
                g.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn producer_config(a: &Args, settings: &mut BTreeMap<String, String>) -> Res<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", a.get("bootstrap")?)
        .set("client.id", "kbench-rdkafka");
    let pairs = [
        ("acks", a.get("acks")?.to_string()),
        ("linger.ms", a.get("linger-ms")?.to_string()),
        ("batch.size", a.get("batch-size")?.to_string()),
        ("compression.type", a.get("compression")?.to_string()),
        ("enable.idempotence", a.get("idempotence")?.to_string()),
        // Java's buffer.memory default (32 MiB); librdkafka's own default is 1 GiB.
        ("queue.buffering.max.kbytes", "32768".to_string()),
    ];
    for (k, v) in pairs {
        c.set(k, &v);
        settings.insert(k.into(), v);
    }
    Ok(c)
}

fn consumer(a: &Args, topic: &str, partitions: i32) -> Res<BaseConsumer> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", a.get("bootstrap")?)
        .set("client.id", "kbench-rdkafka")
        .set("group.id", "kbench-rdkafka-unused")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    Ok(c)
}

/// A consumer in a fresh group (no committed offsets), not yet subscribed.
fn group_consumer(a: &Args, settings: &mut BTreeMap<String, String>) -> Res<BaseConsumer> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let group = format!("kbench-rdkafka-{}-{nanos}", std::process::id());
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", a.get("bootstrap")?)
        .set("client.id", "kbench-rdkafka")
        .set("group.id", &group);
    for (k, v) in [
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
        ("group.protocol", "classic"),
    ] {
        c.set(k, v);
        settings.insert(k.into(), v.into());
    }
    c.create().map_err(|e| e.to_string())
}

fn send_all(
    a: &Args,
    producer: &ThreadedProducer<Ctx>,
    origin: Option<Instant>,
    show: bool,
) -> Res<()> {
    let topic = a.get("topic")?.to_string();
    let records = a.num("records")?;
    let size = a.num("size")? as usize;
    let keys = a.flag("keys")?;
    let rate = a.num("rate")?;
    let p = pool(size);
    let mut bar = Progress(Instant::now());
    let start = Instant::now();
    let ctx = producer.context().clone();
    for i in 0..records {
        if let Some(e) = ctx.error.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(format!("delivery failed: {e}"));
        }
        let intended = if rate > 0 {
            let due =
                start + Duration::from_nanos((i as u128 * 1_000_000_000 / rate as u128) as u64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            due
        } else {
            Instant::now()
        };
        let mut value = p[(i % p.len() as u64) as usize].clone();
        if let Some(o) = origin {
            value[..8]
                .copy_from_slice(&(intended.duration_since(o).as_micros() as u64).to_be_bytes());
        }
        let key = format!("k{}", i % 10_000);
        let mut rec =
            BaseRecord::with_opaque_to(&topic, Box::new((i as usize, intended))).payload(&value);
        if keys {
            rec = rec.key(&key);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => return Err(format!("send: {e}")),
            }
        }
        if show {
            bar.tick(i + 1);
        }
    }
    producer
        .flush(Duration::from_secs(a.num("timeout-s")?))
        .map_err(|e| format!("flush: {e}"))?;
    if let Some(e) = ctx.error.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Err(format!("delivery failed: {e}"));
    }
    let acked = ctx.acked.load(Ordering::Relaxed);
    if acked != records {
        return Err(format!("{acked} of {records} acknowledged"));
    }
    Ok(())
}

fn new_producer(a: &Args, settings: &mut BTreeMap<String, String>) -> Res<ThreadedProducer<Ctx>> {
    let records = a.num("records")? as usize;
    let ctx = Ctx {
        lat: (0..records).map(|_| AtomicU64::new(0)).collect(),
        acked: AtomicU64::new(0),
        error: Mutex::new(None),
    };
    producer_config(a, settings)?
        .create_with_context(ctx)
        .map_err(|e| e.to_string())
}

fn run() -> Res<String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.chunks(2).any(|p| p == ["--mode", "txn"]) {
        return txn::main(&argv);
    }
    let mut map = HashMap::new();
    for pair in argv.chunks(2) {
        if let [k, v] = pair {
            map.insert(k.trim_start_matches("--").to_string(), v.clone());
        }
    }
    let a = Args(map);
    let mode = a.get("mode")?.to_string();
    let topic = a.get("topic")?.to_string();
    let records = a.num("records")?;
    let size = a.num("size")?;
    let partitions = a.num("partitions")? as i32;
    let timeout = Duration::from_secs(a.num("timeout-s")?);
    let mut settings = BTreeMap::new();
    let (n, bytes, elapsed, latency) = match mode.as_str() {
        "produce" => {
            let producer = new_producer(&a, &mut settings)?;
            let start = Instant::now();
            send_all(&a, &producer, None, true)?;
            let elapsed = start.elapsed();
            let lat = producer
                .context()
                .lat
                .iter()
                .map(|x| x.load(Ordering::Relaxed))
                .collect();
            (records, records * size, elapsed, percentiles(lat))
        }
        "consume" => {
            let group = a.flag("group")?;
            let c = if group {
                group_consumer(&a, &mut settings)?
            } else {
                consumer(&a, &topic, partitions)?
            };
            settings.insert("group".into(), group.to_string());
            // With a group the clock starts before the subscribe: the join is measured.
            let start = Instant::now();
            if group {
                c.subscribe(&[topic.as_str()])
                    .map_err(|e| format!("subscribe: {e}"))?;
            }
            let (mut n, mut bytes) = (0u64, 0u64);
            let mut bar = Progress(Instant::now());
            while n < records {
                if start.elapsed() > timeout {
                    return Err(format!("read {n} of {records} records before the timeout"));
                }
                if let Some(m) = c.poll(Duration::from_millis(500)) {
                    let m = m.map_err(|e| format!("poll: {e}"))?;
                    n += 1;
                    bytes += m.payload_len() as u64;
                }
                bar.tick(n);
            }
            (n, bytes, start.elapsed(), "null".to_string())
        }
        "e2e" => {
            let c = consumer(&a, &topic, partitions)?;
            let producer = new_producer(&a, &mut settings)?;
            let origin = Instant::now();
            let reader = std::thread::spawn(move || -> Res<(u64, u64, Vec<u64>)> {
                let (mut n, mut bytes) = (0u64, 0u64);
                let mut lat = Vec::with_capacity(records as usize);
                let mut bar = Progress(Instant::now());
                while n < records {
                    if origin.elapsed() > timeout {
                        return Err(format!(
                            "consumed {n} of {records} records before the timeout"
                        ));
                    }
                    if let Some(m) = c.poll(Duration::from_millis(100)) {
                        let m = m.map_err(|e| format!("poll: {e}"))?;
                        let now = origin.elapsed().as_micros() as u64;
                        let v = m.payload().unwrap_or_default();
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
                Ok((n, bytes, lat))
            });
            send_all(&a, &producer, Some(origin), false)?;
            let (n, bytes, lat) = reader.join().map_err(|_| "consumer thread panicked")??;
            (n, bytes, origin.elapsed(), percentiles(lat))
        }
        other => return Err(format!("unknown mode {other:?}")),
    };
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let settings: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!(r#""{}":"{}""#, esc(k), esc(v)))
        .collect();
    Ok(format!(
        r#"{{"client":"rdkafka (librdkafka {})","mode":"{}","records":{n},"bytes":{bytes},"elapsed_s":{},"latency_ms":{latency},"settings":{{{}}}}}"#,
        esc(&version),
        esc(&mode),
        elapsed.as_secs_f64(),
        settings.join(",")
    ))
}

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rdkafka peer: {e}");
            ExitCode::FAILURE
        }
    }
}
