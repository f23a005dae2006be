//! From receptions to sightings: one sighting per peer per de-duplication window.
//!
//! A peer is advertised ~10 times a second and every scan window hears it several times; one
//! sighting per peer per window is what matching and scoring need (scoring credits the gaps
//! between sightings). While a sighting has not been handed out for writing, later receptions
//! of the same peer within the window refine its RSSI (their mean): single packets carry several
//! dB of noise, and attenuation buckets are only as good as the RSSI behind them. Receptions of
//! a protocol the device does not log are dropped here, so every path into the store (including
//! the last drain at shutdown) applies the same filter.

use std::collections::HashMap;

use crate::ids::PeerId;
use crate::sighting::Sighting;
use crate::time::UnixSeconds;

/// Which protocols' identifiers are logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolFilter {
    pub bluezone: bool,
    pub gaen: bool,
}

impl ProtocolFilter {
    pub const ALL: ProtocolFilter = ProtocolFilter {
        bluezone: true,
        gaen: true,
    };

    pub fn accepts(self, peer: &PeerId) -> bool {
        match peer {
            PeerId::Bluezone(_) => self.bluezone,
            PeerId::Gaen(_) => self.gaen,
        }
    }
}

/// What became of one reception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    /// A new sighting, now pending.
    New,
    /// Folded into the pending sighting of the same peer (RSSI averaged).
    Merged,
    /// Within the window of a sighting already handed out for writing: dropped.
    Duplicate,
    /// A protocol that is not logged: dropped.
    Filtered,
}

/// The state kept for one peer heard within the window.
#[derive(Clone, Copy, Debug)]
struct PeerWindow {
    /// Time of the peer's logged sighting; the window runs from here.
    logged_at: UnixSeconds,
    /// Index of that sighting in `pending`, while it has not been handed out.
    pending_index: Option<usize>,
    rssi_sum: i32,
    rssi_count: i32,
}

/// The de-duplication state machine. Time comes in with each sighting; nothing here reads a clock.
#[derive(Debug)]
pub struct Dedup {
    window_s: i64,
    filter: ProtocolFilter,
    peers: HashMap<PeerId, PeerWindow>,
    pending: Vec<Sighting>,
}

impl Dedup {
    /// `window_s` 0 keeps every reception.
    pub fn new(window_s: i64, filter: ProtocolFilter) -> Dedup {
        Dedup {
            window_s: window_s.max(0),
            filter,
            peers: HashMap::new(),
            pending: Vec::new(),
        }
    }

    pub fn offer(&mut self, r: Sighting) -> Offered {
        if !self.filter.accepts(&r.peer) {
            return Offered::Filtered;
        }
        if let Some(w) = self.peers.get_mut(&r.peer) {
            if (r.time - w.logged_at).abs() < self.window_s {
                let Some(s) = w.pending_index.and_then(|i| self.pending.get_mut(i)) else {
                    return Offered::Duplicate;
                };
                w.rssi_sum += i32::from(r.rssi);
                w.rssi_count += 1;
                // The mean of i8 values is within i8's range.
                s.rssi = (f64::from(w.rssi_sum) / f64::from(w.rssi_count)).round() as i8;
                return Offered::Merged;
            }
        }
        self.peers.insert(
            r.peer,
            PeerWindow {
                logged_at: r.time,
                pending_index: Some(self.pending.len()),
                rssi_sum: i32::from(r.rssi),
                rssi_count: 1,
            },
        );
        self.pending.push(r);
        Offered::New
    }

    /// The sightings waiting to be written, oldest first.
    pub fn pending(&self) -> &[Sighting] {
        &self.pending
    }

    /// Hands out the pending sightings for writing; they no longer change, and further
    /// receptions within their windows are duplicates.
    pub fn take_pending(&mut self) -> Vec<Sighting> {
        for w in self.peers.values_mut() {
            w.pending_index = None;
        }
        std::mem::take(&mut self.pending)
    }

    /// A write of `batch` (from [`Dedup::take_pending`], so nothing points into it) failed: it goes back in front of what
    /// is pending, to be written next time. At most `cap` sightings are held; the oldest beyond
    /// it are dropped and their number returned. Restored sightings are not refined further.
    pub fn restore(&mut self, mut batch: Vec<Sighting>, cap: usize) -> usize {
        let shift = batch.len();
        for w in self.peers.values_mut() {
            w.pending_index = w.pending_index.map(|i| i + shift);
        }
        batch.append(&mut self.pending);
        self.pending = batch;
        let dropped = self.pending.len().saturating_sub(cap);
        if dropped > 0 {
            self.pending.drain(..dropped);
            for w in self.peers.values_mut() {
                w.pending_index = w.pending_index.and_then(|i| i.checked_sub(dropped));
            }
        }
        dropped
    }

    /// Forgets peers whose window started before `t`. IDs rotate every 10–15 minutes, so
    /// without this the map would hold every ID ever heard. A peer with a pending sighting is
    /// kept, so its RSSI refinement goes on.
    pub fn forget_older_than(&mut self, t: UnixSeconds) {
        self.peers
            .retain(|_, w| w.logged_at >= t || w.pending_index.is_some());
    }

    /// Peers currently tracked.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Aem, RollingId, Rpi};

    fn bz(b: u8) -> PeerId {
        PeerId::Bluezone(RollingId([b; 12]))
    }
    fn ga(b: u8) -> PeerId {
        PeerId::Gaen(Rpi([b; 16]))
    }
    fn s(peer: PeerId, time: i64, rssi: i8) -> Sighting {
        Sighting {
            peer,
            time,
            rssi,
            tx_power: None,
            aem: matches!(peer, PeerId::Gaen(_)).then_some(Aem([1; 4])),
        }
    }

    #[test]
    fn one_sighting_per_peer_per_window_with_mean_rssi() {
        let mut d = Dedup::new(30, ProtocolFilter::ALL);
        assert_eq!(d.offer(s(bz(1), 100, -60)), Offered::New);
        assert_eq!(d.offer(s(bz(1), 110, -70)), Offered::Merged);
        assert_eq!(d.offer(s(bz(1), 129, -71)), Offered::Merged);
        assert_eq!(d.offer(s(bz(2), 110, -50)), Offered::New);
        // The window is 30 s from the logged sighting: 130 starts a new one.
        assert_eq!(d.offer(s(bz(1), 130, -40)), Offered::New);
        let p = d.pending();
        assert_eq!(p.len(), 3);
        // Mean of -60, -70, -71 = -67; time and peer of the first reception stay.
        assert_eq!((p[0].peer, p[0].time, p[0].rssi), (bz(1), 100, -67));
        assert_eq!((p[1].peer, p[1].rssi), (bz(2), -50));
        assert_eq!((p[2].peer, p[2].time, p[2].rssi), (bz(1), 130, -40));
    }

    #[test]
    fn after_take_the_window_still_holds_but_nothing_changes() {
        let mut d = Dedup::new(30, ProtocolFilter::ALL);
        d.offer(s(ga(1), 100, -60));
        let batch = d.take_pending();
        assert_eq!(batch.len(), 1);
        assert_eq!(d.offer(s(ga(1), 105, -90)), Offered::Duplicate);
        assert!(d.pending().is_empty());
        assert_eq!(batch[0].rssi, -60);
        assert_eq!(d.offer(s(ga(1), 131, -90)), Offered::New);
    }

    #[test]
    fn protocols_not_logged_are_filtered() {
        let only_gaen = ProtocolFilter {
            bluezone: false,
            gaen: true,
        };
        let mut d = Dedup::new(30, only_gaen);
        assert_eq!(d.offer(s(bz(1), 100, -60)), Offered::Filtered);
        assert_eq!(d.offer(s(ga(1), 100, -60)), Offered::New);
        assert_eq!(d.pending().len(), 1);
        assert_eq!(d.peers(), 1);
    }

    #[test]
    fn zero_window_keeps_everything() {
        let mut d = Dedup::new(0, ProtocolFilter::ALL);
        assert_eq!(d.offer(s(bz(1), 100, -60)), Offered::New);
        assert_eq!(d.offer(s(bz(1), 100, -61)), Offered::New);
        assert_eq!(d.pending().len(), 2);
    }

    #[test]
    fn a_failed_write_is_restored_in_front_and_capped() {
        let mut d = Dedup::new(30, ProtocolFilter::ALL);
        for i in 0..4 {
            d.offer(s(bz(i), 100, -60));
        }
        let batch = d.take_pending();
        d.offer(s(bz(9), 101, -50));
        assert_eq!(d.restore(batch, 10), 0);
        let peers: Vec<_> = d.pending().iter().map(|s| s.peer).collect();
        assert_eq!(peers, [bz(0), bz(1), bz(2), bz(3), bz(9)]);
        // The newer pending sighting is still refined, at its new index.
        assert_eq!(d.offer(s(bz(9), 102, -60)), Offered::Merged);
        assert_eq!(d.pending()[4].rssi, -55);
        // Restored ones are not.
        assert_eq!(d.offer(s(bz(0), 102, -90)), Offered::Duplicate);

        // Over the cap: the oldest go.
        let batch = d.take_pending();
        assert_eq!(d.restore(batch, 3), 2);
        let peers: Vec<_> = d.pending().iter().map(|s| s.peer).collect();
        assert_eq!(peers, [bz(2), bz(3), bz(9)]);
    }

    #[test]
    fn restore_with_a_cap_keeps_newer_indices_right() {
        let mut d = Dedup::new(30, ProtocolFilter::ALL);
        d.offer(s(bz(0), 100, -60));
        d.offer(s(bz(1), 100, -60));
        let batch = d.take_pending();
        d.offer(s(bz(2), 100, -60));
        d.offer(s(bz(3), 100, -60));
        // 4 held, cap 3: bz(0) goes; bz(2), bz(3) still refine at their shifted places.
        assert_eq!(d.restore(batch, 3), 1);
        assert_eq!(d.offer(s(bz(3), 101, -40)), Offered::Merged);
        assert_eq!(d.offer(s(bz(2), 101, -80)), Offered::Merged);
        let got: Vec<_> = d.pending().iter().map(|s| (s.peer, s.rssi)).collect();
        assert_eq!(got, [(bz(1), -60), (bz(2), -70), (bz(3), -50)]);
    }

    #[test]
    fn old_peers_are_forgotten_but_not_while_pending() {
        let mut d = Dedup::new(30, ProtocolFilter::ALL);
        d.offer(s(bz(1), 100, -60));
        d.forget_older_than(200);
        assert_eq!(d.peers(), 1, "still pending");
        d.take_pending();
        d.forget_older_than(200);
        assert_eq!(d.peers(), 0);
        assert_eq!(d.offer(s(bz(1), 110, -60)), Offered::New);
    }
}
