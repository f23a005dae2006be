//! Exposure Notification v1.2 key schedule (`docs/gaen.md` §1).
//!
//! ```text
//! ENIN = unix_seconds / 600        RPIK = HKDF-SHA256(TEK, salt = none, "EN-RPIK", 16)
//! AEMK = HKDF(TEK, "EN-AEMK", 16)  RPI_j = AES-128(RPIK, "EN-RPI" || 0^6 || ENIN_j LE)
//! AEM_j = AES-128-CTR(AEMK, IV = RPI_j) over the 4 metadata bytes
//! ```
//! All 144 RPIs of a key are produced in one call so that the AES implementation can pipeline
//! its blocks (the `aes` crate uses AES-NI several blocks at a time when the CPU has it).

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::{Aes128, Block};
use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ids::{Aem, Rpi, Tek};
use crate::time::UnixSeconds;

/// Seconds in one ENIN interval.
pub const INTERVAL_SECONDS: i64 = 600;
/// Intervals a TEK is valid for (one UTC day).
pub const TEK_ROLLING_PERIOD: u32 = 144;
/// A sighting counts if within ±12 intervals (±2 h) of the RPI's own interval.
pub const RPI_VALIDITY_INTERVALS: i64 = 12;

/// ENIN: the 10-minute interval number containing `t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Enin(pub u32);

impl Enin {
    pub fn from_unix(t: UnixSeconds) -> Enin {
        Enin(t.div_euclid(INTERVAL_SECONDS).clamp(0, u32::MAX as i64) as u32)
    }
    pub fn to_unix(self) -> UnixSeconds {
        self.0 as i64 * INTERVAL_SECONDS
    }
    /// The first interval of the TEK period (UTC midnight) containing this interval.
    pub fn rolling_start(self) -> Enin {
        Enin(self.0 - self.0 % TEK_ROLLING_PERIOD)
    }
}

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct Key16([u8; 16]);

/// Rolling Proximity Identifier Key.
#[derive(Clone)]
pub struct Rpik(Key16);
/// Associated Encrypted Metadata Key.
#[derive(Clone)]
pub struct Aemk(Key16);

impl std::fmt::Debug for Rpik {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rpik(<redacted>)")
    }
}
impl std::fmt::Debug for Aemk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aemk(<redacted>)")
    }
}

fn hkdf16(tek: &Tek, info: &[u8]) -> Key16 {
    let hk = Hkdf::<Sha256>::new(None, tek.as_bytes());
    let mut out = [0u8; 16];
    // 16 bytes is far below HKDF-SHA256's 255*32 limit, so expand cannot fail.
    hk.expand(info, &mut out)
        .expect("16-byte HKDF output is always valid");
    Key16(out)
}

impl Rpik {
    pub fn derive(tek: &Tek) -> Rpik {
        Rpik(hkdf16(tek, b"EN-RPIK"))
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0 .0
    }
    /// Builds the key from raw bytes (for callers with their own fast HKDF).
    pub fn from_bytes(b: [u8; 16]) -> Rpik {
        Rpik(Key16(b))
    }
}

impl Aemk {
    pub fn derive(tek: &Tek) -> Aemk {
        Aemk(hkdf16(tek, b"EN-AEMK"))
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0 .0
    }
}

/// `"EN-RPI" || 0^6 || ENIN (u32 LE)`.
pub fn padded_data(enin: Enin) -> [u8; 16] {
    // Built in a register: assembling it bytewise on the stack cost a store-forwarding stall per
    // block, a third of the GAEN matcher's time (measured with perf).
    const PREFIX: u128 = u128::from_le_bytes(*b"EN-RPI\0\0\0\0\0\0\0\0\0\0");
    (PREFIX | (enin.0 as u128) << 96).to_le_bytes()
}

/// RPIs for `count` consecutive intervals from `first`, in one AES pass.
pub fn rpis(rpik: &Rpik, first: Enin, count: u32) -> Vec<Rpi> {
    let cipher = Aes128::new(&(*rpik.as_bytes()).into());
    let mut blocks: Vec<Block> = (0..count)
        .map(|j| Block::from(padded_data(Enin(first.0.wrapping_add(j)))))
        .collect();
    cipher.encrypt_blocks(&mut blocks);
    blocks.into_iter().map(|b| Rpi(b.into())).collect()
}

/// The RPI of one interval.
pub fn rpi(rpik: &Rpik, enin: Enin) -> Rpi {
    let cipher = Aes128::new(&(*rpik.as_bytes()).into());
    let mut block = Block::from(padded_data(enin));
    cipher.encrypt_block(&mut block);
    Rpi(block.into())
}

/// AES-128-CTR with the RPI as the initial counter block. Encryption and decryption are the same
/// operation; only the first keystream block is needed for 4 bytes.
pub fn aem_crypt(aemk: &Aemk, rpi: &Rpi, data: [u8; 4]) -> [u8; 4] {
    let cipher = Aes128::new(&(*aemk.as_bytes()).into());
    let mut ks = Block::from(rpi.0);
    cipher.encrypt_block(&mut ks);
    [
        data[0] ^ ks[0],
        data[1] ^ ks[1],
        data[2] ^ ks[2],
        data[3] ^ ks[3],
    ]
}

/// The 4 metadata bytes carried (encrypted) in the AEM: `[version, tx_power dBm, 0, 0]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub version: u8,
    pub tx_power_dbm: i8,
    pub reserved: [u8; 2],
}

impl Metadata {
    /// Version 1.0 metadata with the given calibrated tx power.
    pub fn v1_0(tx_power_dbm: i8) -> Metadata {
        Metadata {
            version: 0x40,
            tx_power_dbm,
            reserved: [0, 0],
        }
    }
    pub fn to_bytes(self) -> [u8; 4] {
        [
            self.version,
            self.tx_power_dbm as u8,
            self.reserved[0],
            self.reserved[1],
        ]
    }
    pub fn from_bytes(b: [u8; 4]) -> Metadata {
        Metadata {
            version: b[0],
            tx_power_dbm: b[1] as i8,
            reserved: [b[2], b[3]],
        }
    }
    /// Major version (upper two bits): 1 for both v1.0 (0x40) and v1.1 (0x50|c<<2).
    pub fn major_version(self) -> u8 {
        self.version >> 6
    }
}

pub fn encrypt_metadata(aemk: &Aemk, rpi: &Rpi, metadata: Metadata) -> Aem {
    Aem(aem_crypt(aemk, rpi, metadata.to_bytes()))
}

pub fn decrypt_metadata(aemk: &Aemk, rpi: &Rpi, aem: &Aem) -> Metadata {
    Metadata::from_bytes(aem_crypt(aemk, rpi, aem.0))
}

impl Tek {
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Tek {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        let t = Tek::from_bytes(b);
        b.zeroize();
        t
    }
}

/// One key's full broadcast schedule: TEK → (ENIN, RPI, AEM) for its rolling period.
pub fn key_schedule(
    tek: &Tek,
    rolling_start: Enin,
    rolling_period: u32,
    metadata: Metadata,
) -> Vec<(Enin, Rpi, Aem)> {
    let rpik = Rpik::derive(tek);
    let aemk = Aemk::derive(tek);
    rpis(&rpik, rolling_start, rolling_period)
        .into_iter()
        .enumerate()
        .map(|(j, r)| {
            (
                Enin(rolling_start.0 + j as u32),
                r,
                encrypt_metadata(&aemk, &r, metadata),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enin_arithmetic() {
        assert_eq!(Enin::from_unix(1585785600), Enin(2642976));
        assert_eq!(Enin(2642976 + 143).rolling_start(), Enin(2642976));
        assert_eq!(Enin(2642976).to_unix(), 1585785600);
        assert_eq!(Enin::from_unix(-5), Enin(0));
    }

    #[test]
    fn metadata_round_trip() {
        let m = Metadata::v1_0(-15);
        assert_eq!(Metadata::from_bytes(m.to_bytes()), m);
        assert_eq!(m.to_bytes(), [0x40, 0xf1, 0, 0]);
        assert_eq!(m.major_version(), 1);
    }
}
