//! Replays every file of the fuzz corpora (fuzz/corpus/<target>/) through the property its
//! target checks, so that `cargo test` keeps every input fuzzing ever found interesting.
//! Running the fuzzers themselves: see fuzz/README.md.

mod support;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "the {target} corpus is empty");
}

#[test]
fn the_framer_corpus_holds() {
    replay("framer", support::fuzz::framer);
}

#[test]
fn the_relay_corpus_holds() {
    replay("relay", support::fuzz::relay);
}

#[test]
fn the_rewrite_corpus_holds() {
    replay("rewrite", support::fuzz::rewrite);
}
