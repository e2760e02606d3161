//! The README's main job as a test: the bank demo (`cargo run --release -p streams --example
//! bank`) starts its own 1-node Kafka, runs two exactly-once processors as separate processes,
//! SIGKILLs one midway and restarts it, and checks BANK.md's oracles (a), (b) and (g). It must
//! exit 0 and report every oracle ok.

mod support;

use std::process::Command;

use support::bank_binary;

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
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use super::support::{bank, Proc};

    /// Waits for the exit, at most `limit`; returns the exit code and the time taken.
    fn wait(run: &mut Proc, limit: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = run.exited() {
                let took = started.elapsed();
                // Let the last lines of its stderr be read.
                run.wait_exit(Duration::from_secs(1));
                return (status.code(), took);
            }
            assert!(
                started.elapsed() <= limit,
                "bank run did not exit within {limit:?}: {:?}",
                run.stderr_lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
        let mut first = Proc::run(&[&common[..], &["--instance-id", "one"]].concat());
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
        assert!(first.signal("TERM"));
        let (code, took) = wait(&mut first, Duration::from_secs(30));
        println!("bank run exited {code:?} {took:?} after SIGTERM");
        assert_eq!(code, Some(0), "{:?}", first.stderr_lines());
        assert!(took < Duration::from_secs(5), "exit took {took:?}");
        let stopped = first.stderr_lines();
        assert!(
            stopped.iter().any(|l| l.starts_with("bank run: stopped:")),
            "{stopped:?}"
        );
        load.join().expect("load");

        let mut second = Proc::run(&[&common[..], &["--instance-id", "two"]].concat());
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
        assert!(second.signal("TERM"));
        assert_eq!(wait(&mut second, Duration::from_secs(30)).0, Some(0));
        for oracle in ["oracle a: ok", "oracle b: ok", "oracle g: ok"] {
            assert!(report.contains(oracle), "{report}");
        }
    }
}
