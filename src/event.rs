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
use serde_json::value::RawValue;
use std::fmt;

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

/// Why a record is not a valid event: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", if field.is_empty() { "record" } else { field.as_str() })]
pub struct DecodeError {
    /// Dotted path of the offending field (`data.photo.jpeg_base64`), empty for the whole record.
    pub field: String,
    /// What is wrong, in plain words.
    pub reason: String,
}

impl DecodeError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DecodeError { field: field.into(), reason: reason.into() }
    }
}

/// Limits applied while decoding that JSON Schema cannot express.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest record accepted, in bytes.
    pub max_record_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_record_bytes: 10 * 1024 * 1024 }
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    v: serde_json::Number,
    id: String,
    // Borrowed unless escaped: only read, never kept.
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    lot: String,
    #[serde(borrow)]
    at: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct RawExit {
    #[serde(deserialize_with = "present_or_null")]
    plate: Option<String>,
    #[serde(default)]
    plate_color: Option<String>,
    vehicle_type: VehicleType,
    #[serde(default)]
    brand: Option<String>,
    gate: String,
    #[serde(default)]
    photo: Option<Photo>,
    parked_minutes: u32,
    fee_payable_cents: u64,
    fee_paid_cents: u64,
    #[serde(default)]
    paid_at: Option<String>,
    #[serde(default)]
    payment_method: Option<PaymentMethod>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default)]
    plate: Option<String>,
    #[serde(default)]
    phone: Option<String>,
}

#[derive(Deserialize)]
struct RawGrant {
    to: RawTarget,
    lots: Vec<String>,
    minutes: u32,
    valid_from: String,
    valid_until: String,
    source: String,
}

#[derive(Deserialize)]
struct Empty {}

/// A field that must be present but may be `null` (serde treats a missing `Option` as `None`
/// unless a `deserialize_with` is given).
fn present_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// Decodes and validates one Kafka record value with default limits.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    decode_with(bytes, &DecodeLimits::default())
}

/// Decodes and validates one Kafka record value.
pub fn decode_with(bytes: &[u8], limits: &DecodeLimits) -> Result<Event, DecodeError> {
    if bytes.len() > limits.max_record_bytes {
        return Err(DecodeError::new(
            "",
            format!("record is {} bytes, over the limit of {} bytes", bytes.len(), limits.max_record_bytes),
        ));
    }
    check_object("", bytes).map_err(|e| DecodeError::new("", format!("not a JSON object: the record {}", e.reason)))?;
    // serde_json skips ignored fields without checking their UTF-8; JSON must be UTF-8 throughout.
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(DecodeError::new("", format!("not valid JSON: invalid UTF-8 at byte {}", e.valid_up_to())));
    }
    let raw: RawEnvelope = parse(bytes, "")?;
    if raw.v.as_u64() != Some(CONTRACT_VERSION) {
        return Err(DecodeError::new(
            "v",
            format!("unsupported contract version {}, this build reads version 1", raw.v),
        ));
    }
    check_len("id", &raw.id, 1, MAX_ID_CHARS)?;
    check_len("lot", &raw.lot, 1, MAX_LOT_CHARS)?;
    check_no_control("id", &raw.id)?;
    check_no_control("lot", &raw.lot)?;
    if raw.ty == EventType::MemberCouponsListed.as_str() {
        return Err(DecodeError::new("type", "member.coupons.listed is an output of lotbridge, not an input"));
    }
    let ty = EventType::parse_input(&raw.ty)
        .ok_or_else(|| DecodeError::new("type", format!("unknown event type {:?}", truncate(&raw.ty))))?;
    let at = timestamp("at", &raw.at)?;
    let data = decode_data(ty, raw.data.get().as_bytes())?;
    Ok(Event { id: raw.id, lot: raw.lot, at, data })
}

fn decode_data(ty: EventType, json: &[u8]) -> Result<EventData, DecodeError> {
    check_object("data", json)?;
    Ok(match ty {
        EventType::LotUpserted => EventData::LotUpserted(lot_info(parse(json, "data")?)?),
        EventType::LotDeleted => {
            parse::<Empty>(json, "data")?;
            EventData::LotDeleted
        }
        EventType::LotHeartbeat => {
            parse::<Empty>(json, "data")?;
            EventData::LotHeartbeat
        }
        EventType::SpacesChanged => EventData::SpacesChanged(spaces(parse(json, "data")?)?),
        EventType::VehicleEntered => EventData::VehicleEntered(vehicle(parse(json, "data")?)?),
        EventType::VehicleExited => EventData::VehicleExited(exit(parse(json, "data")?)?),
        EventType::CouponGranted => EventData::CouponGranted(grant(parse(json, "data")?)?),
        EventType::MemberCouponsRequested => EventData::MemberCouponsRequested(query(parse(json, "data")?)?),
        EventType::MemberCouponsListed => return Err(DecodeError::new("type", "is an output type, not an input")),
    })
}

/// Parses JSON into `T`, turning serde's error into a field path and a plain reason.
fn parse<'de, T: Deserialize<'de>>(json: &'de [u8], prefix: &str) -> Result<T, DecodeError> {
    // Nearly every record is valid, and tracking the field path costs about as much as the
    // parse itself: parse plainly first, and again with the path only to explain a failure
    // (the same deserializer underneath, so both accept exactly the same input).
    if let Ok(value) = serde_json::from_slice(json) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| path_error(prefix, e, json))?;
    de.end().map_err(|e| DecodeError::new("", format!("not a single JSON object: {e}")))?;
    Ok(value)
}

fn path_error(prefix: &str, e: serde_path_to_error::Error<serde_json::Error>, json: &[u8]) -> DecodeError {
    let mut path = e.path().to_string();
    if path == "." {
        path.clear();
    }
    let inner = e.into_inner();
    let mut reason = inner.to_string();
    // serde appends " at line L column C"; the field path says more to a producer.
    if let Some(pos) = reason.rfind(" at line ") {
        reason.truncate(pos);
    }
    if let Some(name) = reason.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
        path = join(&path, name);
        reason = "is required but missing".to_string();
    } else if let Some(name) = reason.strip_prefix("duplicate field `").and_then(|r| r.strip_suffix('`')) {
        path = join(&path, name);
        reason = "appears more than once".to_string();
    } else if (inner.is_syntax() || inner.is_eof()) && !well_formed(json) {
        // serde_json also files `null` for an enum and 1e309 under syntax: those name their field.
        return DecodeError::new("", format!("not valid JSON: {reason}"));
    } else {
        reason = plain_words(&reason);
    }
    DecodeError::new(join(prefix, &path), reason)
}

/// Whether `json` is one well-formed JSON value (the error path only: a second, cheap pass).
fn well_formed(json: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
}

/// Rewrites serde's `invalid type: string "x", expected u32` into words a producer can act
/// on (`must be a whole number from 0 up, got the string "x"`), with the value cut short.
fn plain_words(reason: &str) -> String {
    let split = reason.strip_prefix("invalid type: ").or_else(|| reason.strip_prefix("invalid value: "));
    let Some((got, expected)) = split.and_then(|r| r.rsplit_once(", expected ")) else {
        return cut_quoted(reason);
    };
    let want = match expected {
        "u32" | "u64" => "a whole number from 0 up",
        "f64" => "a number",
        "a sequence" => "an array",
        "a string" => "a string",
        e if e.starts_with("struct ") || e == "a map" => "an object",
        other => other,
    };
    let got =
        got.replace("floating point", "the number").replace("integer", "the number").replace("string ", "the string ");
    let got: String = if got.chars().count() > 48 { got.chars().take(48).chain("…".chars()).collect() } else { got };
    format!("must be {want}, got {}", got.replace('`', ""))
}

/// Cuts what serde quotes from the record (`unknown variant `…``, `unknown field `…``) to 48
/// characters, and the whole reason to 300: it goes into a dead-letter header, and a record
/// may hold megabytes in one string.
fn cut_quoted(reason: &str) -> String {
    let parts: Vec<String> = reason
        .split('`')
        .enumerate()
        .map(|(i, part)| match i % 2 == 1 && part.chars().count() > 48 {
            true => part.chars().take(48).chain("…".chars()).collect(),
            false => part.to_string(),
        })
        .collect();
    let joined = parts.join("`");
    if joined.chars().count() > 300 {
        return joined.chars().take(300).chain("…".chars()).collect();
    }
    joined
}

/// Serde reads a struct from a JSON array too; the contract wants objects only.
fn check_object(field: &str, json: &[u8]) -> Result<(), DecodeError> {
    match json.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        Some(_) => Err(DecodeError::new(field, "must be a JSON object")),
        None => Err(DecodeError::new(field, "is empty")),
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => format!("{a}.{b}"),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), DecodeError> {
    // Byte length bounds char count from above; count chars only when it matters.
    let chars = if value.len() <= max { value.chars().count() } else { value.chars().take(max + 1).count() };
    if chars < min {
        return Err(DecodeError::new(field, "must not be empty"));
    }
    if chars > max {
        return Err(DecodeError::new(field, format!("is longer than {max} characters")));
    }
    Ok(())
}

/// Ids and lot codes end up in URLs, headers and logs: no line breaks, NULs or escapes.
fn check_no_control(field: &str, value: &str) -> Result<(), DecodeError> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(DecodeError::new(field, format!("must not contain control characters, found {c:?}"))),
        None => Ok(()),
    }
}

fn check_opt(field: &str, value: &Option<String>, max: usize) -> Result<(), DecodeError> {
    match value {
        Some(v) => check_len(field, v, 0, max),
        None => Ok(()),
    }
}

/// Parses an RFC 3339 timestamp with an explicit offset and a year in 2000..=2099.
pub fn timestamp(field: &str, text: &str) -> Result<DateTime<FixedOffset>, DecodeError> {
    if !rfc3339_shape(text.as_bytes()) {
        return Err(DecodeError::new(
            field,
            format!("{:?} is not an RFC 3339 timestamp like 2026-11-23T08:00:00+08:00", truncate(text)),
        ));
    }
    DateTime::parse_from_rfc3339(text)
        .map_err(|e| DecodeError::new(field, format!("{:?} is not a valid date and time: {e}", truncate(text))))
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)` with year 20xx: the same shape as the schemas' pattern.
fn rfc3339_shape(b: &[u8]) -> bool {
    fn digits(b: &[u8]) -> bool {
        b.iter().all(u8::is_ascii_digit)
    }
    if b.len() < 20 || &b[..2] != b"20" || !digits(&b[..4]) || b[4] != b'-' || !digits(&b[5..7]) || b[7] != b'-' {
        return false;
    }
    if !digits(&b[8..10]) || b[10] != b'T' || !digits(&b[11..13]) || b[13] != b':' || !digits(&b[14..16]) {
        return false;
    }
    // Seconds 00-59: chrono would accept a leap second at any minute.
    if b[16] != b':' || !digits(&b[17..19]) || b[17] > b'5' {
        return false;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return false;
        }
        rest = &rest[1 + n..];
    }
    match rest {
        b"Z" => true,
        [s, h1, h2, b':', m1, m2] => (*s == b'+' || *s == b'-') && digits(&[*h1, *h2, *m1, *m2]),
        _ => false,
    }
}

fn lot_info(info: LotInfo) -> Result<LotInfo, DecodeError> {
    check_opt("data.name", &info.name, MAX_TEXT_CHARS)?;
    check_opt("data.address", &info.address, MAX_TEXT_CHARS)?;
    if let Some(lon) = info.longitude {
        if !(-180.0..=180.0).contains(&lon) {
            return Err(DecodeError::new("data.longitude", format!("{lon} is outside -180..=180 degrees")));
        }
    }
    if let Some(lat) = info.latitude {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(DecodeError::new("data.latitude", format!("{lat} is outside -90..=90 degrees")));
        }
    }
    if let Some(total) = info.total_spaces {
        check_spaces("data.total_spaces", total)?;
    }
    Ok(info)
}

fn check_spaces(field: &str, n: u32) -> Result<(), DecodeError> {
    if n > MAX_SPACES {
        return Err(DecodeError::new(field, format!("{n} is more than the {MAX_SPACES} spaces a lot may have")));
    }
    Ok(())
}

fn spaces(s: Spaces) -> Result<Spaces, DecodeError> {
    check_spaces("data.total", s.total)?;
    if s.free > s.total {
        return Err(DecodeError::new("data.free", format!("{} free spaces exceed data.total ({})", s.free, s.total)));
    }
    Ok(s)
}

fn vehicle(v: Vehicle) -> Result<Vehicle, DecodeError> {
    if let Some(plate) = &v.plate {
        check_len("data.plate", plate, 1, MAX_PLATE_CHARS)?;
    }
    check_opt("data.plate_color", &v.plate_color, MAX_TEXT_CHARS)?;
    check_opt("data.brand", &v.brand, MAX_TEXT_CHARS)?;
    check_len("data.gate", &v.gate, 1, MAX_TEXT_CHARS)?;
    if let Some(photo) = &v.photo {
        check_opt("data.photo.name", &photo.name, MAX_TEXT_CHARS)?;
        check_base64("data.photo.jpeg_base64", &photo.jpeg_base64)?;
        check_jpeg("data.photo.jpeg_base64", &photo.jpeg_base64)?;
    }
    Ok(v)
}

/// Standard base64 with padding: the alphabet, and a length that is a multiple of 4.
fn check_base64(field: &str, text: &str) -> Result<(), DecodeError> {
    let b = text.as_bytes();
    if b.is_empty() {
        return Err(DecodeError::new(field, "must not be empty"));
    }
    if b.len() > MAX_PHOTO_BASE64_BYTES {
        return Err(DecodeError::new(field, format!("is longer than {MAX_PHOTO_BASE64_BYTES} bytes")));
    }
    let pad = b.iter().rev().take_while(|&&c| c == b'=').count();
    let body = &b[..b.len() - pad];
    let alphabet_ok = crate::photo::all_base64_symbols(body);
    if b.len() % 4 != 0 || pad > 2 || !alphabet_ok {
        return Err(DecodeError::new(
            field,
            "is not standard base64 (A-Z a-z 0-9 + /, padded with = to a multiple of 4)",
        ));
    }
    Ok(())
}

/// A JPEG opens with the SOI marker and a segment marker (FF D8 FF), which standard base64
/// writes as `/9j/`: anything else (a PNG, a GIF, text) is not the photo the vendors take.
fn check_jpeg(field: &str, base64: &str) -> Result<(), DecodeError> {
    if base64.starts_with("/9j/") {
        return Ok(());
    }
    let what = match base64.get(..4) {
        Some("iVBO") => "a PNG image",
        Some("R0lG") => "a GIF image",
        Some("UklG") => "a RIFF (WebP) image",
        _ => "not an image lotbridge knows",
    };
    Err(DecodeError::new(field, format!("is {what}, not a JPEG (JPEG bytes in base64 start with /9j/)")))
}

fn exit(r: RawExit) -> Result<Exit, DecodeError> {
    let vehicle = vehicle(Vehicle {
        plate: r.plate,
        plate_color: r.plate_color,
        vehicle_type: r.vehicle_type,
        brand: r.brand,
        gate: r.gate,
        photo: r.photo,
    })?;
    let paid_at = r.paid_at.as_deref().map(|t| timestamp("data.paid_at", t)).transpose()?;
    Ok(Exit {
        vehicle,
        parked_minutes: r.parked_minutes,
        fee_payable_cents: r.fee_payable_cents,
        fee_paid_cents: r.fee_paid_cents,
        paid_at,
        payment_method: r.payment_method,
    })
}

fn grant(r: RawGrant) -> Result<CouponGrant, DecodeError> {
    let to = match (r.to.plate, r.to.phone) {
        (Some(p), None) => {
            check_len("data.to.plate", &p, 1, MAX_PLATE_CHARS)?;
            CouponTarget::Plate(p)
        }
        (None, Some(p)) => {
            check_len("data.to.phone", &p, 1, 32)?;
            CouponTarget::Phone(p)
        }
        _ => return Err(DecodeError::new("data.to", "must name exactly one of plate or phone")),
    };
    if r.lots.is_empty() || r.lots.len() > MAX_COUPON_LOTS {
        return Err(DecodeError::new("data.lots", format!("must list 1 to {MAX_COUPON_LOTS} lot codes")));
    }
    for (i, lot) in r.lots.iter().enumerate() {
        check_len(&format!("data.lots[{i}]"), lot, 1, MAX_LOT_CHARS)?;
        check_no_control(&format!("data.lots[{i}]"), lot)?;
    }
    if r.minutes == 0 {
        return Err(DecodeError::new("data.minutes", "must be greater than 0"));
    }
    let valid_from = timestamp("data.valid_from", &r.valid_from)?;
    let valid_until = timestamp("data.valid_until", &r.valid_until)?;
    if valid_until <= valid_from {
        return Err(DecodeError::new("data.valid_until", "must be later than data.valid_from"));
    }
    check_len("data.source", &r.source, 1, MAX_LOT_CHARS)?;
    Ok(CouponGrant { to, lots: r.lots, minutes: r.minutes, valid_from, valid_until, source: r.source })
}

fn query(q: MemberCouponQuery) -> Result<MemberCouponQuery, DecodeError> {
    check_len("data.member_id", &q.member_id, 1, MAX_ID_CHARS)?;
    check_opt("data.store_sn", &q.store_sn, MAX_ID_CHARS)?;
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(ty: &str, data: serde_json::Value) -> Vec<u8> {
        json!({"v": 1, "id": "e-1", "type": ty, "lot": "P001", "at": "2026-11-23T08:00:00+08:00", "data": data})
            .to_string()
            .into_bytes()
    }

    fn err(bytes: &[u8]) -> DecodeError {
        decode(bytes).expect_err("must be rejected")
    }

    #[test]
    fn decodes_spaces() {
        let e = decode(&rec("spaces.changed", json!({"total": 100, "free": 7}))).unwrap();
        assert_eq!(e.data, EventData::SpacesChanged(Spaces { total: 100, free: 7 }));
        assert_eq!(e.at.offset().local_minus_utc(), 8 * 3600);
        assert_eq!(e.event_type().as_str(), "spaces.changed");
    }

    #[test]
    fn free_over_total_names_the_field() {
        let e = err(&rec("spaces.changed", json!({"total": 10, "free": 11})));
        assert_eq!(e.field, "data.free");
        assert!(e.to_string().contains("exceed"), "{e}");
    }

    #[test]
    fn missing_and_wrong_type_fields_are_named() {
        assert_eq!(err(&rec("spaces.changed", json!({"total": 10}))).field, "data.free");
        assert_eq!(err(&rec("spaces.changed", json!({"total": "10", "free": 1}))).field, "data.total");
        let e = err(br#"{"v":1,"type":"lot.heartbeat","lot":"P","at":"2026-11-23T08:00:00Z","data":{}}"#);
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("id", "is required but missing"));
    }

    #[test]
    fn duplicate_keys_and_bad_json_are_rejected() {
        let e =
            err(br#"{"v":1,"id":"a","id":"b","type":"lot.heartbeat","lot":"P","at":"2026-11-23T08:00:00Z","data":{}}"#);
        assert_eq!(e.field, "id");
        assert!(err(b"{not json").reason.starts_with("not valid JSON"));
        assert!(err(b"\xff\xfe").reason.starts_with("not a JSON object"));
        assert!(err(b"{\"v\":\"\xff\"}").reason.starts_with("not valid JSON"), "invalid UTF-8 inside a string");
        let array = br#"[1,"a","lot.heartbeat","P","2026-11-23T08:00:00Z",{}]"#;
        assert!(err(array).reason.starts_with("not a JSON object"), "serde would read a struct from an array");
        assert_eq!(err(&rec("spaces.changed", json!([10, 5]))).field, "data");
    }

    #[test]
    fn reasons_are_plain_words_and_short() {
        let e = err(&rec("spaces.changed", json!({"total": "320", "free": 1})));
        assert_eq!(e.to_string(), "data.total: must be a whole number from 0 up, got the string \"320\"");
        let photo = "A".repeat(10_000);
        let e =
            err(&rec("vehicle.entered", json!({"plate": null, "vehicle_type": "small", "gate": "E", "photo": photo})));
        assert_eq!(e.field, "data.photo");
        assert!(e.reason.starts_with("must be an object") && e.reason.len() < 120, "{e}");
        let leap =
            String::from_utf8(rec("lot.heartbeat", json!({}))).unwrap().replace("08:00:00+08:00", "08:00:60+08:00");
        assert_eq!(err(leap.as_bytes()).field, "at", "no leap seconds at arbitrary minutes");
        let out = rec("member.coupons.listed", json!({}));
        assert!(err(&out).reason.contains("output"));
    }

    #[test]
    fn version_type_and_timestamp() {
        let mut v: serde_json::Value = serde_json::from_slice(&rec("lot.heartbeat", json!({}))).unwrap();
        v["v"] = json!(2);
        assert_eq!(err(v.to_string().as_bytes()).field, "v");
        assert_eq!(err(&rec("lot.exploded", json!({}))).field, "type");
        for bad in ["2026-11-23 08:00:00", "2026-11-23T08:00:00", "1970-01-01T00:00:00Z", "2026-13-01T00:00:00Z"] {
            v["v"] = json!(1);
            v["at"] = json!(bad);
            assert_eq!(err(v.to_string().as_bytes()).field, "at", "{bad}");
        }
    }

    #[test]
    fn vehicle_without_plate_and_photo_checks() {
        let ok = rec("vehicle.entered", json!({"plate": null, "vehicle_type": "unlicensed", "gate": "East"}));
        assert!(matches!(decode(&ok).unwrap().data, EventData::VehicleEntered(Vehicle { plate: None, .. })));
        let no_plate_key = rec("vehicle.entered", json!({"vehicle_type": "small", "gate": "East"}));
        assert_eq!(err(&no_plate_key).field, "data.plate");
        let bad_photo = rec(
            "vehicle.entered",
            json!({"plate": "京A1", "vehicle_type": "small", "gate": "E", "photo": {"jpeg_base64": "abc"}}),
        );
        assert_eq!(err(&bad_photo).field, "data.photo.jpeg_base64");
    }

    #[test]
    fn exit_and_grant() {
        let exit = rec(
            "vehicle.exited",
            json!({"plate": "京A1", "vehicle_type": "small", "gate": "W", "parked_minutes": 59,
                   "fee_payable_cents": 3450, "fee_paid_cents": 3450, "paid_at": "2026-11-23T07:59:00+08:00",
                   "payment_method": "alipay"}),
        );
        let e = decode(&exit).unwrap();
        assert!(matches!(e.data, EventData::VehicleExited(Exit { fee_paid_cents: 3450, .. })));
        let both = rec(
            "coupon.granted",
            json!({"to": {"plate": "京A1", "phone": "1"}, "lots": ["P1"], "minutes": 60,
                   "valid_from": "2026-11-23T08:00:00Z", "valid_until": "2026-11-24T08:00:00Z", "source": "1001"}),
        );
        assert_eq!(err(&both).field, "data.to");
        let reversed = rec(
            "coupon.granted",
            json!({"to": {"phone": "13800000000"}, "lots": ["P1"], "minutes": 60,
                   "valid_from": "2026-11-24T08:00:00Z", "valid_until": "2026-11-23T08:00:00Z", "source": "1001"}),
        );
        assert_eq!(err(&reversed).field, "data.valid_until");
    }

    /// Found by fuzzing (tests/corpus/fuzz-decode_event-*.bin): an unknown enum value was
    /// quoted whole, so a 10 MB `vehicle_type` made a 10 MB dead-letter reason.
    #[test]
    fn unknown_values_are_quoted_cut_short() {
        let long = "x".repeat(5_000);
        let e = err(&rec("vehicle.entered", json!({"plate": null, "vehicle_type": long, "gate": "W"})));
        assert_eq!(e.field, "data.vehicle_type");
        assert!(e.reason.chars().count() < 300 && e.reason.contains("expected one of `small`"), "{}", e.reason);
        let field = rec(
            "coupon.granted",
            json!({"to": {long.as_str(): "1"}, "lots": ["P1"], "minutes": 1,
            "valid_from": "2026-11-23T08:00:00Z", "valid_until": "2026-11-24T08:00:00Z", "source": "1"}),
        );
        assert!(err(&field).reason.chars().count() <= 301, "{}", err(&field).reason);
    }

    #[test]
    fn oversize_record_and_depth_bomb() {
        let limits = DecodeLimits { max_record_bytes: 100 };
        assert_eq!(decode_with(&[b' '; 101], &limits).unwrap_err().field, "");
        let bomb = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let rec =
            format!(r#"{{"v":1,"id":"a","type":"lot.heartbeat","lot":"P","at":"2026-11-23T08:00:00Z","data":{bomb}}}"#);
        assert!(decode(rec.as_bytes()).is_err());
    }
}
