//! Interop with the Java client, no broker: the Java helper (`tests/java/RecordsInterop.java`)
//! writes batches with `MemoryRecords.builder` and reads ours with `MemoryRecords.readableRecords`
//! (CRC validated). Needs `javac`/`java` and the Kafka jars (fetched by `testkit::dist` with `mvn`
//! into a cache); it fails, never skips, when they are missing.
//!
//! Set `KAFKA_WIRE_UPDATE_GOLDEN=1` to copy the Java-written files into `tests/data/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;

use kafka_wire::records::{BatchBuilder, BatchOptions};

use crate::records_golden::{data_dir, expected_dump, rust_dump, rust_file, CODECS, KINDS};

/// The Java helper's "big" batch: 300 records of 500 bytes, each a run of 8-letter words picked
/// from 64 by a 64-bit LCG (the same in both languages): about 150 KiB uncompressed, compressible.
fn rust_big(codec: kafka_wire::Codec) -> Bytes {
    let mut b = BatchBuilder::new(BatchOptions {
        compression: codec,
        ..BatchOptions::default()
    });
    let mut x: u64 = 1;
    for i in 0..300 {
        let mut w = 0u64;
        let v: Vec<u8> = (0..500u64)
            .map(|j| {
                if j % 8 == 0 {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    w = (x >> 33) % 64;
                }
                b'a' + ((w + j % 8) % 26) as u8
            })
            .collect();
        b.append(
            1_700_000_000_000 + i,
            Some(format!("k{i}").as_bytes()),
            Some(&v),
            &[],
        )
        .unwrap();
    }
    b.finish().unwrap()
}

/// Compiles the helper into `dir` and returns the class path to run it.
fn compile_helper(dir: &Path) -> String {
    let jars = testkit::dist::classpath(&testkit::dist::kafka_version())
        .expect("Kafka jars for the Java interop test (testkit::dist, needs mvn on first run)");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/java/RecordsInterop.java");
    let out = Command::new("javac")
        .arg("-cp")
        .arg(&jars)
        .arg("-d")
        .arg(dir)
        .arg(&src)
        .output()
        .expect("javac must be installed for the Java interop test");
    assert!(
        out.status.success(),
        "javac failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}:{jars}", dir.display())
}

fn java(classpath: &str, args: &[&str]) -> String {
    let out = Command::new("java")
        .arg("-cp")
        .arg(classpath)
        .arg("RecordsInterop")
        .args(args)
        .output()
        .expect("java must be installed for the Java interop test");
    assert!(
        out.status.success(),
        "java {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn java_interop_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let classes = tmp.path().join("classes");
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&classes).unwrap();
    std::fs::create_dir_all(&files).unwrap();
    let cp = compile_helper(&classes);

    // Java writes, we read: every field as the spec says.
    java(&cp, &["write", files.to_str().unwrap()]);
    let mut java_bytes = Vec::new();
    for kind in KINDS {
        let name = format!("java-{kind}.bin");
        let bytes = Bytes::from(std::fs::read(files.join(&name)).unwrap());
        assert_eq!(
            rust_dump(&name, bytes.clone()),
            expected_dump(kind).replace("{}", "java"),
            "our reading of Java's {kind} batch"
        );
        if std::env::var_os("KAFKA_WIRE_UPDATE_GOLDEN").is_some() {
            std::fs::write(data_dir().join(&name), &bytes).unwrap();
        }
        java_bytes.push(bytes);
    }

    // We write, Java reads (MemoryRecords, ensureValid on every batch and record).
    let mut args = vec!["dump".to_string()];
    let mut expected = String::new();
    for kind in KINDS {
        let path = files.join(format!("rust-{kind}.bin"));
        std::fs::write(&path, rust_file(kind)).unwrap();
        args.push(path.to_str().unwrap().to_string());
        expected.push_str(&expected_dump(kind).replace("{}", "rust"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(java(&cp, &args), expected, "Java's reading of our batches");

    // Byte for byte where Java is deterministic and our codec matches.
    let mut identical = Vec::new();
    for (kind, theirs) in KINDS.iter().zip(&java_bytes) {
        let ours = rust_file(kind);
        println!(
            "{kind}: ours {} bytes, Java's {} bytes, identical: {}",
            ours.len(),
            theirs.len(),
            ours == theirs
        );
        if ours == theirs {
            identical.push(*kind);
        }
    }
    for kind in BYTE_IDENTICAL {
        assert!(identical.contains(kind), "{kind} batch differs from Java's");
    }

    // Multi-block batches: Java reads ours the same as its own; we read its own the same as ours.
    let mut args = vec!["dump".to_string()];
    let mut big_identical = Vec::new();
    for (codec, name) in CODECS {
        let theirs =
            Bytes::from(std::fs::read(files.join(format!("java-big-{name}.bin"))).unwrap());
        let ours = rust_big(codec);
        let path = files.join(format!("rust-big-{name}.bin"));
        std::fs::write(&path, &ours).unwrap();
        args.push(
            files
                .join(format!("java-big-{name}.bin"))
                .to_str()
                .unwrap()
                .to_string(),
        );
        args.push(path.to_str().unwrap().to_string());
        let strip = |d: String| d.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert_eq!(
            strip(rust_dump("x", theirs.clone())),
            strip(rust_dump("x", ours.clone())),
            "big {name}: our reading of Java's batch vs of ours"
        );
        println!(
            "big {name}: ours {} bytes, Java's {} bytes, identical: {}",
            ours.len(),
            theirs.len(),
            ours == theirs
        );
        if ours == theirs {
            big_identical.push(name);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dump = java(&cp, &args);
    // Pairs of files (Java's, ours) must dump the same apart from their "file" line.
    let sections: Vec<&str> = dump.split("file ").filter(|s| !s.is_empty()).collect();
    assert_eq!(sections.len(), 2 * CODECS.len());
    for pair in sections.chunks(2) {
        let body = |s: &str| s.split_once('\n').map(|(_, b)| b.to_string()).unwrap();
        assert_eq!(
            body(pair[0]),
            body(pair[1]),
            "Java's reading of {}",
            pair[1].lines().next().unwrap()
        );
    }
    for name in BYTE_IDENTICAL_BIG {
        assert!(
            big_identical.contains(name),
            "big {name} batch differs from Java's"
        );
    }
}

/// Multi-block batches our builder writes byte-identical to Java's.
const BYTE_IDENTICAL_BIG: &[&str] = &["none", "snappy", "zstd"];

/// Batches our builder writes byte-identical to Java's `MemoryRecordsBuilder` (Kafka 4.4 jars,
/// OpenJDK 17).
const BYTE_IDENTICAL: &[&str] = &["none", "snappy", "zstd", "logappend", "commit", "abort"];
