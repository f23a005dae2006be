//! Simulated peers and places, shared by `run --radio sim`, `demo` and the end-to-end tests.

use std::sync::{Arc, Mutex};

use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::broadcast::{BroadcastKeys, GaenBroadcastKeys};
use bluezone_protocol::gaen::{Enin, Metadata};
use bluezone_protocol::time::{utc_day, UnixSeconds};
use bluezone_protocol::{DailyKey, Tek};
use sha2::{Digest, Sha256};

use crate::radio::sim::{BroadcastSchedule, DeviceModel, DeviceSpec, Medium, Mobility};
use crate::radio::Broadcast;

/// A simulated phone's key for `day`: derived from its seed, so a scenario is reproducible.
fn day_secret(seed: u64, day: i64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"bluezoned-sim-phone");
    h.update(seed.to_le_bytes());
    h.update(day.to_le_bytes());
    h.finalize().into()
}

/// The Bluezone daily key a simulated phone with `seed` uses on `day`.
pub fn phone_daily_key(seed: u64, day: i64) -> DailyKey {
    DailyKey::from_bytes(day_secret(seed, day))
}

/// The GAEN TEK a simulated phone with `seed` uses on `day`.
pub fn phone_tek(seed: u64, day: i64) -> Tek {
    let s = day_secret(seed ^ 0x9AE4, day);
    let mut t = [0u8; 16];
    t.copy_from_slice(&s[..16]);
    Tek::from_bytes(t)
}

/// What a phone of `model` broadcasts at each moment: IDs from its own keys, switching at the
/// slot (Bluezone) or interval (GAEN) boundaries. Cached per slot, since the medium asks at every
/// scan.
pub fn phone_schedule(model: &DeviceModel, seed: u64, tx_power: i8) -> BroadcastSchedule {
    let bluezone = matches!(
        model,
        DeviceModel::BluezoneAndroid | DeviceModel::BluezoneIos
    );
    let cache: Mutex<Option<(i64, i64, Broadcast)>> = Mutex::new(None);
    Arc::new(move |t: UnixSeconds| {
        let day = utc_day(t);
        let slot = if bluezone {
            SlotsPerDay::DEFAULT.slot(t) as i64
        } else {
            Enin::from_unix(t).0 as i64
        };
        let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((d, s, b)) = *c {
            if d == day && s == slot {
                return b;
            }
        }
        let keys = BroadcastKeys {
            bluezone: bluezone.then(|| phone_daily_key(seed, day)),
            gaen: (!bluezone)
                .then(|| GaenBroadcastKeys::new(&phone_tek(seed, day), Metadata::v1_0(tx_power))),
        };
        let b = Broadcast::new(keys.on_air(t), slot as u64);
        *c = Some((day, slot, b));
        b
    })
}

/// Adds a phone that broadcasts from its own seeded keys.
pub fn add_phone(medium: &Medium, name: &str, model: DeviceModel, seed: u64, mobility: Mobility) {
    let spec = DeviceSpec::new(name, model.clone(), mobility);
    let tx = spec.tx_power_dbm;
    let handle = medium.add_device(spec);
    // Only non-bluezoned models can take a schedule; the models passed here are phones.
    if let Err(e) = handle.set_broadcast_schedule(phone_schedule(&model, seed, tx)) {
        tracing::error!(error = %e, "simulated phone cannot broadcast");
    }
}

/// A loop walked over and over: `(seconds into the loop, x, y, room)`, repeated from `start`
/// for `hours`.
pub fn looping_path(start: UnixSeconds, hours: i64, points: &[(i64, f64, f64, u32)]) -> Mobility {
    let period = points.last().map(|p| p.0).unwrap_or(0).max(1);
    let mut out = Vec::new();
    let mut t0 = start;
    while t0 < start + hours * 3600 {
        for &(dt, x, y, room) in points {
            out.push((t0 + dt, x, y, room));
        }
        t0 += period + 1;
    }
    Mobility::Path(out)
}

/// The real-time scene of `run --radio sim`: our device at a desk, a colleague's Bluezone iOS
/// phone at the next desk, a Bluezone Android phone walking past every 20 minutes, and a GAEN
/// phone in the next room.
pub fn desk_scene(medium: &Medium, now: UnixSeconds) {
    add_phone(
        medium,
        "colleague (Bluezone iOS)",
        DeviceModel::BluezoneIos,
        11,
        Mobility::Fixed {
            x: 1.5,
            y: 0.0,
            room: 0,
        },
    );
    add_phone(
        medium,
        "visitor (Bluezone Android)",
        DeviceModel::BluezoneAndroid,
        12,
        looping_path(
            now,
            24 * 7,
            &[
                (0, -20.0, 3.0, 0),
                (300, 0.5, 1.0, 0),
                (480, 0.5, 1.0, 0),
                (780, 20.0, 3.0, 0),
                (1200, 20.0, 3.0, 0),
            ],
        ),
    );
    add_phone(
        medium,
        "neighbour (GAEN)",
        DeviceModel::Gaen,
        13,
        Mobility::Fixed {
            x: 4.0,
            y: 2.0,
            room: 1,
        },
    );
}
