//! Shared by the bench binaries: a counting allocator, per-thread CPU and RSS readings,
//! synthetic streams, a bench upstream, the proxy (bare and with the layer), a stream checker.
#![allow(dead_code)]

pub mod alloc;
pub mod net;
pub mod stats;
pub mod stream;
pub mod sys;

/// Quick mode (`MIDSTREAM_BENCH_QUICK=1`): fewer rounds, to check that the benches run.
pub fn quick() -> bool {
    std::env::var_os("MIDSTREAM_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// Where the benches write their result tables: `target/midstream-bench/`.
pub fn out_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/midstream-bench");
    std::fs::create_dir_all(&dir).expect("create target/midstream-bench");
    dir
}

/// Prints `text` and writes it to `target/midstream-bench/<name>.md`.
pub fn report(name: &str, text: &str) {
    println!("{text}");
    let path = out_dir().join(format!("{name}.md"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("(written to {})", path.display());
}

/// Whether to skip the measured section `name`: not run by `cargo bench`, only listing, or
/// filtered out (`cargo bench -- relay` style filters).
pub fn skipped(name: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return true;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and criterion then runs
    // each benchmark once as a smoke test: the measured sections stay out of it too.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("{name}: not run by `cargo bench`, measurements skipped");
        return true;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str()))
}
