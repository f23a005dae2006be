//! Officials' bearer tokens: kept as SHA-256 digests, compared in constant time over every
//! configured token, identified in the audit log by a digest prefix (never the token).

use std::path::Path;

use anyhow::{bail, Result};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::api::auth::Tokens;

/// A new token: 256 random bits as 64 hex characters.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The officials' tokens: the device API's token rules (a private file, at least 128 bits per
/// token, digests compared in constant time). `Debug` shows only the count.
#[derive(Debug)]
pub struct OfficialTokens(Tokens);

impl OfficialTokens {
    /// Reads one token per line (blank lines and `#` comments skipped); at least one.
    pub fn load(path: &Path) -> Result<OfficialTokens> {
        let tokens = Tokens::load(super::TOKENS_FILE, path)?;
        if tokens.is_empty() {
            bail!("{} holds no token; expected one per line", path.display());
        }
        Ok(OfficialTokens(tokens))
    }

    /// The id of the presented token (a digest prefix for the audit log), if it is configured.
    pub fn check(&self, presented: &[u8]) -> Option<TokenId> {
        self.0.accepts(presented).then(|| {
            let digest = Sha256::digest(presented);
            TokenId(hex::encode(&Sha256::digest(digest)[..8]))
        })
    }
}

/// How the audit log names an official's token: 8 bytes of SHA-256 of its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenId(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_short_tokens_and_readable_files_and_checks_tokens() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        std::fs::write(&p, "short\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(format!("{:#}", OfficialTokens::load(&p).unwrap_err()).contains("at least 32"));
        let good = new_token();
        std::fs::write(&p, format!("# c\n{good}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(format!("{:#}", OfficialTokens::load(&p).unwrap_err()).contains("group or others"));
        std::fs::write(&p, "# only a comment\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(format!("{:#}", OfficialTokens::load(&p).unwrap_err()).contains("no token"));
        std::fs::write(&p, format!("# c\n{good}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = OfficialTokens::load(&p).unwrap();
        let id = t.check(good.as_bytes()).expect("configured token accepted");
        assert_eq!(id.0.len(), 16);
        assert!(!good.contains(&id.0));
        assert!(t.check(b"0123456789abcdef0123456789abcdef").is_none());
    }
}
