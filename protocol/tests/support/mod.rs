//! What the protocol tests share: the path of the repository's `testdata/` (see its README for
//! where each file came from).

use std::path::PathBuf;

/// `testdata/<rel>` at the repository root.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

/// The bytes of `testdata/<rel>`, panicking with the path when it is missing.
#[allow(dead_code)] // not every test binary reads bytes
pub fn read_testdata(rel: &str) -> Vec<u8> {
    let p = testdata(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}
