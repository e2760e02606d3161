//! Fetching Apache Kafka from Maven Central with the machine's `mvn`, into a cache reused by later
//! runs.
//!
//! The cache lives in `$KAFKA_RS_CACHE` if set, else `$HOME/.cache/kafka-rs`. A version's jars go to
//! `<cache>/kafka-<version>/libs`, written to a temporary folder and renamed into place, so a
//! half-finished download is never taken for a complete one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Apache Kafka version the project pins. Override with `KAFKA_VERSION`.
pub const DEFAULT_KAFKA_VERSION: &str = "4.4.0";

/// Log4j 2 version whose SLF4J binding is added so the broker's SLF4J logs reach its log files.
const LOG4J_VERSION: &str = "2.25.5";

/// Errors from fetching the Kafka distribution.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not run `mvn` (is Maven installed and on PATH?): {0}")]
    MavenMissing(std::io::Error),
    #[error("`mvn` failed fetching Kafka {version} (exit {status}); its output:\n{output}")]
    MavenFailed {
        version: String,
        status: String,
        output: String,
    },
    #[error("Kafka {version} was fetched but {what} is missing from {dir}")]
    Incomplete {
        version: String,
        what: String,
        dir: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DistError + '_ {
    move |source| DistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The Kafka version to use: `KAFKA_VERSION` from the environment, else the pinned default.
pub fn kafka_version() -> String {
    std::env::var("KAFKA_VERSION")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_KAFKA_VERSION.to_string())
}

/// The cache root.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KAFKA_RS_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("kafka-rs")
}

/// The folder holding every jar of the broker `version` and its runtime dependencies, fetching
/// them first if the cache does not have them.
pub fn kafka_libs(version: &str) -> Result<PathBuf, DistError> {
    let base = cache_root().join(format!("kafka-{version}"));
    let libs = base.join("libs");
    if libs.join(format!("kafka-clients-{version}.jar")).is_file() {
        return Ok(libs);
    }
    fs::create_dir_all(&base).map_err(io_err(&base))?;
    let work = base.join(format!("fetch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(io_err(&work))?;
    let pom = work.join("pom.xml");
    fs::write(&pom, pom_xml(version)).map_err(io_err(&pom))?;
    let out_dir = work.join("libs");
    let output = Command::new("mvn")
        .current_dir(&work)
        .args([
            "-B",
            "-q",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
        ])
        .arg(format!("-DoutputDirectory={}", out_dir.display()))
        .output()
        .map_err(DistError::MavenMissing)?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(DistError::MavenFailed {
            version: version.to_string(),
            status: output.status.to_string(),
            output: text,
        });
    }
    for jar in [
        format!("kafka-clients-{version}.jar"),
        format!("kafka_2.13-{version}.jar"),
    ] {
        if !out_dir.join(&jar).is_file() {
            return Err(DistError::Incomplete {
                version: version.to_string(),
                what: jar,
                dir: out_dir,
            });
        }
    }
    // Another process may have finished first; either copy is complete.
    if fs::rename(&out_dir, &libs).is_err() && !libs.is_dir() {
        return Err(DistError::Incomplete {
            version: version.to_string(),
            what: "libs".into(),
            dir: libs,
        });
    }
    let _ = fs::remove_dir_all(&work);
    Ok(libs)
}

/// The `kafka-clients` jar of `version` (it carries the JSON message schemas under
/// `common/message/`).
pub fn kafka_clients_jar(version: &str) -> Result<PathBuf, DistError> {
    Ok(kafka_libs(version)?.join(format!("kafka-clients-{version}.jar")))
}

/// A Java class path (`dir/*` form) with every jar of `version`.
pub fn classpath(version: &str) -> Result<String, DistError> {
    Ok(format!("{}/*", kafka_libs(version)?.display()))
}

fn pom_xml(version: &str) -> String {
    format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kafka-rs.testkit</groupId>
  <artifactId>kafka-dist</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"#
    )
}
