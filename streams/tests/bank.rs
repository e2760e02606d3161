//! The README's main job as a test: the bank demo (`cargo run --release -p streams --example
//! bank`) starts its own 1-node Kafka, runs two exactly-once processors as separate processes,
//! SIGKILLs one midway and restarts it, and checks BANK.md's oracles (a), (b) and (g). It must
//! exit 0 and report every oracle ok.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/bank`, built by `cargo test` next to this test's binary.
fn bank_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("examples").join("bank");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds the examples of the streams package",
        bin.display()
    );
    bin
}

#[test]
fn the_bank_demo_passes_every_oracle_through_a_kill_and_restart() {
    let out = Command::new(bank_binary())
        .output()
        .expect("the bank demo starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the bank demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for oracle in ["oracle a: ok", "oracle b: ok", "oracle g: ok"] {
        assert!(stdout.contains(oracle), "no {oracle:?} in:\n{stdout}");
    }
    assert!(stdout.contains("missing=0 duplicates=0"), "{stdout}");
}

mod sigterm {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use super::bank_binary;

    /// A `bank run` process whose stderr lines are collected.
    struct Run {
        child: Child,
        lines: Arc<Mutex<Vec<String>>>,
    }

    impl Run {
        fn start(args: &[&str]) -> Run {
            let mut child = Command::new(bank_binary())
                .arg("run")
                .args(args)
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("bank run starts");
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            let stderr = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            Run { child, lines }
        }

        fn wait_line(&self, line: &str, limit: Duration) {
            let deadline = Instant::now() + limit;
            while !self.lines.lock().unwrap().iter().any(|l| l == line) {
                assert!(
                    Instant::now() < deadline,
                    "no {line:?} within {limit:?}: {:?}",
                    self.lines.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        fn sigterm(&self) {
            let ok = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .expect("kill runs")
                .success();
            assert!(ok);
        }

        /// Waits for the exit, at most `limit`; returns the exit code and the time taken.
        fn wait(&mut self, limit: Duration) -> (Option<i32>, Duration) {
            let started = Instant::now();
            loop {
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    return (status.code(), started.elapsed());
                }
                if started.elapsed() > limit {
                    let _ = self.child.kill();
                    panic!(
                        "bank run did not exit within {limit:?}: {:?}",
                        self.lines.lock().unwrap()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Run {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn bank(args: &[&str]) -> String {
        let out = Command::new(bank_binary())
            .args(args)
            .output()
            .expect("bank runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "bank {args:?} failed:\n{text}");
        text
    }

    /// SIGTERM in the middle of the load: `bank run` commits what it has, leaves the group and
    /// exits 0 within 5 s; a second instance finishes the input, and the output holds every
    /// event exactly once with the right balances.
    #[test]
    fn sigterm_during_load_commits_and_exits_within_5_s() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let bootstrap = rt.block_on(async {
            testkit::shared_cluster(1)
                .await
                .expect("the shared 1-node cluster must start")
                .bootstrap()
        });
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let (input, output, group) = (
            format!("bank-in-{n}"),
            format!("bank-out-{n}"),
            format!("bank-{n}"),
        );
        let changelog = format!("{group}-{input}-changelog");
        let b = bootstrap.as_str();
        bank(&[
            "setup",
            "--bootstrap",
            b,
            "--input",
            &input,
            "--output",
            &output,
        ]);
        let common = [
            "--bootstrap",
            b,
            "--input",
            &input,
            "--output",
            &output,
            "--group",
            &group,
        ];
        let mut first = Run::start(&[&common[..], &["--instance-id", "one"]].concat());
        first.wait_line("active=6", Duration::from_secs(60));
        let load = {
            let args: Vec<String> = [
                "load",
                "--bootstrap",
                b,
                "--input",
                &input,
                "--events",
                "6000",
                "--rate",
                "2000",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            std::thread::spawn(move || {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                bank(&refs)
            })
        };
        std::thread::sleep(Duration::from_millis(1500));
        first.sigterm();
        let (code, took) = first.wait(Duration::from_secs(30));
        println!("bank run exited {code:?} {took:?} after SIGTERM");
        assert_eq!(code, Some(0), "{:?}", first.lines.lock().unwrap());
        assert!(took < Duration::from_secs(5), "exit took {took:?}");
        let stopped = first.lines.lock().unwrap().clone();
        assert!(
            stopped.iter().any(|l| l.starts_with("bank run: stopped:")),
            "{stopped:?}"
        );
        load.join().expect("load");

        let mut second = Run::start(&[&common[..], &["--instance-id", "two"]].concat());
        second.wait_line("active=6", Duration::from_secs(60));
        let report = bank(&[
            "check",
            "--bootstrap",
            b,
            "--input",
            &input,
            "--output",
            &output,
            "--changelog",
            &changelog,
            "--events",
            "6000",
            "--idle-timeout",
            "30",
            "--settle",
            "2",
            "--changelog-quiet",
            "2",
        ]);
        println!("{report}");
        second.sigterm();
        assert_eq!(second.wait(Duration::from_secs(30)).0, Some(0));
        for oracle in ["oracle a: ok", "oracle b: ok", "oracle g: ok"] {
            assert!(report.contains(oracle), "{report}");
        }
    }
}
