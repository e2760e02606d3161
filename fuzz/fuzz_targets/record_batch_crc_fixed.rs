//! Fuzz target `record_batch_crc_fixed`: see `targets_common::record_batch_crc_fixed` for the input layout and the invariants.
#![no_main]
#![forbid(unsafe_code)]

#[path = "../targets_common.rs"]
mod targets_common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets_common::record_batch_crc_fixed(data));
