//! Property round trips: for every generated message and every version, random valid values
//! encode -> decode -> encode to identical bytes and an equal value.

use proptest::prelude::*;

use crate::gen_arb::cases;
use crate::support::Rng;

#[test]
fn every_message_and_version_is_covered() {
    let cases = cases();
    let pairs: usize = cases.iter().map(|c| (c.max - c.min + 1) as usize).sum();
    // 91 request/response pairs plus 11 data structures, as of Kafka 4.4.
    assert!(cases.len() >= 188, "only {} messages", cases.len());
    assert!(pairs >= 630, "only {pairs} (message, version) pairs");
    println!("{} messages, {pairs} (message, version) pairs", cases.len());
}

#[test]
fn defaults_round_trip_in_every_version() {
    let mut failures = Vec::new();
    for case in cases() {
        for v in case.min..=case.max {
            if let Err(e) = (case.default_roundtrip)(v) {
                failures.push(format!("{} {e}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn header_versions_follow_flexible_versions() {
    use kafka_wire::messages::header_versions;
    use kafka_wire::ApiKey;
    assert_eq!(header_versions(ApiKey::PRODUCE, 8), Some((1, 0)));
    assert_eq!(header_versions(ApiKey::PRODUCE, 9), Some((2, 1)));
    assert_eq!(header_versions(ApiKey::PRODUCE, 2), None);
    // ApiVersions responses always use header v0.
    assert_eq!(header_versions(ApiKey::API_VERSIONS, 2), Some((1, 0)));
    assert_eq!(header_versions(ApiKey::API_VERSIONS, 3), Some((2, 0)));
    assert_eq!(header_versions(ApiKey::SASL_HANDSHAKE, 1), Some((1, 0)));
    assert_eq!(header_versions(ApiKey(999), 0), None);
    assert_eq!(ApiKey::PRODUCE.to_string(), "Produce");
    assert_eq!(ApiKey(999).to_string(), "ApiKey(999)");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_values_round_trip(seed in any::<u64>()) {
        for case in cases() {
            for v in case.min..=case.max {
                let mut r = Rng::new(seed ^ (u64::from(v as u16) << 48));
                if let Err(e) = (case.roundtrip)(&mut r, v) {
                    prop_assert!(false, "{} {}", case.name, e);
                }
            }
        }
    }
}
