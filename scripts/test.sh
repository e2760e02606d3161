#!/usr/bin/env bash
# The project's test command: the whole workspace's tests, including those against a real
# Apache Kafka cluster that `testkit` starts on 127.0.0.1. Needs Java 17 and Maven on PATH
# (the broker is fetched from the Maven registry into ~/.cache/kafka-rs on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release "$@"
