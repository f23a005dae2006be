//! The master key's file: where it is (`$CREDENTIALS_DIRECTORY` or the data directory), reading
//! it with its checks (mode, size; errors name the file, never the contents), and creating it
//! (0600, fsynced with its directory). What is derived from it is in [`super::keys`].

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::StoreError;

/// File name of the master key, in the credentials directory or the data directory.
pub const KEY_FILE: &str = "bluezoned.key";
/// Length of the master key and of day keys.
pub const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The 32-byte master key. Zeroized on drop; `Debug` prints `<redacted>`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; KEY_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Self {
        MasterKey(b)
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn random() -> Self {
        let mut k = MasterKey([0; KEY_LEN]);
        OsRng.fill_bytes(&mut k.0);
        k
    }

    /// Reads the key at `key`. A key in `$CREDENTIALS_DIRECTORY` is accepted whatever its mode
    /// bits: systemd grants it to the service user by an ACL (so `stat` shows 0440) and owns the
    /// protection of that directory. A key file in the data directory must be 0600 or stricter.
    pub fn read_location(key: &KeyLocation) -> Result<Self, StoreError> {
        Self::read(&key.path, key.source == KeySource::File)
    }

    /// Reads a key file: refuses it if group or others have any access to it, or if it does not
    /// hold exactly 32 bytes. Errors name the file, never the contents.
    pub fn read_file(path: &Path) -> Result<Self, StoreError> {
        Self::read(path, true)
    }

    fn read(path: &Path, check_mode: bool) -> Result<Self, StoreError> {
        let io = |source| StoreError::KeyIo {
            path: path.to_path_buf(),
            error: source,
        };
        let mut file = fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if check_mode && mode & 0o077 != 0 {
            return Err(StoreError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(StoreError::KeySize {
                path: path.to_path_buf(),
                found: meta.len(),
            });
        }
        // Read one byte more than needed so a file that grew after `metadata` is caught too.
        let mut buf = Zeroizing::new([0u8; KEY_LEN + 1]);
        let mut n = 0;
        loop {
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    if n == buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        if n != KEY_LEN {
            return Err(StoreError::KeySize {
                path: path.to_path_buf(),
                found: n as u64,
            });
        }
        let mut k = MasterKey([0; KEY_LEN]);
        k.0.copy_from_slice(&buf[..KEY_LEN]);
        Ok(k)
    }

    /// Creates `path` with mode 0600 holding a fresh random key (fails if it exists), fsyncs the
    /// file and its directory, and returns the key.
    pub fn create_file(path: &Path) -> Result<Self, StoreError> {
        let io = |context, source| StoreError::Io {
            context,
            path: path.to_path_buf(),
            error: source,
        };
        let key = MasterKey::random();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("creating master key file", e))?;
        // The umask can only remove bits, but a pre-set default ACL could add some: enforce.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| io("setting mode 0600 on master key file", e))?;
        file.write_all(&key.0)
            .and_then(|()| file.sync_all())
            .map_err(|e| io("writing master key file", e))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(key)
    }

    /// HMAC-SHA256(master, "bluezoned/v1/" ‖ label): the keys of [`super::keys::DerivedKeys`].
    pub(super) fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        // `new_from_slice` accepts any key length for HMAC; 32 bytes cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(b"bluezoned/v1/");
        mac.update(label.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }
}

/// fsyncs a directory so that a file just created in it survives a power failure.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            context: "syncing directory",
            path: dir.to_path_buf(),
            error: source,
        })
}

/// Where the master key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `$CREDENTIALS_DIRECTORY/bluezoned.key` (systemd credentials).
    Credential,
    /// `<data dir>/bluezoned.key`, created by `bluezoned init`.
    File,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Credential => "credential",
            KeySource::File => "file",
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The master key's file and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLocation {
    pub path: PathBuf,
    pub source: KeySource,
}

impl KeyLocation {
    /// `<credentials_dir>/bluezoned.key` when a credentials directory is given (non-empty), else
    /// `<data_dir>/bluezoned.key`.
    pub fn resolve(data_dir: &Path, credentials_dir: Option<&Path>) -> Self {
        match credentials_dir {
            Some(c) if !c.as_os_str().is_empty() => KeyLocation {
                path: c.join(KEY_FILE),
                source: KeySource::Credential,
            },
            _ => KeyLocation {
                path: data_dir.join(KEY_FILE),
                source: KeySource::File,
            },
        }
    }

    /// [`KeyLocation::resolve`] with `$CREDENTIALS_DIRECTORY` (set by systemd when the unit has
    /// `LoadCredential=`/`SetCredential=`).
    pub fn from_env(data_dir: &Path) -> Self {
        let cred = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Self::resolve(data_dir, cred.as_deref())
    }

    pub(crate) fn describe(&self) -> String {
        format!("{} {}", self.source, self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_location() {
        let l = KeyLocation::resolve(Path::new("/d"), Some(Path::new("/run/creds")));
        assert_eq!(l.path, Path::new("/run/creds/bluezoned.key"));
        assert_eq!(l.source, KeySource::Credential);
        let l = KeyLocation::resolve(Path::new("/d"), Some(Path::new("")));
        assert_eq!(l.path, Path::new("/d/bluezoned.key"));
        assert_eq!(l.source, KeySource::File);
    }

    #[test]
    fn key_file_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(KEY_FILE);
        let k = MasterKey::create_file(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(MasterKey::read_file(&p).unwrap().0, k.0);
        assert!(
            MasterKey::create_file(&p).is_err(),
            "never overwrites a key"
        );

        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let e = MasterKey::read_file(&p).unwrap_err();
        assert!(
            matches!(e, StoreError::KeyPermissions { mode: 0o640, .. }),
            "{e}"
        );
        assert!(e.to_string().contains(&p.display().to_string()));

        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, [0x5a; 31]).unwrap();
        let e = MasterKey::read_file(&p).unwrap_err();
        assert!(matches!(e, StoreError::KeySize { found: 31, .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&p.display().to_string()) && !msg.to_lowercase().contains("5a5a"));
    }
}
