//! What the bank tests share: the `bank` binary, and its processes with their output captured
//! (every line to an optional log file, the last lines in memory, the latest `active=<n>`).
//! Every [`Proc`] is killed (SIGKILL) and reaped when dropped, whatever way a test ends.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod broker;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `target/<profile>/examples/bank`, next to this test's binary. `cargo test` builds the
/// examples, but not when it is told which tests to build (`--test faults`): so the first call
/// builds the example (`cargo build -p streams --example bank`, same profile) when the test runs
/// under cargo, and the binary is never older than the sources.
pub fn bank_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("examples").join("bank");
    let built = BUILT.get_or_init(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return Ok(()); // not under cargo: use what is there
        };
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "streams", "--example", "bank"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        match cmd.output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "building the bank example failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("cannot run cargo to build the bank example: {e}")),
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p streams --example bank`",
        bin.display()
    );
    bin
}

/// Runs `bank ARGS` to the end and returns its stdout and stderr; fails the test if it fails.
pub fn bank(args: &[&str]) -> String {
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

/// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`...) to `pid` with kill(1) (no unsafe code
/// here); whether it was delivered.
pub fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Lines kept in memory per stream (the log file, if any, has all of them).
const KEEP_LINES: usize = 4000;

/// What a process printed on one stream.
#[derive(Default)]
pub struct Lines {
    /// The last lines (at most [`KEEP_LINES`]).
    pub lines: VecDeque<String>,
    /// Lines read in all.
    pub count: u64,
    /// The `n` of the latest `active=<n>` line.
    pub active: Option<u32>,
    /// `active=<n>` lines read in all.
    pub active_lines: u64,
    /// The stream reached its end.
    pub closed: bool,
}

/// The `n` of a line that is exactly `active=<n>` (BANK.md).
pub fn parse_active(line: &str) -> Option<u32> {
    line.trim().strip_prefix("active=")?.parse().ok()
}

fn collect(from: impl Read, into: Arc<Mutex<Lines>>, mut file: Option<File>) {
    for line in BufReader::new(from).lines().map_while(Result::ok) {
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        let mut l = into.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = parse_active(&line) {
            l.active = Some(n);
            l.active_lines += 1;
        }
        l.count += 1;
        if l.lines.len() == KEEP_LINES {
            l.lines.pop_front();
        }
        l.lines.push_back(line);
    }
    into.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
}

/// A running `bank` process (any subcommand) whose stdout and stderr are collected.
pub struct Proc {
    name: String,
    child: Child,
    out: Arc<Mutex<Lines>>,
    err: Arc<Mutex<Lines>>,
    exit: Option<ExitStatus>,
    log: Option<PathBuf>,
}

impl Proc {
    /// Starts `bank ARGS`, named `name` in messages. With `log`, every stderr line is also
    /// written to that file, and every stdout line to the same path with the extension `out`.
    pub fn start(name: &str, args: &[String], log: Option<&Path>) -> std::io::Result<Proc> {
        let mut child = Command::new(bank_binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let out: Arc<Mutex<Lines>> = Arc::default();
        let err: Arc<Mutex<Lines>> = Arc::default();
        let (err_file, out_file) = match log {
            Some(path) => (
                Some(File::create(path)?),
                Some(File::create(path.with_extension("out"))?),
            ),
            None => (None, None),
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = out.clone();
        std::thread::spawn(move || collect(stdout, sink, out_file));
        let sink = err.clone();
        std::thread::spawn(move || collect(stderr, sink, err_file));
        Ok(Proc {
            name: name.to_string(),
            child,
            out,
            err,
            exit: None,
            log: log.map(Path::to_path_buf),
        })
    }

    /// Starts `bank run ARGS` with no log file; panics if it cannot start.
    pub fn run(args: &[&str]) -> Proc {
        let args: Vec<String> = std::iter::once("run")
            .chain(args.iter().copied())
            .map(str::to_string)
            .collect();
        Proc::start("bank run", &args, None).expect("bank run starts")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its stderr goes to, if any.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    pub fn stderr(&self) -> MutexGuard<'_, Lines> {
        self.err.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stdout(&self) -> MutexGuard<'_, Lines> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the stderr lines kept.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr().lines.iter().cloned().collect()
    }

    /// All of stdout kept, one string.
    pub fn stdout_text(&self) -> String {
        let out = self.stdout();
        let mut s = String::new();
        for l in &out.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// The last `n` stderr lines, one string, each indented.
    pub fn stderr_tail(&self, n: usize) -> String {
        let err = self.stderr();
        let skip = err.lines.len().saturating_sub(n);
        let mut s = String::new();
        for l in err.lines.iter().skip(skip) {
            s.push_str("    ");
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// The latest `active=<n>`.
    pub fn active(&self) -> Option<u32> {
        self.stderr().active
    }

    /// `active=<n>` lines so far.
    pub fn active_lines(&self) -> u64 {
        self.stderr().active_lines
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Sends `signal` (see [`send_signal`]); false if it has exited.
    pub fn signal(&mut self, signal: &str) -> bool {
        self.exited().is_none() && send_signal(self.pid(), signal)
    }

    /// SIGKILL, and waits until it is gone.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        self.exit
    }

    /// Waits at most `limit` for the exit; `None` if it still runs. Also waits (up to a second)
    /// for its output to be read to the end.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while self.exited().is_none() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let drained = Instant::now() + Duration::from_secs(1);
        while !(self.stderr().closed && self.stdout().closed) && Instant::now() < drained {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.exit
    }

    /// Waits until a stderr line equals `line`; panics after `limit`.
    pub fn wait_line(&self, line: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.stderr().lines.iter().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "no {line:?} from {} within {limit:?}: {:?}",
                self.name,
                self.stderr_lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (SIGSTOP) process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
