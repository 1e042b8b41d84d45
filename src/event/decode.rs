//! Decoding of one record: the envelope, then the data of its type, each failure named by
//! its field path in plain words and bounded in length (it goes into dead-letter headers).

use super::checks::*;
use super::*;
use serde_json::value::RawValue;

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
    pub(super) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
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
pub(super) struct RawEnvelope<'a> {
    pub(super) v: serde_json::Number,
    pub(super) id: String,
    // Borrowed unless escaped: only read, never kept.
    #[serde(rename = "type", borrow)]
    pub(super) ty: std::borrow::Cow<'a, str>,
    pub(super) lot: String,
    #[serde(borrow)]
    pub(super) at: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub(super) data: &'a RawValue,
}

#[derive(Deserialize)]
pub(super) struct RawExit {
    #[serde(deserialize_with = "present_or_null")]
    pub(super) plate: Option<String>,
    #[serde(default)]
    pub(super) plate_color: Option<String>,
    pub(super) vehicle_type: VehicleType,
    #[serde(default)]
    pub(super) brand: Option<String>,
    pub(super) gate: String,
    #[serde(default)]
    pub(super) photo: Option<Photo>,
    pub(super) parked_minutes: u32,
    pub(super) fee_payable_cents: u64,
    pub(super) fee_paid_cents: u64,
    #[serde(default)]
    pub(super) paid_at: Option<String>,
    #[serde(default)]
    pub(super) payment_method: Option<PaymentMethod>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    #[serde(default)]
    pub(super) plate: Option<String>,
    #[serde(default)]
    pub(super) phone: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawGrant {
    pub(super) to: RawTarget,
    pub(super) lots: Vec<String>,
    pub(super) minutes: u32,
    pub(super) valid_from: String,
    pub(super) valid_until: String,
    pub(super) source: String,
}

#[derive(Deserialize)]
pub(super) struct Empty {}

/// A field that must be present but may be `null` (serde treats a missing `Option` as `None`
/// unless a `deserialize_with` is given).
pub(super) fn present_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
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

pub(super) fn decode_data(ty: EventType, json: &[u8]) -> Result<EventData, DecodeError> {
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
pub(super) fn parse<'de, T: Deserialize<'de>>(json: &'de [u8], prefix: &str) -> Result<T, DecodeError> {
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

pub(super) fn path_error(prefix: &str, e: serde_path_to_error::Error<serde_json::Error>, json: &[u8]) -> DecodeError {
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
pub(super) fn well_formed(json: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
}

/// Rewrites serde's `invalid type: string "x", expected u32` into words a producer can act
/// on (`must be a whole number from 0 up, got the string "x"`), with the value cut short.
pub(super) fn plain_words(reason: &str) -> String {
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
pub(super) fn cut_quoted(reason: &str) -> String {
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
