//! `testkit`: real Apache Kafka (KRaft) clusters on 127.0.0.1 for tests, benchmarks and the quick
//! start, each node behind a fault proxy.
//!
//! ```no_run
//! # async fn demo() -> testkit::Result<()> {
//! use std::time::Duration;
//! use testkit::{Cluster, ClusterConfig};
//!
//! let cluster = Cluster::start(ClusterConfig::with_brokers(3)).await?;
//! let bootstrap = cluster.bootstrap(); // "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
//! # let _ = bootstrap;
//! let node = cluster.node(2).expect("three nodes");
//! node.proxy().set_latency(Duration::from_millis(50)); // clients of node 2 see +50 ms each way
//! node.kill();                                          // SIGKILL
//! node.restart().await?;                                // back, answering
//! # Ok(()) }
//! ```
//!
//! ```text
//!   test / benchmark / CLI
//!            |  bootstrap = proxies' addresses
//!   +--------v---------+        +--------------------------------------------+
//!   | FaultProxy (x N) |------->| kafka.Kafka node i  (broker + controller)  |
//!   | latency/cut/hole |  CLIENT| INTERNAL (inter-broker), CONTROLLER (raft) |
//!   +------------------+        +--------------------------------------------+
//!   background tokio runtime     JVM under an `sh` watchdog whose stdin is ours
//! ```
//!
//! * [`dist`] fetches the broker jars with Maven into a cache (`$KAFKA_RS_CACHE` or
//!   `~/.cache/kafka-rs`); version `KAFKA_VERSION` or [`dist::DEFAULT_KAFKA_VERSION`].
//! * [`Cluster::start`] formats storage (static quorum, `controller.quorum.voters`), launches every
//!   node and waits until each answers Metadata (through its proxy) listing all nodes and a
//!   controller. Internal topics use RF `min(N, 3)`, min ISR 2 on three or more nodes (1 below);
//!   transactions and both group protocols (classic and KIP-848 consumer) are on (Kafka 4.4
//!   defaults); `auto.create.topics.enable=false` (create topics explicitly; override with
//!   [`ClusterConfig::broker_properties`]); `offsets.topic.num.partitions=6`,
//!   `transaction.state.log.num.partitions=6`, `group.initial.rebalance.delay.ms=0`.
//! * [`ClusterConfig::proxied_listeners`] adds listeners that sit behind fault proxies of their
//!   own ([`Node::listener_proxy`], bootstrap with [`Cluster::listener_bootstrap`]), so one
//!   client among several can be cut off alone.
//! * Every JVM runs under a tiny `sh` watchdog whose stdin is a pipe held by this process: when
//!   this process dies, even by SIGKILL, the pipe reaches EOF and the watchdog SIGKILLs the JVM.
//! * Run directories live under `$KAFKA_RS_RUNS` or `<temp>/kafka-rs-testkit`; each node keeps
//!   `server.log` and `stdout.log` there. A dropped cluster removes its run directory unless the
//!   thread panics or `KAFKA_RS_KEEP_RUNS` is set; stale ones of dead processes are swept at the
//!   next start.
//! * [`shared_cluster`] gives one cluster per size per test binary, usable from any
//!   `#[tokio::test]` (proxies live on a background runtime). Do not kill nodes of a shared
//!   cluster; start your own for that.
//!
//! # CLI
//! `cargo run -p testkit --release -- up [--brokers N] [--detach]` prints
//! `bootstrap=HOST:PORT,...`. Without `--detach` it runs until Ctrl-C/SIGTERM. With `--detach` a
//! background daemon owns the cluster and serves a control port recorded in the state file
//! (`$KAFKA_RS_STATE`, else `./.testkit/state.json`); `down`, `status`, `kill N`, `stop N`,
//! `restart N`, `proxy N latency MS|cut|blackhole|reject|heal` act on it (nodes numbered from 1).
#![forbid(unsafe_code)]

pub mod cluster;
pub mod dist;
pub mod probe;
pub mod proxy;
pub mod security;
pub mod versioncap;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use cluster::{Cluster, ClusterConfig, ExtraListener, Node, NodeState};
pub use proxy::{FaultProxy, ProxyHandle};
pub use versioncap::VersionCap;

/// Errors from starting or steering a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Dist(#[from] dist::DistError),
    #[error("`java` not found (set JAVA_HOME or put Java 17+ on PATH)")]
    JavaMissing,
    #[error("I/O error {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("formatting storage of node {node} failed:\n{output}")]
    Format { node: i32, output: String },
    #[error("node {node} exited unexpectedly; log tail:\n{log_tail}")]
    NodeExited { node: i32, log_tail: String },
    #[error("timed out after {after:?} waiting for {what}; log tail:\n{log_tail}")]
    Timeout {
        what: String,
        after: Duration,
        log_tail: String,
    },
    #[error("the shared {brokers}-node cluster failed to start earlier: {message}")]
    SharedFailed { brokers: usize, message: String },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The background runtime on which proxies run; it lives as long as the process.
pub fn background() -> Result<tokio::runtime::Handle> {
    static RT: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testkit-bg")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match rt {
        Ok(rt) => Ok(rt.handle().clone()),
        Err(e) => Err(Error::Config(format!(
            "cannot build the background runtime: {e}"
        ))),
    }
}

type SharedCell = tokio::sync::OnceCell<std::result::Result<Cluster, String>>;

/// Waits for this process's turn to run a heavy test (a private multi-broker cluster with
/// faults): such tests hold the returned permit for their whole run, so a test binary runs one
/// of them at a time next to its light tests. On a 2-core machine two 3-broker clusters with
/// fault injection at once starve each other's brokers past their timeouts.
pub async fn heavy_test_permit() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// One cluster of `brokers` nodes per process (per test binary), started on first use with
/// default settings and never dropped: its brokers die with the process (see the watchdog).
/// If its start failed, every later call fails with [`Error::SharedFailed`].
pub async fn shared_cluster(brokers: usize) -> Result<&'static Cluster> {
    static CELLS: OnceLock<Mutex<HashMap<usize, &'static SharedCell>>> = OnceLock::new();
    let cell: &'static SharedCell = {
        let mut map = CELLS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(brokers)
            .or_insert_with(|| Box::leak(Box::new(SharedCell::new())))
    };
    let res = cell
        .get_or_init(|| async move {
            Cluster::start(ClusterConfig::with_brokers(brokers))
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    match res {
        Ok(c) => Ok(c),
        Err(message) => Err(Error::SharedFailed {
            brokers,
            message: message.clone(),
        }),
    }
}
