//! Contract events to Bingzhouxing records (pure).
//!
//! - `spaces.changed` → `parkSpace` data `{"totalSpace","surplusSpace"}`: no timestamp, so
//!   an unchanged count serializes to the same bytes and is not sent twice.
//! - `vehicle.entered`/`vehicle.exited` → one `carInOut` array element, field order as in
//!   the spec's example. Text is fitted to the spec's column widths (characters, as the
//!   platform's string columns count them): an over-long gate or brand is cut rather than
//!   the vehicle's passage lost, and every such change is reported as an [`Adjusted`]
//!   field so the adapter counts and logs it.

use crate::event::{Event, Spaces, Vehicle, VehicleType};
use crate::vendors::adjust::Adjusted;
use crate::vendors::plate::{self, PlateSpaces};
use crate::vendors::MapError;
use bytes::Bytes;
use chrono::{NaiveDateTime, TimeDelta};
use md5::{Digest, Md5};
use std::borrow::Cow;

/// Most records in one `carInOut` request.
pub const MAX_BATCH: usize = 100;
/// `carNo` String(32).
pub const CAR_NO_MAX: usize = 32;
/// `imgName` String(50).
pub const IMG_NAME_MAX: usize = 50;
/// `nodeName` String(20).
pub const NODE_NAME_MAX: usize = 20;
/// `carColor` String(40).
pub const CAR_COLOR_MAX: usize = 40;
/// `carBrand` String(40).
pub const CAR_BRAND_MAX: usize = 40;
/// `remark` String(255).
pub const REMARK_MAX: usize = 255;
/// `inOutTime` layout (China time).
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";
/// China Standard Time is UTC+8 all year (no daylight saving).
const CHINA_OFFSET_HOURS: i64 = 8;

/// Whether a vehicle came in or went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `vehicle.entered`.
    In,
    /// `vehicle.exited`.
    Out,
}

impl Direction {
    /// The `inOutType` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// The data of a heartbeat record: the request carries no `data`, so any constant will do.
pub fn heartbeat() -> Bytes {
    Bytes::from_static(b"{}")
}

/// `parkSpace` data.
pub fn park_space(spaces: &Spaces) -> Bytes {
    Bytes::from(format!(r#"{{"totalSpace":{},"surplusSpace":{}}}"#, spaces.total, spaces.free))
}

/// One `carInOut` element and the fields changed to fit the platform. `img_data` is the
/// photo as it will be sent (already fitted to the limit, or the sink's `missing_photo`).
///
/// Written by hand, in the spec's field order, byte for byte as serde_json would write it:
/// a photo is then copied once, in one piece, instead of being escaped byte by byte.
pub fn car_in_out(
    event: &Event,
    vehicle: &Vehicle,
    direction: Direction,
    img_data: &str,
) -> Result<(Bytes, Vec<Adjusted>), MapError> {
    let local = china_time(event)?;
    let mut adjusted = Vec::new();
    let node_name = fit(&mut adjusted, "nodeName", vehicle.gate.trim(), NODE_NAME_MAX);
    if node_name.is_empty() {
        return Err(MapError::new("data.gate", "is blank; Bingzhouxing requires the entrance or exit name (nodeName)"));
    }
    let car_brand = vehicle
        .brand
        .as_deref()
        .map(|b| fit(&mut adjusted, "carBrand", b.trim(), CAR_BRAND_MAX))
        .filter(|b| !b.is_empty());
    let photo_name = vehicle.photo.as_ref().and_then(|p| p.name.as_deref());
    let img_name = image_name(photo_name, direction, local, &event.id);
    if photo_name.is_some_and(|own| !own.trim().is_empty() && !own.ends_with(&*img_name)) {
        adjusted.push(Adjusted::truncated("imgName"));
    }
    let (car_no, plate_changes) = plate_fitted(vehicle.plate.as_deref());
    adjusted.extend(plate_changes);
    let car_color = vehicle.plate_color.as_deref().map(|c| color_fitted(&mut adjusted, c)).filter(|c| !c.is_empty());
    let mut out = Vec::with_capacity(200 + img_data.len() + car_no.len() + img_name.len() + node_name.len());
    out.extend_from_slice(b"{\"carNo\":");
    push_json_str(&mut out, &car_no);
    out.extend_from_slice(b",\"inOutType\":");
    push_json_str(&mut out, direction.as_str());
    out.extend_from_slice(b",\"inOutTime\":\"");
    push_time(&mut out, local);
    out.extend_from_slice(b"\",\"imgName\":");
    push_json_str(&mut out, &img_name);
    out.extend_from_slice(b",\"imgData\":");
    push_json_str(&mut out, img_data);
    out.extend_from_slice(b",\"nodeName\":");
    push_json_str(&mut out, node_name);
    if let Some(color) = car_color {
        out.extend_from_slice(b",\"carColor\":");
        push_json_str(&mut out, color);
    }
    out.extend_from_slice(b",\"carStyle\":");
    push_json_str(&mut out, car_style(vehicle.vehicle_type));
    if let Some(brand) = car_brand {
        out.extend_from_slice(b",\"carBrand\":");
        push_json_str(&mut out, brand);
    }
    out.push(b'}');
    Ok((Bytes::from(out), adjusted))
}

/// The first `max` characters of `text`, noting in `adjusted` when `field` was cut.
fn fit<'t>(adjusted: &mut Vec<Adjusted>, field: &'static str, text: &'t str, max: usize) -> &'t str {
    let cut = clip(text, max);
    if cut.len() != text.len() {
        adjusted.push(Adjusted::truncated(field));
    }
    cut
}

/// Appends `text` as a JSON string exactly as serde_json writes it. Text with nothing to
/// escape (always the case for base64 photos) is copied in one piece.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let must_escape = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    // Branch-free per chunk, so the scan of a photo vectorizes.
    let clean = bytes.chunks(256).all(|c| c.iter().fold(0u8, |bad, &b| bad | u8::from(must_escape(b))) == 0);
    if clean {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Appends `local` in [`TIME_FORMAT`] without parsing the format string each time.
fn push_time(out: &mut Vec<u8>, local: NaiveDateTime) {
    use chrono::{Datelike, Timelike};
    use std::io::Write as _;
    if (0..=9999).contains(&local.year()) && local.nanosecond() < 1_000_000_000 {
        let (d, t) = (local.date(), local.time());
        let _ = write!(
            out,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            d.year(),
            d.month(),
            d.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
    } else {
        let _ = write!(out, "{}", local.format(TIME_FORMAT));
    }
}

/// When the event happened, on a wall clock in China.
fn china_time(event: &Event) -> Result<NaiveDateTime, MapError> {
    event
        .at
        .naive_utc()
        .checked_add_signed(TimeDelta::hours(CHINA_OFFSET_HOURS))
        .ok_or_else(|| MapError::new("at", "is out of the representable range"))
}

/// The plate as the platform writes it: no spaces (the shared rule, always `strip`: the
/// spec writes plates without them) or separator dots, Latin letters in upper case
/// (`京 q·8k271` → `京Q8K271`); empty for a vehicle without plate.
pub fn plate_text(plate: Option<&str>) -> String {
    plate_fitted(plate).0
}

/// [`plate_text`] and how it changed the plate (`carNo` normalized and/or truncated).
fn plate_fitted(plate: Option<&str>) -> (String, Vec<Adjusted>) {
    let given = plate.unwrap_or_default();
    let text: String = plate::normalize(given, PlateSpaces::Strip)
        .chars()
        .filter(|c| !matches!(c, '·' | '•' | '・'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let mut adjusted = Vec::new();
    if text != given {
        adjusted.push(Adjusted::normalized("carNo"));
    }
    let cut = clip(&text, CAR_NO_MAX);
    if cut.len() != text.len() {
        adjusted.push(Adjusted::truncated("carNo"));
    }
    (cut.to_string(), adjusted)
}

/// `carStyle`: 0 = car, 1 = large vehicle, 2 = goods vehicle. The contract's other types
/// describe the plate, not the size, and are overwhelmingly passenger cars.
pub fn car_style(vehicle_type: VehicleType) -> &'static str {
    match vehicle_type {
        VehicleType::Large => "1",
        VehicleType::Truck => "2",
        VehicleType::Small
        | VehicleType::Police
        | VehicleType::Temporary
        | VehicleType::Unlicensed
        | VehicleType::NewEnergy => "0",
    }
}

/// `carColor` in the platform's words (黑、白、蓝、红...): English colour names are
/// translated, anything else is passed on as written.
fn color_text(color: &str) -> &str {
    let color = color.trim();
    const NAMES: [(&str, &str); 7] = [
        ("blue", "蓝"),
        ("yellow", "黄"),
        ("green", "绿"),
        ("yellow_green", "黄绿"),
        ("white", "白"),
        ("black", "黑"),
        ("red", "红"),
    ];
    let key = color.replace(['-', ' '], "_");
    NAMES.iter().find(|(en, _)| en.eq_ignore_ascii_case(&key)).map_or_else(|| clip(color, CAR_COLOR_MAX), |(_, zh)| zh)
}

/// [`color_text`], noting in `adjusted` when an untranslated colour was cut to width.
fn color_fitted<'c>(adjusted: &mut Vec<Adjusted>, color: &'c str) -> &'c str {
    let text = color_text(color);
    let untranslated = color.trim();
    if text.len() < untranslated.len() && untranslated.starts_with(text) {
        adjusted.push(Adjusted::truncated("carColor"));
    }
    text
}

/// The photo's own file name when it fits `imgName`, else one derived from the direction,
/// the local time and the event id: stable across redeliveries, at most 35 characters.
pub fn image_name<'a>(name: Option<&'a str>, direction: Direction, local: NaiveDateTime, id: &str) -> Cow<'a, str> {
    // Edge systems sometimes send a full path; the platform wants a file name.
    let own = name.and_then(|n| n.rsplit(['/', '\\']).next()).map(str::trim);
    if let Some(own) = own.filter(|n| !n.is_empty() && n.chars().count() <= IMG_NAME_MAX) {
        return Cow::Borrowed(own);
    }
    let digest = hex::encode(Md5::digest(id.as_bytes()));
    let short = digest.get(..12).unwrap_or(&digest);
    Cow::Owned(format!("{}_{}_{short}.jpg", direction.as_str(), local.format("%Y%m%d%H%M%S")))
}

/// The first `max` characters of `text`.
fn clip(text: &str, max: usize) -> &str {
    text.char_indices().nth(max).map_or(text, |(end, _)| &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, EventData};
    use serde_json::{json, Value};

    fn event(ty: &str, at: &str, data: Value) -> Event {
        let json = json!({"v": 1, "id": "evt-0001", "type": ty, "lot": "P001", "at": at, "data": data});
        decode(json.to_string().as_bytes()).unwrap()
    }

    fn vehicle_of(e: &Event) -> (&Vehicle, Direction) {
        match &e.data {
            EventData::VehicleEntered(v) => (v, Direction::In),
            EventData::VehicleExited(x) => (&x.vehicle, Direction::Out),
            other => panic!("not a vehicle event: {other:?}"),
        }
    }

    fn car(e: &Event, img: &str) -> Value {
        let (v, d) = vehicle_of(e);
        serde_json::from_slice(&car_in_out(e, v, d, img).unwrap().0).unwrap()
    }

    #[test]
    fn spec_example_park_space() {
        let e = event("spaces.changed", "2019-01-01T08:00:00+08:00", json!({"total": 99, "free": 9}));
        let EventData::SpacesChanged(s) = &e.data else { panic!() };
        let got: Value = serde_json::from_slice(&park_space(s)).unwrap();
        assert_eq!(got, json!({"totalSpace": 99, "surplusSpace": 9}));
    }

    #[test]
    fn spec_example_car_in_out() {
        // The spec's example, for a contract event saying the same; `remark` has no source
        // in the contract and is left out (it is optional).
        let e = event(
            "vehicle.entered",
            "2019-01-01T00:00:00Z",
            json!({"plate": "闽A123456", "plate_color": "蓝", "vehicle_type": "small", "brand": "大众",
                   "gate": "出入口1", "photo": {"name": "xxx.jpg", "jpeg_base64": "/9j/4A=="}}),
        );
        let expected = json!({"carNo": "闽A123456", "inOutType": "in", "inOutTime": "2019-01-01 08:00:00",
            "imgName": "xxx.jpg", "imgData": "/9j/4A==", "nodeName": "出入口1", "carColor": "蓝",
            "carStyle": "0", "carBrand": "大众"});
        assert_eq!(car(&e, "/9j/4A=="), expected);
        let (v, d) = vehicle_of(&e);
        let text = String::from_utf8(car_in_out(&e, v, d, "").unwrap().0.to_vec()).unwrap();
        assert!(text.starts_with(r#"{"carNo":"闽A123456","inOutType":"in","inOutTime":"#), "spec order: {text}");
    }

    #[test]
    fn exit_without_plate_or_photo() {
        let e = event(
            "vehicle.exited",
            "2026-11-23T23:59:59+08:00",
            json!({"plate": null, "vehicle_type": "unlicensed", "gate": " West exit ",
                   "parked_minutes": 5, "fee_payable_cents": 0, "fee_paid_cents": 0}),
        );
        let got = car(&e, "");
        assert_eq!(got["carNo"], "");
        assert_eq!(got["inOutType"], "out");
        assert_eq!(got["inOutTime"], "2026-11-23 23:59:59");
        assert_eq!(got["imgData"], "");
        assert_eq!(got["nodeName"], "West exit");
        assert_eq!(got["imgName"], format!("out_20261123235959_{}.jpg", &reference_md5("evt-0001")[..12]));
        assert!(got.get("carColor").is_none() && got.get("carBrand").is_none(), "{got}");
    }

    fn reference_md5(text: &str) -> String {
        Md5::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn times_are_china_time_whatever_the_producer_offset() {
        for at in ["2026-03-01T00:30:00Z", "2026-03-01T08:30:00+08:00", "2026-02-28T19:30:00-05:00"] {
            let e = event("vehicle.entered", at, json!({"plate": "京Q8K271", "vehicle_type": "small", "gate": "g"}));
            assert_eq!(car(&e, "")["inOutTime"], "2026-03-01 08:30:00", "{at}");
        }
    }

    #[test]
    fn plates_lose_spaces_and_dots() {
        assert_eq!(plate_text(Some("京Q 8K271")), "京Q8K271");
        assert_eq!(plate_text(Some("京q·8k271")), "京Q8K271");
        assert_eq!(plate_text(Some(" 粤B\u{3000}D12345 ")), "粤BD12345");
        assert_eq!(plate_text(None), "");
    }

    #[test]
    fn car_style_table() {
        let table = [
            ("small", "0"),
            ("large", "1"),
            ("truck", "2"),
            ("police", "0"),
            ("temporary", "0"),
            ("unlicensed", "0"),
            ("new_energy", "0"),
        ];
        for (ty, style) in table {
            let e = event(
                "vehicle.entered",
                "2026-03-01T00:00:00Z",
                json!({"plate": "A", "vehicle_type": ty, "gate": "g"}),
            );
            assert_eq!(car(&e, "")["carStyle"], style, "{ty}");
        }
    }

    #[test]
    fn text_fits_the_columns() {
        let long_gate = "东门".repeat(15);
        let e = event(
            "vehicle.entered",
            "2026-03-01T00:00:00Z",
            json!({"plate": "A", "vehicle_type": "small", "gate": long_gate, "brand": "B".repeat(60),
                   "plate_color": "Yellow-Green"}),
        );
        let got = car(&e, "");
        assert_eq!(got["nodeName"].as_str().unwrap().chars().count(), NODE_NAME_MAX);
        assert_eq!(got["carBrand"].as_str().unwrap().len(), CAR_BRAND_MAX);
        assert_eq!(got["carColor"], "黄绿");
        let (v, d) = vehicle_of(&e);
        let (_, adjusted) = car_in_out(&e, v, d, "").unwrap();
        assert_eq!(adjusted, [Adjusted::truncated("nodeName"), Adjusted::truncated("carBrand")]);
        let mut colors = Vec::new();
        assert_eq!(color_fitted(&mut colors, "Yellow-Green"), "黄绿");
        assert_eq!(color_fitted(&mut colors, &"紫".repeat(45)).chars().count(), CAR_COLOR_MAX);
        assert_eq!(colors, [Adjusted::truncated("carColor")]);
    }

    #[test]
    fn every_change_to_fit_is_reported() {
        let long_name = format!("{}.jpg", "p".repeat(60));
        let e = event(
            "vehicle.entered",
            "2026-03-01T00:00:00Z",
            json!({"plate": "京 q·8k271", "vehicle_type": "small", "gate": "东门",
                   "photo": {"name": long_name, "jpeg_base64": "/9j/4A=="}}),
        );
        let (v, d) = vehicle_of(&e);
        let (bytes, adjusted) = car_in_out(&e, v, d, "/9j/4A==").unwrap();
        let got: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(got["carNo"], "京Q8K271");
        assert!(got["imgName"].as_str().unwrap().starts_with("in_"));
        assert_eq!(adjusted, [Adjusted::truncated("imgName"), Adjusted::normalized("carNo")]);
        let fitting = event(
            "vehicle.entered",
            "2026-03-01T00:00:00Z",
            json!({"plate": "京Q8K271", "vehicle_type": "small", "gate": "东门", "brand": "大众",
                   "photo": {"name": "cam/1.jpg", "jpeg_base64": "/9j/4A=="}}),
        );
        let (v, d) = vehicle_of(&fitting);
        assert!(car_in_out(&fitting, v, d, "/9j/4A==").unwrap().1.is_empty());
        assert_eq!(plate_fitted(Some(&"A".repeat(40))).1, [Adjusted::truncated("carNo")]);
    }

    #[test]
    fn blank_gate_is_a_map_error() {
        let e = event(
            "vehicle.entered",
            "2026-03-01T00:00:00Z",
            json!({"plate": "A", "vehicle_type": "small", "gate": "  "}),
        );
        let (v, d) = vehicle_of(&e);
        assert_eq!(car_in_out(&e, v, d, "").unwrap_err().field, "data.gate");
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for text in
            ["", "plain", "东门 1", "quote\" back\\ slash", "line\nbreak\ttab\u{1}\u{1f}", "del\u{7f} é 🚗", "/9j/4A=="]
        {
            let mut out = Vec::new();
            push_json_str(&mut out, text);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(text).unwrap(), "{text:?}");
        }
        let mut long = "A".repeat(1000);
        long.insert(600, '"');
        let mut out = Vec::new();
        push_json_str(&mut out, &long);
        assert_eq!(out, serde_json::to_vec(&long).unwrap(), "an escape deep in a long text");
    }

    #[test]
    fn image_names() {
        let t = NaiveDateTime::parse_from_str("2026-03-01 08:30:00", TIME_FORMAT).unwrap();
        assert_eq!(image_name(Some("C:\\cam\\in\\0001.jpg"), Direction::In, t, "x"), "0001.jpg");
        assert_eq!(image_name(Some("/data/cam/0002.jpg"), Direction::In, t, "x"), "0002.jpg");
        let long = format!("{}.jpg", "n".repeat(47));
        let derived = image_name(Some(&long), Direction::Out, t, "id-9");
        assert_eq!(derived, format!("out_20260301083000_{}.jpg", &reference_md5("id-9")[..12]));
        let worst = image_name(None, Direction::Out, t, &"z".repeat(64));
        assert!(worst.chars().count() <= IMG_NAME_MAX, "{worst}");
        assert_ne!(image_name(None, Direction::In, t, "a"), image_name(None, Direction::In, t, "b"));
    }
}
