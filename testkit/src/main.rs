//! `testkit` CLI: start a local Apache Kafka cluster and act on it.
//!
//! ```text
//! testkit up [--brokers N] [--detach]     prints `bootstrap=HOST:PORT,...`
//! testkit up --direct ...                  and `direct=HOST:PORT,...` (no fault proxy)
//! testkit status | down
//! testkit kill N | stop N | restart N     nodes numbered from 1
//! testkit proxy N latency MS | cut | blackhole | reject | heal
//! ```
//! The owner of a cluster (the foreground `up`, or the daemon of `up --detach`) serves a control
//! port on 127.0.0.1 recorded in the state file: `$KAFKA_RS_STATE`, else `./.testkit/state.json`.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use testkit::{Cluster, ClusterConfig, ExtraListener};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(
    name = "testkit",
    about = "Local Apache Kafka (KRaft) clusters with fault proxies"
)]
struct Cli {
    /// State file of a detached cluster (default: $KAFKA_RS_STATE, else ./.testkit/state.json).
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster and print `bootstrap=HOST:PORT,...`.
    Up {
        /// Number of nodes (combined broker + controller).
        #[arg(long, default_value_t = 1)]
        brokers: usize,
        /// Return once the cluster answers, leaving a background daemon that owns it.
        #[arg(long)]
        detach: bool,
        /// Seconds to wait for the cluster to answer.
        #[arg(long, default_value_t = 90)]
        timeout: u64,
        /// Extra broker property `key=value` (repeatable).
        #[arg(long = "prop", value_name = "KEY=VALUE")]
        props: Vec<String>,
        /// JVM tuning: `fast` (quick start, C1 JIT only) or `throughput` (G1, full JIT; for
        /// benchmarks).
        #[arg(long, default_value = "fast")]
        jvm: String,
        /// Also give every node a listener that bypasses the fault proxy and is advertised as
        /// itself (so Metadata answers through it name it too), and print
        /// `direct=HOST:PORT,...` after the bootstrap line. Proxy faults do not reach clients
        /// that bootstrap there.
        #[arg(long)]
        direct: bool,
    },
    /// Stop the detached cluster and its daemon (succeeds if none is running).
    Down,
    /// Fetch the pinned Kafka distribution into the cache (Maven) and print its folder.
    Fetch,
    /// Print each node's state and the bootstrap line.
    Status,
    /// SIGKILL node N.
    Kill { node: usize },
    /// Stop node N gracefully.
    Stop { node: usize },
    /// Restart node N (graceful stop if running) and wait until it answers.
    Restart { node: usize },
    /// Steer node N's fault proxy: `latency MS`, `cut`, `blackhole`, `reject`, `heal`.
    Proxy {
        node: usize,
        action: String,
        value: Option<u64>,
    },
    /// Internal: the background owner of a detached cluster.
    #[command(hide = true)]
    Daemon {
        #[arg(long)]
        brokers: usize,
        #[arg(long)]
        timeout: u64,
        #[arg(long = "prop")]
        props: Vec<String>,
        #[arg(long)]
        jvm: String,
        #[arg(long)]
        direct: bool,
    },
}

/// Name of the extra listener of `up --direct`.
const DIRECT_LISTENER: &str = "DIRECT";

/// What `up` was asked for.
struct UpArgs<'a> {
    brokers: usize,
    timeout: u64,
    props: &'a [String],
    jvm: &'a str,
    direct: bool,
}

#[derive(Serialize, Deserialize)]
struct State {
    pid: u32,
    control: String,
    bootstrap: String,
    run_dir: String,
    brokers: usize,
    /// `up --direct`: the direct listeners' addresses.
    #[serde(default)]
    direct: Option<String>,
}

fn state_path(cli: &Option<PathBuf>) -> PathBuf {
    if let Some(p) = cli {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("KAFKA_RS_STATE") {
        return PathBuf::from(p);
    }
    PathBuf::from(".testkit").join("state.json")
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn pid_alive(pid: u32) -> bool {
    // A zombie (`Z`) has exited.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

fn read_state(path: &Path) -> Result<State, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("no cluster is up (state file {}: {e})", path.display()))?;
    let state: State = serde_json::from_str(&text)
        .map_err(|e| format!("bad state file {}: {e}", path.display()))?;
    if !pid_alive(state.pid) {
        let _ = std::fs::remove_file(path);
        return Err(format!(
            "no cluster is up (its owner, pid {}, is gone; removed stale {})",
            state.pid,
            path.display()
        ));
    }
    Ok(state)
}

fn parse_props(props: &[String]) -> Result<Vec<(String, String)>, String> {
    props
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("--prop wants KEY=VALUE, got {p:?}"))
        })
        .collect()
}

fn jvm_opts(profile: &str) -> Result<Vec<String>, String> {
    match profile {
        "fast" => Ok(testkit::cluster::default_jvm_opts()),
        "throughput" => Ok(testkit::cluster::throughput_jvm_opts()),
        other => Err(format!("--jvm wants `fast` or `throughput`, got {other:?}")),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let state = absolute(&state_path(&cli.state));
    let res = match cli.cmd {
        Cmd::Up {
            brokers,
            detach,
            timeout,
            props,
            jvm,
            direct,
        } => {
            let up = UpArgs {
                brokers,
                timeout,
                props: &props,
                jvm: &jvm,
                direct,
            };
            if detach {
                up_detached(&state, &up)
            } else {
                own(&state, &up).await
            }
        }
        Cmd::Daemon {
            brokers,
            timeout,
            props,
            jvm,
            direct,
        } => {
            let up = UpArgs {
                brokers,
                timeout,
                props: &props,
                jvm: &jvm,
                direct,
            };
            own(&state, &up).await
        }
        Cmd::Down => down(&state).await,
        Cmd::Fetch => {
            let version = testkit::dist::kafka_version();
            testkit::dist::kafka_libs(&version)
                .map(|dir| println!("kafka {version}: {}", dir.display()))
                .map_err(|e| e.to_string())
        }
        Cmd::Status => command(&state, "status").await,
        Cmd::Kill { node } => command(&state, &format!("kill {node}")).await,
        Cmd::Stop { node } => command(&state, &format!("stop {node}")).await,
        Cmd::Restart { node } => command(&state, &format!("restart {node}")).await,
        Cmd::Proxy {
            node,
            action,
            value,
        } => {
            let v = value.map(|v| format!(" {v}")).unwrap_or_default();
            command(&state, &format!("proxy {node} {action}{v}")).await
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testkit: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Spawns the daemon, relays its output until the bootstrap line (and the direct line with
/// `--direct`), then returns.
fn up_detached(state: &Path, up: &UpArgs) -> Result<(), String> {
    let UpArgs {
        brokers,
        timeout,
        props,
        jvm,
        direct,
    } = *up;
    parse_props(props)?;
    jvm_opts(jvm)?;
    if let Ok(s) = read_state(state) {
        return Err(format!(
            "a cluster is already up (daemon pid {}, bootstrap={}); run `testkit down` first",
            s.pid, s.bootstrap
        ));
    }
    let dir = state.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let log_path = dir.join("daemon.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding own executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--state")
        .arg(state)
        .arg("daemon")
        .arg("--brokers")
        .arg(brokers.to_string())
        .arg("--timeout")
        .arg(timeout.to_string())
        .arg("--jvm")
        .arg(jvm);
    for p in props {
        cmd.arg("--prop").arg(p);
    }
    if direct {
        cmd.arg("--direct");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    // Own process group and session-independent: a Ctrl-C in this terminal does not reach it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning the daemon: {e}"))?;
    let Some(out) = child.stdout.take() else {
        return Err("daemon stdout missing".into());
    };
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        println!("{line}");
        let last = if direct { "direct=" } else { "bootstrap=" };
        if line.starts_with(last) {
            let _ = std::io::stdout().flush();
            return Ok(());
        }
    }
    let _ = child.wait();
    Err(format!(
        "the daemon ended before the cluster was up; {}:\n{}",
        log_path.display(),
        testkit::cluster::tail_of(&log_path, 8 * 1024)
    ))
}

/// Owns a cluster: starts it, prints its addresses, serves the control port until `down` or a
/// signal, then shuts it down.
async fn own(state: &Path, up: &UpArgs<'_>) -> Result<(), String> {
    let UpArgs {
        brokers,
        timeout,
        props,
        jvm,
        direct,
    } = *up;
    if let Ok(s) = read_state(state) {
        return Err(format!(
            "a cluster is already up (pid {}, bootstrap={}); run `testkit down` first",
            s.pid, s.bootstrap
        ));
    }
    let mut config = ClusterConfig::with_brokers(brokers);
    config.start_timeout = Duration::from_secs(timeout);
    config.broker_properties = parse_props(props)?;
    config.jvm_opts = Some(jvm_opts(jvm)?);
    if direct {
        config.extra_listeners.push(ExtraListener {
            name: DIRECT_LISTENER.into(),
            security_protocol: "PLAINTEXT".into(),
        });
    }
    let started = Instant::now();
    let cluster = Cluster::start(config).await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("binding the control port: {e}"))?;
    let control = listener
        .local_addr()
        .map_err(|e| format!("control port: {e}"))?;
    let st = State {
        pid: std::process::id(),
        control: control.to_string(),
        bootstrap: cluster.bootstrap(),
        run_dir: cluster.run_dir().display().to_string(),
        brokers,
        direct: direct_addrs(&cluster),
    };
    if let Some(dir) = state.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let json = serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?;
    let tmp = state.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, state).map_err(|e| format!("writing {}: {e}", state.display()))?;
    {
        // After this block the daemon never writes to stdout again: its reader has gone.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "run_dir={}", st.run_dir);
        let _ = writeln!(out, "started_in_ms={}", elapsed.as_millis());
        let _ = writeln!(out, "bootstrap={}", st.bootstrap);
        if let Some(d) = &st.direct {
            let _ = writeln!(out, "direct={d}");
        }
        let _ = out.flush();
    }
    eprintln!(
        "testkit: cluster up, control port {control}, state {}",
        state.display()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("installing a SIGTERM handler: {e}"))?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            acc = listener.accept() => {
                let Ok((stream, _)) = acc else { continue };
                if serve(stream, &cluster).await {
                    break;
                }
            }
        }
    }
    eprintln!("testkit: shutting down");
    cluster.shutdown(Duration::from_secs(15)).await;
    drop(cluster);
    // Only remove the state file if it is still ours.
    if let Ok(text) = std::fs::read_to_string(state) {
        if serde_json::from_str::<State>(&text).is_ok_and(|s| s.pid == std::process::id()) {
            let _ = std::fs::remove_file(state);
        }
    }
    Ok(())
}

/// The nodes' direct listener addresses (`up --direct`), comma-separated.
fn direct_addrs(cluster: &Cluster) -> Option<String> {
    let ports: Option<Vec<String>> = cluster
        .nodes()
        .iter()
        .map(|n| {
            n.listener_port(DIRECT_LISTENER)
                .map(|p| format!("127.0.0.1:{p}"))
        })
        .collect();
    ports.map(|p| p.join(","))
}

/// Serves one control connection; returns true when asked to shut down.
async fn serve(stream: TcpStream, cluster: &Cluster) -> bool {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(r);
    let read = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0 && line.len() < 256) {
        return false;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let (reply, down) = match handle(&words, cluster).await {
        Ok(Some(text)) => (format!("ok\n{text}"), false),
        Ok(None) => ("ok\n".to_string(), true),
        Err(e) => (format!("error: {e}\n"), false),
    };
    let _ = w.write_all(reply.as_bytes()).await;
    let _ = w.shutdown().await;
    down
}

/// Runs one control command; `Ok(None)` means "shut down".
async fn handle(words: &[&str], cluster: &Cluster) -> Result<Option<String>, String> {
    let node = |i: Option<&&str>| -> Result<&testkit::Node, String> {
        let i: usize = i
            .and_then(|s| s.parse().ok())
            .ok_or("a node number is required")?;
        cluster
            .node(i)
            .ok_or_else(|| format!("no node {i} (nodes are 1..={})", cluster.nodes().len()))
    };
    match words.first().copied() {
        Some("down") => Ok(None),
        Some("status") => {
            let mut out = String::new();
            for n in cluster.nodes() {
                let pid = n.pid().map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                // The CLIENT listener itself is advertised as the proxy's address: a client
                // bootstrapping there would be sent through the proxy anyway.
                let direct = n
                    .listener_port(DIRECT_LISTENER)
                    .map(|p| format!(" direct=127.0.0.1:{p}"))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "node {} {} pid={} addr={}{direct} unproxied_client={} proxy: {}\n",
                    n.id(),
                    n.state(),
                    pid,
                    n.addr(),
                    n.direct_addr(),
                    n.proxy().describe()
                ));
            }
            out.push_str(&format!("run_dir={}\n", cluster.run_dir().display()));
            out.push_str(&format!("bootstrap={}\n", cluster.bootstrap()));
            if let Some(d) = direct_addrs(cluster) {
                out.push_str(&format!("direct={d}\n"));
            }
            Ok(Some(out))
        }
        Some("kill") => {
            let n = node(words.get(1))?;
            n.kill();
            Ok(Some(format!("node {} killed\n", n.id())))
        }
        Some("stop") => {
            let n = node(words.get(1))?;
            n.stop().await;
            Ok(Some(format!("node {} stopped\n", n.id())))
        }
        Some("restart") => {
            let n = node(words.get(1))?;
            n.restart().await.map_err(|e| e.to_string())?;
            Ok(Some(format!("node {} running\n", n.id())))
        }
        Some("proxy") => {
            let n = node(words.get(1))?;
            let p = n.proxy();
            match (words.get(2).copied(), words.get(3)) {
                (Some("latency"), Some(ms)) => {
                    let ms: u64 = ms.parse().map_err(|_| "latency wants milliseconds")?;
                    p.set_latency(Duration::from_millis(ms));
                }
                (Some("cut"), None) => p.cut(),
                (Some("blackhole"), None) => p.blackhole(true),
                (Some("reject"), None) => p.reject(true),
                (Some("heal"), None) => p.heal(),
                _ => return Err("proxy N latency MS | cut | blackhole | reject | heal".into()),
            }
            Ok(Some(format!("node {} proxy: {}\n", n.id(), p.describe())))
        }
        _ => Err(format!("unknown command {:?}", words.join(" "))),
    }
}

/// Sends one command to the owner and prints its answer.
async fn command(state: &Path, cmd: &str) -> Result<(), String> {
    let st = read_state(state)?;
    let reply = send(&st, cmd, Duration::from_secs(180)).await?;
    let (first, rest) = reply.split_once('\n').unwrap_or((reply.as_str(), ""));
    if first == "ok" {
        print!("{rest}");
        Ok(())
    } else {
        Err(first.strip_prefix("error: ").unwrap_or(first).to_string())
    }
}

async fn send(st: &State, cmd: &str, timeout: Duration) -> Result<String, String> {
    let work = async {
        let mut s = TcpStream::connect(&st.control)
            .await
            .map_err(|e| format!("connecting to the owner at {}: {e}", st.control))?;
        s.write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
            .await
            .map_err(|e| e.to_string())?;
        Ok(out)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer to {cmd:?} within {timeout:?}"))?
}

async fn down(state: &Path) -> Result<(), String> {
    if !state.exists() {
        eprintln!(
            "testkit: no cluster is running (no state file {})",
            state.display()
        );
        return Ok(());
    }
    let st = match read_state(state) {
        Ok(st) => st,
        // The owner is gone (read_state removed its stale state file): nothing to stop.
        Err(e) if !state.exists() => {
            let why = e.strip_prefix("no cluster is up ").unwrap_or(&e);
            eprintln!("testkit: no cluster is running {why}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    send(&st, "down", Duration::from_secs(10)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pid_alive(st.pid) {
        if Instant::now() >= deadline {
            return Err(format!("owner pid {} still running after 60 s", st.pid));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(state);
    println!("down");
    Ok(())
}
