//! The keys around an export: [`TrustedKey`] (verifies, by key id and version) and
//! [`ExportSigner`] (signs). Neither prints key material in `Debug`.

use std::fmt;

use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

use super::{ExportSignatureInfo, ECDSA_P256_SHA256_OID};

/// A public key trusted to sign exports, by `(verification_key_id, verification_key_version)`.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub key_id: String,
    pub key_version: String,
    pub key: VerifyingKey,
}

impl TrustedKey {
    /// A `key_id` or `key_version` of `"*"` trusts the key whatever id or version a file names
    /// (for operators who hold one authority's key without its id); the signature must still
    /// verify under it.
    pub const ANY: &'static str = "*";

    pub(super) fn applies_to(&self, key_id: &str, key_version: &str) -> bool {
        (self.key_id == Self::ANY || self.key_id == key_id)
            && (self.key_version == Self::ANY || self.key_version == key_version)
    }

    pub fn new(
        key_id: impl Into<String>,
        key_version: impl Into<String>,
        key: VerifyingKey,
    ) -> Self {
        TrustedKey {
            key_id: key_id.into(),
            key_version: key_version.into(),
            key,
        }
    }

    /// From a PEM `-----BEGIN PUBLIC KEY-----` (SubjectPublicKeyInfo) block for a P-256 key.
    pub fn from_pem(
        key_id: impl Into<String>,
        key_version: impl Into<String>,
        pem: &str,
    ) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(KeyError::PublicKeyPem)?;
        Ok(TrustedKey::new(key_id, key_version, key))
    }

    /// The key as a PEM SubjectPublicKeyInfo block.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(KeyError::PublicKeyEncode)
    }
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// The key a server signs exports with. `Debug` prints only the id and version.
#[derive(Clone)]
pub struct ExportSigner {
    pub key_id: String,
    pub key_version: String,
    pub key: SigningKey,
}

impl ExportSigner {
    pub fn new(key_id: impl Into<String>, key_version: impl Into<String>, key: SigningKey) -> Self {
        ExportSigner {
            key_id: key_id.into(),
            key_version: key_version.into(),
            key,
        }
    }

    /// From a PEM `-----BEGIN PRIVATE KEY-----` (PKCS#8) block for a P-256 key.
    pub fn from_pkcs8_pem(
        key_id: impl Into<String>,
        key_version: impl Into<String>,
        pem: &str,
    ) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem.trim()).map_err(KeyError::PrivateKeyPem)?;
        Ok(ExportSigner::new(key_id, key_version, key))
    }

    /// The private key as PKCS#8 PEM (zeroized on drop). Keep it out of logs.
    pub fn to_pkcs8_pem(&self) -> Result<zeroize::Zeroizing<String>, KeyError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(KeyError::PrivateKeyEncode)
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        *self.key.verifying_key()
    }

    /// The public key as a PEM SubjectPublicKeyInfo block, for verifiers.
    pub fn public_key_pem(&self) -> Result<String, KeyError> {
        self.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(KeyError::PublicKeyEncode)
    }

    /// The matching [`TrustedKey`] (same id and version).
    pub fn trusted_key(&self) -> TrustedKey {
        TrustedKey::new(
            self.key_id.clone(),
            self.key_version.clone(),
            self.verifying_key(),
        )
    }

    /// The `SignatureInfo` that [`write_export`] lists for this signer.
    pub fn signature_info(&self) -> ExportSignatureInfo {
        ExportSignatureInfo {
            key_id: self.key_id.clone(),
            key_version: self.key_version.clone(),
            algorithm: ECDSA_P256_SHA256_OID.to_owned(),
        }
    }
}

impl fmt::Debug for ExportSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportSigner")
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A key that could not be read or written. Messages never include key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("public key is not a PEM SubjectPublicKeyInfo of a P-256 key")]
    PublicKeyPem(#[source] p256::pkcs8::spki::Error),
    #[error("private key is not a PEM PKCS#8 P-256 key")]
    PrivateKeyPem(#[source] p256::pkcs8::Error),
    #[error("encoding the private key as PKCS#8 PEM failed")]
    PrivateKeyEncode(#[source] p256::pkcs8::Error),
    #[error("encoding the public key as PEM failed")]
    PublicKeyEncode(#[source] p256::pkcs8::spki::Error),
}
