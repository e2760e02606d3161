//! Injected randomness.
//!
//! Every sans-IO module that needs randomness (backoff jitter, partition choice, SCRAM nonces)
//! takes a `&mut dyn RandomSource` (or a generic `R: RandomSource`), so tests can replay a run from
//! a seed. [`SeededRng`] is the deterministic source for tests and simulations; [`OsRandom`] reads
//! the operating system's cryptographically secure generator and is what the driver uses.

use std::fmt;

/// The randomness could not be obtained from the operating system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(pub String);

/// A source of random bytes.
pub trait RandomSource {
    /// Fills `dest` with random bytes.
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), RandomError>;

    /// A random `u64`. When the source fails, returns a fixed value instead (callers use this
    /// only where randomness improves spreading, like jitter, never for secrets).
    fn next_u64(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        match self.try_fill_bytes(&mut buf) {
            Ok(()) => u64::from_le_bytes(buf),
            Err(_) => 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// A uniformly distributed value in `0..n` (`0` when `n == 0`). Uses rejection sampling, so
    /// there is no modulo bias.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Largest multiple of n that fits in u64; values at or above it are rejected.
        let zone = u64::MAX - (u64::MAX % n);
        // A bounded loop: the probability of 64 rejections in a row is below 2^-64.
        for _ in 0..64 {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
        self.next_u64() % n
    }

    /// A uniformly distributed `f64` in `[0, 1)`.
    fn unit_f64(&mut self) -> f64 {
        // 53 random bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl<R: RandomSource + ?Sized> RandomSource for &mut R {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), RandomError> {
        (**self).try_fill_bytes(dest)
    }
    fn next_u64(&mut self) -> u64 {
        (**self).next_u64()
    }
}

/// A deterministic generator (xoshiro256** seeded through SplitMix64). Not for secrets.
#[derive(Clone)]
pub struct SeededRng {
    s: [u64; 4],
}

impl fmt::Debug for SeededRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeededRng").finish_non_exhaustive()
    }
}

impl SeededRng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> SeededRng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        SeededRng {
            s: [next(), next(), next(), next()],
        }
    }

    fn step(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

impl RandomSource for SeededRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), RandomError> {
        for chunk in dest.chunks_mut(8) {
            let v = self.step().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
    fn next_u64(&mut self) -> u64 {
        self.step()
    }
}

/// The operating system's cryptographically secure random generator.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(dest).map_err(|e| RandomError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_deterministic_and_seed_dependent() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = SeededRng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = SeededRng::new(7);
        let b: Vec<u64> = (0..8).map(|_| r.next_u64()).collect();
        assert_eq!(a, b);
        let mut r = SeededRng::new(8);
        assert_ne!(a[0], r.next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SeededRng::new(1);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = r.below(7);
            assert!(v < 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn unit_f64_in_range() {
        let mut r = SeededRng::new(2);
        for _ in 0..1000 {
            let v = r.unit_f64();
            assert!((0.0..1.0).contains(&v));
        }
    }

    #[test]
    fn os_random_fills() {
        let mut buf = [0u8; 32];
        OsRandom.try_fill_bytes(&mut buf).unwrap();
        // 32 zero bytes from a working CSPRNG has probability 2^-256.
        assert_ne!(buf, [0u8; 32]);
    }
}
