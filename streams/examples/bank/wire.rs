//! The bank workload's bytes on the topics (BANK.md): the `__grt__` type header, the 24-byte
//! input event, the 34-byte balance update, the 8-byte changelog balance and the account keys.
//! Integers are big-endian two's complement. No I/O here: the processor (`run.rs`), the driver
//! and the checker share these functions.
//!
//! The processor uses the decoding half of the input and the encoding half of the output, the
//! driver and the checker the other halves; until both sides exist, the half nobody calls yet is
//! marked `allow(dead_code)`.

/// The name of the one header that carries an input event's type (GKES's routing header).
pub const TYPE_HEADER: &str = "__grt__";

/// The length of an input event's value.
pub const INPUT_LEN: usize = 24;
/// The length of a balance update's value.
pub const UPDATE_LEN: usize = 34;
/// The length of a changelog value.
pub const BALANCE_LEN: usize = 8;

/// Why bytes are not a valid bank value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The value does not have the length of its kind.
    #[error("{what}: expected {expected} bytes, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A balance update's type byte is neither 0 (deposit) nor 1 (withdraw).
    #[error("balance update: unknown type code {0}")]
    Type(u8),
    /// A balance update's status byte is neither 0 (applied) nor 1 (rejected).
    #[error("balance update: unknown status code {0}")]
    Status(u8),
}

/// An input event's type, carried by the `__grt__` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Deposit,
    Withdraw,
}

impl EventType {
    /// The header value: `deposit` or `withdraw` (ASCII).
    pub fn header_value(self) -> &'static [u8] {
        match self {
            EventType::Deposit => b"deposit",
            EventType::Withdraw => b"withdraw",
        }
    }

    /// The type named by a header value; `None` for anything but the two exact names.
    #[allow(dead_code)] // the processor's half (run.rs)
    pub fn from_header(v: &[u8]) -> Option<EventType> {
        match v {
            b"deposit" => Some(EventType::Deposit),
            b"withdraw" => Some(EventType::Withdraw),
            _ => None,
        }
    }

    /// The balance update's type byte: 0 deposit, 1 withdraw.
    pub fn code(self) -> u8 {
        match self {
            EventType::Deposit => 0,
            EventType::Withdraw => 1,
        }
    }

    fn from_code(c: u8) -> Result<EventType, WireError> {
        match c {
            0 => Ok(EventType::Deposit),
            1 => Ok(EventType::Withdraw),
            other => Err(WireError::Type(other)),
        }
    }
}

/// Whether an event changed the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Applied,
    Rejected,
}

impl Status {
    /// The balance update's status byte: 0 applied, 1 rejected.
    pub fn code(self) -> u8 {
        match self {
            Status::Applied => 0,
            Status::Rejected => 1,
        }
    }

    fn from_code(c: u8) -> Result<Status, WireError> {
        match c {
            0 => Ok(Status::Applied),
            1 => Ok(Status::Rejected),
            other => Err(WireError::Status(other)),
        }
    }
}

/// An input event's value (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    /// 0-based global sequence number, in intended-send order.
    pub seq: u64,
    /// Intended send time, µs since the Unix epoch.
    pub intended_us: i64,
    /// Amount, 1 to 1000.
    pub amount: i64,
}

impl InputEvent {
    /// `seq`, `intended_us`, `amount`, big-endian.
    pub fn encode(&self) -> [u8; INPUT_LEN] {
        let mut b = [0u8; INPUT_LEN];
        b[0..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..16].copy_from_slice(&self.intended_us.to_be_bytes());
        b[16..24].copy_from_slice(&self.amount.to_be_bytes());
        b
    }

    /// Decodes exactly 24 bytes.
    #[allow(dead_code)] // the processor's half (run.rs)
    pub fn decode(b: &[u8]) -> Result<InputEvent, WireError> {
        let b = exact::<INPUT_LEN>(b, "input event")?;
        Ok(InputEvent {
            seq: u64::from_be_bytes(field(b, 0)),
            intended_us: i64::from_be_bytes(field(b, 8)),
            amount: i64::from_be_bytes(field(b, 16)),
        })
    }
}

/// A balance update's value (34 bytes): one per input event, on the output topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceUpdate {
    /// Copied from the input event.
    pub seq: u64,
    /// Copied from the input event.
    pub intended_us: i64,
    /// Copied from the input event.
    pub amount: i64,
    /// The account's balance after this event.
    pub balance: i64,
    /// The event's type.
    pub kind: EventType,
    /// Whether the event changed the balance.
    pub status: Status,
}

impl BalanceUpdate {
    /// `seq`, `intended_us`, `amount`, `balance` (big-endian), then the type and status bytes.
    #[allow(dead_code)] // the processor's half (run.rs)
    pub fn encode(&self) -> [u8; UPDATE_LEN] {
        let mut b = [0u8; UPDATE_LEN];
        b[0..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..16].copy_from_slice(&self.intended_us.to_be_bytes());
        b[16..24].copy_from_slice(&self.amount.to_be_bytes());
        b[24..32].copy_from_slice(&self.balance.to_be_bytes());
        b[32] = self.kind.code();
        b[33] = self.status.code();
        b
    }

    /// Decodes exactly 34 bytes with valid type and status bytes.
    pub fn decode(b: &[u8]) -> Result<BalanceUpdate, WireError> {
        let b = exact::<UPDATE_LEN>(b, "balance update")?;
        Ok(BalanceUpdate {
            seq: u64::from_be_bytes(field(b, 0)),
            intended_us: i64::from_be_bytes(field(b, 8)),
            amount: i64::from_be_bytes(field(b, 16)),
            balance: i64::from_be_bytes(field(b, 24)),
            kind: EventType::from_code(b[32])?,
            status: Status::from_code(b[33])?,
        })
    }
}

/// A changelog value: the balance, 8 bytes big-endian.
#[allow(dead_code)] // the processor's half (run.rs)
pub fn encode_balance(b: i64) -> [u8; BALANCE_LEN] {
    b.to_be_bytes()
}

/// Decodes exactly 8 bytes of changelog value.
pub fn decode_balance(b: &[u8]) -> Result<i64, WireError> {
    let b = exact::<BALANCE_LEN>(b, "balance")?;
    Ok(i64::from_be_bytes(*b))
}

/// The key of account `a`: `acct-` and `a` as a 5-digit zero-padded decimal (`acct-00042`).
pub fn account_key(a: u64) -> String {
    format!("acct-{a:05}")
}

/// The account of a key made by [`account_key`] (exactly `acct-` and 5 digits), if it is one.
pub fn parse_account_key(key: &[u8]) -> Option<u64> {
    let digits = key.strip_prefix(b"acct-")?;
    if digits.len() != 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The semantics of one event: a deposit adds `amount`; a withdrawal subtracts it if the
/// balance covers it, else it is rejected and the balance is unchanged. Returns the balance
/// after the event and its status.
pub fn apply(balance: i64, kind: EventType, amount: i64) -> (i64, Status) {
    match kind {
        EventType::Deposit => (balance.wrapping_add(amount), Status::Applied),
        EventType::Withdraw if balance >= amount => (balance.wrapping_sub(amount), Status::Applied),
        EventType::Withdraw => (balance, Status::Rejected),
    }
}

fn exact<'a, const N: usize>(b: &'a [u8], what: &'static str) -> Result<&'a [u8; N], WireError> {
    b.try_into().map_err(|_| WireError::Length {
        what,
        expected: N,
        got: b.len(),
    })
}

fn field<const N: usize>(b: &[u8; N], at: usize) -> [u8; 8] {
    let mut f = [0u8; 8];
    f.copy_from_slice(&b[at..at + 8]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_event_golden_bytes() {
        let e = InputEvent {
            seq: 0x0102_0304_0506_0708,
            intended_us: 1_700_000_000_000_000,
            amount: 1000,
        };
        let want: [u8; 24] = [
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // seq
            0x00, 0x06, 0x0a, 0x24, 0x18, 0x1e, 0x40, 0x00, // 1.7e15 µs
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xe8, // 1000
        ];
        assert_eq!(e.encode(), want);
        assert_eq!(InputEvent::decode(&want), Ok(e));
    }

    #[test]
    fn input_event_negative_time_is_twos_complement() {
        let e = InputEvent {
            seq: 0,
            intended_us: -2,
            amount: 1,
        };
        let b = e.encode();
        assert_eq!(&b[8..16], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(InputEvent::decode(&b), Ok(e));
    }

    #[test]
    fn input_event_needs_exactly_24_bytes() {
        for len in [0, 23, 25, 34] {
            assert_eq!(
                InputEvent::decode(&vec![0; len]),
                Err(WireError::Length {
                    what: "input event",
                    expected: 24,
                    got: len
                })
            );
        }
    }

    #[test]
    fn balance_update_golden_bytes() {
        let u = BalanceUpdate {
            seq: 7,
            intended_us: 0x0000_0001_0000_0002,
            amount: 142,
            balance: -1,
            kind: EventType::Withdraw,
            status: Status::Rejected,
        };
        let want: [u8; 34] = [
            0, 0, 0, 0, 0, 0, 0, 7, // seq
            0, 0, 0, 1, 0, 0, 0, 2, // intended_us
            0, 0, 0, 0, 0, 0, 0, 142, // amount
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // balance -1
            1,    // withdraw
            1,    // rejected
        ];
        assert_eq!(u.encode(), want);
        assert_eq!(BalanceUpdate::decode(&want), Ok(u));

        let d = BalanceUpdate {
            seq: 0,
            intended_us: 0,
            amount: 908,
            balance: 908,
            kind: EventType::Deposit,
            status: Status::Applied,
        };
        let b = d.encode();
        assert_eq!(
            &b[16..34],
            &[0, 0, 0, 0, 0, 0, 3, 140, 0, 0, 0, 0, 0, 0, 3, 140, 0, 0]
        );
        assert_eq!(BalanceUpdate::decode(&b), Ok(d));
    }

    #[test]
    fn balance_update_rejects_bad_bytes() {
        let good = BalanceUpdate {
            seq: 1,
            intended_us: 2,
            amount: 3,
            balance: 4,
            kind: EventType::Deposit,
            status: Status::Applied,
        }
        .encode();
        let mut bad = good;
        bad[32] = 2;
        assert_eq!(BalanceUpdate::decode(&bad), Err(WireError::Type(2)));
        let mut bad = good;
        bad[33] = 0xff;
        assert_eq!(BalanceUpdate::decode(&bad), Err(WireError::Status(0xff)));
        assert!(matches!(
            BalanceUpdate::decode(&good[..33]),
            Err(WireError::Length { got: 33, .. })
        ));
        assert!(matches!(
            BalanceUpdate::decode(&[0; 24]),
            Err(WireError::Length { expected: 34, .. })
        ));
    }

    #[test]
    fn balance_golden_bytes() {
        assert_eq!(encode_balance(0x0102), [0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(encode_balance(i64::MIN), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_balance(&[0xff; 8]), Ok(-1));
        assert_eq!(decode_balance(&[0, 0, 0, 0, 0, 0, 1, 2]), Ok(258));
        assert!(decode_balance(&[0; 7]).is_err());
        assert!(decode_balance(&[0; 9]).is_err());
    }

    #[test]
    fn header_values() {
        assert_eq!(TYPE_HEADER, "__grt__");
        assert_eq!(EventType::Deposit.header_value(), b"deposit");
        assert_eq!(EventType::Withdraw.header_value(), b"withdraw");
        assert_eq!(EventType::from_header(b"deposit"), Some(EventType::Deposit));
        assert_eq!(
            EventType::from_header(b"withdraw"),
            Some(EventType::Withdraw)
        );
        for bad in [&b""[..], b"Deposit", b"deposit ", b"withdrawal", b"0"] {
            assert_eq!(EventType::from_header(bad), None, "{bad:?}");
        }
        assert_eq!(
            (EventType::Deposit.code(), EventType::Withdraw.code()),
            (0, 1)
        );
        assert_eq!((Status::Applied.code(), Status::Rejected.code()), (0, 1));
    }

    #[test]
    fn account_keys() {
        assert_eq!(account_key(42), "acct-00042");
        assert_eq!(account_key(0), "acct-00000");
        assert_eq!(account_key(99_999), "acct-99999");
        assert_eq!(account_key(42).len(), 10);
        assert_eq!(parse_account_key(b"acct-00042"), Some(42));
        assert_eq!(parse_account_key(b"acct-99999"), Some(99_999));
        for bad in [
            &b"acct-0042"[..],
            b"acct-000042",
            b"acct-0004x",
            b"acc-00042",
            b"",
        ] {
            assert_eq!(parse_account_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn semantics() {
        assert_eq!(apply(0, EventType::Deposit, 5), (5, Status::Applied));
        assert_eq!(apply(5, EventType::Withdraw, 5), (0, Status::Applied));
        assert_eq!(apply(5, EventType::Withdraw, 6), (5, Status::Rejected));
        assert_eq!(apply(0, EventType::Withdraw, 1), (0, Status::Rejected));
        assert_eq!(apply(10, EventType::Withdraw, 3), (7, Status::Applied));
    }
}
