//! libFuzzer entry of the `load` target; the harness is
//! `tests/fuzz/harness/load.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/load.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::run(data));
