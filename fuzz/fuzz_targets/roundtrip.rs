//! Fuzz target `roundtrip`: see `targets_common::roundtrip` for the input layout and the invariants.
#![no_main]
#![forbid(unsafe_code)]

#[path = "../targets_common.rs"]
mod targets_common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets_common::roundtrip(data));
