//! What every worker (ours and each peer) is told, and the one JSON line it answers with.
//!
//! The worker protocol is deliberately plain so that a Java, Go or Rust peer can implement it in
//! a page: arguments are `--name value` pairs (booleans spelled `true`/`false`), progress goes to
//! stderr as `kbench-progress <records>` lines, and the result is a single JSON object on stdout.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Produce `records` records as fast as allowed (or at `rate`), then flush.
    Produce,
    /// Read `records` records from the start of every partition: direct assignment, or with
    /// `group` a subscription in a fresh consumer group (earliest, no commits).
    Consume,
    /// Produce at a fixed `rate` and consume in the same process; latency from the intended send
    /// time stamped in each record's value.
    E2e,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "produce" => Ok(Mode::Produce),
            "consume" => Ok(Mode::Consume),
            "e2e" => Ok(Mode::E2e),
            other => Err(format!("unknown mode {other:?} (produce, consume, e2e)")),
        }
    }
}

/// Bytes at the start of every value that carry the intended send time (µs on the worker's
/// monotonic clock), so values must be at least this long.
pub const STAMP_LEN: usize = 8;

/// Producer and workload settings shared by every client (OpenMessaging-Benchmark style).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct Workload {
    /// Records to produce (or, for consume, the backlog to read).
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Value size in bytes (at least 8: the first 8 carry a timestamp).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Partitions of the topic kbench creates.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Give every record a key (`k<i mod 10000>`); default: no keys (sticky partitioning).
    #[arg(long)]
    pub keys: bool,
    /// `acks`: all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// `linger.ms`.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// `batch.size` in bytes.
    #[arg(long, default_value_t = 131_072)]
    pub batch_size: usize,
    /// `compression.type`: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// `enable.idempotence`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub idempotence: bool,
    /// Target rate in records/s following a fixed schedule (latency is measured from each
    /// record's intended send time, so a stalled client is not forgiven: no coordinated
    /// omission); 0 = as fast as possible. e2e needs a rate (default 2000).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// A worker that has not finished after this many seconds is killed and the run fails.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// consume only: subscribe in a fresh consumer group (`auto.offset.reset=earliest`, no
    /// commits) instead of assigning every partition; the clock starts before the subscribe,
    /// so the group join is part of the measured time for every client.
    #[arg(long)]
    #[serde(default)]
    pub group: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            records: 100_000,
            size: 1024,
            partitions: 6,
            keys: false,
            acks: "all".into(),
            linger_ms: 5,
            batch_size: 131_072,
            compression: "none".into(),
            idempotence: true,
            rate: 0,
            timeout_s: 300,
            group: false,
        }
    }
}

impl Workload {
    /// Checks what every worker relies on.
    pub fn validate(&self, mode: Mode) -> Result<(), String> {
        if self.records == 0 {
            return Err("--records must be at least 1".into());
        }
        if self.size < STAMP_LEN {
            return Err(format!("--size must be at least {STAMP_LEN} bytes"));
        }
        if self.partitions < 1 {
            return Err("--partitions must be at least 1".into());
        }
        if !matches!(self.acks.as_str(), "all" | "-1" | "1" | "0") {
            return Err(format!("--acks wants all, 1 or 0, got {:?}", self.acks));
        }
        if !matches!(
            self.compression.as_str(),
            "none" | "gzip" | "snappy" | "lz4" | "zstd"
        ) {
            return Err(format!(
                "--compression wants none, gzip, snappy, lz4 or zstd, got {:?}",
                self.compression
            ));
        }
        if self.batch_size == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        if mode == Mode::E2e && self.rate == 0 {
            return Err("e2e needs --rate (records/s)".into());
        }
        if self.group && mode != Mode::Consume {
            return Err(format!(
                "--group applies to consume only, not to {mode} (a {mode} worker joins no group)"
            ));
        }
        Ok(())
    }

    /// The worker command line for this workload (after the program and its own prefix).
    pub fn worker_args(&self, mode: Mode, bootstrap: &str, topic: &str) -> Vec<String> {
        let pairs: [(&str, String); 15] = [
            ("mode", mode.as_str().to_string()),
            ("bootstrap", bootstrap.to_string()),
            ("topic", topic.to_string()),
            ("records", self.records.to_string()),
            ("size", self.size.to_string()),
            ("partitions", self.partitions.to_string()),
            ("keys", self.keys.to_string()),
            ("acks", self.acks.clone()),
            ("linger-ms", self.linger_ms.to_string()),
            ("batch-size", self.batch_size.to_string()),
            ("compression", self.compression.clone()),
            ("idempotence", self.idempotence.to_string()),
            ("rate", self.rate.to_string()),
            ("timeout-s", self.timeout_s.to_string()),
            ("group", self.group.to_string()),
        ];
        pairs
            .into_iter()
            .flat_map(|(k, v)| [format!("--{k}"), v])
            .collect()
    }
}

/// A worker's parsed command line (the inverse of [`Workload::worker_args`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub mode: Mode,
    pub bootstrap: String,
    pub topic: String,
    pub workload: Workload,
}

impl WorkerSpec {
    /// Parses `--name value` pairs; every name is required, unknown names are errors.
    pub fn parse(args: &[String]) -> Result<WorkerSpec, String> {
        let mut a = WorkerArgs::parse(args)?;
        let mode: Mode = a.take("mode")?.parse()?;
        let bootstrap = a.take("bootstrap")?;
        let topic = a.take("topic")?;
        let workload = Workload {
            records: a.num("records")?,
            size: a.num("size")?,
            partitions: a.num("partitions")?,
            keys: a.flag("keys")?,
            acks: a.take("acks")?,
            linger_ms: a.num("linger-ms")?,
            batch_size: a.num("batch-size")?,
            compression: a.take("compression")?,
            idempotence: a.flag("idempotence")?,
            rate: a.num("rate")?,
            timeout_s: a.num("timeout-s")?,
            group: a.flag("group")?,
        };
        a.finish()?;
        workload.validate(mode)?;
        Ok(WorkerSpec {
            mode,
            bootstrap,
            topic,
            workload,
        })
    }
}

/// A worker's `--name value` pairs, taken one by one (every worker mode parses its own).
pub struct WorkerArgs(BTreeMap<String, String>);

impl WorkerArgs {
    /// Splits `args` into pairs; a name given twice or without `--` is an error.
    pub fn parse(args: &[String]) -> Result<WorkerArgs, String> {
        if args.len() % 2 != 0 {
            return Err("worker arguments come in `--name value` pairs".into());
        }
        let mut map = BTreeMap::new();
        for pair in args.chunks(2) {
            let name = pair[0]
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --name, got {:?}", pair[0]))?;
            if map.insert(name.to_string(), pair[1].clone()).is_some() {
                return Err(format!("--{name} given twice"));
            }
        }
        Ok(WorkerArgs(map))
    }

    /// The required argument `k`.
    pub fn take(&mut self, k: &str) -> Result<String, String> {
        self.0
            .remove(k)
            .ok_or_else(|| format!("missing worker argument --{k}"))
    }

    /// The required number `k`.
    pub fn num<T: FromStr>(&mut self, k: &str) -> Result<T, String> {
        let v = self.take(k)?;
        v.parse()
            .map_err(|_| format!("--{k}: cannot parse {v:?} as a number"))
    }

    /// The required `true`/`false` `k`.
    pub fn flag(&mut self, k: &str) -> Result<bool, String> {
        let v = self.take(k)?;
        v.parse()
            .map_err(|_| format!("--{k}: expected true or false, got {v:?}"))
    }

    /// Fails on an argument no one took.
    pub fn finish(self) -> Result<(), String> {
        match self.0.keys().next() {
            Some(k) => Err(format!("unknown worker argument --{k}")),
            None => Ok(()),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The one line a worker prints on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Client name and version, e.g. `java 4.1.0`.
    pub client: String,
    pub mode: Mode,
    /// Records produced (acknowledged) or consumed.
    pub records: u64,
    /// Value bytes of those records (keys excluded).
    pub bytes: u64,
    /// Seconds from the first send (or the first poll) to the last acknowledgement (or record).
    pub elapsed_s: f64,
    /// produce: send-to-acknowledgement latency; e2e: intended-send-to-consume latency;
    /// consume: none.
    #[serde(default)]
    pub latency_ms: Option<Percentiles>,
    /// The effective client settings, as the client names them.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// Prefix of the progress lines workers write to stderr.
pub const PROGRESS_PREFIX: &str = "kbench-progress ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_args_round_trip() {
        let w = Workload {
            keys: true,
            rate: 1000,
            compression: "lz4".into(),
            ..Workload::default()
        };
        let args = w.worker_args(Mode::E2e, "127.0.0.1:9092", "t1");
        let spec = WorkerSpec::parse(&args).unwrap();
        assert_eq!(spec.mode, Mode::E2e);
        assert_eq!(spec.bootstrap, "127.0.0.1:9092");
        assert_eq!(spec.topic, "t1");
        assert_eq!(spec.workload, w);
    }

    #[test]
    fn worker_args_are_checked() {
        let w = Workload::default();
        let mut args = w.worker_args(Mode::Produce, "b:1", "t");
        args.push("--bogus".into());
        assert!(WorkerSpec::parse(&args).is_err());
        args.push("1".into());
        assert!(WorkerSpec::parse(&args)
            .unwrap_err()
            .contains("unknown worker argument --bogus"));
        // e2e without a rate is refused.
        let args = w.worker_args(Mode::E2e, "b:1", "t");
        assert!(WorkerSpec::parse(&args).unwrap_err().contains("--rate"));
        // Too small values cannot carry the timestamp.
        let small = Workload {
            size: 4,
            ..Workload::default()
        };
        assert!(small.validate(Mode::Produce).is_err());
    }

    #[test]
    fn group_flag_round_trips_and_is_consume_only() {
        let w = Workload {
            group: true,
            ..Workload::default()
        };
        let args = w.worker_args(Mode::Consume, "b:1", "t");
        let at = args.iter().position(|a| a == "--group").unwrap();
        assert_eq!(args[at + 1], "true");
        let spec = WorkerSpec::parse(&args).unwrap();
        assert_eq!(spec.mode, Mode::Consume);
        assert!(spec.workload.group);
        assert_eq!(spec.workload, w);
        // Off by default, and spelled out for the peers.
        let args = Workload::default().worker_args(Mode::Consume, "b:1", "t");
        let at = args.iter().position(|a| a == "--group").unwrap();
        assert_eq!(args[at + 1], "false");
        assert!(!WorkerSpec::parse(&args).unwrap().workload.group);
        // Every worker must be told: a missing --group is an error, as is a bad value.
        let mut missing = args.clone();
        missing.drain(at..at + 2);
        assert!(WorkerSpec::parse(&missing)
            .unwrap_err()
            .contains("missing worker argument --group"));
        let mut bad = args.clone();
        bad[at + 1] = "yes".into();
        assert!(WorkerSpec::parse(&bad)
            .unwrap_err()
            .contains("--group: expected true or false"));
        // Produce and e2e join no group.
        for mode in [Mode::Produce, Mode::E2e] {
            let w = Workload {
                group: true,
                rate: 1000,
                ..Workload::default()
            };
            let err = w.validate(mode).unwrap_err();
            assert!(err.contains("--group applies to consume only"), "{err}");
            assert!(WorkerSpec::parse(&w.worker_args(mode, "b:1", "t")).is_err());
        }
        // The JSON of an older report (no `group`) still reads, as direct assignment.
        let mut v = serde_json::to_value(Workload::default()).unwrap();
        v.as_object_mut().unwrap().remove("group");
        let old: Workload = serde_json::from_value(v).unwrap();
        assert!(!old.group);
    }

    #[test]
    fn result_line_parses_without_optional_fields() {
        let line = r#"{"client":"x","mode":"consume","records":5,"bytes":50,"elapsed_s":0.5}"#;
        let r: WorkerResult = serde_json::from_str(line).unwrap();
        assert_eq!(r.records, 5);
        assert!(r.latency_ms.is_none());
    }
}
