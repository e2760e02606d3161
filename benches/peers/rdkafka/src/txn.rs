//! kbench txn copier for librdkafka: the consume-transform-produce loop, in transactions
//! (`send_offsets_to_transaction` + `commit_transaction`) or at least once (flush, then a
//! synchronous offset commit). Protocol: see the top of benches/src/bin/kbench/txn.rs
//! (`--mode txn ...`, `kbench-ready` on stderr once every input partition is assigned, one JSON
//! line on stdout).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{esc, percentiles, Args, Res};

/// Counts deliveries and keeps the first delivery error.
struct TxnCtx {
    acked: AtomicU64,
    error: Mutex<Option<String>>,
}

impl ClientContext for TxnCtx {}

impl ProducerContext for TxnCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                let mut g = self.error.lock().unwrap_or_else(|e| e.into_inner());
                g.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

impl TxnCtx {
    fn take_error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// One input record, copied out of the consumer's buffer.
struct Rec {
    partition: i32,
    offset: i64,
    value: Option<Vec<u8>>,
}

fn to_rec(m: &rdkafka::message::BorrowedMessage<'_>) -> Rec {
    Rec {
        partition: m.partition(),
        offset: m.offset(),
        value: m.payload().map(<[u8]>::to_vec),
    }
}

fn offsets_list(topic: &str, offsets: &BTreeMap<i32, i64>) -> Res<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .map_err(|e| format!("offsets: {e}"))?;
    }
    Ok(tpl)
}

/// Whether a transactional call failed in a way that an abort (and a retry) can recover from.
fn abortable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.txn_requires_abort() && !t.is_fatal())
}

/// The copier: `--mode txn ...`; returns the JSON result line.
pub fn main(argv: &[String]) -> Res<String> {
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

    let mut settings: BTreeMap<String, String> = BTreeMap::new();
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", a.get("bootstrap")?)
        .set("client.id", "kbench-rdkafka-txn")
        .set("group.id", a.get("group")?);
    for (k, v) in [
        ("isolation.level", "read_committed"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("fetch.wait.max.ms", "5"),
        ("heartbeat.interval.ms", "500"),
        ("group.protocol", "classic"),
    ] {
        cc.set(k, v);
        settings.insert(k.into(), v.into());
    }
    let consumer: BaseConsumer = cc.create().map_err(|e| format!("consumer: {e}"))?;

    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", a.get("bootstrap")?)
        .set("client.id", "kbench-rdkafka-txn");
    for (k, v) in [
        ("acks", "all"),
        ("linger.ms", "1"),
        ("enable.idempotence", "true"),
    ] {
        pc.set(k, v);
        settings.insert(k.into(), v.into());
    }
    if exactly_once {
        pc.set("transactional.id", a.get("transactional-id")?);
    }
    settings.insert(
        "transactional".into(),
        if exactly_once {
            "rd_kafka transactions"
        } else {
            "no"
        }
        .into(),
    );
    let producer: ThreadedProducer<TxnCtx> = pc
        .create_with_context(TxnCtx {
            acked: AtomicU64::new(0),
            error: Mutex::new(None),
        })
        .map_err(|e| format!("producer: {e}"))?;
    let ctx = producer.context().clone();
    if exactly_once {
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|e| format!("init_transactions: {e}"))?;
    }

    consumer
        .subscribe(&[input.as_str()])
        .map_err(|e| format!("subscribe: {e}"))?;
    // Wait for every partition (the group is joined from within poll); keep whatever a poll
    // returns meanwhile.
    let mut early: Vec<Rec> = Vec::new();
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let owned = consumer
            .assignment()
            .map_err(|e| format!("assignment: {e}"))?
            .count();
        if owned >= partitions {
            break;
        }
        if Instant::now() > ready_by {
            return Err(format!(
                "the copier was not assigned every partition within 60 s ({owned} of {partitions})"
            ));
        }
        if let Some(m) = consumer.poll(Duration::from_millis(20)) {
            early.push(to_rec(&m.map_err(|e| format!("poll: {e}"))?));
        }
    }
    eprintln!("kbench-ready");
    let mut early = early.into_iter();

    let (mut commits, mut aborts, mut done, mut pending) = (0u64, 0u64, 0u64, 0u64);
    let mut commit_us: Vec<u64> = Vec::new();
    let mut first: Option<Instant> = None;
    let mut started: Option<Instant> = None;
    let mut last_commit = Instant::now();
    let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let mut in_txn = false;
    let mut sent = 0u64;
    while done < want {
        if Instant::now() > deadline {
            return Err(format!(
                "copied {done} of {want} records before the timeout"
            ));
        }
        let rec = match early.next() {
            Some(r) => Some(r),
            None => {
                let wait = started.map_or(interval, |t| interval.saturating_sub(t.elapsed()));
                match consumer.poll(wait.max(Duration::from_micros(100))) {
                    Some(m) => Some(to_rec(&m.map_err(|e| format!("poll: {e}"))?)),
                    None => None,
                }
            }
        };
        if let Some(r) = rec {
            let now = Instant::now();
            started.get_or_insert(now);
            first.get_or_insert(now);
            if exactly_once && !in_txn {
                producer
                    .begin_transaction()
                    .map_err(|e| format!("begin_transaction: {e}"))?;
                in_txn = true;
            }
            let mut out: BaseRecord<'_, (), Vec<u8>> =
                BaseRecord::to(&output).partition(r.partition);
            if let Some(v) = &r.value {
                out = out.payload(v);
            }
            loop {
                match producer.send(out) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        out = back;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err((e, _)) => return Err(format!("send: {e}")),
                }
            }
            offsets.insert(r.partition, r.offset + 1);
            pending += 1;
            sent += 1;
        }
        if !started.is_some_and(|t| t.elapsed() >= interval) {
            continue;
        }
        let t = Instant::now();
        let tpl = offsets_list(&input, &offsets)?;
        if exactly_once {
            let cgm = consumer
                .group_metadata()
                .ok_or("the consumer has no group metadata")?;
            let ended = producer
                .send_offsets_to_transaction(&tpl, &cgm, Duration::from_secs(30))
                .and_then(|()| producer.commit_transaction(Duration::from_secs(30)));
            let failed = ctx.take_error();
            match ended {
                Ok(()) if failed.is_none() => {
                    commits += 1;
                    done += pending;
                }
                Ok(()) => return Err(format!("committed despite a failed copy: {failed:?}")),
                Err(e) if abortable(&e) => {
                    // Abort, then rewind to the committed offsets and copy again.
                    producer
                        .abort_transaction(Duration::from_secs(30))
                        .map_err(|e| format!("abort_transaction: {e}"))?;
                    aborts += 1;
                    let committed = consumer
                        .committed_offsets(tpl, Duration::from_secs(30))
                        .map_err(|e| format!("committed offsets: {e}"))?;
                    for el in committed.elements() {
                        let to = match el.offset() {
                            Offset::Offset(o) => Offset::Offset(o),
                            _ => Offset::Beginning,
                        };
                        consumer
                            .seek(el.topic(), el.partition(), to, Duration::from_secs(30))
                            .map_err(|e| format!("seek: {e}"))?;
                    }
                }
                Err(e) => return Err(format!("commit_transaction: {e}")),
            }
            in_txn = false;
        } else {
            producer
                .flush(Duration::from_secs(30))
                .map_err(|e| format!("flush: {e}"))?;
            if let Some(e) = ctx.take_error() {
                return Err(format!("copy delivery: {e}"));
            }
            let acked = ctx.acked.load(Ordering::Relaxed);
            if acked != sent {
                return Err(format!(
                    "{acked} of {sent} copies acknowledged after the flush"
                ));
            }
            consumer
                .commit(&tpl, CommitMode::Sync)
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
    consumer.unsubscribe();
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let settings: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!(r#""{}":"{}""#, esc(k), esc(v)))
        .collect();
    Ok(format!(
        r#"{{"client":"rdkafka (librdkafka {})","records":{done},"commits":{commits},"aborts":{aborts},"elapsed_s":{elapsed},"commit_ms":{},"settings":{{{}}}}}"#,
        esc(&version),
        percentiles(commit_us),
        settings.join(",")
    ))
}
