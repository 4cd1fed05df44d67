//! Where every benchmark program writes its JSON report: the directory in
//! `COLLOQUY_BENCH_OUT`, else `bench-results/` at the workspace root. Each
//! crate's bench includes this file (`#[path]`), since benches of different
//! crates share no library.

use std::path::PathBuf;

/// Write `report` as pretty JSON to `file` in the results directory and say
/// where.
pub fn write(file: &str, report: &impl serde::Serialize) {
    let dir = std::env::var_os("COLLOQUY_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench-results"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let path = dir.join(file);
    let json = serde_json::to_string_pretty(report).expect("reports serialise");
    std::fs::write(&path, json + "\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("wrote {}", path.display());
}
