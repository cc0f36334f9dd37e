//! libFuzzer entry of the `expr` target; the harness is
//! `tests/fuzz/harness/expr.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/expr.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::run(data));
