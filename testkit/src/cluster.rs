//! KRaft clusters of real Apache Kafka brokers on 127.0.0.1.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::probe::{self, ClusterView};
use crate::proxy::{FaultProxy, ProxyHandle};
use crate::{dist, Error, Result};

/// A listener added to every node besides `CLIENT`, `INTERNAL` and `CONTROLLER`, bound to its own
/// free port and advertised directly (not through the fault proxy). Configure it further (e.g.
/// SASL) with `listener.name.<lowercase name>.*` entries in [`ClusterConfig::broker_properties`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraListener {
    /// Listener name, e.g. `SASL_SSL_CLIENT` (upper case letters, digits, `_`).
    pub name: String,
    /// Security protocol: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub security_protocol: String,
}

/// How to start a cluster. `ClusterConfig::default()` is one node.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Number of nodes, each a combined broker and controller. Default 1.
    pub brokers: usize,
    /// Kafka version; `None` means [`dist::kafka_version`] (`KAFKA_VERSION` or the pinned one).
    pub kafka_version: Option<String>,
    /// Broker properties added after (and so overriding) the defaults, `key=value` as in a Java
    /// `server.properties` file. The same for every node.
    pub broker_properties: Vec<(String, String)>,
    /// Extra listeners (a hook for later SASL/SSL work).
    pub extra_listeners: Vec<ExtraListener>,
    /// Extra `PLAINTEXT` listeners, each behind a fault proxy of its own on every node and
    /// advertised at that proxy: a client bootstrapped with [`Cluster::listener_bootstrap`]
    /// reaches every node through them only, so a test can cut, delay or black-hole that one
    /// client (one process of several, say) with [`Node::listener_proxy`] and leave the others
    /// alone. Names as for [`ExtraListener`].
    pub proxied_listeners: Vec<String>,
    /// JVM options; `None` means [`default_jvm_opts`].
    pub jvm_opts: Option<Vec<String>>,
    /// Folder under which the run directory is created; `None` means `$KAFKA_RS_RUNS` or
    /// `<system temp>/kafka-rs-testkit`.
    pub runs_dir: Option<PathBuf>,
    /// Give up if the cluster does not answer within this time. Default 120 s.
    pub start_timeout: Duration,
    /// Keep the run directory (logs, data) when the cluster is dropped. It is always kept when
    /// the dropping thread is panicking, or when `KAFKA_RS_KEEP_RUNS` is set.
    pub keep_run_dir: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            brokers: 1,
            kafka_version: None,
            broker_properties: Vec::new(),
            extra_listeners: Vec::new(),
            proxied_listeners: Vec::new(),
            jvm_opts: None,
            runs_dir: None,
            start_timeout: Duration::from_secs(120),
            keep_run_dir: false,
        }
    }
}

impl ClusterConfig {
    /// A config for `brokers` nodes with every other setting at its default.
    pub fn with_brokers(brokers: usize) -> Self {
        ClusterConfig {
            brokers,
            ..Default::default()
        }
    }

    /// Adds (or overrides) a broker property.
    pub fn property(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.broker_properties.push((key.into(), value.into()));
        self
    }

    /// Adds a listener behind its own fault proxies (see [`ClusterConfig::proxied_listeners`]).
    pub fn proxied_listener(&mut self, name: impl Into<String>) -> &mut Self {
        self.proxied_listeners.push(name.into());
        self
    }
}

/// JVM options used when [`ClusterConfig::jvm_opts`] is `None`, tuned for a fast start on small
/// machines: modest heap, serial GC, C1 JIT only (`-XX:TieredStopAtLevel=1` roughly halves start
/// time on 2 cores but lowers peak throughput; benchmarks should use [`throughput_jvm_opts`]).
/// `$KAFKA_RS_JVM_OPTS` (split on whitespace) is appended when set.
pub fn default_jvm_opts() -> Vec<String> {
    with_env_opts(&[
        "-Xms256m",
        "-Xmx1g",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Xshare:auto",
        "-Djava.awt.headless=true",
    ])
}

/// JVM options for benchmarks: G1 and the full JIT, as Kafka ships (slower to start).
/// `$KAFKA_RS_JVM_OPTS` is appended when set.
pub fn throughput_jvm_opts() -> Vec<String> {
    with_env_opts(&[
        "-Xms1g",
        "-Xmx1g",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
    ])
}

fn with_env_opts(base: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    if let Ok(extra) = std::env::var("KAFKA_RS_JVM_OPTS") {
        v.extend(extra.split_whitespace().map(str::to_string));
    }
    v
}

/// The state of one node's broker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// The process runs.
    Running,
    /// Stopped gracefully (or never restarted after a stop).
    Stopped,
    /// Killed with SIGKILL.
    Killed,
    /// The process ended by itself.
    Exited,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Running => "running",
            NodeState::Stopped => "stopped",
            NodeState::Killed => "killed",
            NodeState::Exited => "exited",
        })
    }
}

/// What every node needs to launch its JVM.
struct Launch {
    java: PathBuf,
    classpath: String,
    jvm_opts: Vec<String>,
}

/// A running broker under its watchdog shell.
struct Proc {
    /// The `sh` watchdog; its stdin is `control`.
    sh: Child,
    control: ChildStdin,
    java_pid: u32,
}

/// One combined broker+controller node.
pub struct Node {
    id: i32,
    dir: PathBuf,
    client_port: u16,
    internal_port: u16,
    controller_port: u16,
    extra_ports: Vec<(String, u16)>,
    proxy: FaultProxy,
    /// The proxied listeners: name, broker port, proxy.
    listener_proxies: Vec<(String, u16, FaultProxy)>,
    launch: Arc<Launch>,
    proc: Mutex<Option<Proc>>,
    state: Mutex<NodeState>,
    start_timeout: Duration,
}

/// A running cluster. Dropping it kills every node (SIGKILL) and stops the proxies.
pub struct Cluster {
    nodes: Vec<Node>,
    run_dir: PathBuf,
    cluster_id: String,
    keep_run_dir: bool,
    start_timeout: Duration,
}

/// The watchdog: runs the JVM in the background and kills it when its stdin (held by us) says
/// `stop` (SIGTERM, graceful), `kill`, or reaches EOF because we died (SIGKILL).
const WATCHDOG: &str = r#"
"$@" </dev/null >>"$TESTKIT_STDOUT" 2>&1 &
c=$!
echo "$c"
trap 'kill -9 "$c" 2>/dev/null' EXIT HUP INT TERM
if read cmd && [ "$cmd" = stop ]; then
  kill -TERM "$c" 2>/dev/null
else
  kill -9 "$c" 2>/dev/null
fi
wait "$c"
trap - EXIT
"#;

fn io_ctx(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The directory for run directories.
pub fn runs_base() -> PathBuf {
    std::env::var_os("KAFKA_RS_RUNS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kafka-rs-testkit"))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes run directories whose owning process is gone.
fn sweep_runs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_name().to_string_lossy().starts_with("run-") {
            continue;
        }
        let owner = fs::read_to_string(path.join("owner.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = owner {
            if !pid_alive(pid) && !path.join("keep").exists() {
                let _ = fs::remove_dir_all(&path);
            }
        }
    }
}

fn find_java() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        let p = PathBuf::from(home).join("bin").join("java");
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("java");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Error::JavaMissing)
}

fn free_listener() -> Result<StdListener> {
    StdListener::bind("127.0.0.1:0").map_err(io_ctx("binding a free 127.0.0.1 port"))
}

fn port_of(l: &StdListener) -> Result<u16> {
    Ok(l.local_addr().map_err(io_ctx("reading a port"))?.port())
}

/// A random cluster id: 16 bytes, base64url without padding (22 characters), as Kafka wants.
/// Like Kafka's own `Uuid.randomUuid`, ids starting with `-` are avoided (command-line tools
/// would read them as options).
fn random_cluster_id() -> String {
    loop {
        let id = random_base64_id();
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn random_base64_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    out
}

/// The last `max` bytes of a file, for error messages.
pub fn tail_of(path: &Path, max: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return format!("({} not readable)", path.display());
    };
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return format!("({} not readable)", path.display());
    }
    let start = buf.len().saturating_sub(max);
    String::from_utf8_lossy(&buf[start..]).into_owned()
}

fn log4j_config(dir: &Path) -> String {
    let log = dir.join("server.log");
    let log = log
        .display()
        .to_string()
        .replace('&', "&amp;")
        .replace('"', "&quot;");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <File name="server" fileName="{log}">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="org.apache.kafka.coordinator" level="INFO"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
"#
    )
}

impl Cluster {
    /// Fetches Kafka if needed, formats storage, starts every node with its fault proxy and waits
    /// until every node answers Metadata listing all nodes and a controller.
    pub async fn start(config: ClusterConfig) -> Result<Cluster> {
        let n = config.brokers;
        if n == 0 {
            return Err(Error::Config("a cluster needs at least one broker".into()));
        }
        let names = config
            .extra_listeners
            .iter()
            .map(|l| &l.name)
            .chain(&config.proxied_listeners);
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && !["CLIENT", "INTERNAL", "CONTROLLER"].contains(&name.as_str());
            if !ok {
                return Err(Error::Config(format!("bad extra listener name {name:?}")));
            }
            if !seen.insert(name.as_str()) {
                return Err(Error::Config(format!("listener {name:?} named twice")));
            }
        }
        let java = find_java()?;
        let version = config
            .kafka_version
            .clone()
            .unwrap_or_else(dist::kafka_version);
        let classpath = {
            let v = version.clone();
            tokio::task::spawn_blocking(move || dist::classpath(&v))
                .await
                .map_err(|e| Error::Config(format!("classpath task failed: {e}")))??
        };
        let base = config.runs_dir.clone().unwrap_or_else(runs_base);
        fs::create_dir_all(&base).map_err(io_ctx(format!("creating {}", base.display())))?;
        sweep_runs(&base);
        static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let run_dir = base.join(format!(
            "run-{}-{}-{stamp}",
            std::process::id(),
            RUN_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&run_dir).map_err(io_ctx(format!("creating {}", run_dir.display())))?;
        fs::write(run_dir.join("owner.pid"), std::process::id().to_string())
            .map_err(io_ctx("writing owner.pid"))?;
        let cluster_id = random_cluster_id();

        // Ports: held together until every one is chosen, so no two collide.
        struct Ports {
            client: StdListener,
            internal: StdListener,
            controller: StdListener,
            proxy: StdListener,
            extra: Vec<StdListener>,
            /// Per proxied listener: the broker's port and its proxy's.
            proxied: Vec<(StdListener, StdListener)>,
        }
        let mut ports = Vec::with_capacity(n);
        for _ in 0..n {
            ports.push(Ports {
                client: free_listener()?,
                internal: free_listener()?,
                controller: free_listener()?,
                proxy: free_listener()?,
                extra: config
                    .extra_listeners
                    .iter()
                    .map(|_| free_listener())
                    .collect::<Result<_>>()?,
                proxied: config
                    .proxied_listeners
                    .iter()
                    .map(|_| Ok((free_listener()?, free_listener()?)))
                    .collect::<Result<_>>()?,
            });
        }
        let mut voters = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            voters.push(format!("{}@127.0.0.1:{}", i + 1, port_of(&p.controller)?));
        }
        let voters = voters.join(",");
        let rf = n.min(3);
        let min_isr = if n >= 3 { 2 } else { 1 };

        let launch = Arc::new(Launch {
            java: java.clone(),
            classpath: classpath.clone(),
            jvm_opts: config.jvm_opts.clone().unwrap_or_else(default_jvm_opts),
        });
        let rt = crate::background()?;
        let mut pending = Vec::with_capacity(n);
        for (i, p) in ports.into_iter().enumerate() {
            let id = i as i32 + 1;
            let dir = run_dir.join(format!("node-{id}"));
            fs::create_dir_all(dir.join("data")).map_err(io_ctx("creating a node directory"))?;
            let client_port = port_of(&p.client)?;
            let internal_port = port_of(&p.internal)?;
            let controller_port = port_of(&p.controller)?;
            let proxy_port = port_of(&p.proxy)?;
            let mut extra_ports = Vec::new();
            for (l, sock) in config.extra_listeners.iter().zip(&p.extra) {
                extra_ports.push((l.name.clone(), port_of(sock)?));
            }
            let mut listeners = format!(
                "CLIENT://127.0.0.1:{client_port},INTERNAL://127.0.0.1:{internal_port},CONTROLLER://127.0.0.1:{controller_port}"
            );
            let mut advertised =
                format!("CLIENT://127.0.0.1:{proxy_port},INTERNAL://127.0.0.1:{internal_port}");
            let mut protocols =
                "CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT".to_string();
            for (l, (_, port)) in config.extra_listeners.iter().zip(&extra_ports) {
                listeners.push_str(&format!(",{}://127.0.0.1:{port}", l.name));
                advertised.push_str(&format!(",{}://127.0.0.1:{port}", l.name));
                protocols.push_str(&format!(",{}:{}", l.name, l.security_protocol));
            }
            let mut proxied_ports = Vec::new();
            for (name, (broker, proxy)) in config.proxied_listeners.iter().zip(&p.proxied) {
                let (broker_port, proxy_port) = (port_of(broker)?, port_of(proxy)?);
                listeners.push_str(&format!(",{name}://127.0.0.1:{broker_port}"));
                advertised.push_str(&format!(",{name}://127.0.0.1:{proxy_port}"));
                protocols.push_str(&format!(",{name}:PLAINTEXT"));
                proxied_ports.push((name.clone(), broker_port));
            }
            let mut props: Vec<(String, String)> = vec![
                ("process.roles".into(), "broker,controller".into()),
                ("node.id".into(), id.to_string()),
                ("controller.quorum.voters".into(), voters.clone()),
                ("listeners".into(), listeners),
                ("advertised.listeners".into(), advertised),
                ("listener.security.protocol.map".into(), protocols),
                ("inter.broker.listener.name".into(), "INTERNAL".into()),
                ("controller.listener.names".into(), "CONTROLLER".into()),
                ("log.dirs".into(), dir.join("data").display().to_string()),
                ("num.partitions".into(), "1".into()),
                ("default.replication.factor".into(), rf.to_string()),
                ("auto.create.topics.enable".into(), "false".into()),
                ("offsets.topic.replication.factor".into(), rf.to_string()),
                ("offsets.topic.num.partitions".into(), "6".into()),
                (
                    "transaction.state.log.replication.factor".into(),
                    rf.to_string(),
                ),
                ("transaction.state.log.min.isr".into(), min_isr.to_string()),
                ("transaction.state.log.num.partitions".into(), "6".into()),
                (
                    "share.coordinator.state.topic.replication.factor".into(),
                    rf.to_string(),
                ),
                (
                    "share.coordinator.state.topic.min.isr".into(),
                    min_isr.to_string(),
                ),
                ("group.initial.rebalance.delay.ms".into(), "0".into()),
                ("num.network.threads".into(), "2".into()),
                ("num.io.threads".into(), "4".into()),
                (
                    "log.flush.interval.messages".into(),
                    "9223372036854775807".into(),
                ),
            ];
            props.extend(config.broker_properties.iter().cloned());
            let mut text = String::from("# Written by testkit.\n");
            for (k, v) in &props {
                text.push_str(&format!("{k}={v}\n"));
            }
            fs::write(dir.join("server.properties"), text)
                .map_err(io_ctx("writing server.properties"))?;
            fs::write(dir.join("log4j2.xml"), log4j_config(&dir))
                .map_err(io_ctx("writing log4j2.xml"))?;
            // Release the broker's own ports just before launch; keep the proxy's.
            drop(p.client);
            drop(p.internal);
            drop(p.controller);
            drop(p.extra);
            let upstream: SocketAddr = SocketAddr::from(([127, 0, 0, 1], client_port));
            let proxy = FaultProxy::start(p.proxy, upstream, &rt)
                .map_err(io_ctx("starting a fault proxy"))?;
            let mut listener_proxies = Vec::new();
            for ((name, broker_port), (broker, proxy)) in proxied_ports.into_iter().zip(p.proxied) {
                drop(broker);
                let upstream = SocketAddr::from(([127, 0, 0, 1], broker_port));
                let proxy = FaultProxy::start(proxy, upstream, &rt)
                    .map_err(io_ctx("starting a listener's fault proxy"))?;
                listener_proxies.push((name, broker_port, proxy));
            }
            pending.push(Node {
                id,
                dir,
                client_port,
                internal_port,
                controller_port,
                extra_ports,
                proxy,
                listener_proxies,
                launch: launch.clone(),
                proc: Mutex::new(None),
                state: Mutex::new(NodeState::Stopped),
                start_timeout: config.start_timeout,
            });
        }
        let cluster = Cluster {
            nodes: pending,
            run_dir,
            cluster_id,
            keep_run_dir: config.keep_run_dir,
            start_timeout: config.start_timeout,
        };
        cluster.format(&java, &classpath).await?;
        for node in &cluster.nodes {
            node.launch()?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    async fn format(&self, java: &Path, classpath: &str) -> Result<()> {
        let mut children = Vec::new();
        for node in &self.nodes {
            let child = Command::new(java)
                .args([
                    "-Xshare:auto",
                    "-XX:TieredStopAtLevel=1",
                    "-XX:+UseSerialGC",
                ])
                .arg(format!(
                    "-Dlog4j2.configurationFile={}",
                    node.dir.join("log4j2.xml").display()
                ))
                .arg("-cp")
                .arg(classpath)
                .args([
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    &self.cluster_id,
                    "-c",
                ])
                .arg(node.dir.join("server.properties"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(io_ctx(format!("running {}", java.display())))?;
            children.push((node.id, child));
        }
        let results = tokio::task::spawn_blocking(move || {
            children
                .into_iter()
                .map(|(id, c)| (id, c.wait_with_output()))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::Config(format!("format task failed: {e}")))?;
        for (id, out) in results {
            let out = out.map_err(io_ctx("waiting for the storage format tool"))?;
            if !out.status.success() {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                return Err(Error::Format {
                    node: id,
                    output: text,
                });
            }
        }
        Ok(())
    }

    /// Waits until every running node answers Metadata listing all running nodes and a
    /// controller, polling with backoff, up to the start timeout.
    pub async fn wait_ready(&self) -> Result<()> {
        self.wait_ready_for(self.start_timeout).await
    }

    /// [`Cluster::wait_ready`] with an explicit timeout.
    pub async fn wait_ready_for(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            let running: Vec<&Node> = self
                .nodes
                .iter()
                .filter(|n| n.state() == NodeState::Running)
                .collect();
            let want: Vec<i32> = running.iter().map(|n| n.id).collect();
            let mut last = String::new();
            let mut ok = true;
            for node in &running {
                match node.check_ready(&want).await {
                    Ok(()) => {}
                    Err(why) => {
                        ok = false;
                        last = format!("node {}: {why}", node.id);
                        break;
                    }
                }
            }
            if ok {
                return Ok(());
            }
            for node in &running {
                if node.state() == NodeState::Exited {
                    return Err(Error::NodeExited {
                        node: node.id,
                        log_tail: node.log_tail(),
                    });
                }
            }
            if Instant::now() >= deadline {
                let node = running.first().map_or(1, |n| n.id);
                return Err(Error::Timeout {
                    what: format!("cluster ready ({last})"),
                    after: timeout,
                    log_tail: self
                        .node(node as usize)
                        .map(Node::log_tail)
                        .unwrap_or_default(),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// `host:port,...` of every node's proxied client address.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.proxy.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `host:port,...` of every node's proxy for the proxied listener `name` (see
    /// [`ClusterConfig::proxied_listeners`]); `None` if there is no such listener.
    pub fn listener_bootstrap(&self, name: &str) -> Option<String> {
        let addrs: Option<Vec<String>> = self
            .nodes
            .iter()
            .map(|n| n.listener_proxy(name).map(|p| p.addr().to_string()))
            .collect();
        addrs.map(|a| a.join(","))
    }

    /// Node `i`, numbered from 1.
    pub fn node(&self, i: usize) -> Option<&Node> {
        i.checked_sub(1).and_then(|i| self.nodes.get(i))
    }

    /// All nodes, in id order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The run directory (per-node `server.log`, `stdout.log`, config and data).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The cluster id the storage was formatted with.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Heals every proxy, those of proxied listeners too (no latency, no black hole, no
    /// rejection).
    pub fn heal_all(&self) {
        for n in &self.nodes {
            n.proxy().heal();
            for (_, _, p) in &n.listener_proxies {
                p.handle().heal();
            }
        }
    }

    /// Kills every node now and waits (briefly) for the processes to be gone.
    pub fn kill_all(&self) {
        for n in &self.nodes {
            n.signal(false);
        }
        for n in &self.nodes {
            n.reap(Duration::from_secs(10));
        }
    }

    /// Stops every node gracefully, all at once; nodes still running after `timeout` are
    /// killed.
    pub async fn shutdown(&self, timeout: Duration) {
        for n in &self.nodes {
            n.signal(true);
        }
        let deadline = Instant::now() + timeout;
        for n in &self.nodes {
            n.wait_gone(deadline).await;
        }
        self.kill_all();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
        let keep = self.keep_run_dir
            || std::thread::panicking()
            || std::env::var_os("KAFKA_RS_KEEP_RUNS").is_some();
        if keep {
            let _ = fs::write(self.run_dir.join("keep"), "");
        } else {
            let _ = fs::remove_dir_all(&self.run_dir);
        }
    }
}

impl Node {
    /// Node id (1-based).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The proxied client address (what clients use and what the node advertises).
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    /// The broker's real client address, bypassing the proxy.
    pub fn direct_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// The inter-broker listener port.
    pub fn internal_port(&self) -> u16 {
        self.internal_port
    }

    /// The controller listener port.
    pub fn controller_port(&self) -> u16 {
        self.controller_port
    }

    /// The port of an extra listener, by name (for a proxied listener: the broker's own port,
    /// behind the proxy).
    pub fn listener_port(&self, name: &str) -> Option<u16> {
        self.extra_ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .or_else(|| {
                self.listener_proxies
                    .iter()
                    .find(|(n, _, _)| n == name)
                    .map(|(_, port, _)| *port)
            })
    }

    /// The node's fault proxy.
    pub fn proxy(&self) -> ProxyHandle {
        self.proxy.handle()
    }

    /// The fault proxy of the proxied listener `name` on this node (see
    /// [`ClusterConfig::proxied_listeners`]).
    pub fn listener_proxy(&self, name: &str) -> Option<ProxyHandle> {
        self.listener_proxies
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, p)| p.handle())
    }

    /// The node's directory (`server.properties`, `server.log`, `stdout.log`, `data/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The JVM's process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.state();
        lock(&self.proc).as_ref().map(|p| p.java_pid)
    }

    /// The current state (notices a process that ended by itself).
    pub fn state(&self) -> NodeState {
        let mut proc = lock(&self.proc);
        let mut state = lock(&self.state);
        if let Some(p) = proc.as_mut() {
            if let Ok(Some(_)) = p.sh.try_wait() {
                *proc = None;
                if *state == NodeState::Running {
                    *state = NodeState::Exited;
                }
            }
        }
        *state
    }

    /// The last 8 KiB of `server.log` (and of `stdout.log`).
    pub fn log_tail(&self) -> String {
        format!(
            "--- {}/server.log ---\n{}\n--- {}/stdout.log ---\n{}",
            self.dir.display(),
            tail_of(&self.dir.join("server.log"), 6 * 1024),
            self.dir.display(),
            tail_of(&self.dir.join("stdout.log"), 2 * 1024)
        )
    }

    fn launch(&self) -> Result<()> {
        let mut proc = lock(&self.proc);
        if proc.is_some() {
            return Ok(());
        }
        let l = &self.launch;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("testkit-watchdog")
            .arg(&l.java)
            .args(&l.jvm_opts)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.xml").display()
            ))
            .arg(format!("-Dkafka.logs.dir={}", self.dir.display()))
            .arg("-cp")
            .arg(&l.classpath)
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .env("TESTKIT_STDOUT", self.dir.join("stdout.log"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // Own process group: a terminal's Ctrl-C reaches us, and we stop the brokers ourselves.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut sh = cmd.spawn().map_err(io_ctx("spawning sh for a broker"))?;
        let (Some(control), Some(out)) = (sh.stdin.take(), sh.stdout.take()) else {
            let _ = sh.kill();
            return Err(Error::Config("watchdog pipes missing".into()));
        };
        let mut line = String::new();
        let read = BufReader::new(out).read_line(&mut line);
        let java_pid = match (read, line.trim().parse::<u32>()) {
            (Ok(_), Ok(pid)) => pid,
            _ => {
                let _ = sh.kill();
                let _ = sh.wait();
                return Err(Error::NodeExited {
                    node: self.id,
                    log_tail: self.log_tail(),
                });
            }
        };
        *proc = Some(Proc {
            sh,
            control,
            java_pid,
        });
        *lock(&self.state) = NodeState::Running;
        Ok(())
    }

    /// Asks the watchdog to stop (`graceful`) or kill the JVM; returns whether it was running.
    fn signal(&self, graceful: bool) -> bool {
        self.state();
        let mut proc = lock(&self.proc);
        let Some(p) = proc.as_mut() else {
            return false;
        };
        let word: &[u8] = if graceful { b"stop\n" } else { b"kill\n" };
        let _ = p.control.write_all(word);
        let _ = p.control.flush();
        *lock(&self.state) = if graceful {
            NodeState::Stopped
        } else {
            NodeState::Killed
        };
        true
    }

    /// Waits for the watchdog to end (blocking, bounded); SIGKILLs the JVM if it outlives it.
    fn reap(&self, timeout: Duration) {
        let Some(mut p) = lock(&self.proc).take() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        loop {
            match p.sh.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    kill9(p.java_pid);
                    let _ = p.sh.kill();
                    let _ = p.sh.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    async fn wait_gone(&self, deadline: Instant) {
        loop {
            let done = {
                let mut proc = lock(&self.proc);
                match proc.as_mut() {
                    None => true,
                    Some(p) => match p.sh.try_wait() {
                        Ok(Some(_)) | Err(_) => {
                            *proc = None;
                            true
                        }
                        Ok(None) => false,
                    },
                }
            };
            if done || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the broker with SIGKILL and waits until the process is gone.
    pub fn kill(&self) {
        if self.signal(false) {
            self.reap(Duration::from_secs(10));
        }
    }

    /// Stops the broker gracefully (SIGTERM, controlled shutdown), waiting up to 60 s before
    /// killing it.
    pub async fn stop(&self) {
        if self.signal(true) {
            self.wait_gone(Instant::now() + Duration::from_secs(60))
                .await;
            self.reap(Duration::from_secs(5));
            *lock(&self.state) = NodeState::Stopped;
        }
    }

    /// Starts the broker again if it is not running (same ports, config and data), without
    /// waiting for it to answer. See [`Node::restart`].
    pub fn start(&self) -> Result<()> {
        if self.state() == NodeState::Running {
            return Ok(());
        }
        self.launch()
    }

    /// Stops the broker gracefully if it runs, starts it again and waits until it answers
    /// Metadata listing itself (within the cluster's start timeout).
    pub async fn restart(&self) -> Result<()> {
        self.stop().await;
        self.launch()?;
        let deadline = Instant::now() + self.start_timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            let why = match self.check_ready(&[self.id]).await {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if self.state() == NodeState::Exited {
                return Err(Error::NodeExited {
                    node: self.id,
                    log_tail: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("node {} ready after restart ({why})", self.id),
                    after: self.start_timeout,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Metadata through the proxy: lists every id in `want` and a controller.
    async fn check_ready(&self, want: &[i32]) -> std::result::Result<(), String> {
        let view: ClusterView = probe::metadata(self.addr(), Duration::from_secs(3))
            .await
            .map_err(|e| e.to_string())?;
        let ids: Vec<i32> = view.brokers.iter().map(|b| b.0).collect();
        if view.controller_id < 0 {
            return Err("no controller yet".into());
        }
        if let Some(missing) = want.iter().find(|id| !ids.contains(id)) {
            return Err(format!("broker {missing} not live yet (live: {ids:?})"));
        }
        Ok(())
    }
}

fn kill9(pid: u32) {
    let _ = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Locks, ignoring poisoning (the data stays consistent: every critical section is short).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_id_is_22_base64url_chars() {
        let id = random_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(id, random_cluster_id());
        for _ in 0..2000 {
            assert!(!random_cluster_id().starts_with('-'));
        }
    }
}
