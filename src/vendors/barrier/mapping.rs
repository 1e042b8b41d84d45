//! `coupon.granted` → one `sendCoupon` request body (pure).
//!
//! Field order follows the spec's example. `parkCodes` lists the vendor codes of the
//! coupon's lots that are bound to the sink, in the event's order, each once; lots bound
//! elsewhere are left out (another sink delivers them).

use super::config::FieldEncoding;
use crate::config::Bindings;
use crate::event::{CouponGrant, CouponTarget};
use crate::vendors::adjust::Adjusted;
use crate::vendors::plate::{self, PlateSpaces};
use crate::vendors::MapError;
use bytes::Bytes;
use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use std::borrow::Cow;

/// `generateObj` for a coupon given to a plate.
const TO_PLATE: i64 = 1;
/// `generateObj` for a coupon given to a phone number.
const TO_PHONE: i64 = 2;
/// `couponType` of the time-deduction coupon (`deductContent` in minutes).
const TIME_DEDUCTION: i64 = 4;

/// A value the spec types as a number while its example sends a string.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(i64),
}

impl FieldEncoding {
    fn scalar(self, n: i64) -> Scalar {
        match self {
            FieldEncoding::Strings => Scalar::Text(n.to_string()),
            FieldEncoding::Typed => Scalar::Number(n),
        }
    }
}

/// The `sendCoupon` request body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SendCoupon<'a> {
    park_codes: String,
    generate_obj: Scalar,
    #[serde(skip_serializing_if = "Option::is_none")]
    plate_no: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    telephone: Option<&'a str>,
    coupon_type: Scalar,
    deduct_content: Scalar,
    start_time: Scalar,
    /// A string in both encodings: the spec's table types it so.
    end_time: String,
    coupon_source: &'a str,
}

/// The vendor codes of the bound lots among `lots`, in order, without repeats; `None`
/// when none is bound.
pub fn park_codes(lots: &[String], bindings: &Bindings) -> Option<String> {
    let mut codes: Vec<&str> = Vec::new();
    for binding in lots.iter().filter_map(|lot| bindings.get(lot)) {
        if !codes.contains(&binding.vendor_lot.as_str()) {
            codes.push(&binding.vendor_lot);
        }
    }
    (!codes.is_empty()).then(|| codes.join(","))
}

/// `plateNo` changed by the plate rule.
pub const PLATE_NORMALIZED: Adjusted = Adjusted::normalized("plateNo");

/// The request body for `grant` delivered to `park_codes`, and whether the plate was
/// normalized on the way.
pub fn send_coupon(
    grant: &CouponGrant,
    park_codes: String,
    encoding: FieldEncoding,
    plates: PlateSpaces,
) -> Result<(Bytes, Option<Adjusted>), MapError> {
    let (generate_obj, plate_no, telephone) = match &grant.to {
        CouponTarget::Plate(plate) => (TO_PLATE, Some(plate::normalize(plate, plates)), None),
        CouponTarget::Phone(phone) => (TO_PHONE, None, Some(phone.as_str())),
    };
    let changed = match (&grant.to, &plate_no) {
        (CouponTarget::Plate(sent), Some(normalized)) => normalized != sent,
        _ => false,
    };
    let body = SendCoupon {
        park_codes,
        generate_obj: encoding.scalar(generate_obj),
        plate_no,
        telephone,
        coupon_type: encoding.scalar(TIME_DEDUCTION),
        deduct_content: encoding.scalar(i64::from(grant.minutes)),
        start_time: encoding.scalar(epoch_millis("data.valid_from", &grant.valid_from)?),
        end_time: epoch_millis("data.valid_until", &grant.valid_until)?.to_string(),
        coupon_source: &grant.source,
    };
    let bytes = serde_json::to_vec(&body).map(Bytes::from).map_err(|e| MapError::new("data", e.to_string()))?;
    Ok((bytes, changed.then_some(PLATE_NORMALIZED)))
}

/// Epoch milliseconds; the platform has no way to express a time before 1970.
fn epoch_millis(field: &str, at: &DateTime<FixedOffset>) -> Result<i64, MapError> {
    match at.timestamp_millis() {
        ms if ms > 0 => Ok(ms),
        _ => Err(MapError::new(field, "must be after 1970-01-01 (the platform takes epoch milliseconds)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Binding;
    use chrono::TimeZone;
    use serde_json::{json, Value};

    fn bindings(pairs: &[(&str, &str)]) -> Bindings {
        let list = pairs.iter().map(|(l, v)| Binding { lot: l.to_string(), vendor_lot: v.to_string(), token: None });
        Bindings::from_list(list.collect())
    }

    /// The spec's example: 60 minutes from 1689064304393 to 1689067904394 for plate 浙 A11111.
    fn spec_grant(to: CouponTarget) -> CouponGrant {
        let tz = FixedOffset::east_opt(8 * 3600).unwrap();
        CouponGrant {
            to,
            lots: vec!["P1".into()],
            minutes: 60,
            valid_from: tz.timestamp_millis_opt(1_689_064_304_393).unwrap(),
            valid_until: tz.timestamp_millis_opt(1_689_067_904_394).unwrap(),
            source: "xxxxx".into(),
        }
    }

    fn body(grant: &CouponGrant, encoding: FieldEncoding) -> Value {
        serde_json::from_slice(&send_coupon(grant, "xxxxxx".into(), encoding, PlateSpaces::Keep).unwrap().0).unwrap()
    }

    #[test]
    fn plate_spaces_are_stripped_by_default_and_reported() {
        for plate in ["浙 A11111", "浙\u{3000}A11111"] {
            let grant = spec_grant(CouponTarget::Plate(plate.into()));
            let (bytes, adjusted) =
                send_coupon(&grant, "x".into(), FieldEncoding::Strings, PlateSpaces::Strip).unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!((body["plateNo"].as_str(), adjusted), (Some("浙A11111"), Some(PLATE_NORMALIZED)));
        }
        let canonical = spec_grant(CouponTarget::Plate("浙A11111".into()));
        let (_, adjusted) = send_coupon(&canonical, "x".into(), FieldEncoding::Strings, PlateSpaces::Strip).unwrap();
        assert_eq!(adjusted, None);
    }

    #[test]
    fn golden_spec_example_as_strings() {
        // The spec's example also carries a placeholder telephone; a coupon goes to a plate
        // or to a phone, so only the field of its target is sent.
        let expected = json!({
            "parkCodes": "xxxxxx", "generateObj": "1", "plateNo": "浙 A11111", "couponType": "4",
            "deductContent": "60", "startTime": "1689064304393", "endTime": "1689067904394",
            "couponSource": "xxxxx"
        });
        assert_eq!(body(&spec_grant(CouponTarget::Plate("浙 A11111".into())), FieldEncoding::Strings), expected);
    }

    #[test]
    fn golden_phone_coupon_typed_as_the_table() {
        let expected = json!({
            "parkCodes": "xxxxxx", "generateObj": 2, "telephone": "13800000000", "couponType": 4,
            "deductContent": 60, "startTime": 1_689_064_304_393_i64, "endTime": "1689067904394",
            "couponSource": "xxxxx"
        });
        assert_eq!(body(&spec_grant(CouponTarget::Phone("13800000000".into())), FieldEncoding::Typed), expected);
    }

    #[test]
    fn field_order_is_the_examples() {
        let bytes = send_coupon(
            &spec_grant(CouponTarget::Plate("A".into())),
            "x".into(),
            FieldEncoding::Strings,
            PlateSpaces::Strip,
        )
        .map(|(b, _)| b);
        let text = String::from_utf8(bytes.unwrap().to_vec()).unwrap();
        let keys = ["parkCodes", "generateObj", "plateNo", "couponType", "deductContent", "startTime", "endTime"];
        let positions: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn park_codes_keep_bound_lots_in_order_once() {
        let b = bindings(&[("P1", "1012004281EYS"), ("P2", "101200506"), ("P3", "101200506")]);
        let lots: Vec<String> = ["P2", "P9", "P1", "P3"].map(String::from).to_vec();
        assert_eq!(park_codes(&lots, &b).as_deref(), Some("101200506,1012004281EYS"));
        assert_eq!(park_codes(&["P9".to_string()], &b), None);
    }

    #[test]
    fn times_before_1970_are_refused() {
        let mut grant = spec_grant(CouponTarget::Plate("A".into()));
        grant.valid_from = FixedOffset::east_opt(0).unwrap().with_ymd_and_hms(1969, 12, 31, 0, 0, 0).unwrap();
        let err = send_coupon(&grant, "x".into(), FieldEncoding::Strings, PlateSpaces::Strip).unwrap_err();
        assert_eq!(err.field, "data.valid_from");
    }
}
