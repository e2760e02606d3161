//! `bank load`: the driver's producer (BANK.md "Input stream" and "Schedule").
//!
//! Event `i` is due at `t0 + i / R`. The loop sleeps until the next event is due, then sends
//! every event whose time has come; it never waits for acknowledgements (they are counted by
//! delivery callbacks), and the value carries the *intended* time, so a stall anywhere is
//! charged to the events that should have gone out during it (no coordinated omission). At the
//! end it flushes and waits for every delivery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Args;
use kafka_client::config::{Acks, ProducerConfig};
use kafka_client::{Producer, ProducerRecord};

use crate::model::event;
use crate::wire::{account_key, InputEvent, TYPE_HEADER};
use crate::BoxError;

/// `bank load` flags.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Bootstrap servers (`HOST:PORT[,HOST:PORT...]`).
    #[arg(long)]
    pub bootstrap: String,
    /// The input topic.
    #[arg(long)]
    pub input: String,
    /// Events to send (N).
    #[arg(long)]
    pub events: u64,
    /// Events per second (R).
    #[arg(long)]
    pub rate: u64,
    /// Accounts (A), at most 100,000.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// The SplitMix64 seed (S).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// What a load did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub sent: u64,
    pub acked: u64,
    /// From the first intended send time to the last acknowledgement.
    pub duration: Duration,
    /// The largest delay between an event's intended send time and its hand-over to the
    /// producer.
    pub max_send_lag: Duration,
    pub rate: u64,
}

impl LoadReport {
    pub fn print(&self) {
        let secs = self.duration.as_secs_f64();
        println!(
            "load: sent {} events in {secs:.2} s ({:.0}/s, target {}/s), acked {}, max send lag \
             {:.1} ms",
            self.sent,
            self.sent as f64 / secs.max(1e-9),
            self.rate,
            self.acked,
            self.max_send_lag.as_secs_f64() * 1e3,
        );
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Sends the N events on their schedule; fails if any delivery failed.
pub async fn load(args: &LoadArgs) -> Result<LoadReport, BoxError> {
    if args.rate == 0 {
        return Err("--rate must be at least 1 event per second".into());
    }
    if !(1..=100_000).contains(&args.accounts) {
        return Err(format!("--accounts must be 1 to 100000, not {}", args.accounts).into());
    }
    let mut cfg = ProducerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(crate::servers(&args.bootstrap));
    cfg.acks(Acks::All);
    cfg.enable_idempotence(true);
    let producer = Producer::new(cfg).await?;
    let result = send_all(&producer, args).await;
    if let Err(e) = producer.close().await {
        tracing::warn!(error = %e, "closing the producer");
    }
    result
}

async fn send_all(producer: &Producer, args: &LoadArgs) -> Result<LoadReport, BoxError> {
    // The account keys, made once.
    let keys: Vec<Bytes> = (0..args.accounts)
        .map(|a| Bytes::from(account_key(a)))
        .collect();
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    // Offset of event i from t0, exactly i × 1 s / R (in ns, no accumulated rounding).
    let offset = |i: u64| {
        Duration::from_nanos((u128::from(i) * 1_000_000_000 / u128::from(args.rate)) as u64)
    };

    let t0 = Instant::now();
    let t0_us = now_us();
    let mut max_lag = Duration::ZERO;
    let mut i = 0;
    while i < args.events {
        let due = t0 + offset(i);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
            continue;
        }
        // Everything due now, without waiting for acknowledgements.
        while i < args.events {
            let due = t0 + offset(i);
            if due > Instant::now() {
                break;
            }
            let e = event(args.seed, args.accounts, i);
            let value = InputEvent {
                seq: i,
                intended_us: t0_us + offset(i).as_micros() as i64,
                amount: e.amount,
            };
            let record = ProducerRecord::new(args.input.as_str())
                .key(keys[e.account as usize].clone())
                .value(Bytes::copy_from_slice(&value.encode()))
                .header(TYPE_HEADER, e.kind.header_value());
            let (acked, failed, first_error) = (acked.clone(), failed.clone(), first_error.clone());
            producer
                .send_with(record, move |r| match r {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| format!("event {i}: {e}"));
                    }
                })
                .await
                .map_err(|e| format!("cannot send event {i}: {e}"))?;
            // Handed over (send_with returns once the record is buffered; it only waits when
            // the buffer is full, and that wait counts as lag too).
            max_lag = max_lag.max(Instant::now() - due);
            i += 1;
        }
    }
    producer.flush().await?;
    let report = LoadReport {
        sent: i,
        acked: acked.load(Ordering::Relaxed),
        duration: t0.elapsed(),
        max_send_lag: max_lag,
        rate: args.rate,
    };
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = first_error.lock().unwrap().take().unwrap_or_default();
        return Err(format!(
            "{failed} of {} events were not acknowledged (first: {first})",
            report.sent
        )
        .into());
    }
    if report.acked != report.sent {
        return Err(format!(
            "{} events sent but {} acknowledged after the flush",
            report.sent, report.acked
        )
        .into());
    }
    Ok(report)
}
