//! Two privacy facts of the BlueZ backend: peers' addresses never reach the logs, and whether
//! our own adverts are linkable.
//!
//! - A peer's BLE address is as identifying as its rolling ID, and a log that pairs them undoes
//!   the rotation. Logs name a peer by a [`PeerTag`] instead: a keyed hash under a key drawn at
//!   process start, stable within one run (so a log can follow one peer) and unlinkable across
//!   runs. Error texts from the stack may embed addresses or object paths: [`redact`] them.
//! - Our advertising address follows BlueZ's privacy setting. With privacy off, connectable
//!   adverts (the Bluezone Android layout) go out from the adapter's identity address (public or
//!   static), which links every rotating ID we broadcast. BlueZ exposes no privacy property on
//!   D-Bus, so [`AdapterPrivacy`] combines the adapter's `AddressType` with `Privacy=` from
//!   `main.conf`.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// A peer address as logs may show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PeerTag([u8; 4]);

impl PeerTag {
    pub fn of(address: [u8; 6]) -> PeerTag {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = KEY.get_or_init(rand::random);
        let mut h = Sha256::new();
        h.update(key);
        h.update(address);
        let d = h.finalize();
        PeerTag([d[0], d[1], d[2], d[3]])
    }
}

impl fmt::Display for PeerTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer-{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PeerTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `text` with every Bluetooth address (`AA:BB:CC:DD:EE:FF`, or `AA_BB_…` as in BlueZ object
/// paths) replaced by `<address>`.
pub fn redact(text: &str) -> String {
    const LEN: usize = 17;
    let b = text.as_bytes();
    let is_addr = |w: &[u8]| {
        let sep = w[2];
        (sep == b':' || sep == b'_')
            && (0..6).all(|k| w[3 * k].is_ascii_hexdigit() && w[3 * k + 1].is_ascii_hexdigit())
            && (0..5).all(|k| w[3 * k + 2] == sep)
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i + LEN <= b.len() {
        if is_addr(&b[i..i + LEN]) {
            out.push_str(&text[copied..i]);
            out.push_str("<address>");
            i += LEN;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// BlueZ's `[General] Privacy=` setting.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrivacySetting {
    /// `off`, or not set (BlueZ's default).
    Off,
    /// `device`, `network`, `on`, `limited-*`: advertising from rotating private addresses.
    On(String),
    /// `main.conf` could not be read: unknown.
    Unknown(String),
}

/// What status reports about our own linkability.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AdapterPrivacy {
    pub adapter: String,
    /// `Adapter1.AddressType`: `public` or `random` (a static random identity).
    pub address_type: String,
    pub privacy: PrivacySetting,
    /// Our connectable adverts carry a fixed identity address (privacy off).
    pub linkable: bool,
}

impl AdapterPrivacy {
    pub fn new(adapter: String, address_type: String, privacy: PrivacySetting) -> AdapterPrivacy {
        let linkable = privacy == PrivacySetting::Off;
        AdapterPrivacy {
            adapter,
            address_type,
            privacy,
            linkable,
        }
    }

    /// Logs the state: an ERROR naming the fix when our adverts are linkable.
    pub fn log(&self) {
        match &self.privacy {
            PrivacySetting::Off => tracing::error!(
                adapter = %self.adapter,
                address_type = %self.address_type,
                "BlueZ privacy is off: adverts go out from the adapter's fixed {} address, which \
                 links every rotating ID we broadcast. Fix: set `Privacy=device` in the \
                 [General] section of /etc/bluetooth/main.conf and restart bluetoothd",
                self.address_type
            ),
            PrivacySetting::On(v) => tracing::info!(
                adapter = %self.adapter,
                privacy = %v,
                "BlueZ privacy is on: adverts use rotating private addresses"
            ),
            PrivacySetting::Unknown(why) => tracing::warn!(
                adapter = %self.adapter,
                "cannot tell whether BlueZ privacy is on ({why}); without `Privacy=device` in \
                 /etc/bluetooth/main.conf our adverts are linkable"
            ),
        }
    }
}

/// `Privacy=` of `main.conf`'s `[General]` section.
pub fn privacy_setting(main_conf: &Path) -> PrivacySetting {
    match std::fs::read_to_string(main_conf) {
        Ok(text) => parse_privacy(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PrivacySetting::Off,
        Err(e) => PrivacySetting::Unknown(format!("reading {}: {e}", main_conf.display())),
    }
}

fn parse_privacy(text: &str) -> PrivacySetting {
    let mut general = false;
    let mut value = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            general = line == "[General]";
        } else if general && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "Privacy" {
                    value = Some(v.trim().to_string());
                }
            }
        }
    }
    // The values bluetoothd turns privacy on for; anything else (a typo, `false`, `no`) it
    // rejects as invalid and leaves privacy off, so it counts as off here too.
    match value.as_deref() {
        Some(v @ ("device" | "network" | "on" | "limited-network" | "limited-device")) => {
            PrivacySetting::On(v.to_string())
        }
        _ => PrivacySetting::Off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_within_a_run_and_hide_the_address() {
        let a = [0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0x01];
        assert_eq!(PeerTag::of(a), PeerTag::of(a));
        assert_ne!(PeerTag::of(a), PeerTag::of([0; 6]));
        let shown = format!("{} {:?}", PeerTag::of(a), PeerTag::of(a));
        let lower = shown.to_ascii_lowercase();
        assert!(
            !lower.contains("aa:bb:cc") && !lower.contains("aabbccddee"),
            "{shown}"
        );
        assert_eq!(shown.len(), "peer-01234567 peer-01234567".len());
        assert!(shown.starts_with("peer-"));
    }

    #[test]
    fn addresses_and_object_paths_are_redacted() {
        assert_eq!(
            redact("Device AA:BB:CC:DD:EE:0F not found"),
            "Device <address> not found"
        );
        assert_eq!(
            redact("/org/bluez/hci0/dev_aa_bb_cc_dd_ee_0f/service0010: gone"),
            "/org/bluez/hci0/dev_<address>/service0010: gone"
        );
        assert_eq!(redact("no address here: 12:34"), "no address here: 12:34");
        assert_eq!(redact("AA:BB:CC:DD:EE"), "AA:BB:CC:DD:EE");
        assert_eq!(redact("é AA:BB:CC:DD:EE:FF é"), "é <address> é");
    }

    #[test]
    fn privacy_from_main_conf() {
        assert_eq!(parse_privacy(""), PrivacySetting::Off);
        assert_eq!(
            parse_privacy("[General]\n#Privacy = device\nName = x\n"),
            PrivacySetting::Off
        );
        assert_eq!(
            parse_privacy("[General]\nPrivacy = device\n"),
            PrivacySetting::On("device".into())
        );
        assert_eq!(
            parse_privacy("[Policy]\nPrivacy=device\n[General]\nPrivacy=off\n"),
            PrivacySetting::Off
        );
        assert_eq!(
            parse_privacy("[LE]\nPrivacy=device\n"),
            PrivacySetting::Off,
            "only [General] counts"
        );
        // Values bluetoothd rejects leave privacy off: not to be reported as on.
        for bad in ["false", "no", "devcie", "1"] {
            assert_eq!(
                parse_privacy(&format!("[General]\nPrivacy={bad}\n")),
                PrivacySetting::Off,
                "{bad}"
            );
        }
        assert_eq!(
            parse_privacy("[General]\nPrivacy=limited-network\n"),
            PrivacySetting::On("limited-network".into())
        );
        let p = AdapterPrivacy::new("hci0".into(), "public".into(), PrivacySetting::Off);
        assert!(p.linkable);
        let p = AdapterPrivacy::new(
            "hci0".into(),
            "public".into(),
            PrivacySetting::On("device".into()),
        );
        assert!(!p.linkable);
    }
}
