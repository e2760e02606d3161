//! Pieces of a Rust worker that do not depend on the client under test: the payload pool, the
//! fixed-rate schedule, latency histograms and progress lines.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;

use crate::spec::{Percentiles, PROGRESS_PREFIX, STAMP_LEN};

/// Distinct payloads in the pool (OpenMessaging Benchmark sends from a pool of random payloads
/// so compression sees realistic, not constant, data).
const POOL: usize = 1024;

/// Random payloads of one size, from a fixed seed (xorshift64*), so every run and every client
/// in Rust sends the same bytes.
pub struct PayloadPool {
    payloads: Vec<Bytes>,
}

impl PayloadPool {
    pub fn new(size: usize, seed: u64) -> PayloadPool {
        let mut state = seed | 1;
        let mut next = || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let count = POOL.min(((64 << 20) / size.max(1)).max(1));
        let payloads = (0..count)
            .map(|_| {
                let mut b = BytesMut::with_capacity(size);
                while b.len() + 8 <= size {
                    b.put_u64_le(next());
                }
                let tail = next().to_le_bytes();
                let rest = size - b.len();
                b.put_slice(&tail[..rest]);
                b.freeze()
            })
            .collect();
        PayloadPool { payloads }
    }

    /// The payload for record `i`.
    pub fn get(&self, i: u64) -> Bytes {
        self.payloads[(i % self.payloads.len() as u64) as usize].clone()
    }

    /// The payload for record `i` with the first [`STAMP_LEN`] bytes replaced by `stamp_us`.
    pub fn stamped(&self, i: u64, stamp_us: u64) -> Bytes {
        let src = &self.payloads[(i % self.payloads.len() as u64) as usize];
        let mut b = BytesMut::with_capacity(src.len());
        b.put_u64(stamp_us);
        b.put_slice(&src[STAMP_LEN..]);
        b.freeze()
    }
}

/// Reads the stamp written by [`PayloadPool::stamped`].
pub fn read_stamp(value: &[u8]) -> Option<u64> {
    let head: [u8; STAMP_LEN] = value.get(..STAMP_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

/// The key of record `i` when keys are on.
pub fn key_for(i: u64) -> Bytes {
    Bytes::from(format!("k{}", i % 10_000))
}

/// A fixed-rate schedule: record `i` is due at `start + i / rate`. With rate 0 every record is
/// due immediately.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    rate: u64,
}

impl Schedule {
    pub fn new(start: Instant, rate: u64) -> Schedule {
        Schedule { start, rate }
    }

    /// When record `i` should be sent, or `None` when there is no rate limit.
    pub fn due(&self, i: u64) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let nanos = (i as u128 * 1_000_000_000u128) / self.rate as u128;
        Some(self.start + Duration::from_nanos(nanos.min(u64::MAX as u128) as u64))
    }
}

/// Microsecond latency histogram (1 µs to 1 hour, 3 significant digits).
pub struct Latency {
    hist: Histogram<u64>,
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            // The bounds are constants that hdrhistogram accepts.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros().min(3_600_000_000) as u64).max(1);
        self.hist.saturating_record(us);
    }

    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.hist.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Percentiles {
            p50: ms(self.hist.value_at_quantile(0.50)),
            p90: ms(self.hist.value_at_quantile(0.90)),
            p99: ms(self.hist.value_at_quantile(0.99)),
            p999: ms(self.hist.value_at_quantile(0.999)),
            max: ms(self.hist.max()),
        })
    }
}

/// Writes `kbench-progress <n>` to stderr at most every 200 ms.
pub struct Progress {
    last: Instant,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            last: Instant::now(),
        }
    }

    pub fn tick(&mut self, done: u64) {
        let now = Instant::now();
        if now.duration_since(self.last) >= Duration::from_millis(200) {
            self.last = now;
            Self::emit(done);
        }
    }

    pub fn emit(done: u64) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{PROGRESS_PREFIX}{done}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_sizes_and_stamps() {
        let pool = PayloadPool::new(100, 7);
        assert_eq!(pool.get(0).len(), 100);
        assert_eq!(pool.get(12345).len(), 100);
        assert_ne!(pool.get(0), pool.get(1));
        let s = pool.stamped(3, 0xdead_beef);
        assert_eq!(s.len(), 100);
        assert_eq!(read_stamp(&s), Some(0xdead_beef));
        assert_eq!(&s[8..], &pool.get(3)[8..]);
        assert_eq!(read_stamp(&[1, 2, 3]), None);
        // Sizes that are not a multiple of 8 work too.
        assert_eq!(PayloadPool::new(13, 1).get(5).len(), 13);
    }

    #[test]
    fn schedule_spaces_records_evenly() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000);
        assert_eq!(s.due(0), Some(t0));
        assert_eq!(s.due(1500), Some(t0 + Duration::from_millis(1500)));
        assert_eq!(Schedule::new(t0, 0).due(10), None);
    }

    #[test]
    fn latency_percentiles() {
        let mut l = Latency::new();
        assert!(l.percentiles().is_none());
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let p = l.percentiles().unwrap();
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.5, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(l.len(), 1000);
    }
}
