//! Test helpers: a small seeded random generator and the round-trip check used by the generated
//! value generators in `gen_arb.rs`.

use std::collections::HashSet;
use std::fmt::Debug;

use bytes::Bytes;
use kafka_wire::codec::Uuid;
use kafka_wire::{Decode, Encode, KString};

/// What a generated case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Response,
    Data,
}

/// One generated message type: its versions and a function that makes a random valid value for a
/// version, round-trips it and returns its bytes.
pub struct Case {
    pub name: &'static str,
    pub api_key: Option<i16>,
    pub kind: Kind,
    pub min: i16,
    pub max: i16,
    pub roundtrip: fn(&mut Rng, i16) -> Result<Vec<u8>, String>,
    /// Round-trips the message's `Default` value.
    pub default_roundtrip: fn(i16) -> Result<Vec<u8>, String>,
}

/// xorshift64*: deterministic from its seed, good enough for test values.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    pub fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    /// Integers biased towards edges (0, -1, min, max) now and then.
    fn int(&mut self, bits: u32) -> i64 {
        match self.below(8) {
            0 => 0,
            1 => -1,
            2 => i64::MIN >> (64 - bits),
            3 => i64::MAX >> (64 - bits),
            _ => ((self.next() as i64) << (64 - bits)) >> (64 - bits),
        }
    }
    pub fn i8(&mut self) -> i8 {
        self.int(8) as i8
    }
    pub fn i16(&mut self) -> i16 {
        self.int(16) as i16
    }
    pub fn i32(&mut self) -> i32 {
        self.int(32) as i32
    }
    pub fn i64(&mut self) -> i64 {
        self.int(64)
    }
    pub fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    #[allow(dead_code)]
    pub fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    /// Finite values only: NaN is not equal to itself, so it cannot round-trip by value.
    pub fn f64(&mut self) -> f64 {
        (self.next() as i32) as f64 / 7.0
    }
    pub fn uuid(&mut self) -> Uuid {
        Uuid::from_u128((u128::from(self.next()) << 64) | u128::from(self.next()))
    }
    pub fn len(&mut self) -> usize {
        match self.below(10) {
            0..=3 => 0,
            4..=7 => 1,
            8 => 2,
            _ => 3,
        }
    }
    pub fn string(&mut self) -> KString {
        const PARTS: &[&str] = &["a", "topic", "-", "é", "日本", "0", "_", "Z", "🦀"];
        let n = self.below(5) as usize;
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(PARTS[self.below(PARTS.len() as u64) as usize]);
        }
        KString::from(s)
    }
    pub fn bytes(&mut self) -> Bytes {
        let n = self.below(6) as usize;
        Bytes::from((0..n).map(|_| self.next() as u8).collect::<Vec<u8>>())
    }
}

/// Keeps the first element of each key (map-keyed arrays must not hold duplicate keys: other
/// implementations store them in maps).
pub fn dedup_by_key<T>(v: &mut Vec<T>, key: impl Fn(&T) -> String) {
    let mut seen = HashSet::new();
    v.retain(|e| seen.insert(key(e)));
}

/// Encodes `value` as `version`, checks `encoded_len`, decodes, checks value equality and that
/// re-encoding gives the same bytes. Returns the bytes.
pub fn roundtrip<T: Encode + Decode + PartialEq + Debug>(
    value: &T,
    version: i16,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    value
        .encode(&mut out, version)
        .map_err(|e| format!("encode v{version}: {e} for {value:?}"))?;
    let len = value
        .encoded_len(version)
        .map_err(|e| format!("encoded_len v{version}: {e}"))?;
    if len != out.len() {
        return Err(format!(
            "v{version}: encoded_len {len} but wrote {} bytes for {value:?}",
            out.len()
        ));
    }
    let mut b = Bytes::from(out.clone());
    let back = T::decode(&mut b, version)
        .map_err(|e| format!("decode v{version}: {e}\nvalue: {value:?}\nbytes: {out:02x?}"))?;
    if !b.is_empty() {
        return Err(format!("v{version}: {} bytes left after decode", b.len()));
    }
    if &back != value {
        return Err(format!(
            "v{version}: value changed\n before: {value:?}\n after:  {back:?}"
        ));
    }
    let mut again = Vec::new();
    back.encode(&mut again, version)
        .map_err(|e| format!("re-encode v{version}: {e}"))?;
    if again != out {
        return Err(format!("v{version}: re-encoding differs"));
    }
    Ok(out)
}
