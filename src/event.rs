//! The input contract v1: the JSON events that lots' edge systems publish to Kafka,
//! decoded and validated once per record.
//!
//! Every rejection names the offending field path (`data.free`, `data.photo.jpeg_base64`)
//! and says in plain words what is wrong, so an operator reading a dead letter knows what
//! the producer must fix. The JSON Schemas in `schemas/` describe the same contract; a test
//! proves that both agree on every example in `schemas/examples/`.
//!
//! Unknown fields are ignored (producers may add optional fields without breaking
//! lotbridge); unknown event types and versions are rejected.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use std::fmt;

mod checks;
mod decode;

pub use checks::timestamp;
use decode::present_or_null;
pub use decode::{decode, decode_with, DecodeError, DecodeLimits};

/// The only contract version this build understands.
pub const CONTRACT_VERSION: u64 = 1;
/// Longest event id, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// Longest platform lot code, in characters.
pub const MAX_LOT_CHARS: usize = 64;
/// Longest free-text field (names, addresses, brands, gates), in characters.
pub const MAX_TEXT_CHARS: usize = 256;
/// Longest plate, in characters.
pub const MAX_PLATE_CHARS: usize = 32;
/// Longest base64 photo text, in bytes (8 MiB).
pub const MAX_PHOTO_BASE64_BYTES: usize = 8 * 1024 * 1024;
/// Largest space count a lot may report.
pub const MAX_SPACES: u32 = 1_000_000;
/// Most platform lots one coupon may name.
pub const MAX_COUPON_LOTS: usize = 100;

/// One decoded, validated event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Unique id of the event (1..=64 characters).
    pub id: String,
    /// Platform lot code the event belongs to; also the Kafka key.
    pub lot: String,
    /// When it happened, with the producer's UTC offset.
    pub at: DateTime<FixedOffset>,
    /// The type-specific payload.
    pub data: EventData,
}

impl Event {
    /// The event's type, a bounded value fit for metric labels.
    pub fn event_type(&self) -> EventType {
        self.data.event_type()
    }

    /// The photo carried by a vehicle event, if any.
    pub fn photo(&self) -> Option<&Photo> {
        match &self.data {
            EventData::VehicleEntered(p) => p.photo.as_ref(),
            EventData::VehicleExited(e) => e.vehicle.photo.as_ref(),
            _ => None,
        }
    }
}

/// The payload of an event, by type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventData {
    /// `lot.upserted`: a lot was created or its information changed.
    LotUpserted(LotInfo),
    /// `lot.deleted`: the lot no longer exists.
    LotDeleted,
    /// `lot.heartbeat`: the lot's edge system is alive.
    LotHeartbeat,
    /// `spaces.changed`: the lot's free-space count changed.
    SpacesChanged(Spaces),
    /// `vehicle.entered`: a vehicle passed an entrance.
    VehicleEntered(Vehicle),
    /// `vehicle.exited`: a vehicle left, with what it paid.
    VehicleExited(Exit),
    /// `coupon.granted`: a time-deduction coupon was granted to a plate or a phone.
    CouponGranted(CouponGrant),
    /// `member.coupons.requested`: a lookup of a member's coupons.
    MemberCouponsRequested(MemberCouponQuery),
}

impl EventData {
    /// The type of this payload.
    pub fn event_type(&self) -> EventType {
        match self {
            EventData::LotUpserted(_) => EventType::LotUpserted,
            EventData::LotDeleted => EventType::LotDeleted,
            EventData::LotHeartbeat => EventType::LotHeartbeat,
            EventData::SpacesChanged(_) => EventType::SpacesChanged,
            EventData::VehicleEntered(_) => EventType::VehicleEntered,
            EventData::VehicleExited(_) => EventType::VehicleExited,
            EventData::CouponGranted(_) => EventType::CouponGranted,
            EventData::MemberCouponsRequested(_) => EventType::MemberCouponsRequested,
        }
    }
}

/// The event types of contract v1 (bounded: usable as a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// `lot.upserted`
    LotUpserted,
    /// `lot.deleted`
    LotDeleted,
    /// `lot.heartbeat`
    LotHeartbeat,
    /// `spaces.changed`
    SpacesChanged,
    /// `vehicle.entered`
    VehicleEntered,
    /// `vehicle.exited`
    VehicleExited,
    /// `coupon.granted`
    CouponGranted,
    /// `member.coupons.requested`
    MemberCouponsRequested,
    /// `member.coupons.listed` (an output of lotbridge, never accepted as input)
    MemberCouponsListed,
}

impl EventType {
    /// Every input type, in contract order.
    pub const INPUTS: [EventType; 8] = [
        EventType::LotUpserted,
        EventType::LotDeleted,
        EventType::LotHeartbeat,
        EventType::SpacesChanged,
        EventType::VehicleEntered,
        EventType::VehicleExited,
        EventType::CouponGranted,
        EventType::MemberCouponsRequested,
    ];

    /// The wire name (`spaces.changed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::LotUpserted => "lot.upserted",
            EventType::LotDeleted => "lot.deleted",
            EventType::LotHeartbeat => "lot.heartbeat",
            EventType::SpacesChanged => "spaces.changed",
            EventType::VehicleEntered => "vehicle.entered",
            EventType::VehicleExited => "vehicle.exited",
            EventType::CouponGranted => "coupon.granted",
            EventType::MemberCouponsRequested => "member.coupons.requested",
            EventType::MemberCouponsListed => "member.coupons.listed",
        }
    }

    /// Parses an input type name; `None` for anything else.
    pub fn parse_input(name: &str) -> Option<EventType> {
        EventType::INPUTS.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Map datum of a lot's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum CoordinateSystem {
    /// GPS.
    #[serde(rename = "WGS84")]
    Wgs84,
    /// Gaode, Tencent, Google China.
    #[serde(rename = "GCJ02")]
    Gcj02,
    /// Baidu.
    #[serde(rename = "BD09")]
    Bd09,
}

impl CoordinateSystem {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CoordinateSystem::Wgs84 => "WGS84",
            CoordinateSystem::Gcj02 => "GCJ02",
            CoordinateSystem::Bd09 => "BD09",
        }
    }
}

/// `lot.upserted` data.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LotInfo {
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Longitude in degrees, -180..=180.
    #[serde(default)]
    pub longitude: Option<f64>,
    /// Latitude in degrees, -90..=90.
    #[serde(default)]
    pub latitude: Option<f64>,
    /// Street address.
    #[serde(default)]
    pub address: Option<String>,
    /// Datum of longitude/latitude.
    pub coordinate_system: CoordinateSystem,
    /// Total spaces, when known.
    #[serde(default)]
    pub total_spaces: Option<u32>,
}

/// `spaces.changed` data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Spaces {
    /// Total spaces.
    pub total: u32,
    /// Free spaces, at most `total`.
    pub free: u32,
}

/// Kind of vehicle, as the lot's camera classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleType {
    /// Passenger car.
    Small,
    /// Large vehicle (bus, coach).
    Large,
    /// Goods vehicle.
    Truck,
    /// Police vehicle.
    Police,
    /// Temporary plate.
    Temporary,
    /// No plate.
    Unlicensed,
    /// New-energy (green) plate.
    NewEnergy,
}

/// A photo taken at the gate.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Photo {
    /// File name, if the edge system gave one.
    #[serde(default)]
    pub name: Option<String>,
    /// The JPEG, standard base64 with padding.
    pub jpeg_base64: String,
}

/// `vehicle.entered` data, and the common part of `vehicle.exited`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Vehicle {
    /// Plate as read, `None` for a vehicle without plate (the field must still be present).
    #[serde(deserialize_with = "present_or_null")]
    pub plate: Option<String>,
    /// Plate colour (`blue`, `蓝`, ...), free text.
    #[serde(default)]
    pub plate_color: Option<String>,
    /// Kind of vehicle.
    pub vehicle_type: VehicleType,
    /// Brand, free text.
    #[serde(default)]
    pub brand: Option<String>,
    /// Name of the entrance or exit.
    pub gate: String,
    /// Photo at the gate.
    #[serde(default)]
    pub photo: Option<Photo>,
}

/// How an exit was paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// Cash.
    Cash,
    /// Electronic toll collection.
    Etc,
    /// WeChat Pay.
    Wechat,
    /// Alipay.
    Alipay,
    /// Credit card.
    CreditCard,
    /// Stored-value card.
    StoredValue,
    /// Monthly pass.
    MonthlyPass,
    /// Anything else.
    Other,
}

/// `vehicle.exited` data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exit {
    /// The vehicle and gate, as on entry.
    #[serde(flatten)]
    pub vehicle: Vehicle,
    /// Minutes parked.
    pub parked_minutes: u32,
    /// Fee due, in cents (fen).
    pub fee_payable_cents: u64,
    /// Fee paid, in cents (fen).
    pub fee_paid_cents: u64,
    /// When it was paid.
    pub paid_at: Option<DateTime<FixedOffset>>,
    /// How it was paid.
    pub payment_method: Option<PaymentMethod>,
}

/// Who receives a coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CouponTarget {
    /// A plate.
    Plate(String),
    /// A phone number.
    Phone(String),
}

/// `coupon.granted` data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CouponGrant {
    /// Plate or phone.
    pub to: CouponTarget,
    /// Platform lot codes where the coupon may be used.
    pub lots: Vec<String>,
    /// Minutes deducted.
    pub minutes: u32,
    /// Start of validity.
    pub valid_from: DateTime<FixedOffset>,
    /// End of validity, after `valid_from`.
    pub valid_until: DateTime<FixedOffset>,
    /// Coupon-source code agreed with the barrier platform.
    pub source: String,
}

/// Coupon state filter for a member lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CouponStatus {
    /// Not yet used.
    Usable,
    /// Already used.
    Used,
    /// Expired.
    Expired,
}

/// `member.coupons.requested` data.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct MemberCouponQuery {
    /// Member id at the coupon platform.
    pub member_id: String,
    /// Only coupons in this state.
    #[serde(default)]
    pub status: Option<CouponStatus>,
    /// Only coupons usable from this order amount, in cents.
    #[serde(default)]
    pub min_amount_cents: Option<u64>,
    /// Store serial number for multi-store members.
    #[serde(default)]
    pub store_sn: Option<String>,
}

/// One coupon in a `member.coupons.listed` answer, normalized across coupon platforms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ListedCoupon {
    /// Id of the member's coupon.
    pub id: String,
    /// Id of the coupon definition.
    pub coupon_id: String,
    /// Id of the coupon definition as the platform's nested coupon object gives it (zvcms
    /// `coupon.id`); usually equal to `coupon_id`, carried as sent. Empty when not sent.
    #[serde(default)]
    pub definition_id: String,
    /// Title.
    pub title: String,
    /// The coupon definition's description (zvcms `coupon.desc`); empty when not sent.
    #[serde(default)]
    pub description: String,
    /// `amount`, `discount`, or `unknown` when the platform's value fits neither.
    pub kind: String,
    /// Minimum order amount in cents, 0 = no minimum.
    pub min_amount_cents: u64,
    /// Validity start (RFC 3339).
    pub valid_from: Option<String>,
    /// Validity end (RFC 3339).
    pub valid_until: Option<String>,
    /// `usable`, `used`, `expired`, or `unknown` when the platform's value fits none.
    pub status: String,
    /// Redemption code.
    pub verify_code: Option<String>,
    /// Whether the coupon is locked.
    pub locked: bool,
}

/// `member.coupons.listed` data: the answer to a member-coupon lookup.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CouponsListed {
    /// Id of the `member.coupons.requested` event this answers.
    pub in_reply_to: String,
    /// The member.
    pub member_id: String,
    /// The coupons found.
    pub coupons: Vec<ListedCoupon>,
}

/// Builds the JSON of a `member.coupons.listed` event for `lot` (the request's lot).
pub fn encode_listed(lot: &str, id: &str, at: DateTime<FixedOffset>, data: &CouponsListed) -> Vec<u8> {
    let value = serde_json::json!({
        "v": CONTRACT_VERSION,
        "id": id,
        "type": EventType::MemberCouponsListed.as_str(),
        "lot": lot,
        "at": at.to_rfc3339(),
        "data": data,
    });
    value.to_string().into_bytes()
}
