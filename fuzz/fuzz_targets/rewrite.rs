//! Fuzz target: see `support::fuzz::rewrite` (tests/support/fuzz.rs) for the property it checks.
#![no_main]

#[path = "../../tests/support/mod.rs"]
mod support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| support::fuzz::rewrite(data));
