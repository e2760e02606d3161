//! Fault proxy checks on the shared 1-node cluster. They steer the same proxy, so they take a
//! lock; each heals the proxy when done.

use std::time::{Duration, Instant};

use testkit::probe::{ProbeConn, ProbeError};
use testkit::{shared_cluster, ProxyHandle};
use tokio::sync::{Mutex, MutexGuard};

const T: Duration = Duration::from_secs(5);

async fn exclusive() -> (
    MutexGuard<'static, ()>,
    &'static testkit::Cluster,
    ProxyHandle,
) {
    static LOCK: Mutex<()> = Mutex::const_new(());
    let guard = LOCK.lock().await;
    let cluster = shared_cluster(1).await.expect("shared 1-node cluster");
    let proxy = cluster.node(1).unwrap().proxy();
    proxy.heal();
    (guard, cluster, proxy)
}

async fn rtt(conn: &mut ProbeConn) -> Duration {
    let t = Instant::now();
    conn.api_versions(T).await.expect("ApiVersions");
    t.elapsed()
}

#[tokio::test]
async fn latency_is_added_in_each_direction() {
    let (_g, _cluster, proxy) = exclusive().await;
    let mut conn = ProbeConn::connect(proxy.addr(), T).await.expect("connect");
    let mut base = Duration::MAX;
    for _ in 0..5 {
        base = base.min(rtt(&mut conn).await);
    }
    proxy.set_latency(Duration::from_millis(200));
    let slow = rtt(&mut conn).await;
    proxy.heal();
    let healed = rtt(&mut conn).await;
    eprintln!("rtt base {base:?}, with 200 ms latency {slow:?}, healed {healed:?}");
    assert!(
        slow >= Duration::from_millis(400),
        "rtt {slow:?} < 2 x 200 ms"
    );
    assert!(
        slow < Duration::from_millis(400) + Duration::from_secs(3),
        "rtt {slow:?}"
    );
    assert!(healed < Duration::from_millis(300), "healed rtt {healed:?}");
}

#[tokio::test]
async fn cut_closes_open_connections_only() {
    let (_g, _cluster, proxy) = exclusive().await;
    let mut a = ProbeConn::connect(proxy.addr(), T)
        .await
        .expect("connect a");
    let mut b = ProbeConn::connect(proxy.addr(), T)
        .await
        .expect("connect b");
    a.api_versions(T).await.expect("a before cut");
    b.api_versions(T).await.expect("b before cut");
    proxy.cut();
    for (name, conn) in [("a", &mut a), ("b", &mut b)] {
        let t = Instant::now();
        let err = conn.api_versions(T).await.err();
        assert!(
            matches!(err, Some(ProbeError::Io { .. })),
            "{name}: expected a closed connection, got {err:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{name}: took {:?}",
            t.elapsed()
        );
    }
    let mut c = ProbeConn::connect(proxy.addr(), T)
        .await
        .expect("connect after cut");
    c.api_versions(T)
        .await
        .expect("new connection works after cut");
}

#[tokio::test]
async fn blackhole_accepts_but_never_answers_until_healed() {
    let (_g, _cluster, proxy) = exclusive().await;
    let mut old = ProbeConn::connect(proxy.addr(), T).await.expect("connect");
    old.api_versions(T).await.expect("before black hole");

    proxy.blackhole(true);
    let wait = Duration::from_millis(1500);
    let t = Instant::now();
    let err = old.api_versions(wait).await.err();
    assert!(
        matches!(err, Some(ProbeError::Timeout { .. })),
        "old conn: {err:?}"
    );
    assert!(t.elapsed() >= wait);
    let accepted = proxy.accepted();
    let mut fresh = ProbeConn::connect(proxy.addr(), T)
        .await
        .expect("accepts in black hole");
    let err = fresh.api_versions(wait).await.err();
    assert!(
        matches!(err, Some(ProbeError::Timeout { .. })),
        "new conn: {err:?}"
    );
    assert_eq!(proxy.accepted(), accepted + 1);

    proxy.heal();
    // Connections that lost bytes are closed; new ones work.
    let err = old.api_versions(T).await.err();
    assert!(
        matches!(err, Some(ProbeError::Io { .. })),
        "old conn after heal: {err:?}"
    );
    let mut after = ProbeConn::connect(proxy.addr(), T)
        .await
        .expect("connect after heal");
    after.api_versions(T).await.expect("answers after heal");
}

#[tokio::test]
async fn reject_closes_new_connections() {
    let (_g, _cluster, proxy) = exclusive().await;
    proxy.reject(true);
    let res = match ProbeConn::connect(proxy.addr(), T).await {
        Ok(mut c) => c.api_versions(T).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(matches!(res, Err(ProbeError::Io { .. })), "{res:?}");
    proxy.heal();
    let mut c = ProbeConn::connect(proxy.addr(), T).await.expect("connect");
    c.api_versions(T).await.expect("answers after heal");
}
