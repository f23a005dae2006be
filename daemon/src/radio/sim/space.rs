//! Space and propagation: where a device is over time (positions, rooms, mobility) and how the
//! mean signal fades between two positions ([`MediumConfig`]). Pure functions of time and
//! place; the medium and the frames ask them.

use bluezone_protocol::time::UnixSeconds;

/// Distances below this are treated as this (the far-field model breaks down nearer).
pub const MIN_DISTANCE_M: f64 = 0.1;

/// Propagation and loss parameters of a [`Medium`].
///
/// Mean attenuation (tx power − RSSI) at distance `d` metres:
/// `path_loss_at_1m_db + 10 · path_loss_exponent · log10(max(d, 0.1))`, plus `wall_loss_db`
/// when the two devices are in different rooms (one wall, however many rooms apart). Every packet
/// adds its own `N(0, noise_sigma_db)` and is then lost with probability `packet_loss`; a packet
/// below `sensitivity_dbm` is not heard.
///
/// With the defaults (indoor, exponent 2.7): 1 m → 40.0 dB, 2 m → 48.1 dB, 3 m → 52.9 dB,
/// 5 m → 58.9 dB, 10 m → 67.0 dB, 30 m → 79.9 dB (89.9 dB through a wall). At Bluezone's "low"
/// tx power of −15 dBm and −100 dBm sensitivity, packets beyond 85 dB are lost: mean range about
/// 46 m in one room and 20 m through a wall.
#[derive(Clone, Debug, PartialEq)]
pub struct MediumConfig {
    /// Attenuation at the 1 m reference distance (40 dB: 2.4 GHz free space plus body/antenna).
    pub path_loss_at_1m_db: f64,
    /// How fast attenuation grows with distance (2 = free space; 2.7 = indoors).
    pub path_loss_exponent: f64,
    /// Standard deviation of each packet's RSSI (multipath fading, orientation).
    pub noise_sigma_db: f64,
    /// Extra attenuation between devices in different rooms.
    pub wall_loss_db: f64,
    /// Weakest RSSI a scanner still reports.
    pub sensitivity_dbm: i8,
    /// Probability that any one packet (advert or GATT read) is lost, in `[0, 1]`.
    pub packet_loss: f64,
    /// Seeds every random draw of the simulation (noise, loss, addresses).
    pub seed: u64,
}

impl Default for MediumConfig {
    fn default() -> Self {
        MediumConfig {
            path_loss_at_1m_db: 40.0,
            path_loss_exponent: 2.7,
            noise_sigma_db: 4.0,
            wall_loss_db: 10.0,
            sensitivity_dbm: -100,
            packet_loss: 0.1,
            seed: 0,
        }
    }
}

impl MediumConfig {
    /// Mean attenuation in dB over `distance_m` through `walls` walls (before noise): the formula
    /// the medium uses, exposed so tests and demos can compare against it.
    pub fn mean_attenuation_db(&self, distance_m: f64, walls: u32) -> f64 {
        let d = if distance_m.is_nan() {
            distance_m
        } else {
            distance_m.max(MIN_DISTANCE_M)
        };
        self.path_loss_at_1m_db
            + 10.0 * self.path_loss_exponent * d.log10()
            + f64::from(walls) * self.wall_loss_db
    }

    /// [`MediumConfig::mean_attenuation_db`] from the squared distance (what the scanner has
    /// at hand): one logarithm, no square root.
    pub(super) fn mean_attenuation_db_sq(&self, distance2_m2: f64, walls: u32) -> f64 {
        let d2 = if distance2_m2.is_nan() {
            distance2_m2
        } else {
            distance2_m2.max(MIN_DISTANCE_M * MIN_DISTANCE_M)
        };
        self.path_loss_at_1m_db
            + 5.0 * self.path_loss_exponent * d2.log10()
            + f64::from(walls) * self.wall_loss_db
    }
}

/// Where a device is: metres on a floor plan, and the room it is in (walls separate rooms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    /// Metres east on the floor plan.
    pub x: f64,
    /// Metres north on the floor plan.
    pub y: f64,
    /// Devices in different rooms have a wall between them.
    pub room: u32,
}

impl Position {
    /// Straight-line distance in metres (rooms do not matter here, only for wall loss).
    pub fn distance(&self, other: &Position) -> f64 {
        (self.x - other.x).hypot(self.y - other.y)
    }
}

/// One point of a [`Mobility::Path`]: where the device is at unix time `t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Waypoint {
    /// True (virtual) unix time of arrival.
    pub t: UnixSeconds,
    /// Metres east on the floor plan.
    pub x: f64,
    /// Metres north on the floor plan.
    pub y: f64,
    /// The room the device is in from `t` until the next waypoint.
    pub room: u32,
}

impl Waypoint {
    /// At `(x, y)` in `room` at time `t`.
    pub fn new(t: UnixSeconds, x: f64, y: f64, room: u32) -> Self {
        Waypoint { t, x, y, room }
    }

    fn position(&self) -> Position {
        Position {
            x: self.x,
            y: self.y,
            room: self.room,
        }
    }
}

/// How a device moves: its position as a function of (true, virtual) unix time.
#[derive(Clone, Debug, PartialEq)]
pub enum Mobility {
    /// Stays put.
    Fixed { x: f64, y: f64, room: u32 },
    /// A piecewise-linear walk through waypoints, in any order (they are sorted by time). Before
    /// the first waypoint the device waits at it, after the last it stays there. Between two
    /// waypoints it is in the room of the earlier one and changes room on arrival. An empty path
    /// means the origin of room 0.
    Path(Vec<Waypoint>),
}

impl Mobility {
    /// The position at unix time `t_ms` (milliseconds, for smooth walks).
    pub fn position_at_ms(&self, t_ms: i64) -> Position {
        match self {
            Mobility::Fixed { x, y, room } => Position {
                x: *x,
                y: *y,
                room: *room,
            },
            Mobility::Path(points) => path_position(points, t_ms),
        }
    }

    pub(super) fn normalised(self) -> Mobility {
        match self {
            Mobility::Path(mut points) => {
                points.sort_by_key(|p| p.t);
                Mobility::Path(points)
            }
            fixed => fixed,
        }
    }
}

/// Position on a time-sorted path. A binary search: a day's path of a busy person has hundreds
/// of waypoints, and the medium asks for positions at every scan.
fn path_position(points: &[Waypoint], t_ms: i64) -> Position {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Position {
            x: 0.0,
            y: 0.0,
            room: 0,
        };
    };
    let t = t_ms as f64 / 1000.0;
    if t <= first.t as f64 {
        return first.position();
    }
    if t >= last.t as f64 {
        return last.position();
    }
    // The segment [a, b) with a the last waypoint at or before t (equal times: the later one).
    let k = points.partition_point(|p| (p.t as f64) <= t);
    let (Some(a), Some(b)) = (k.checked_sub(1).and_then(|i| points.get(i)), points.get(k)) else {
        return last.position();
    };
    let (ta, tb) = (a.t as f64, b.t as f64);
    let f = (t - ta) / (tb - ta);
    Position {
        x: a.x + f * (b.x - a.x),
        y: a.y + f * (b.y - a.y),
        room: a.room,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attenuation_bands() {
        let c = MediumConfig::default();
        assert!((c.mean_attenuation_db(1.0, 0) - 40.0).abs() < 1e-9);
        assert!(c.mean_attenuation_db(2.0, 0) <= 50.0);
        let few = c.mean_attenuation_db(4.0, 0);
        assert!((50.0..=70.0).contains(&few));
        assert!(c.mean_attenuation_db(30.0, 0) > 70.0);
        assert!(
            (c.mean_attenuation_db(30.0, 1) - c.mean_attenuation_db(30.0, 0) - 10.0).abs() < 1e-9
        );
    }

    #[test]
    fn attenuation_from_squared_distance_is_the_same() {
        let c = MediumConfig::default();
        for d in [0.0, 0.05, 0.1, 1.0, 1.8, 10.0, 57.3, 400.0] {
            for walls in [0, 1] {
                let (a, b) = (
                    c.mean_attenuation_db(d, walls),
                    c.mean_attenuation_db_sq(d * d, walls),
                );
                assert!((a - b).abs() < 1e-9, "{d} m, {walls} walls: {a} vs {b}");
            }
        }
        assert!(c.mean_attenuation_db_sq(f64::NAN, 0).is_nan());
    }

    #[test]
    fn path_interpolates() {
        let p = vec![
            Waypoint::new(10, 0.0, 0.0, 1),
            Waypoint::new(20, 10.0, 0.0, 2),
        ];
        assert_eq!(path_position(&p, 0).x, 0.0);
        let mid = path_position(&p, 15_000);
        assert!((mid.x - 5.0).abs() < 1e-9 && mid.room == 1);
        assert_eq!(path_position(&p, 25_000).room, 2);
    }
}
