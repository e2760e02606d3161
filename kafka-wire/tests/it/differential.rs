//! Differential tests against the `kafka-protocol` crate: for every API and version both crates
//! support, bytes we encode must be decoded by kafka-protocol and re-encoded to identical bytes.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey as KpApiKey, RequestKind, ResponseKind};

use crate::gen_arb::cases;
use crate::support::{Kind, Rng};

const SEEDS: u64 = 24;

/// Versions `kafka-protocol` 0.18 lists in `ApiKey::valid_versions` although its message types
/// stop one version earlier (its schemas predate these versions): excluded, not failures.
const KP_LAGS: &[(&str, i16)] = &[
    ("InitProducerIdRequest", 6),
    ("OffsetCommitRequest", 10),
    ("OffsetFetchRequest", 10),
];

fn kp_roundtrip(kind: Kind, key: KpApiKey, version: i16, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut b = Bytes::copy_from_slice(bytes);
    let mut out = BytesMut::new();
    match kind {
        Kind::Request => {
            let msg = RequestKind::decode(key, &mut b, version).map_err(|e| e.to_string())?;
            msg.encode(&mut out, version).map_err(|e| e.to_string())?;
        }
        _ => {
            let msg = ResponseKind::decode(key, &mut b, version).map_err(|e| e.to_string())?;
            msg.encode(&mut out, version).map_err(|e| e.to_string())?;
        }
    }
    if !b.is_empty() {
        return Err(format!(
            "{} bytes left after kafka-protocol decode",
            b.len()
        ));
    }
    Ok(out.to_vec())
}

#[test]
fn kafka_protocol_reads_and_rewrites_our_bytes() {
    let mut pairs = 0;
    let mut skipped_versions = Vec::new();
    let mut failures = Vec::new();
    for case in cases() {
        let Some(key) = case.api_key else { continue };
        if case.kind == Kind::Data {
            continue;
        }
        let Ok(kp_key) = KpApiKey::try_from(key) else {
            skipped_versions.push(format!("{} (unknown to kafka-protocol)", case.name));
            continue;
        };
        let range = kp_key.valid_versions();
        let lo = case.min.max(range.min);
        let hi = case.max.min(range.max);
        if lo > hi {
            skipped_versions.push(format!("{} (no common version)", case.name));
            continue;
        }
        if case.min < lo || case.max > hi {
            skipped_versions.push(format!(
                "{} v{}-{} (kafka-protocol has {}-{})",
                case.name, case.min, case.max, range.min, range.max
            ));
        }
        for v in lo..=hi {
            if KP_LAGS.contains(&(case.name, v)) {
                skipped_versions.push(format!(
                    "{} v{v} (kafka-protocol's type lacks it)",
                    case.name
                ));
                continue;
            }
            pairs += 1;
            for seed in 0..SEEDS {
                let mut r = Rng::new(seed.wrapping_mul(7919) ^ u64::from(v as u16));
                let ours = match (case.roundtrip)(&mut r, v) {
                    Ok(b) => b,
                    Err(e) => {
                        failures.push(format!("{} v{v}: ours: {e}", case.name));
                        break;
                    }
                };
                match kp_roundtrip(case.kind, kp_key, v, &ours) {
                    Ok(theirs) if theirs == ours => {}
                    Ok(theirs) => {
                        failures.push(format!(
                            "{} v{v} seed {seed}: kafka-protocol re-encoded differently\n ours:   {ours:02x?}\n theirs: {theirs:02x?}",
                            case.name
                        ));
                        break;
                    }
                    Err(e) => {
                        failures.push(format!(
                            "{} v{v} seed {seed}: kafka-protocol failed: {e}\n bytes: {ours:02x?}",
                            case.name
                        ));
                        break;
                    }
                }
            }
        }
    }
    println!("differential: {pairs} (message, version) pairs, {SEEDS} values each");
    println!("not covered: {}", skipped_versions.join("; "));
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(pairs > 500, "only {pairs} pairs covered");
}
