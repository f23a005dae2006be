//! Officials' bearer tokens: kept as SHA-256 digests, compared in constant time over every
//! configured token, identified in the audit log by a digest prefix (never the token).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted: 128 bits as hex.
pub const MIN_TOKEN_HEX: usize = 32;

/// A new token: 256 random bits as 64 hex characters.
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The tokens of one file. `Debug` shows only the count.
pub struct OfficialTokens(Vec<[u8; 32]>);

impl std::fmt::Debug for OfficialTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OfficialTokens({} configured)", self.0.len())
    }
}

impl OfficialTokens {
    /// Reads one token per line (blank lines and `#` comments skipped). The file must not be
    /// accessible by group or others, and every token must carry at least 128 bits.
    pub fn load(path: &Path) -> Result<OfficialTokens> {
        super::check_private(path)?;
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.len() < MIN_TOKEN_HEX {
                bail!(
                    "{} line {}: token too short ({} characters); expected at least {MIN_TOKEN_HEX} (128 bits as hex)",
                    path.display(),
                    i + 1,
                    t.len()
                );
            }
            tokens.push(Sha256::digest(t.as_bytes()).into());
        }
        if tokens.is_empty() {
            bail!("{} holds no token; expected one per line", path.display());
        }
        Ok(OfficialTokens(tokens))
    }

    /// The id of the presented token (a digest prefix for the audit log), if it is configured.
    pub fn check(&self, presented: &[u8]) -> Option<TokenId> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut ok = subtle::Choice::from(0u8);
        for t in &self.0 {
            ok |= t.ct_eq(&digest);
        }
        bool::from(ok).then(|| TokenId(hex::encode(&Sha256::digest(digest)[..8])))
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
        assert!(format!("{:#}", OfficialTokens::load(&p).unwrap_err()).contains("too short"));
        let good = new_token();
        std::fs::write(&p, format!("# c\n{good}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(format!("{:#}", OfficialTokens::load(&p).unwrap_err()).contains("group or others"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = OfficialTokens::load(&p).unwrap();
        let id = t.check(good.as_bytes()).expect("configured token accepted");
        assert_eq!(id.0.len(), 16);
        assert!(!good.contains(&id.0));
        assert!(t.check(b"0123456789abcdef0123456789abcdef").is_none());
    }
}
