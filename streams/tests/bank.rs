//! The README's main job as a test: the bank demo (`cargo run --release -p streams --example
//! bank`) starts its own 1-node Kafka, runs two exactly-once processors as separate processes,
//! SIGKILLs one midway and restarts it, and checks BANK.md's oracles (a), (b) and (g). It must
//! exit 0 and report every oracle ok.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/bank`, built by `cargo test` next to this test's binary.
fn bank_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("examples").join("bank");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds the examples of the streams package",
        bin.display()
    );
    bin
}

#[test]
fn the_bank_demo_passes_every_oracle_through_a_kill_and_restart() {
    let out = Command::new(bank_binary())
        .output()
        .expect("the bank demo starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the bank demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for oracle in ["oracle a: ok", "oracle b: ok", "oracle g: ok"] {
        assert!(stdout.contains(oracle), "no {oracle:?} in:\n{stdout}");
    }
    assert!(stdout.contains("missing=0 duplicates=0"), "{stdout}");
}
