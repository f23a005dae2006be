//! The air at one instant: where every device is and what it has on air, with a spatial grid so
//! that a scanner visits only the devices in radio range.
//!
//! Scanners of one simulation wake at the same instants (the same duty cycle on the same
//! virtual clock), so the medium builds one [`Frame`] per instant and every scanner reads it
//! without holding the medium's lock: positions are computed once per device and instant
//! instead of once per pair, and a device's adverts are encoded and decoded once per switch of
//! its broadcast (see [`Air`]), not once per scan.
//!
//! **Range.** The medium's noise is Gaussian, so strictly any packet could be heard at any
//! distance. The grid ignores peers whose *mean* RSSI is more than [`CULL_SIGMAS`] noise
//! deviations below the receiver's sensitivity: such a packet is heard with probability below
//! 1e-9, i.e. not once in a simulated year of a busy scanner. Nearer peers get the full model.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bluezone_protocol::adv::Advert;
use bluezone_protocol::RollingId;

use super::space::{MediumConfig, Position};
use crate::radio::Broadcast;

/// How far below sensitivity (in noise standard deviations) a peer's mean RSSI may be before
/// the medium stops looking at it: P(N(0,1) > 6) ≈ 1e-9.
pub const CULL_SIGMAS: f64 = 6.0;

/// What one device has on air for one broadcast, decoded once for every scanner.
#[derive(Debug)]
pub(super) struct Air {
    pub(super) broadcast: Broadcast,
    /// The random address (rotates with the broadcast's epoch).
    pub(super) address: u64,
    /// Each advert on air as a scanner's `decode_advert` sees it (`None`: nothing we use).
    pub(super) adverts: Vec<Option<Advert>>,
    /// What a GATT read of the Bluezone-iOS characteristic returns (Bluezone-iOS phones only).
    pub(super) gatt_value: Option<RollingId>,
}

/// One device at the frame's instant.
#[derive(Debug)]
pub(super) struct Entry {
    /// Added and not removed at this instant.
    pub(super) present: bool,
    /// Removed at or before this instant.
    pub(super) removed: bool,
    pub(super) pos: Position,
    pub(super) tx_power_dbm: i8,
    /// Seconds between two packets of each advert.
    pub(super) advert_interval_s: f64,
    pub(super) air: Option<Arc<Air>>,
    /// Squared distances beyond which this device cannot be heard (same room, through a wall).
    cut2_same: f64,
    cut2_wall: f64,
    /// GATT reads this device has answered (scanners count them without the medium's lock).
    pub(super) gatt_served: Arc<AtomicU64>,
}

/// The air at instant `t_ms`, valid while the medium's `generation` has not moved.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) t_ms: i64,
    pub(super) generation: u64,
    pub(super) entries: Vec<Entry>,
    /// Cell side in metres; `None` when range is unbounded (every device is a candidate).
    cell_m: Option<f64>,
    grid: HashMap<(i64, i64), Vec<u32>>,
}

/// Squared distance in metres at which a mean attenuation of `budget_db` is reached, through
/// `walls` walls (infinite when the model's loss does not grow with distance).
fn cut2(config: &MediumConfig, budget_db: f64, walls: f64) -> f64 {
    let exponent = 10.0 * config.path_loss_exponent;
    if exponent.is_nan() || exponent <= 0.0 {
        return f64::INFINITY;
    }
    let d = 10f64
        .powf((budget_db - config.path_loss_at_1m_db - walls * config.wall_loss_db) / exponent);
    let d = d.max(super::MIN_DISTANCE_M);
    if d.is_finite() {
        d * d
    } else {
        f64::INFINITY
    }
}

/// A device as the frame builder needs it.
pub(super) struct EntryInput {
    pub(super) present: bool,
    pub(super) removed: bool,
    pub(super) pos: Position,
    pub(super) tx_power_dbm: i8,
    pub(super) advert_interval_s: f64,
    pub(super) air: Option<Arc<Air>>,
    pub(super) gatt_served: Arc<AtomicU64>,
}

impl Frame {
    /// The frame of `devices` (in device order) at `t_ms`.
    pub(super) fn build(
        config: &MediumConfig,
        t_ms: i64,
        generation: u64,
        devices: impl Iterator<Item = EntryInput>,
    ) -> Frame {
        let noise = config.noise_sigma_db.max(0.0) * CULL_SIGMAS;
        let sensitivity = f64::from(config.sensitivity_dbm);
        let entries: Vec<Entry> = devices
            .map(|d| {
                let budget = f64::from(d.tx_power_dbm) - sensitivity + noise;
                Entry {
                    present: d.present,
                    removed: d.removed,
                    pos: d.pos,
                    tx_power_dbm: d.tx_power_dbm,
                    advert_interval_s: d.advert_interval_s,
                    air: d.air,
                    cut2_same: cut2(config, budget, 0.0),
                    cut2_wall: cut2(config, budget, 1.0),
                    gatt_served: d.gatt_served,
                }
            })
            .collect();
        let widest = entries
            .iter()
            .filter(|e| e.present && e.air.is_some())
            .map(|e| e.cut2_same.max(e.cut2_wall))
            .fold(0.0f64, f64::max)
            .sqrt();
        // Cells as wide as the longest range: a scanner's candidates are in its 3 × 3 cells.
        let cell_m = (widest.is_finite() && widest > 0.0 && widest < 1e7).then_some(widest);
        let mut grid: HashMap<(i64, i64), Vec<u32>> = HashMap::new();
        if let Some(cell) = cell_m {
            for (i, e) in entries.iter().enumerate() {
                if e.present && e.air.is_some() {
                    grid.entry(cell_of(&e.pos, cell))
                        .or_default()
                        .push(i as u32);
                }
            }
        }
        Frame {
            t_ms,
            generation,
            entries,
            cell_m,
            grid,
        }
    }

    /// The devices `me` might hear now: present, on air, and within their range of `me`
    /// (in device order within each cell).
    #[cfg(test)]
    pub(super) fn candidates(&self, me: usize) -> Vec<usize> {
        let mut out = Vec::new();
        self.candidates_into(me, &mut out);
        out.into_iter().map(|(i, _)| i).collect()
    }

    /// [`Frame::candidates`] into `out` (cleared first), each with its squared distance to `me`
    /// in metres: a scanner calls this at every wake-up and keeps the buffer.
    pub(super) fn candidates_into(&self, me: usize, out: &mut Vec<(usize, f64)>) {
        out.clear();
        let Some(my) = self.entries.get(me) else {
            return;
        };
        let in_range = |i: usize| {
            let e = self.entries.get(i)?;
            if i == me || !e.present || e.air.is_none() {
                return None;
            }
            let (dx, dy) = (e.pos.x - my.pos.x, e.pos.y - my.pos.y);
            let d2 = dx * dx + dy * dy;
            // NaN positions stay candidates: the propagation model decides (and drops them).
            let cut = if e.pos.room == my.pos.room {
                e.cut2_same
            } else {
                e.cut2_wall
            };
            (d2.is_nan() || d2 <= cut).then_some((i, d2))
        };
        let Some(cell) = self.cell_m else {
            out.extend((0..self.entries.len()).filter_map(in_range));
            return;
        };
        let (cx, cy) = cell_of(&my.pos, cell);
        for gx in cx.saturating_sub(1)..=cx.saturating_add(1) {
            for gy in cy.saturating_sub(1)..=cy.saturating_add(1) {
                if let Some(ids) = self.grid.get(&(gx, gy)) {
                    out.extend(ids.iter().filter_map(|&i| in_range(i as usize)));
                }
            }
        }
    }
}

/// The grid cell of a position (non-finite coordinates all fall in one cell far away).
fn cell_of(p: &Position, cell: f64) -> (i64, i64) {
    let c = |v: f64| {
        if v.is_finite() {
            (v / cell).floor() as i64
        } else {
            i64::MIN / 2
        }
    };
    (c(p.x), c(p.y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f64, room: u32) -> EntryInput {
        EntryInput {
            present: true,
            removed: false,
            pos: Position { x, y: 0.0, room },
            tx_power_dbm: -15,
            advert_interval_s: 0.1,
            air: Some(Arc::new(Air {
                broadcast: Broadcast::default(),
                address: 0,
                adverts: Vec::new(),
                gatt_value: None,
            })),
            gatt_served: Arc::default(),
        }
    }

    /// The cull keeps every peer whose mean RSSI is within 6 sigma of sensitivity, in this room
    /// and through a wall, and drops the ones beyond, whichever grid cell they fall in.
    #[test]
    fn candidates_are_the_peers_within_range() {
        let c = MediumConfig::default();
        // −15 dBm, −100 dBm sensitivity, 6 × 4 dB: 109 dB of budget.
        let same = 10f64.powf((109.0 - 40.0) / 27.0);
        let wall = 10f64.powf((109.0 - 50.0) / 27.0);
        let devices = vec![
            at(0.0, 0),
            at(same - 1.0, 0),
            at(same + 1.0, 0),
            at(-(wall - 1.0), 1),
            at(-(wall + 1.0), 1),
            at(-3.0 * same, 0),
        ];
        let frame = Frame::build(&c, 0, 0, devices.into_iter());
        let mut got = frame.candidates(0);
        got.sort_unstable();
        assert_eq!(got, [1, 3]);
        let mut got = frame.candidates(1);
        got.sort_unstable();
        assert_eq!(got, [0, 2]);
        // The mean RSSI at the edge is 6 sigma below sensitivity.
        let edge = -15.0 - c.mean_attenuation_db(same, 0);
        assert!((edge - (-100.0 - 24.0)).abs() < 1e-9, "{edge}");
    }
}
