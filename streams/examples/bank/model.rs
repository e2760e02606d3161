//! The deterministic input stream and the model of its results (BANK.md "Input stream"): what
//! every `seq` must produce and every account's final balance, a pure function of
//! (seed, N, accounts). Also where a key lives (Kafka's default partitioner).

use kafka_client::partitioner::murmur2;

use crate::wire::{apply, BalanceUpdate, EventType, Status};

/// SplitMix64's increment (the golden gamma).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 exactly as BANK.md: all arithmetic on u64, wrapping.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }
}

/// The output function of SplitMix64 for one state.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One input event of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub account: u64,
    pub kind: EventType,
    pub amount: i64,
}

/// Event `i` from two draws `r1`, `r2`.
fn event_from(r1: u64, r2: u64, accounts: u64) -> Event {
    Event {
        account: r1 % accounts,
        kind: if r2 % 100 < 40 {
            EventType::Withdraw
        } else {
            EventType::Deposit
        },
        amount: 1 + ((r2 >> 32) % 1000) as i64,
    }
}

/// Event `i` of the stream for `seed` over `accounts` accounts. SplitMix64's state after `k`
/// draws is `seed + k × gamma`, and event `i` takes draws `2i + 1` and `2i + 2`, so any event
/// is found without generating the ones before it.
pub fn event(seed: u64, accounts: u64, i: u64) -> Event {
    let state = |k: u64| seed.wrapping_add(k.wrapping_mul(GAMMA));
    let r1 = mix(state(2 * i + 1));
    let r2 = mix(state(2 * i + 2));
    event_from(r1, r2, accounts)
}

/// The stream's events in order, from one generator.
pub fn events(seed: u64, accounts: u64) -> impl Iterator<Item = Event> {
    let mut rng = SplitMix64::new(seed);
    std::iter::from_fn(move || {
        let r1 = rng.next_u64();
        let r2 = rng.next_u64();
        Some(event_from(r1, r2, accounts))
    })
}

/// What the processor must produce for one `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub account: u32,
    pub kind: EventType,
    pub status: Status,
    pub amount: i64,
    /// The account's balance after the event.
    pub balance: i64,
}

impl Expected {
    /// The balance update the processor must write, with the input's `intended_us` (which the
    /// model does not know: it depends on when the driver ran).
    pub fn update(&self, seq: u64, intended_us: i64) -> BalanceUpdate {
        BalanceUpdate {
            seq,
            intended_us,
            amount: self.amount,
            balance: self.balance,
            kind: self.kind,
            status: self.status,
        }
    }
}

/// The expected result of every `seq` and the final balances for (seed, N, accounts).
#[derive(Debug, Clone)]
pub struct Model {
    expected: Vec<Expected>,
    finals: Vec<i64>,
}

impl Model {
    /// Runs the semantics over the `events` first events. `accounts` must be at most
    /// 100,000 (the keys have 5 digits).
    pub fn new(seed: u64, events: u64, accounts: u64) -> Model {
        assert!(
            (1..=100_000).contains(&accounts),
            "accounts must be in 1..=100000"
        );
        let mut finals = vec![0i64; accounts as usize];
        let expected = self::events(seed, accounts)
            .take(events as usize)
            .map(|e| {
                let b = &mut finals[e.account as usize];
                let (after, status) = apply(*b, e.kind, e.amount);
                *b = after;
                Expected {
                    account: e.account as u32,
                    kind: e.kind,
                    status,
                    amount: e.amount,
                    balance: after,
                }
            })
            .collect();
        Model { expected, finals }
    }

    /// N, the number of events.
    pub fn events(&self) -> u64 {
        self.expected.len() as u64
    }

    /// The number of accounts.
    pub fn accounts(&self) -> u64 {
        self.finals.len() as u64
    }

    /// The expected result of `seq`; `None` if `seq` is not below N.
    pub fn expected(&self, seq: u64) -> Option<&Expected> {
        usize::try_from(seq).ok().and_then(|i| self.expected.get(i))
    }

    /// Every account's balance after all N events (0 if it had none), indexed by account.
    pub fn finals(&self) -> &[i64] {
        &self.finals
    }
}

/// The partition Kafka's default partitioner gives `key` among `partitions`:
/// `(murmur2(key) & 0x7fffffff) % partitions`.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::account_key;

    #[test]
    fn splitmix64_reference_values() {
        // The reference implementation (Vigna's splitmix64.c) from seed 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
        // Seed 42, computed from the algorithm in BANK.md with Python's unbounded integers
        // masked to 64 bits.
        let mut r = SplitMix64::new(42);
        assert_eq!(r.next_u64(), 0xbdd7_3226_2feb_6e95);
        assert_eq!(r.next_u64(), 0x28ef_e333_b266_f103);
        assert_eq!(r.next_u64(), 0x4752_6757_130f_9f52);
        assert_eq!(r.next_u64(), 0x581c_e1ff_0e4a_e394);
    }

    #[test]
    fn first_events_of_seed_42() {
        // Event 0 by hand: r1 = 0xbdd732262feb6e95 = 13679457532755275413, % 10000 = 5413;
        // r2 = 0x28efe333b266f103, % 100 = 91 (not < 40: deposit), r2 >> 32 = 686809907,
        // % 1000 = 907, + 1 = 908. The others were computed the same way in Python.
        let want = [
            (5413, EventType::Deposit, 908),
            (3858, EventType::Deposit, 872),
            (3250, EventType::Deposit, 195),
            (4925, EventType::Withdraw, 727),
            (2005, EventType::Deposit, 249),
            (4207, EventType::Deposit, 431),
            (1398, EventType::Deposit, 116),
            (4956, EventType::Withdraw, 142),
        ];
        let got: Vec<Event> = events(42, 10_000).take(want.len()).collect();
        for (i, (e, (account, kind, amount))) in got.iter().zip(want).enumerate() {
            assert_eq!(
                *e,
                Event {
                    account,
                    kind,
                    amount
                },
                "event {i}"
            );
            assert_eq!(event(42, 10_000, i as u64), *e, "random access, event {i}");
        }
    }

    #[test]
    fn random_access_agrees_with_the_generator() {
        for (seed, accounts) in [(0, 1), (42, 10_000), (u64::MAX, 7), (12345, 100_000)] {
            for (i, e) in events(seed, accounts).take(2000).enumerate() {
                assert_eq!(event(seed, accounts, i as u64), e, "seed {seed} event {i}");
            }
        }
    }

    #[test]
    fn model_of_seed_42() {
        let m = Model::new(42, 8, 10_000);
        let e = |seq| *m.expected(seq).unwrap();
        assert_eq!(m.events(), 8);
        assert_eq!(
            e(0),
            Expected {
                account: 5413,
                kind: EventType::Deposit,
                status: Status::Applied,
                amount: 908,
                balance: 908
            }
        );
        // A withdrawal from an empty account is rejected and leaves it at 0.
        assert_eq!(
            e(3),
            Expected {
                account: 4925,
                kind: EventType::Withdraw,
                status: Status::Rejected,
                amount: 727,
                balance: 0
            }
        );
        assert_eq!(m.expected(8), None);
        assert_eq!(m.finals()[5413], 908);
        assert_eq!(m.finals()[4925], 0);
        assert_eq!(m.finals()[0], 0);
        assert_eq!(
            m.finals().iter().sum::<i64>(),
            908 + 872 + 195 + 249 + 431 + 116
        );
    }

    #[test]
    fn model_totals_match_an_independent_computation() {
        // Python, from BANK.md's pseudo-code: the sum of final balances, the number of
        // rejected withdrawals and the first three accounts' balances.
        let m = Model::new(42, 20_000, 10_000);
        let rejected = (0..20_000)
            .filter(|&s| m.expected(s).unwrap().status == Status::Rejected)
            .count();
        assert_eq!(m.finals().iter().sum::<i64>(), 5_322_066);
        assert_eq!(rejected, 6072);
        assert_eq!(&m.finals()[..3], &[1819, 0, 890]);

        let m = Model::new(42, 1000, 7);
        let rejected = (0..1000)
            .filter(|&s| m.expected(s).unwrap().status == Status::Rejected)
            .count();
        assert_eq!(m.finals().iter().sum::<i64>(), 128_945);
        assert_eq!(rejected, 5);
        assert_eq!(&m.finals()[..3], &[20_605, 19_452, 21_104]);
    }

    #[test]
    fn model_is_consistent_and_never_negative() {
        let m = Model::new(7, 50_000, 100);
        let mut balances = vec![0i64; 100];
        for seq in 0..m.events() {
            let e = m.expected(seq).unwrap();
            let b = &mut balances[e.account as usize];
            assert!((1..=1000).contains(&e.amount));
            assert!(e.balance >= 0);
            let (after, status) = apply(*b, e.kind, e.amount);
            assert_eq!((after, status), (e.balance, e.status), "seq {seq}");
            *b = after;
        }
        assert_eq!(balances, m.finals());
    }

    #[test]
    fn partitions_of_keys() {
        // murmur2 values from an independent Python port of Java's Utils.murmur2 (which gives
        // -973932308 for "21", as Kafka's own UtilsTest).
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(account_key(0).as_bytes()), -373_508_536);
        assert_eq!(murmur2(account_key(42).as_bytes()), 2_106_729_929);
        assert_eq!(partition_of(account_key(0).as_bytes(), 6), 4);
        assert_eq!(partition_of(account_key(42).as_bytes(), 6), 5);
        assert_eq!(partition_of(account_key(9999).as_bytes(), 6), 3);
        for a in 0..1000 {
            let key = account_key(a);
            assert_eq!(
                Some(partition_of(key.as_bytes(), 12)),
                kafka_client::partitioner::partition_for_key(key.as_bytes(), 12)
            );
        }
    }
}
