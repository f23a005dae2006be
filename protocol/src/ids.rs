//! Newtypes for every key and identifier that crosses a module line.
//!
//! Secret keys (`DailyKey`, `Tek`) zeroize on drop and print as `<redacted>` in `Debug`; public
//! identifiers (`RollingId`, `Rpi`, `Aem`) print as hex.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Error for a hex string of the wrong length or with a non-hex character.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("expected {expected} hex characters, got {got}")]
    Length { expected: usize, got: usize },
    #[error("invalid hex character at position {position}")]
    Character { position: usize },
}

pub(crate) fn decode_hex<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let s = s.trim();
    if s.len() != 2 * N {
        return Err(HexError::Length {
            expected: 2 * N,
            got: s.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| match e {
        hex::FromHexError::InvalidHexCharacter { index, .. } => {
            HexError::Character { position: index }
        }
        _ => HexError::Length {
            expected: 2 * N,
            got: s.len(),
        },
    })?;
    Ok(out)
}

macro_rules! public_id {
    ($(#[$m:meta])* $name:ident, $len:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;
            /// Parses hex of exactly the right length; either case is accepted.
            pub fn from_hex(s: &str) -> Result<Self, HexError> {
                decode_hex::<$len>(s).map(Self)
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = HexError;
            fn try_from(b: &[u8]) -> Result<Self, HexError> {
                <[u8; $len]>::try_from(b)
                    .map(Self)
                    .map_err(|_| HexError::Length { expected: 2 * $len, got: 2 * b.len() })
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

macro_rules! secret_key {
    ($(#[$m:meta])* $name:ident, $len:expr) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; $len]);

        impl $name {
            pub const LEN: usize = $len;
            pub fn from_bytes(b: [u8; $len]) -> Self {
                Self(b)
            }
            /// Parses hex of exactly the right length; either case is accepted.
            pub fn from_hex(s: &str) -> Result<Self, HexError> {
                decode_hex::<$len>(s).map(Self)
            }
            /// Hex for publication (case lists, exports). Never log it.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(<redacted>)", stringify!($name))
            }
        }
    };
}

public_id!(
    /// A Bluezone 12-byte rolling ID, as broadcast in manufacturer data or read over GATT.
    RollingId,
    12
);
public_id!(
    /// A GAEN Rolling Proximity Identifier.
    Rpi,
    16
);
public_id!(
    /// GAEN Associated Encrypted Metadata (4 bytes, encrypted under the AEMK).
    Aem,
    4
);

secret_key!(
    /// A Bluezone daily key (32 bytes). Published in F0 lists only for a confirmed case.
    DailyKey,
    32
);
secret_key!(
    /// A GAEN Temporary Exposure Key.
    Tek,
    16
);

/// An identifier heard on air: either protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerId {
    Bluezone(RollingId),
    Gaen(Rpi),
}

/// Hashes the protocol tag and the identifier's bytes in one `write` (the derived hash feeds the
/// hasher three times: tag, length, bytes). De-duplication hashes every reception, and with the
/// keyed SipHash of std's maps, each `write` has a cost. Equal IDs hash equally: same tag, same
/// bytes.
impl std::hash::Hash for PeerId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut buf = [0u8; 1 + Rpi::LEN];
        let bytes = self.as_slice();
        buf[0] = match self {
            PeerId::Bluezone(_) => 0,
            PeerId::Gaen(_) => 1,
        };
        buf[1..=bytes.len()].copy_from_slice(bytes);
        state.write(&buf[..=bytes.len()]);
    }
}

impl PeerId {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            PeerId::Bluezone(id) => &id.0,
            PeerId::Gaen(rpi) => &rpi.0,
        }
    }
    /// 24 hex characters → Bluezone, 32 → GAEN RPI.
    pub fn from_hex(s: &str) -> Result<Self, HexError> {
        match s.trim().len() {
            24 => RollingId::from_hex(s).map(PeerId::Bluezone),
            32 => Rpi::from_hex(s).map(PeerId::Gaen),
            n => Err(HexError::Length {
                expected: 24,
                got: n,
            }),
        }
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let k = Tek::from_bytes([0xab; 16]);
        let s = format!("{k:?}");
        assert!(!s.contains("ab"), "{s}");
        let d = DailyKey::from_bytes([0xcd; 32]);
        assert!(!format!("{d:?}").contains("cd"));
    }

    #[test]
    fn hex_lengths_are_checked() {
        assert_eq!(
            RollingId::from_hex("00"),
            Err(HexError::Length {
                expected: 24,
                got: 2
            })
        );
        assert!(RollingId::from_hex("130CEA6472130C185D8643DF").is_ok());
        assert_eq!(
            Rpi::from_hex("zz000000000000000000000000000000"),
            Err(HexError::Character { position: 0 })
        );
        assert!(matches!(
            PeerId::from_hex("130cea6472130c185d8643df"),
            Ok(PeerId::Bluezone(_))
        ));
    }
}
