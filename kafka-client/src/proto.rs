//! Pure protocol helpers shared by the sans-IO state machines and the tokio layer: no I/O, no
//! clock, no tasks.

use kafka_wire::ErrorCode;

/// The coordinator for `key` in a FindCoordinator answer of `version` (v4+ answers a list of
/// keys; a missing key is COORDINATOR_NOT_AVAILABLE): (error, node id, host, port).
pub(crate) fn coordinator_in(
    r: &kafka_wire::messages::FindCoordinatorResponse,
    version: i16,
    key: &str,
) -> (ErrorCode, i32, String, i32) {
    if version >= 4 {
        match r
            .coordinators
            .iter()
            .find(|c| c.key.as_str() == key)
            .or_else(|| r.coordinators.first())
        {
            Some(c) => (
                ErrorCode(c.error_code),
                c.node_id,
                c.host.to_string(),
                c.port,
            ),
            None => (ErrorCode::COORDINATOR_NOT_AVAILABLE, -1, String::new(), 0),
        }
    } else {
        (
            ErrorCode(r.error_code),
            r.node_id,
            r.host.to_string(),
            r.port,
        )
    }
}

/// Leadership errors: the metadata was stale; refresh it and ask the new leader.
pub(crate) fn is_leader_error(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NOT_LEADER_OR_FOLLOWER
            | ErrorCode::LEADER_NOT_AVAILABLE
            | ErrorCode::UNKNOWN_LEADER_EPOCH
            | ErrorCode::FENCED_LEADER_EPOCH
            | ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            | ErrorCode::REPLICA_NOT_AVAILABLE
            | ErrorCode::KAFKA_STORAGE_ERROR
            | ErrorCode::OFFSET_NOT_AVAILABLE
            | ErrorCode::BROKER_NOT_AVAILABLE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_errors() {
        assert!(is_leader_error(ErrorCode::NOT_LEADER_OR_FOLLOWER));
        assert!(is_leader_error(ErrorCode::FENCED_LEADER_EPOCH));
        assert!(!is_leader_error(ErrorCode::OFFSET_OUT_OF_RANGE));
    }
}
