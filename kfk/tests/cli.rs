//! `kfk` end to end against the real broker: topic admin, produce from stdin, consume, offsets,
//! and the failure modes (unknown topic, unreachable broker, bad flags, bad input).

use std::io::Write;
use std::process::{Command, Output, Stdio};
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
