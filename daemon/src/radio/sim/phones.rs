//! The content of simulations: what simulated phones broadcast (from their own seeded keys) and
//! the scenes built from them, shared by `run --radio sim`, `demo` and the end-to-end tests.

use std::sync::{Arc, Mutex};

use bluezone_protocol::bluezone::SlotsPerDay;
use bluezone_protocol::broadcast::{BroadcastKeys, GaenBroadcastKeys};
use bluezone_protocol::gaen::{Enin, Metadata};
use bluezone_protocol::time::{utc_day, UnixSeconds};
use bluezone_protocol::{DailyKey, Tek};
use rand::Rng;
use sha2::{Digest, Sha256};

use super::{BroadcastSchedule, DeviceModel, DeviceSpec, Medium, Mobility, Waypoint};
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
            out.push(Waypoint::new(t0 + dt, x, y, room));
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

/// Most people in one team; larger workforces are split into more teams, each in its own hall.
pub const TEAM_SIZE: usize = 25;
/// Workstations stand this far apart, each in its own booth (a wall between any two): about
/// 77 dB mean attenuation between neighbours, against about 40 dB for people at one table. A
/// whole day next to a colleague must not look like a meeting with them.
pub const WORKSTATION_SPACING_M: f64 = 10.0;
/// Halls are this far apart: further than any packet carries, so a hall's radios only hear
/// their own hall.
pub const HALL_SPACING_M: f64 = 600.0;

/// One person's day in [`workplace`]: their path, and the team they belong to.
#[derive(Clone, Debug, PartialEq)]
pub struct Worker {
    /// Index of the team (hence the hall).
    pub team: usize,
    /// Where the person is over the day.
    pub path: Vec<Waypoint>,
}

/// Room numbers: a booth per person, two meeting rooms per team (one table each).
fn booth_room(person: usize) -> u32 {
    1_000 + person as u32
}
fn meeting_room(team: usize, which: usize) -> u32 {
    (10 + 2 * team + which) as u32
}

/// The hall of `team`: its origin on the site plan.
fn hall(team: usize) -> (f64, f64) {
    (
        (team % 8) as f64 * HALL_SPACING_M,
        (team / 8) as f64 * HALL_SPACING_M,
    )
}

/// Workstation of the `seat`-th member of `team` (5 to a row).
fn workstation(team: usize, seat: usize) -> (f64, f64) {
    let (ox, oy) = hall(team);
    (
        ox + (seat % 5) as f64 * WORKSTATION_SPACING_M,
        oy + (seat / 5) as f64 * WORKSTATION_SPACING_M,
    )
}

/// Centre of meeting room 0 (the case's team meets there) or 1 of `team`: 20 m beside the
/// workstations, behind walls.
fn table(team: usize, which: usize) -> (f64, f64) {
    let (ox, oy) = hall(team);
    match which {
        0 => (ox - 20.0, oy + 10.0),
        _ => (ox + 4.0 * WORKSTATION_SPACING_M + 20.0, oy + 10.0),
    }
}

/// The demo's workplace: `n` people in teams of at most [`TEAM_SIZE`], each team in its own hall,
/// every person at a workstation in a booth. Person 0 is the case. Every hour from `start`:
/// - the case holds a meeting of 20–40 minutes with 2–3 of their close colleagues (the first
///   half of their team), everyone within 1.8 m around one table: these become real contacts;
/// - the case has one 5-minute chat at their workstation (1.2 m) with a different colleague of
///   the other half: close, but too short to be a contact;
/// - in every team, 3–5 others meet for 20–50 minutes in the team's second meeting room.
///
/// So at every size the case meets some people long enough and others too briefly, and a whole
/// day in neighbouring booths never comes near a contact. Walks take one minute each way.
pub fn workplace(n: usize, start: UnixSeconds, hours: u32, rng: &mut impl Rng) -> Vec<Worker> {
    let team_of = |i: usize| i / TEAM_SIZE;
    let seat_of = |i: usize| i % TEAM_SIZE;
    let mut workers: Vec<Worker> = (0..n)
        .map(|i| {
            let (x, y) = workstation(team_of(i), seat_of(i));
            Worker {
                team: team_of(i),
                path: vec![Waypoint::new(start, x, y, booth_room(i))],
            }
        })
        .collect();
    let team_len = n.min(TEAM_SIZE);
    // The case's close colleagues: the first half of the rest of their team.
    let close: Vec<usize> = (1..team_len).take((team_len - 1).div_ceil(2)).collect();
    let mut chat_partners: Vec<usize> = (1..team_len).filter(|i| !close.contains(i)).collect();
    shuffle(&mut chat_partners, rng);
    let teams = n.div_ceil(TEAM_SIZE);

    // A round trip from the workstation to `spot` in `room`, staying from `t` to `t + len`.
    let visit = |w: &mut Worker, i: usize, t: i64, len: i64, spot: (f64, f64), room: u32| {
        let (dx, dy) = workstation(team_of(i), seat_of(i));
        w.path.push(Waypoint::new(t - 60, dx, dy, booth_room(i)));
        w.path.push(Waypoint::new(t, spot.0, spot.1, room));
        w.path.push(Waypoint::new(t + len, spot.0, spot.1, room));
        w.path
            .push(Waypoint::new(t + len + 60, dx, dy, booth_room(i)));
    };

    for h in 0..i64::from(hours) {
        let hour = start + h * 3600;
        // The case's meeting, from :05 to at most :45.
        if !close.is_empty() {
            let mut members = close.clone();
            shuffle(&mut members, rng);
            members.truncate(rng.gen_range(2..=3).min(close.len()));
            members.push(0);
            let len = rng.gen_range(20..=40) * 60;
            let of = members.len();
            for (seat, &m) in members.iter().enumerate() {
                let spot = seat_at(table(0, 0), seat, of, rng);
                visit(
                    &mut workers[m],
                    m,
                    hour + 5 * 60,
                    len,
                    spot,
                    meeting_room(0, 0),
                );
            }
        }
        // The case's chat, :50 to :55, at the case's workstation.
        let chat = chat_partners.pop();
        if let Some(p) = chat {
            let (cx, cy) = workstation(0, 0);
            visit(
                &mut workers[p],
                p,
                hour + 50 * 60,
                5 * 60,
                (cx + 1.2, cy),
                booth_room(0),
            );
        }
        // Every team's other meeting, :05 to at most :55, among the people the case's meeting
        // and chat leave free.
        for team in 0..teams {
            let first = team * TEAM_SIZE;
            let mut pool: Vec<usize> = (first..n.min(first + TEAM_SIZE))
                .filter(|&i| i != 0 && !close.contains(&i) && Some(i) != chat)
                .collect();
            shuffle(&mut pool, rng);
            pool.truncate(rng.gen_range(3..=5));
            if pool.len() < 2 {
                continue;
            }
            let len = rng.gen_range(20..=50) * 60;
            let of = pool.len();
            for (seat, &m) in pool.iter().enumerate() {
                let spot = seat_at(table(team, 1), seat, of, rng);
                visit(
                    &mut workers[m],
                    m,
                    hour + 5 * 60,
                    len,
                    spot,
                    meeting_room(team, 1),
                );
            }
        }
    }
    workers
}

/// Seat `seat` of `of` around a table at `centre`: 0.5–0.9 m from its centre, so everyone at
/// one table is within 1.8 m of everyone else.
fn seat_at(centre: (f64, f64), seat: usize, of: usize, rng: &mut impl Rng) -> (f64, f64) {
    let angle = seat as f64 * std::f64::consts::TAU / of as f64;
    let r = rng.gen_range(0.5..0.9);
    (centre.0 + r * angle.cos(), centre.1 + r * angle.sin())
}

/// Fisher–Yates with the scene's own generator (so a seed fixes the scene).
fn shuffle<T>(v: &mut [T], rng: &mut impl Rng) {
    for k in (1..v.len()).rev() {
        v.swap(k, rng.gen_range(0..=k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Seconds `b` spends within 2 m of `a`, sampled every 10 s over the paths alone.
    fn close_s(a: &[Waypoint], b: &[Waypoint], from: i64, to: i64) -> i64 {
        let (a, b) = (Mobility::Path(a.to_vec()), Mobility::Path(b.to_vec()));
        (from..to)
            .step_by(10)
            .filter(|t| {
                let (pa, pb) = (a.position_at_ms(t * 1000), b.position_at_ms(t * 1000));
                pa.distance(&pb) <= 2.0
            })
            .count() as i64
            * 10
    }

    #[test]
    fn the_case_meets_people_long_and_briefly_at_every_size() {
        let start = 1_795_420_800;
        for (n, seed) in [(3, 1), (8, 2), (12, 3), (60, 4), (200, 5)] {
            let mut rng = StdRng::seed_from_u64(seed);
            let w = workplace(n, start, 8, &mut rng);
            assert_eq!(w.len(), n);
            let times: Vec<i64> = w
                .iter()
                .skip(1)
                .map(|p| close_s(&w[0].path, &p.path, start, start + 8 * 3600))
                .collect();
            assert!(times.iter().any(|&s| s >= 20 * 60), "n={n}: {times:?}");
            // Nobody is near the 15-minute line: a contact is clearly one or clearly not.
            assert!(
                times.iter().all(|&s| s >= 19 * 60 || s <= 7 * 60),
                "n={n}: {times:?}"
            );
            if n >= 8 {
                assert!(
                    times.iter().any(|&s| (1..=7 * 60).contains(&s)),
                    "n={n}: {times:?}"
                );
            }
            // Other teams sit in other halls.
            if n > TEAM_SIZE {
                assert!(times[TEAM_SIZE - 1..].iter().all(|&s| s == 0));
            }
        }
    }
}
