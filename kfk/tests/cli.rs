//! `kfk` end to end against the real broker: topic admin, produce from stdin, consume, offsets
//! (and records apart from transaction markers), start positions (`--from`), SIGINT/SIGTERM,
//! and the failure modes (unknown topic, unreachable broker, bad flags, bad input).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn kfk(bootstrap: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kfk"))
        .arg("-b")
        .arg(bootstrap)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kfk runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kfk failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

async fn bootstrap() -> String {
    testkit::shared_cluster(1)
        .await
        .expect("the testkit cluster must start")
        .bootstrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_produce_consume_offsets_round_trip() {
    let b = bootstrap().await;
    let topic = "kfk-round-trip";
    let out = kfk(
        &b,
        &["topic", "create", topic, "--partitions", "3", "--rf", "1"],
        b"",
    );
    ok(&out);
    let described = ok(&kfk(&b, &["topic", "describe", topic], b""));
    assert!(described.contains("partitions 3"), "{described}");
    assert_eq!(described.matches("  partition ").count(), 3, "{described}");

    // Creating it again fails, unless --if-not-exists.
    assert!(
        !kfk(&b, &["topic", "create", topic, "--partitions", "3"], b"")
            .status
            .success()
    );
    ok(&kfk(
        &b,
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            "3",
            "--if-not-exists",
        ],
        b"",
    ));

    // Keyed lines, zstd.
    let mut input = String::new();
    for i in 0..300 {
        input.push_str(&format!("k{}\tvalue {i}\n", i % 7));
    }
    let out = kfk(
        &b,
        &["produce", topic, "--keyed", "--compression", "zstd"],
        input.as_bytes(),
    );
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("300 records acknowledged, 0 failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let offsets = ok(&kfk(&b, &["offsets", topic], b""));
    assert!(offsets.contains("total\t\t\t300"), "{offsets}");

    let consumed = ok(&kfk(
        &b,
        &[
            "consume",
            topic,
            "--from-beginning",
            "--count",
            "300",
            "--format",
            "%p %o %k=%v",
        ],
        b"",
    ));
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines.len(), 300);
    let mut values: Vec<u32> = lines
        .iter()
        .map(|l| l.rsplit_once("value ").unwrap().1.parse().unwrap())
        .collect();
    values.sort();
    assert_eq!(values, (0..300).collect::<Vec<_>>());
    // Same key, same partition.
    let mut by_key = std::collections::HashMap::new();
    for l in &lines {
        let mut it = l.split(' ');
        let p = it.next().unwrap().to_string();
        let key = it.nth(1).unwrap().split('=').next().unwrap().to_string();
        let prev = by_key.insert(key.clone(), p.clone());
        assert!(
            prev.is_none_or(|prev| prev == p),
            "key {key} on two partitions"
        );
    }

    // --idle-exit ends a consume of a quiet topic.
    let started = Instant::now();
    let out = ok(&kfk(&b, &["consume", topic, "--idle-exit", "1"], b""));
    assert!(out.is_empty());
    assert!(started.elapsed() < Duration::from_secs(30));

    ok(&kfk(&b, &["topic", "delete", topic], b""));
    let meta = ok(&kfk(&b, &["metadata"], b""));
    assert!(!meta.contains(&format!("  {topic}  ")), "{meta}");
    assert!(meta.contains("brokers:"));
}

/// Values `value N` of the lines of `out`.
fn values(out: &str) -> Vec<u32> {
    out.lines()
        .map(|l| l.rsplit_once("value ").unwrap().1.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_consume_commits_what_it_printed_and_group_commands_show_it() {
    let b = bootstrap().await;
    let topic = "kfk-group";
    let group = "kfk-group-readers";
    ok(&kfk(
        &b,
        &["topic", "create", topic, "--partitions", "3", "--rf", "1"],
        b"",
    ));
    let input: String = (0..30).map(|i| format!("value {i}\n")).collect();
    ok(&kfk(&b, &["produce", topic], input.as_bytes()));

    // A first member prints 10 records, commits exactly those, and leaves.
    let first = ok(&kfk(
        &b,
        &[
            "consume",
            topic,
            "--group",
            group,
            "--from-beginning",
            "--count",
            "10",
        ],
        b"",
    ));
    let first = values(&first);
    assert_eq!(first.len(), 10);

    let offsets = ok(&kfk(&b, &["group", "offsets", group], b""));
    let lag: i64 = offsets
        .lines()
        .find_map(|l| l.strip_prefix("total lag"))
        .unwrap_or_else(|| panic!("{offsets}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(lag, 20, "{offsets}");
    let listed = ok(&kfk(&b, &["group", "list"], b""));
    assert!(listed.lines().any(|l| l.starts_with(group)), "{listed}");
    let described = ok(&kfk(&b, &["group", "describe", group], b""));
    assert!(described.contains("members: 0"), "{described}");

    // The next member of the group reads the other 20, none of the first 10.
    let second = ok(&kfk(
        &b,
        &["consume", topic, "--group", group, "--idle-exit", "3"],
        b"",
    ));
    let mut all = first.clone();
    all.extend(values(&second));
    all.sort();
    assert_eq!(all, (0..30).collect::<Vec<_>>(), "first {first:?}");
    let offsets = ok(&kfk(&b, &["group", "offsets", group], b""));
    assert!(offsets.contains("total lag\t\t\t\t0"), "{offsets}");

    // --group and --partition do not go together; an unknown group has no offsets.
    assert!(!kfk(
        &b,
        &["consume", topic, "--group", group, "--partition", "0"],
        b""
    )
    .status
    .success());
    let none = ok(&kfk(&b, &["group", "offsets", "kfk-no-such-group"], b""));
    assert!(none.contains("total lag\t\t\t\t0"), "{none}");
}

/// Two transactional copiers in one group copy a keyed topic with headers: the read_committed
/// copy holds every record once, in its source partition, with key, value, timestamp and
/// headers intact, and the copiers' summaries add up to the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_copy_by_two_copiers_holds_every_record_once() {
    use kafka_client::config::ProducerConfig;
    use kafka_client::{Producer, ProducerRecord};
    let b = bootstrap().await;
    let (src, dst, group) = ("kfk-copy-src", "kfk-copy-dst", "kfk-copiers");
    for t in [src, dst] {
        ok(&kfk(
            &b,
            &["topic", "create", t, "--partitions", "3", "--rf", "1"],
            b"",
        ));
    }
    let mut cfg = ProducerConfig::default();
    cfg.client_mut().bootstrap_servers(vec![b.clone()]);
    let p = Producer::new(cfg).await.expect("producer");
    let n = 3000u32;
    let mut expected = Vec::new();
    for i in 0..n {
        let ts = 1_700_000_000_000i64 + i64::from(i);
        let d = p
            .send(
                ProducerRecord::new(src)
                    .partition((i % 3) as i32)
                    .key(format!("k{i}"))
                    .value(format!("v{i}"))
                    .header("h", format!("x{i}"))
                    .timestamp(ts),
            )
            .await
            .expect("send");
        drop(d);
        expected.push(format!("{} k{i} v{i} {ts} h=x{i}", i % 3));
    }
    p.flush().await.expect("flush");
    p.close().await.expect("close");

    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kfk"))
            .args([
                "-b",
                &b,
                "copy",
                src,
                dst,
                "--group",
                group,
                "--transactional",
            ])
            .args([
                "--from-beginning",
                "--idle-exit",
                "5",
                "--commit-interval",
                "50",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kfk copy runs")
    };
    let copiers = [spawn(), spawn()];
    let mut copied = 0u64;
    for c in copiers {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "kfk copy failed: {err}");
        let summary = err
            .lines()
            .find_map(|l| l.strip_prefix("kfk: copied "))
            .unwrap_or_else(|| panic!("no summary in {err}"));
        copied += summary.split(' ').next().unwrap().parse::<u64>().unwrap();
    }
    assert_eq!(copied, u64::from(n), "the copiers' committed counts add up");

    let out = ok(&kfk(
        &b,
        &[
            "consume",
            dst,
            "--from-beginning",
            "--isolation",
            "read_committed",
            "--idle-exit",
            "3",
            "--format",
            "%p %k %v %T %h",
        ],
        b"",
    ));
    let mut got: Vec<String> = out.lines().map(str::to_string).collect();
    got.sort();
    expected.sort();
    assert_eq!(got.len(), expected.len(), "every record copied once");
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_exit_non_zero_with_a_message() {
    let b = bootstrap().await;
    // Unknown topic.
    for args in [
        &["produce", "kfk-no-such-topic"][..],
        &["consume", "kfk-no-such-topic", "--count", "1"][..],
        &["offsets", "kfk-no-such-topic"][..],
        &["topic", "describe", "kfk-no-such-topic"][..],
    ] {
        let out = kfk(&b, args, b"x\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("UNKNOWN_TOPIC_OR_PARTITION"),
            "{args:?}: {err}"
        );
    }
    // Malformed flags: usage error.
    for args in [
        &["produce"][..],
        &["consume", "t", "--count", "many"][..],
        &["produce", "t", "--compression", "brotli"][..],
        &["bogus"][..],
    ] {
        let out = kfk(&b, args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // Bad property.
    let out = kfk(&b, &["-X", "linger.ms=soon", "metadata"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("linger.ms"));
    // Keyed input without a tab.
    let topic = "kfk-bad-input";
    ok(&kfk(
        &b,
        &["topic", "create", topic, "--partitions", "1"],
        b"",
    ));
    let out = kfk(&b, &["produce", topic, "--keyed"], b"k\tv\nno tab here\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));

    // Unreachable broker: fails within the connect timeout, no hang.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let out = kfk(&format!("127.0.0.1:{port}"), &["metadata"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(30));
}

// ---------------------------------------------------------------------------------------------
// Signals, start positions, records vs offsets.

/// A running `kfk` whose stdout lines and stderr are collected by threads.
struct Running {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn spawn(bootstrap: &str, args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kfk"))
            .arg("-b")
            .arg(bootstrap)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kfk runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().unwrap();
        let e = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut e = e.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        Running {
            child,
            lines,
            stderr,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the exit (at most `limit`), then for the output threads to drain.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return s;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "kfk still running after {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it holds; panics with `what` after `limit`.
fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn producer(b: &str) -> kafka_client::Producer {
    let mut cfg = kafka_client::config::ProducerConfig::default();
    cfg.client_mut().bootstrap_servers(vec![b.to_string()]);
    kafka_client::Producer::new(cfg).await.expect("producer")
}

/// Sends `value` to each partition `0..partitions` of `topic` and waits for the acks.
async fn to_every_partition(p: &kafka_client::Producer, topic: &str, partitions: i32, value: &str) {
    for part in 0..partitions {
        let r = kafka_client::ProducerRecord::new(topic)
            .partition(part)
            .value(format!("{value} {part}"));
        p.send_and_wait(r).await.expect("send");
    }
}

fn create(b: &str, topic: &str, partitions: u32) {
    ok(&kfk(
        b,
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
            "--rf",
            "1",
        ],
        b"",
    ));
}

/// `kfk group describe`: (members, how many of them have partitions assigned).
fn members(b: &str, group: &str) -> (usize, usize) {
    let out = ok(&kfk(b, &["group", "describe", group], b""));
    let members = out
        .lines()
        .find_map(|l| l.strip_prefix("members: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let assigned = out
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("assigned:"))
        .filter(|a| !a.trim().is_empty())
        .count();
    (members, assigned)
}

/// SIGTERM ends `consume --group` gracefully: exit 143, and the group hears of it at once
/// (LeaveGroup), so the other member takes over every partition within 3 s instead of after
/// the 45 s session timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_group_consumer_which_leaves_the_group_at_once() {
    let b = bootstrap().await;
    let (topic, group) = ("kfk-sig-group", "kfk-sig-readers");
    create(&b, topic, 6);
    let p = producer(&b).await;
    // B rejoins on its next heartbeat after A leaves: make that prompt (the default is 3 s).
    let member = [
        "consume",
        topic,
        "--group",
        group,
        "--from",
        "earliest",
        "-X",
        "heartbeat.interval.ms=300",
    ];
    let mut a = Running::spawn(&b, &member);
    to_every_partition(&p, topic, 6, "warm").await;
    wait_for(Duration::from_secs(60), "A to print", || {
        !a.lines().is_empty()
    });
    let member_b = Running::spawn(&b, &member);
    wait_for(Duration::from_secs(60), "A and B to share", || {
        members(&b, group) == (2, 2)
    });

    a.signal("TERM");
    let status = a.wait(Duration::from_secs(30));
    let exited = Instant::now();
    assert_eq!(status.code(), Some(143), "stderr:\n{}", a.stderr());
    assert!(
        a.stderr().contains("kfk: interrupted, finishing"),
        "{}",
        a.stderr()
    );

    to_every_partition(&p, topic, 6, "after").await;
    wait_for(Duration::from_secs(60), "B to read every partition", || {
        let got = member_b.lines();
        (0..6).all(|part| got.contains(&format!("after {part}")))
    });
    let took = exited.elapsed();
    eprintln!("B read all 6 partitions {took:?} after A exited");
    assert!(
        took < Duration::from_secs(3),
        "B took {took:?} to take over A's partitions: no LeaveGroup?"
    );
    p.close().await.unwrap();
}

/// Whether a thread of `pid` is blocked reading its standard input (`read(0, ...)`).
fn reading_stdin(pid: u32) -> bool {
    let read = if cfg!(target_arch = "aarch64") {
        "63 0x0 "
    } else {
        "0 0x0 "
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|t| {
        std::fs::read_to_string(t.path().join("syscall")).is_ok_and(|s| s.starts_with(read))
    })
}

/// SIGINT ends `produce` reading an open pipe: what it read is flushed (with a linger far
/// beyond the test, so only the flush sends it), then exit 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_produce_from_an_open_pipe_after_flushing_what_it_read() {
    let b = bootstrap().await;
    let topic = "kfk-sig-produce";
    create(&b, topic, 1);
    let mut p = Running::spawn(
        &b,
        &[
            "produce",
            topic,
            "-X",
            "linger.ms=60000",
            "-X",
            "delivery.timeout.ms=120000",
        ],
    );
    let mut stdin = p.child.stdin.take().unwrap();
    let input: String = (0..50).map(|i| format!("value {i}\n")).collect();
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // kfk has read all 50 lines once it asks for more: blocked in read(0) for a while (a read
    // that finds data returns at once). Nothing is sent yet (linger 60 s).
    let pid = p.child.id();
    let mut since: Option<Instant> = None;
    wait_for(Duration::from_secs(60), "kfk to read the input", || {
        if reading_stdin(pid) {
            since.get_or_insert_with(Instant::now).elapsed() > Duration::from_millis(300)
        } else {
            since = None;
            false
        }
    });
    let before = ok(&kfk(&b, &["offsets", topic], b""));
    assert!(
        before.contains("total\t\t\t0"),
        "sent before the signal: {before}"
    );
    p.signal("INT");
    let status = p.wait(Duration::from_secs(30));
    drop(stdin);
    let err = p.stderr();
    assert_eq!(status.code(), Some(130), "stderr:\n{err}");
    assert!(err.contains("50 records acknowledged, 0 failed"), "{err}");
    let out = ok(&kfk(
        &b,
        &["consume", topic, "--from", "earliest", "--count", "50"],
        b"",
    ));
    assert_eq!(values(&out), (0..50).collect::<Vec<_>>());
}

/// `copy` starts partitions without a committed offset at the earliest offset by default, so
/// it copies a topic filled before it started; `consume --group` keeps latest, says so, and
/// `--from MS` starts at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_copies_a_prefilled_topic_and_from_picks_where_groups_start() {
    let b = bootstrap().await;
    let (src, dst) = ("kfk-from-src", "kfk-from-dst");
    create(&b, src, 3);
    create(&b, dst, 3);
    let p = producer(&b).await;
    let t0 = 1_700_000_000_000i64;
    for i in 0..300i64 {
        let r = kafka_client::ProducerRecord::new(src)
            .partition((i % 3) as i32)
            .value(format!("value {i}"))
            .timestamp(t0 + i);
        drop(p.send(r).await.expect("send"));
    }
    p.flush().await.unwrap();
    p.close().await.unwrap();

    // No --from: all 300, at least once.
    let out = kfk(
        &b,
        &[
            "copy",
            src,
            dst,
            "--group",
            "kfk-from-copiers",
            "--idle-exit",
            "3",
        ],
        b"",
    );
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kfk: copied 300 records"), "{err}");
    let copied = ok(&kfk(
        &b,
        &["consume", dst, "--from", "earliest", "--idle-exit", "3"],
        b"",
    ));
    let mut got = values(&copied);
    got.sort();
    assert_eq!(got, (0..300).collect::<Vec<_>>());

    // consume --group: latest by default, and says why nothing comes.
    let out = kfk(
        &b,
        &[
            "consume",
            src,
            "--group",
            "kfk-from-late",
            "--idle-exit",
            "2",
        ],
        b"",
    );
    assert!(ok(&out).is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("group kfk-from-late has no committed offset for kfk-from-src-")
            && err.contains("starting at the latest offset (use --from earliest"),
        "{err}"
    );

    // --from MS: the records at or after that time.
    let out = ok(&kfk(
        &b,
        &[
            "consume",
            src,
            "--group",
            "kfk-from-time",
            "--from",
            &(t0 + 150).to_string(),
            "--idle-exit",
            "3",
        ],
        b"",
    ));
    let mut got = values(&out);
    got.sort();
    assert_eq!(got, (150..300).collect::<Vec<_>>());
}

/// SIGTERM ends a transactional `copy` mid-stream: it commits the open transaction, leaves
/// the group and exits 143; a second copier then finishes promptly (no hanging transaction,
/// no departed member to wait for), and the copy holds every record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_transactional_copy_which_commits_and_leaves() {
    let b = bootstrap().await;
    let (src, dst, group) = ("kfk-sig-copy-src", "kfk-sig-copy-dst", "kfk-sig-copiers");
    create(&b, src, 3);
    create(&b, dst, 3);
    let p = producer(&b).await;
    // Records keep coming while the first copier runs.
    let feeding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = {
        let (p, feeding) = (p.clone(), feeding.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while feeding.load(std::sync::atomic::Ordering::SeqCst) || n < 1000 {
                let r = kafka_client::ProducerRecord::new(src).value(format!("value {n}"));
                drop(p.send(r).await.expect("send"));
                n += 1;
                if n % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            p.flush().await.expect("flush");
            n
        })
    };
    let copier = [
        "copy",
        src,
        dst,
        "--group",
        group,
        "--transactional",
        "--commit-interval",
        "50",
    ];
    let mut a = Running::spawn(&b, &copier);
    wait_for(Duration::from_secs(60), "a committed copy", || {
        let out = ok(&kfk(&b, &["group", "offsets", group], b""));
        out.lines().any(|l| l.starts_with(src))
    });
    a.signal("TERM");
    let status = a.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(143), "stderr:\n{}", a.stderr());
    let first: u64 = copied_count(&a.stderr());
    assert!(first > 0, "{}", a.stderr());
    feeding.store(false, std::sync::atomic::Ordering::SeqCst);
    let total = feeder.await.unwrap();

    let started = Instant::now();
    let out = kfk(&b, &[&copier[..], &["--idle-exit", "3"]].concat(), b"");
    let second = copied_count(&String::from_utf8_lossy(&out.stderr));
    ok(&out);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "the second copier took {took:?}"
    );
    assert_eq!(first + second, u64::from(total));
    let out = ok(&kfk(
        &b,
        &[
            "consume",
            dst,
            "--from",
            "earliest",
            "--isolation",
            "read_committed",
            "--idle-exit",
            "3",
        ],
        b"",
    ));
    let mut got = values(&out);
    got.sort();
    assert_eq!(got, (0..total).collect::<Vec<_>>(), "every record once");
    p.close().await.unwrap();
}

/// The count of `kfk: copied N records ...`.
fn copied_count(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("kfk: copied "))
        .and_then(|s| s.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary in {stderr}"))
}

/// `offsets` counts offsets; `--records` tells records from transaction markers: 5 records
/// committed and 3 aborted take 10 offsets (two markers); 8 records, 5 of them committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_tells_records_from_transaction_markers() {
    use kafka_client::config::ProducerConfig;
    use kafka_client::{Producer, ProducerRecord};
    let b = bootstrap().await;
    let topic = "kfk-offsets-txn";
    create(&b, topic, 1);
    let mut cfg = ProducerConfig::default();
    cfg.client_mut().bootstrap_servers(vec![b.clone()]);
    cfg.transactional_id("kfk-offsets-txn".to_string());
    let p = Producer::new(cfg).await.expect("producer");
    p.init_transactions().await.expect("init");
    for (n, commit) in [(5, true), (3, false)] {
        p.begin_transaction().await.expect("begin");
        for i in 0..n {
            drop(
                p.send(ProducerRecord::new(topic).value(format!("v{i}")))
                    .await,
            );
        }
        if commit {
            p.commit_transaction().await.expect("commit");
        } else {
            p.flush().await.expect("flush");
            p.abort_transaction().await.expect("abort");
        }
    }
    p.close().await.unwrap();

    let out = ok(&kfk(&b, &["offsets", topic], b""));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "partition\tearliest\tlatest\toffsets",
            "0\t0\t10\t10",
            "total\t\t\t10"
        ],
        "{out}"
    );
    let out = ok(&kfk(&b, &["offsets", topic, "--records"], b""));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "partition\tearliest\tlatest\toffsets\trecords\tcommitted\tnon-record",
            "0\t0\t10\t10\t8\t5\t2",
            "total\t\t\t10\t8\t5\t2"
        ],
        "{out}"
    );
}

/// Log lines on a pipe carry no ANSI colours (nor with `NO_COLOR`).
#[test]
fn log_lines_on_a_pipe_have_no_colours() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = Command::new(env!("CARGO_BIN_EXE_kfk"))
        .args([
            "-b",
            &format!("127.0.0.1:{port}"),
            "--log",
            "debug",
            "metadata",
        ])
        .env_remove("NO_COLOR")
        .env_remove("KFK_LOG")
        .output()
        .expect("kfk runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DEBUG") || err.contains("WARN"),
        "no log lines: {err}"
    );
    assert!(!err.contains('\x1b'), "colours on a pipe: {err:?}");
}
