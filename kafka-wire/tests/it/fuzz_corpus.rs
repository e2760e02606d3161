//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`, plus any regression inputs under
//! `fuzz/artifacts-found/<target>/`) through the same logic as the fuzz targets, on stable, so
//! the normal test suite checks every seed and every crash ever found.

use std::fs;
use std::path::{Path, PathBuf};

#[path = "../../../fuzz/targets_common.rs"]
mod targets_common;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.expect("read corpus entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let root = fuzz_dir();
    let mut total = 0;
    for (name, run) in targets_common::TARGETS {
        let corpus = files(&root.join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz corpus for `{name}` is missing or empty under {}",
            root.join("corpus").display()
        );
        let found = files(&root.join("artifacts-found").join(name));
        for path in corpus.iter().chain(&found) {
            let data = fs::read(path).expect("read corpus file");
            // A panic names the target and the file; the assertion messages carry the hex input.
            eprintln!("{name}: {}", path.display());
            run(&data);
            total += 1;
        }
    }
    assert!(total > 0);
}

#[test]
fn fuzz_corpus_holds_the_known_crash_inputs() {
    let corpus = fuzz_dir().join("corpus");
    assert_eq!(
        fs::read(corpus.join("request/crash_one_byte_header")).unwrap(),
        [0x00]
    );
    let resp = fs::read(corpus.join("response/crash_api_versions_v0_count_7fffffff")).unwrap();
    assert_eq!(resp, [0, 18, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]);
    let batch = fs::read(corpus.join("record_batch/crash_count_i32_max")).unwrap();
    assert_eq!(batch.len(), 73);
    assert_eq!(batch[57..61], i32::MAX.to_be_bytes());
    assert_eq!(
        batch[17..21],
        crc32c::crc32c(&batch[21..]).to_be_bytes(),
        "the CRC of the i32::MAX-count batch must be valid"
    );
}
