//! The synthetic city: lots with gates, cars that enter and later leave with a photo,
//! space counts that follow them, heartbeats, coupon grants and member-coupon lookups at
//! roughly the ratios a real city sends them. Pure: it returns records, it sends nothing.

use super::photos::PhotoPool;
use chrono::{SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// One record to produce: Kafka key (the lot), value, and what a sink must receive for it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Kafka key: the lot code, so one lot's events stay in order on one partition.
    pub key: String,
    /// The contract event (or, for injected faults, something that is not one).
    pub value: Vec<u8>,
    /// What the vendors must record for this event, when every copy must arrive.
    pub track: Option<Track>,
}

/// Identity of an event as a vendor records it (the simulators know no event ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Track {
    /// A vehicle passage: lot index, plate, and whether it is an exit.
    Vehicle {
        /// Index of the lot.
        lot: usize,
        /// Plate (unique per visit).
        plate: String,
        /// Exit (true) or entry.
        exit: bool,
    },
    /// A coupon granted to a plate at a lot.
    Coupon {
        /// Index of the lot.
        lot: usize,
        /// Plate (unique per grant).
        plate: String,
    },
    /// A member-coupon lookup.
    Member {
        /// Member id (digits).
        id: u64,
    },
}

/// Code of lot `i` on the platform (the events' `lot`).
pub fn lot_code(i: usize) -> String {
    format!("L{i:04}")
}

struct Lot {
    total: u32,
    parked: Vec<String>,
}

/// The city's state and its random source.
pub struct City {
    rng: StdRng,
    lots: Vec<Lot>,
    coupon_lots: Vec<usize>,
    photos: PhotoPool,
    seq: u64,
    plates: u64,
}

impl City {
    /// A city of `lots` lots; `coupon_lot` says which lots take coupons.
    pub fn new(lots: usize, seed: u64, coupon_lot: impl Fn(usize) -> bool) -> City {
        let mut rng = StdRng::seed_from_u64(seed);
        let lots: Vec<Lot> = (0..lots).map(|_| Lot { total: rng.gen_range(40..400), parked: Vec::new() }).collect();
        let coupon_lots = (0..lots.len()).filter(|i| coupon_lot(*i)).collect();
        City { rng, lots, coupon_lots, photos: PhotoPool::new(seed), seq: 0, plates: 0 }
    }

    /// Base64 sizes of the photos in use.
    pub fn photo_sizes(&self) -> Vec<usize> {
        self.photos.sizes()
    }

    /// One `lot.upserted` per lot: the opening of the city.
    pub fn opening(&mut self) -> Vec<Record> {
        (0..self.lots.len())
            .map(|i| {
                let data = json!({"name": format!("Demo lot {i}"), "coordinate_system": "GCJ02",
                    "longitude": 112.5 + i as f64 / 1000.0, "latitude": 37.8, "total_spaces": self.lots[i].total,
                    "address": format!("{i} Demo Road")});
                self.record(i, "lot.upserted", data, None)
            })
            .collect()
    }

    /// The next burst of records (one event, plus the space count it changes).
    pub fn step(&mut self) -> Vec<Record> {
        let roll: u32 = self.rng.gen_range(0..100);
        match roll {
            0..=5 if !self.coupon_lots.is_empty() => vec![self.coupon()],
            6..=9 => vec![self.member()],
            10..=17 => {
                let lot = self.rng.gen_range(0..self.lots.len());
                vec![self.record(lot, "lot.heartbeat", json!({}), None)]
            }
            _ => self.vehicle(),
        }
    }

    /// Records that are not valid events, for the fault demo: each is dead-lettered.
    pub fn invalid(&mut self, n: usize) -> Vec<Record> {
        (0..n)
            .map(|k| {
                let lot = self.rng.gen_range(0..self.lots.len());
                let value = match k % 3 {
                    0 => b"{not json".to_vec(),
                    1 => self.envelope(lot, "spaces.changed", json!({"total": 5, "free": 9})),
                    _ => self.envelope(lot, "member.coupons.requested", json!({"member_id": "M-abc"})),
                };
                Record { key: lot_code(lot), value, track: None }
            })
            .collect()
    }

    fn vehicle(&mut self) -> Vec<Record> {
        let lot = self.rng.gen_range(0..self.lots.len());
        let full = self.lots[lot].parked.len() as u32 >= self.lots[lot].total;
        let leave = !self.lots[lot].parked.is_empty() && (full || self.rng.gen_bool(0.45));
        let mut out = vec![if leave { self.exit(lot) } else { self.entry(lot) }];
        if self.rng.gen_bool(0.3) {
            let l = &self.lots[lot];
            let data = json!({"total": l.total, "free": l.total - l.parked.len() as u32});
            out.push(self.record(lot, "spaces.changed", data, None));
        }
        out
    }

    fn entry(&mut self, lot: usize) -> Record {
        let plate = self.new_plate();
        self.lots[lot].parked.push(plate.clone());
        let data = self.vehicle_data(&plate, "East gate");
        self.record(lot, "vehicle.entered", data, Some(Track::Vehicle { lot, plate, exit: false }))
    }

    fn exit(&mut self, lot: usize) -> Record {
        let i = self.rng.gen_range(0..self.lots[lot].parked.len());
        let plate = self.lots[lot].parked.swap_remove(i);
        let mut data = self.vehicle_data(&plate, "West gate");
        let minutes: u32 = self.rng.gen_range(5..600);
        let fee = u64::from(minutes / 30) * 200;
        data["parked_minutes"] = json!(minutes);
        data["fee_payable_cents"] = json!(fee);
        data["fee_paid_cents"] = json!(fee);
        data["payment_method"] = json!(["wechat", "alipay", "etc", "cash"][self.rng.gen_range(0..4)]);
        self.record(lot, "vehicle.exited", data, Some(Track::Vehicle { lot, plate, exit: true }))
    }

    fn vehicle_data(&mut self, plate: &str, gate: &str) -> Value {
        let kind = ["small", "small", "small", "new_energy", "large", "truck"][self.rng.gen_range(0..6)];
        json!({"plate": plate, "plate_color": "blue", "vehicle_type": kind, "gate": gate,
            "photo": {"jpeg_base64": self.photos.take()}})
    }

    fn coupon(&mut self) -> Record {
        let lot = self.coupon_lots[self.rng.gen_range(0..self.coupon_lots.len())];
        let plate = self.new_plate();
        let now = Utc::now();
        let data = json!({"to": {"plate": plate}, "lots": [lot_code(lot)], "minutes": 60,
            "valid_from": now.to_rfc3339_opts(SecondsFormat::Secs, true),
            "valid_until": (now + chrono::TimeDelta::hours(24)).to_rfc3339_opts(SecondsFormat::Secs, true),
            "source": "1001"});
        self.record(lot, "coupon.granted", data, Some(Track::Coupon { lot, plate }))
    }

    fn member(&mut self) -> Record {
        let lot = self.rng.gen_range(0..self.lots.len());
        self.seq += 1;
        let id = 100_000 + self.seq;
        let data = json!({"member_id": id.to_string(), "status": "usable"});
        self.record(lot, "member.coupons.requested", data, Some(Track::Member { id }))
    }

    /// A plate never used before in this run: province, letter, five digits.
    fn new_plate(&mut self) -> String {
        self.plates += 1;
        let letter = (b'A' + (self.plates / 100_000 % 26) as u8) as char;
        format!("晋{letter}{:05}", self.plates % 100_000)
    }

    fn record(&mut self, lot: usize, ty: &str, data: Value, track: Option<Track>) -> Record {
        Record { key: lot_code(lot), value: self.envelope(lot, ty, data), track }
    }

    fn envelope(&mut self, lot: usize, ty: &str, data: Value) -> Vec<u8> {
        self.seq += 1;
        let at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let id = format!("demo-{}", self.seq);
        json!({"v": 1, "id": id, "type": ty, "lot": lot_code(lot), "at": at, "data": data}).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, EventType};
    use std::collections::HashMap;

    #[test]
    fn the_city_sends_valid_events_at_realistic_ratios() {
        let mut city = City::new(20, 1, |i| i % 3 == 0);
        let records: Vec<Record> = (0..2000).flat_map(|_| city.step()).collect();
        let mut by_type: HashMap<EventType, usize> = HashMap::new();
        for r in &records {
            let event = decode(&r.value).expect("valid event");
            assert_eq!(event.lot, r.key, "keyed by lot");
            *by_type.entry(event.event_type()).or_default() += 1;
        }
        let vehicles = by_type[&EventType::VehicleEntered] + by_type[&EventType::VehicleExited];
        assert!(vehicles > records.len() / 2, "vehicles dominate: {by_type:?}");
        assert!(by_type[&EventType::VehicleExited] > 0 && by_type[&EventType::SpacesChanged] > 0);
        assert!(by_type[&EventType::CouponGranted] > 0 && by_type[&EventType::MemberCouponsRequested] > 0);
    }

    #[test]
    fn exits_follow_entries_and_plates_are_unique_per_visit() {
        let mut city = City::new(3, 2, |_| true);
        let mut parked = std::collections::HashSet::new();
        let mut seen = std::collections::HashSet::new();
        for r in (0..500).flat_map(|_| city.step()) {
            if let Some(Track::Vehicle { plate, exit, .. }) = r.track {
                if exit {
                    assert!(parked.remove(&plate), "{plate} left without entering");
                } else {
                    assert!(seen.insert(plate.clone()), "{plate} reused");
                    parked.insert(plate);
                }
            }
        }
    }

    #[test]
    fn injected_records_are_all_invalid() {
        let mut city = City::new(3, 3, |_| true);
        let bad = city.invalid(6);
        assert_eq!(bad.len(), 6);
        let decoded = bad.iter().filter(|r| decode(&r.value).is_ok()).count();
        assert_eq!(decoded, 2, "member ids that zvcms cannot map still decode");
    }
}
