//! libFuzzer entry of the `sops` target; the harness is
//! `tests/fuzz/harness/sops.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/sops.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::run(data));
