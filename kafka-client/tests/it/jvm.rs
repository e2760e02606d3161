//! Running the Java programs of `tests/java/` on the Kafka jars testkit fetches. Every source is
//! compiled once per test process into a directory under Cargo's target tmp dir. Tests that use
//! these fail, never skip, when `java`/`javac` or the jars are missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The run classpath: the compiled `tests/java` classes, then the Kafka jars.
pub fn classpath() -> &'static str {
    static CP: OnceLock<String> = OnceLock::new();
    CP.get_or_init(|| {
        let version = testkit::dist::kafka_version();
        let jars = testkit::dist::classpath(&version)
            .unwrap_or_else(|e| panic!("Kafka {version} jars are needed for this test: {e}"));
        let dir: PathBuf = tempfile::Builder::new()
            .prefix("kafka-client-java-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir")
            .keep();
        let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java");
        let mut sources: Vec<PathBuf> = std::fs::read_dir(&src_dir)
            .expect("tests/java")
            .map(|e| e.expect("tests/java entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "java"))
            .collect();
        sources.sort();
        let out = Command::new("javac")
            .arg("-cp")
            .arg(&jars)
            .arg("-d")
            .arg(&dir)
            .args(&sources)
            .output()
            .expect("javac must be installed to run this test");
        assert!(
            out.status.success(),
            "javac failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{}:{}", dir.display(), jars)
    })
}

/// A `java` command for `class` on [`classpath`].
pub fn command(class: &str) -> Command {
    let mut cmd = Command::new("java");
    cmd.arg("-cp").arg(classpath()).arg(class);
    cmd
}

/// Runs `class` with `args`, feeding `stdin`; panics with Java's stderr unless it succeeds;
/// returns its stdout.
pub fn run(class: &str, args: &[String], stdin: &[u8]) -> String {
    let mut child = command(class)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("java must be installed to run this test");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // Write from a thread so a full stdout pipe cannot deadlock us.
    let writer = std::thread::spawn(move || {
        input.write_all(&data).expect("write to java");
    });
    let out = child.wait_with_output().expect("java output");
    writer.join().expect("writer thread");
    assert!(
        out.status.success(),
        "java {class} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// [`run`] on a blocking thread, for async tests.
pub async fn run_async(class: &'static str, args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || run(class, &args, b""))
        .await
        .expect("java runner thread")
}
