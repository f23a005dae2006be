//! What the daemon tests share: the path of the repository's `testdata/` (see its README for
//! where each file came from).

use std::path::PathBuf;

/// `testdata/<rel>` at the repository root.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}
