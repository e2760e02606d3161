//! The `testkit` binary: detached up (with direct listeners)/status/kill/restart/down, `down`
//! with nothing running, and brokers dying with a SIGKILLed owner.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{eventually, javas_of, processes_mentioning};

const BIN: &str = env!("CARGO_BIN_EXE_testkit");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("testkit-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn run(state: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .expect("run testkit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key))
}

/// Brokers as a Metadata answer from `addr` advertises them.
fn advertised(addr: &str) -> Vec<String> {
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let view = rt
        .block_on(testkit::probe::metadata(addr, Duration::from_secs(10)))
        .expect("metadata");
    view.brokers.into_iter().map(|(_, a)| a).collect()
}

#[test]
fn down_with_nothing_running_says_so_and_succeeds() {
    let dir = scratch("down-idle");
    let state = dir.join("state.json");
    let (ok, out, err) = run(&state, &["down"]);
    assert!(ok, "down with nothing running failed: {out}{err}");
    assert!(err.contains("testkit: no cluster is running"), "{err}");
    // Neither colours nor other escapes on a pipe.
    assert!(!err.contains('\x1b') && !out.contains('\x1b'), "{err:?}");

    // A stale state file of an owner that is gone: the same, and the file is removed.
    std::fs::write(
        &state,
        r#"{"pid": 4194304, "control": "127.0.0.1:9", "bootstrap": "127.0.0.1:9", "run_dir": "/nonexistent", "brokers": 1}"#,
    )
    .expect("write a stale state file");
    let (ok, out, err) = run(&state, &["down"]);
    assert!(ok, "down with a stale state file failed: {out}{err}");
    assert!(err.contains("no cluster is running"), "{err}");
    assert!(!state.exists(), "stale state file left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn detached_up_status_kill_restart_down() {
    let dir = scratch("detached");
    let state = dir.join("state.json");
    let t = Instant::now();
    let (ok, out, err) = run(
        &state,
        &[
            "up",
            "--brokers",
            "1",
            "--detach",
            "--timeout",
            "150",
            "--direct",
        ],
    );
    assert!(ok, "up failed: {out}\n{err}");
    eprintln!("detached up in {:?}", t.elapsed());
    let bootstrap = field(&out, "bootstrap=")
        .expect("bootstrap line")
        .to_string();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");
    // --direct: a second line; the node advertises its direct listener as itself there, and
    // the proxy's address on the bootstrap one.
    let direct = field(&out, "direct=")
        .unwrap_or_else(|| panic!("no direct line in {out}"))
        .to_string();
    assert!(
        direct.starts_with("127.0.0.1:") && direct != bootstrap,
        "{direct}"
    );
    assert_eq!(advertised(&direct), vec![direct.clone()]);
    assert_eq!(advertised(&bootstrap), vec![bootstrap.clone()]);
    let run_dir = PathBuf::from(field(&out, "run_dir=").expect("run_dir line"));
    assert!(state.is_file());
    assert_eq!(javas_of(&run_dir).len(), 1);

    // A second `up` on the same state refuses.
    let (ok, _, err) = run(&state, &["up", "--detach"]);
    assert!(!ok && err.contains("already up"), "{err}");

    let (ok, out, err) = run(&state, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("node 1 running"), "{out}");
    assert_eq!(field(&out, "bootstrap="), Some(bootstrap.as_str()));
    assert_eq!(field(&out, "direct="), Some(direct.as_str()));

    let (ok, out, err) = run(&state, &["proxy", "1", "latency", "25"]);
    assert!(ok && out.contains("latency=25ms"), "{out}{err}");
    let (ok, _, err) = run(&state, &["proxy", "1", "heal"]);
    assert!(ok, "{err}");

    let (ok, out, err) = run(&state, &["kill", "1"]);
    assert!(ok, "{out}{err}");
    assert!(javas_of(&run_dir).is_empty(), "java survived kill");
    let (_, out, _) = run(&state, &["status"]);
    assert!(out.contains("node 1 killed"), "{out}");
    let (ok, out, err) = run(&state, &["restart", "1"]);
    assert!(ok, "{out}{err}");
    assert_eq!(javas_of(&run_dir).len(), 1);
    let (ok, _, err) = run(&state, &["kill", "7"]);
    assert!(!ok && err.contains("no node 7"), "{err}");

    let (ok, out, err) = run(&state, &["down"]);
    assert!(ok, "down failed: {out}{err}");
    assert!(!state.exists(), "state file left behind");
    assert!(javas_of(&run_dir).is_empty(), "java left behind after down");
    assert!(
        processes_mentioning(&state.display().to_string()).is_empty(),
        "daemon left behind after down"
    );
    let (ok, _, err) = run(&state, &["status"]);
    assert!(!ok && err.contains("no cluster is up"), "{err}");
    let (ok, _, err) = run(&state, &["down"]);
    assert!(ok && err.contains("no cluster is running"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn brokers_die_when_their_owner_is_sigkilled() {
    let dir = scratch("sigkill");
    let mut child = Command::new(BIN)
        .arg("--state")
        .arg(dir.join("state.json"))
        .args(["up", "--brokers", "1", "--timeout", "150"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn testkit up");
    let stdout = child.stdout.take().expect("stdout");
    let mut run_dir = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read");
        if let Some(d) = line.strip_prefix("run_dir=") {
            run_dir = Some(PathBuf::from(d));
        }
        if line.starts_with("bootstrap=") {
            break;
        }
    }
    let run_dir = run_dir.expect("run_dir line before bootstrap");
    let javas = javas_of(&run_dir);
    assert_eq!(javas.len(), 1, "one broker JVM");
    child.kill().expect("SIGKILL the owner");
    child.wait().expect("reap");
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(15), || javas_of(&run_dir).is_empty()),
        "broker {javas:?} outlived its SIGKILLed owner"
    );
    eprintln!("broker gone {:?} after its owner", t.elapsed());
    assert!(
        eventually(Duration::from_secs(5), || processes_mentioning(&format!(
            "{}/",
            run_dir.display()
        ))
        .is_empty()),
        "watchdog shell left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&run_dir);
}
