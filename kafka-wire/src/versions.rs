//! ApiVersions negotiation: intersect the versions this crate speaks with what a broker offers.

use std::collections::BTreeMap;

use crate::api_key::ApiKey;
use crate::messages::{ApiVersionsResponse, SUPPORTED_APIS};

/// For each API key both sides know, the highest version both support.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NegotiatedVersions {
    versions: BTreeMap<ApiKey, i16>,
    /// What the broker offered, every key (also those this crate does not speak).
    offered: BTreeMap<ApiKey, (i16, i16)>,
}

impl NegotiatedVersions {
    /// Intersects `ours` (key, min, max) with `theirs` (key, min, max). Keys missing on either
    /// side, and ranges that do not overlap, get no version. Duplicate keys on the broker's side:
    /// the last one counts.
    pub fn intersect(
        ours: &[(ApiKey, i16, i16)],
        theirs: impl IntoIterator<Item = (ApiKey, i16, i16)>,
    ) -> Self {
        let offered: BTreeMap<ApiKey, (i16, i16)> = theirs
            .into_iter()
            .map(|(k, lo, hi)| (k, (lo, hi)))
            .collect();
        let theirs = &offered;
        let mut versions = BTreeMap::new();
        for &(key, lo, hi) in ours {
            if let Some(&(tlo, thi)) = theirs.get(&key) {
                let max = hi.min(thi);
                if max >= lo.max(tlo) {
                    versions.insert(key, max);
                }
            }
        }
        NegotiatedVersions { versions, offered }
    }

    /// Intersects this crate's [`SUPPORTED_APIS`] with a broker's ApiVersions response.
    pub fn from_response(response: &ApiVersionsResponse) -> Self {
        Self::intersect(
            SUPPORTED_APIS,
            response
                .api_keys
                .iter()
                .map(|k| (ApiKey(k.api_key), k.min_version, k.max_version)),
        )
    }

    /// The version to use for `key`, or `None` if there is no common version.
    pub fn version(&self, key: ApiKey) -> Option<i16> {
        self.versions.get(&key).copied()
    }

    /// The range (min, max) the broker offered for `key`, whether or not this crate speaks any
    /// of it; `None` when the broker did not list the key.
    pub fn offered(&self, key: ApiKey) -> Option<(i16, i16)> {
        self.offered.get(&key).copied()
    }

    /// Every key with a common version.
    pub fn iter(&self) -> impl Iterator<Item = (ApiKey, i16)> + '_ {
        self.versions.iter().map(|(k, v)| (*k, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::api_versions::ApiVersion;

    #[test]
    fn picks_max_common_version() {
        let ours = [
            (ApiKey::PRODUCE, 3, 13),
            (ApiKey::FETCH, 4, 18),
            (ApiKey::METADATA, 0, 13),
        ];
        let theirs = [
            (ApiKey::PRODUCE, 0, 11),
            (ApiKey::FETCH, 0, 3),
            (ApiKey(999), 0, 1),
        ];
        let n = NegotiatedVersions::intersect(&ours, theirs);
        assert_eq!(n.version(ApiKey::PRODUCE), Some(11));
        assert_eq!(n.version(ApiKey::FETCH), None);
        assert_eq!(n.version(ApiKey::METADATA), None);
        assert_eq!(n.version(ApiKey(999)), None);
        // The broker's own ranges stay known, also where there is no common version.
        assert_eq!(n.offered(ApiKey::FETCH), Some((0, 3)));
        assert_eq!(n.offered(ApiKey(999)), Some((0, 1)));
        assert_eq!(n.offered(ApiKey::METADATA), None);
    }

    #[test]
    fn from_a_response() {
        let resp = ApiVersionsResponse {
            api_keys: vec![ApiVersion {
                api_key: 18,
                min_version: 0,
                max_version: 99,
                ..Default::default()
            }],
            ..Default::default()
        };
        let n = NegotiatedVersions::from_response(&resp);
        assert_eq!(n.version(ApiKey::API_VERSIONS), Some(5));
        assert_eq!(n.iter().count(), 1);
    }
}
