//! Contract events to ISP records (pure): lot upserts and deletions, space counts, entries
//! and departures, each a JSON array element of its endpoint's request body.
//!
//! Times are Unix seconds, fees yuan written from cents as decimal text (never through a
//! float), `car_type`/`pay_type` the spec's codes or, by a switch, its labels.

use crate::config::Bindings;
use crate::event::{Event, EventData, Exit, LotInfo, PaymentMethod, Photo, Spaces, Vehicle, VehicleType};
use crate::photo::{PhotoOutcome, PhotoPolicy};
use crate::vendors::adjust::Adjusted;
use crate::vendors::missing_photo::MissingPhoto;
use crate::vendors::plate::{self, PlateSpaces};
use crate::vendors::{Coalesce, Endpoint, MapError, Mapped, Mapping, SkipReason};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Label of `POST /park/spot` (lot upserts).
pub const SPOT: &str = "park/spot";
/// Label of `DELETE /park/spot` (lot deletions).
pub const SPOT_DELETE: &str = "park/spot:delete";
/// Label of `POST /park/spot-num` (space counts).
pub const SPOT_NUM: &str = "park/spot-num";
/// Label of `POST /park/entrance` (entries).
pub const ENTRANCE: &str = "park/entrance";
/// Label of `POST /park/departure` (departures).
pub const DEPARTURE: &str = "park/departure";

/// The five endpoints of one sink, with its batch limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// Lot upserts, batched in lane order.
    pub spot: Endpoint,
    /// Lot deletions: one request carries the batch's codes comma-joined.
    pub spot_delete: Endpoint,
    /// Space counts: only the newest matters, one per request.
    pub spot_num: Endpoint,
    /// Entries, batched in lane order.
    pub entrance: Endpoint,
    /// Departures, batched in lane order.
    pub departure: Endpoint,
}

impl Endpoints {
    /// The endpoints with `max_batch` records per request where the spec allows arrays.
    pub fn new(max_batch: usize) -> Self {
        let ordered = |name| Endpoint { name, max_records: max_batch, coalesce: Coalesce::Ordered };
        Endpoints {
            spot: ordered(SPOT),
            spot_delete: ordered(SPOT_DELETE),
            spot_num: Endpoint { name: SPOT_NUM, max_records: 1, coalesce: Coalesce::Latest },
            entrance: ordered(ENTRANCE),
            departure: ordered(DEPARTURE),
        }
    }
}

/// What the mapping needs from the sink's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSettings {
    /// Labels (`小型车`) instead of codes (`"2"`) for `car_type` and `pay_type`.
    pub labels: bool,
    /// `pay_type` code for `other` and for exits without a payment method.
    pub pay_type_other_code: String,
    /// `pay_type` label for the same, when `labels` is on.
    pub pay_type_other_label: String,
    /// `plate_number` of a vehicle without plate.
    pub no_plate: String,
    /// `car_logo` of a vehicle without brand.
    pub unknown_brand: String,
    /// Longest photo text, prefix included.
    pub photo_limit: usize,
    /// Text before the base64 JPEG.
    pub photo_prefix: String,
    /// What to do with photos over the limit.
    pub photo_policy: PhotoPolicy,
    /// Spaces inside plates.
    pub plate_spaces: PlateSpaces,
    /// What `enter_pic`/`depart_pic` hold without a usable photo.
    pub missing_photo: MissingPhoto,
}

/// `plate_number` changed by the plate rule.
pub const PLATE_NORMALIZED: Adjusted = Adjusted::normalized("plate_number");

/// Maps one event to its ISP record; see [`crate::vendors::Adapter::map`].
pub fn map_event(
    event: &Event,
    settings: &MapSettings,
    endpoints: &Endpoints,
    bindings: &Bindings,
) -> Result<Mapping, MapError> {
    map_event_adjusted(event, settings, endpoints, bindings).map(|(mapping, _)| mapping)
}

/// [`map_event`], also saying which fields were changed to fit the platform.
pub fn map_event_adjusted(
    event: &Event,
    settings: &MapSettings,
    endpoints: &Endpoints,
    bindings: &Bindings,
) -> Result<(Mapping, Vec<Adjusted>), MapError> {
    if !handled(&event.data) {
        return Ok((Mapping::Skip(SkipReason::TypeNotHandled), Vec::new()));
    }
    let Some(binding) = bindings.get(&event.lot) else {
        return Ok((Mapping::Skip(SkipReason::LotNotBound), Vec::new()));
    };
    let changed = vehicle_of(&event.data)
        .and_then(|v| v.plate.as_deref())
        .is_some_and(|p| plate::normalize(p, settings.plate_spaces) != p);
    let lot = binding.vendor_lot.as_str();
    let (endpoint, (record, photo, filled)) = match &event.data {
        EventData::LotUpserted(info) => (endpoints.spot, (to_json(&spot(lot, info))?, None, None)),
        EventData::LotDeleted => (endpoints.spot_delete, (to_json(&SpotDelete { park_code: lot.into() })?, None, None)),
        EventData::SpacesChanged(spaces) => (endpoints.spot_num, (to_json(&[spot_num(lot, spaces)])?, None, None)),
        EventData::VehicleEntered(v) => (endpoints.entrance, entrance(event, lot, v, settings)?),
        EventData::VehicleExited(exit) => (endpoints.departure, departure(event, lot, exit, settings)?),
        _ => return Ok((Mapping::Skip(SkipReason::TypeNotHandled), Vec::new())),
    };
    let adjusted = changed.then_some(PLATE_NORMALIZED).into_iter().chain(filled).collect();
    Ok((Mapping::Record(Mapped { endpoint, record, photo }), adjusted))
}

fn vehicle_of(data: &EventData) -> Option<&Vehicle> {
    match data {
        EventData::VehicleEntered(v) => Some(v),
        EventData::VehicleExited(exit) => Some(&exit.vehicle),
        _ => None,
    }
}

/// `plate_number`: the plate under the sink's plate rule, or the no-plate text.
fn plate_number<'a>(v: &'a Vehicle, s: &'a MapSettings) -> Cow<'a, str> {
    match v.plate.as_deref() {
        Some(p) => plate::normalize(p, s.plate_spaces),
        None => Cow::Borrowed(&s.no_plate),
    }
}

fn handled(data: &EventData) -> bool {
    matches!(
        data,
        EventData::LotUpserted(_)
            | EventData::LotDeleted
            | EventData::SpacesChanged(_)
            | EventData::VehicleEntered(_)
            | EventData::VehicleExited(_)
    )
}

/// Joins the records of one endpoint into a request body: a JSON array, except deletions
/// (one object with the codes comma-joined) and space counts (the newest record is the body).
pub fn assemble(endpoint: &Endpoint, records: &[&[u8]]) -> Bytes {
    match endpoint.name {
        SPOT_DELETE => join_deletions(records),
        SPOT_NUM => records.last().map(|r| Bytes::copy_from_slice(r)).unwrap_or_else(|| Bytes::from_static(b"[]")),
        _ => crate::vendors::json_array(records),
    }
}

fn join_deletions(records: &[&[u8]]) -> Bytes {
    let mut codes: Vec<Cow<'_, str>> = Vec::with_capacity(records.len());
    for record in records {
        // Records are ours (see `map_event`); one that does not parse cannot name a lot.
        if let Ok(delete) = serde_json::from_slice::<SpotDelete<'_>>(record) {
            if !codes.contains(&delete.park_code) {
                codes.push(delete.park_code);
            }
        }
    }
    let body = SpotDelete { park_code: Cow::Owned(codes.join(",")) };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, MapError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| MapError::new("data", format!("cannot serialize: {e}")))
}

/// `POST /park/spot` element.
#[derive(Serialize)]
struct Spot<'a> {
    park_code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    park_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    longitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<&'a str>,
    coordinate_system: &'static str,
}

fn spot<'a>(lot: &'a str, info: &'a LotInfo) -> Spot<'a> {
    Spot {
        park_code: lot,
        park_name: info.name.as_deref(),
        longitude: info.longitude,
        latitude: info.latitude,
        address: info.address.as_deref(),
        coordinate_system: info.coordinate_system.as_str(),
    }
}

/// `DELETE /park/spot` body, also the record of one deletion.
#[derive(Serialize, Deserialize)]
struct SpotDelete<'a> {
    #[serde(borrow)]
    park_code: Cow<'a, str>,
}

/// `POST /park/spot-num` element: no timestamp, so an unchanged count has unchanged bytes
/// and the engine does not send it again.
#[derive(Serialize)]
struct SpotNum<'a> {
    park_code: &'a str,
    total_spots_num: u32,
    remain_spots_num: u32,
    used_spots_num: u32,
}

fn spot_num<'a>(lot: &'a str, spaces: &Spaces) -> SpotNum<'a> {
    SpotNum {
        park_code: lot,
        total_spots_num: spaces.total,
        remain_spots_num: spaces.free,
        used_spots_num: spaces.total.saturating_sub(spaces.free),
    }
}

/// `POST /park/entrance` element.
#[derive(Serialize)]
struct Entrance<'a> {
    park_code: &'a str,
    plate_number: Cow<'a, str>,
    enter_time: i64,
    car_type: &'static str,
    car_logo: &'a str,
    enter_pic: String,
}

/// A record with what the photo policy did and how a missing photo was filled.
type WithPhoto = (Bytes, Option<PhotoOutcome>, Option<Adjusted>);

fn entrance(event: &Event, lot: &str, v: &Vehicle, s: &MapSettings) -> Result<WithPhoto, MapError> {
    let (pic, photo, filled) = required_picture(v.photo.as_ref(), s, "enter_pic")?;
    let record = Entrance {
        park_code: lot,
        plate_number: plate_number(v, s),
        enter_time: event.at.timestamp(),
        car_type: car_type(v.vehicle_type, s.labels),
        car_logo: v.brand.as_deref().unwrap_or(&s.unknown_brand),
        enter_pic: pic,
    };
    Ok((to_json(&record)?, photo, filled))
}

/// `POST /park/departure` element.
#[derive(Serialize)]
struct Departure<'a> {
    park_code: &'a str,
    plate_number: Cow<'a, str>,
    depart_time: i64,
    car_type: &'static str,
    car_logo: &'a str,
    depart_pic: String,
    use_time: u32,
    payable_fee: Yuan,
    paid_fee: Yuan,
    pay_time: i64,
    pay_type: &'a str,
}

fn departure(event: &Event, lot: &str, exit: &Exit, s: &MapSettings) -> Result<WithPhoto, MapError> {
    let v = &exit.vehicle;
    let (pic, photo, filled) = required_picture(v.photo.as_ref(), s, "depart_pic")?;
    let depart_time = event.at.timestamp();
    let record = Departure {
        park_code: lot,
        plate_number: plate_number(v, s),
        depart_time,
        car_type: car_type(v.vehicle_type, s.labels),
        car_logo: v.brand.as_deref().unwrap_or(&s.unknown_brand),
        depart_pic: pic,
        use_time: exit.parked_minutes,
        payable_fee: Yuan(exit.fee_payable_cents),
        paid_fee: Yuan(exit.fee_paid_cents),
        // Required by the spec; an exit that was not paid is best dated by its departure.
        pay_time: exit.paid_at.map_or(depart_time, |t| t.timestamp()),
        pay_type: pay_type(exit.payment_method, s),
    };
    Ok((to_json(&record)?, photo, filled))
}

/// The required photo field `field`: the photo when it is usable, else what
/// `missing_photo` says (the placeholder, an empty text, or a map error).
fn required_picture(
    photo: Option<&Photo>,
    s: &MapSettings,
    field: &'static str,
) -> Result<(String, Option<PhotoOutcome>, Option<Adjusted>), MapError> {
    let (pic, outcome) = picture(photo, s);
    if !pic.is_empty() {
        return Ok((pic, outcome, None));
    }
    let (fill, adjusted) = s.missing_photo.fill("ISP", field)?;
    let pic = if fill.is_empty() { String::new() } else { format!("{}{fill}", s.photo_prefix) };
    Ok((pic, outcome, Some(adjusted)))
}

/// The photo text to send (empty when there is none) and what the photo policy did. The
/// prefix counts against the limit.
fn picture(photo: Option<&Photo>, s: &MapSettings) -> (String, Option<PhotoOutcome>) {
    let Some(photo) = photo else {
        return (String::new(), None);
    };
    let budget = s.photo_limit.saturating_sub(s.photo_prefix.len());
    let (text, outcome) = crate::photo::fit(&photo.jpeg_base64, budget, s.photo_policy);
    let pic = text.map(|t| format!("{}{t}", s.photo_prefix)).unwrap_or_default();
    (pic, Some(outcome))
}

/// The spec's `car_type`: 1 large, 2 small, 3 police, 4 temporary, 5 unlicensed, 6 new energy.
pub fn car_type(t: VehicleType, labels: bool) -> &'static str {
    let (code, label) = match t {
        VehicleType::Large | VehicleType::Truck => ("1", "大型车"),
        VehicleType::Small => ("2", "小型车"),
        VehicleType::Police => ("3", "警用车"),
        VehicleType::Temporary => ("4", "临时车"),
        VehicleType::Unlicensed => ("5", "无号牌车"),
        VehicleType::NewEnergy => ("6", "新能源汽车"),
    };
    if labels {
        label
    } else {
        code
    }
}

/// The spec's `pay_type`: 1 cash, 2 ETC, 3 WeChat, 4 Alipay, 5 credit card, 6 stored value,
/// 7 monthly pass; `other` and a missing method get the configured code or label.
pub fn pay_type(method: Option<PaymentMethod>, s: &MapSettings) -> &str {
    let (code, label) = match method {
        Some(PaymentMethod::Cash) => ("1", "现金"),
        Some(PaymentMethod::Etc) => ("2", "ETC"),
        Some(PaymentMethod::Wechat) => ("3", "微信"),
        Some(PaymentMethod::Alipay) => ("4", "支付宝"),
        Some(PaymentMethod::CreditCard) => ("5", "信用卡"),
        Some(PaymentMethod::StoredValue) => ("6", "储值卡"),
        Some(PaymentMethod::MonthlyPass) => ("7", "月租卡"),
        Some(PaymentMethod::Other) | None => (s.pay_type_other_code.as_str(), s.pay_type_other_label.as_str()),
    };
    if s.labels {
        label
    } else {
        code
    }
}

/// An amount in cents, serialized as a JSON number of yuan with at most two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yuan(pub u64);

impl Yuan {
    /// The number as text: `3450` → `34.5`, `3405` → `34.05`, `3400` → `34.0`.
    pub fn text(self) -> String {
        let (whole, cents) = (self.0 / 100, self.0 % 100);
        if cents % 10 == 0 {
            format!("{whole}.{}", cents / 10)
        } else {
            format!("{whole}.{cents:02}")
        }
    }
}

impl Serialize for Yuan {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Written as raw JSON text: a float would print 0.07 * n with artefacts.
        let raw = serde_json::value::RawValue::from_string(self.text()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Binding;
    use crate::photo::DropReason;
    use crate::vendors::adjust::Change;
    use crate::vendors::missing_photo;
    use serde_json::{json, Value};

    fn settings(labels: bool) -> MapSettings {
        MapSettings {
            labels,
            pay_type_other_code: "8".into(),
            pay_type_other_label: "其他".into(),
            no_plate: "无牌车".into(),
            unknown_brand: "未知".into(),
            photo_limit: 524_288,
            photo_prefix: "data:image/jpg;base64,".into(),
            photo_policy: PhotoPolicy::Drop,
            plate_spaces: PlateSpaces::Keep,
            missing_photo: MissingPhoto::Empty,
        }
    }

    fn bindings() -> Bindings {
        Bindings::from_list(vec![Binding { lot: "P-ATXL-1".into(), vendor_lot: "ATXL/1".into(), token: None }])
    }

    fn event(ty: &str, data: Value) -> Event {
        let json =
            json!({"v": 1, "id": "e1", "type": ty, "lot": "P-ATXL-1", "at": "2020-04-28T16:08:51+08:00", "data": data});
        crate::event::decode(json.to_string().as_bytes()).unwrap()
    }

    fn mapped(event: &Event, labels: bool) -> Mapped {
        match map_event(event, &settings(labels), &Endpoints::new(100), &bindings()).unwrap() {
            Mapping::Record(m) => m,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    fn record_json(m: &Mapped) -> Value {
        serde_json::from_slice(&m.record).unwrap()
    }

    /// A tiny JPEG header as standard base64, enough for the photo checks.
    fn jpeg_b64() -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I'])
    }

    fn vehicle(plate: Value, brand: Option<&str>) -> Value {
        json!({"plate": plate, "vehicle_type": "small", "brand": brand, "gate": "东门",
               "photo": {"jpeg_base64": jpeg_b64()}})
    }

    #[test]
    fn lot_upsert_matches_the_spec_example() {
        let e = event(
            "lot.upserted",
            json!({"name": "奥体西路 1 号停车场", "longitude": 34.54563, "latitude": 54.45563,
                   "address": "济南高新区奥体西路停车场", "coordinate_system": "WGS84", "total_spaces": 1000}),
        );
        let m = mapped(&e, false);
        assert_eq!(m.endpoint, Endpoints::new(100).spot);
        let expected = json!({"park_code": "ATXL/1", "park_name": "奥体西路 1 号停车场", "longitude": 34.54563,
            "latitude": 54.45563, "address": "济南高新区奥体西路停车场", "coordinate_system": "WGS84"});
        assert_eq!(record_json(&m), expected);
    }

    #[test]
    fn lot_upsert_omits_absent_optional_fields() {
        let m = mapped(&event("lot.upserted", json!({"coordinate_system": "BD09"})), false);
        assert_eq!(record_json(&m), json!({"park_code": "ATXL/1", "coordinate_system": "BD09"}));
    }

    #[test]
    fn deletions_join_codes_as_in_the_spec_example() {
        let m = mapped(&event("lot.deleted", json!({})), false);
        assert_eq!(record_json(&m), json!({"park_code": "ATXL/1"}));
        let eps = Endpoints::new(100);
        let body = assemble(&eps.spot_delete, &[&m.record, br#"{"park_code":"ATXL/2"}"#, &m.record]);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, json!({"park_code": "ATXL/1,ATXL/2"}));
    }

    #[test]
    fn space_counts_match_the_spec_example() {
        let m = mapped(&event("spaces.changed", json!({"total": 1000, "free": 350})), false);
        assert_eq!(m.endpoint.coalesce, Coalesce::Latest);
        assert_eq!(m.endpoint.max_records, 1);
        let expected =
            json!([{"park_code": "ATXL/1", "total_spots_num": 1000, "remain_spots_num": 350, "used_spots_num": 650}]);
        assert_eq!(record_json(&m), expected);
        assert_eq!(assemble(&m.endpoint, &[&m.record]), m.record, "the record is the whole body");
    }

    #[test]
    fn entrance_matches_the_spec_example_with_labels() {
        let m = mapped(&event("vehicle.entered", vehicle(json!("鲁 A12345"), Some("大众"))), true);
        let expected = json!({"park_code": "ATXL/1", "plate_number": "鲁 A12345", "enter_time": 1588061331,
            "car_type": "小型车", "car_logo": "大众", "enter_pic": format!("data:image/jpg;base64,{}", jpeg_b64())});
        assert_eq!(record_json(&m), expected);
        assert_eq!(m.photo, Some(PhotoOutcome::Unchanged));
    }

    #[test]
    fn entrance_without_plate_brand_or_photo_gets_the_defaults() {
        let data = json!({"plate": null, "vehicle_type": "unlicensed", "gate": "东门"});
        let m = mapped(&event("vehicle.entered", data), false);
        let r = record_json(&m);
        assert_eq!((r["plate_number"].as_str(), r["car_logo"].as_str()), (Some("无牌车"), Some("未知")));
        assert_eq!((r["car_type"].as_str(), r["enter_pic"].as_str()), (Some("5"), Some("")));
        assert_eq!(m.photo, None);
    }

    fn exit_data(method: Option<&str>, paid_at: Option<&str>) -> Value {
        let mut data = vehicle(json!("鲁 A12345"), Some("大众"));
        let extra = json!({"parked_minutes": 59, "fee_payable_cents": 3450, "fee_paid_cents": 3450,
                           "paid_at": paid_at, "payment_method": method});
        data.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        data
    }

    #[test]
    fn departure_matches_the_spec_example() {
        let e = event("vehicle.exited", exit_data(Some("alipay"), Some("2020-04-28T16:08:49+08:00")));
        let expected = json!({"park_code": "ATXL/1", "plate_number": "鲁 A12345", "car_type": "小型车",
            "car_logo": "大众", "depart_pic": format!("data:image/jpg;base64,{}", jpeg_b64()),
            "depart_time": 1588061331, "use_time": 59, "payable_fee": 34.5, "paid_fee": 34.5,
            "pay_time": 1588061329, "pay_type": "支付宝"});
        let m = mapped(&e, true);
        assert_eq!(m.endpoint, Endpoints::new(100).departure);
        assert_eq!(record_json(&m), expected);
        let coded = record_json(&mapped(&e, false));
        assert_eq!((coded["car_type"].as_str(), coded["pay_type"].as_str()), (Some("2"), Some("4")));
        let text = String::from_utf8_lossy(&m.record).into_owned();
        assert!(text.contains("\"payable_fee\":34.5,"), "{text}");
    }

    #[test]
    fn unpaid_departure_is_dated_by_its_exit_and_typed_other() {
        let r = record_json(&mapped(&event("vehicle.exited", exit_data(None, None)), false));
        assert_eq!((r["pay_time"].as_i64(), r["pay_type"].as_str()), (Some(1588061331), Some("8")));
        let r = record_json(&mapped(&event("vehicle.exited", exit_data(Some("other"), None)), true));
        assert_eq!(r["pay_type"].as_str(), Some("其他"));
    }

    #[test]
    fn code_and_label_tables() {
        let types = [
            (VehicleType::Large, "1", "大型车"),
            (VehicleType::Truck, "1", "大型车"),
            (VehicleType::Small, "2", "小型车"),
            (VehicleType::Police, "3", "警用车"),
            (VehicleType::Temporary, "4", "临时车"),
            (VehicleType::Unlicensed, "5", "无号牌车"),
            (VehicleType::NewEnergy, "6", "新能源汽车"),
        ];
        for (t, code, label) in types {
            assert_eq!((car_type(t, false), car_type(t, true)), (code, label), "{t:?}");
        }
        let methods = [
            (PaymentMethod::Cash, "1", "现金"),
            (PaymentMethod::Etc, "2", "ETC"),
            (PaymentMethod::Wechat, "3", "微信"),
            (PaymentMethod::Alipay, "4", "支付宝"),
            (PaymentMethod::CreditCard, "5", "信用卡"),
            (PaymentMethod::StoredValue, "6", "储值卡"),
            (PaymentMethod::MonthlyPass, "7", "月租卡"),
            (PaymentMethod::Other, "8", "其他"),
        ];
        for (m, code, label) in methods {
            assert_eq!((pay_type(Some(m), &settings(false)), pay_type(Some(m), &settings(true))), (code, label));
        }
    }

    #[test]
    fn plates_lose_their_spaces_by_default_and_say_so() {
        let strip = MapSettings { plate_spaces: PlateSpaces::Strip, ..settings(false) };
        let eps = Endpoints::new(100);
        for (plate, sent) in [("浙 A11111", "浙A11111"), ("浙\u{3000}B22222", "浙B22222")] {
            let entered = event("vehicle.entered", vehicle(json!(plate), None));
            let exited = event("vehicle.exited", {
                let mut d = exit_data(None, None);
                d["plate"] = json!(plate);
                d
            });
            for e in [&entered, &exited] {
                let (Mapping::Record(m), adjusted) = map_event_adjusted(e, &strip, &eps, &bindings()).unwrap() else {
                    panic!("not mapped")
                };
                assert_eq!(record_json(&m)["plate_number"], sent);
                assert_eq!(adjusted, [PLATE_NORMALIZED]);
                let (Mapping::Record(kept), adjusted) =
                    map_event_adjusted(e, &settings(false), &eps, &bindings()).unwrap()
                else {
                    panic!("not mapped")
                };
                assert_eq!(record_json(&kept)["plate_number"].as_str(), Some(plate), "keep");
                assert!(adjusted.is_empty());
            }
        }
        let canonical = event("vehicle.entered", vehicle(json!("浙A11111"), None));
        assert!(map_event_adjusted(&canonical, &strip, &eps, &bindings()).unwrap().1.is_empty());
    }

    #[test]
    fn a_missing_photo_follows_missing_photo() {
        let eps = Endpoints::new(100);
        let no_photo = event("vehicle.entered", json!({"plate": "浙A1", "vehicle_type": "small", "gate": "东门"}));
        let mut exit_without = exit_data(None, None);
        exit_without.as_object_mut().unwrap().remove("photo");
        let exited = event("vehicle.exited", exit_without);
        let placeholder = format!("data:image/jpg;base64,{}", missing_photo::placeholder_base64());
        for (e, field) in [(&no_photo, "enter_pic"), (&exited, "depart_pic")] {
            let s = MapSettings { missing_photo: MissingPhoto::Placeholder, ..settings(false) };
            let (Mapping::Record(m), adjusted) = map_event_adjusted(e, &s, &eps, &bindings()).unwrap() else {
                panic!("not mapped")
            };
            assert_eq!(record_json(&m)[field], placeholder.as_str());
            assert_eq!(adjusted, [Adjusted::filled(field, Change::Placeholder)]);
            let (Mapping::Record(m), adjusted) = map_event_adjusted(e, &settings(false), &eps, &bindings()).unwrap()
            else {
                panic!("not mapped")
            };
            assert_eq!(
                (record_json(&m)[field].as_str(), adjusted),
                (Some(""), vec![Adjusted::filled(field, Change::Empty)])
            );
            let s = MapSettings { missing_photo: MissingPhoto::Reject, ..settings(false) };
            let err = map_event_adjusted(e, &s, &eps, &bindings()).unwrap_err();
            assert!(err.field == "data.photo" && err.reason.contains(field), "{err}");
        }
    }

    #[test]
    fn yuan_text_has_no_float_artefacts() {
        let cases = [(3450, "34.5"), (3405, "34.05"), (3400, "34.0"), (0, "0.0"), (7, "0.07"), (1999, "19.99")];
        for (cents, text) in cases {
            assert_eq!(Yuan(cents).text(), text);
            assert_eq!(serde_json::to_string(&Yuan(cents)).unwrap(), text);
        }
        let big = serde_json::to_string(&Yuan(u64::MAX)).unwrap();
        assert_eq!(big, "184467440737095516.15");
    }

    #[test]
    fn oversize_photo_follows_the_policy() {
        let mut s = settings(false);
        s.photo_limit = s.photo_prefix.len() + 8;
        let photo = Photo { name: None, jpeg_base64: jpeg_b64() };
        let (pic, outcome) = picture(Some(&photo), &s);
        assert_eq!((pic.as_str(), outcome), ("", Some(PhotoOutcome::Dropped(DropReason::TooLarge))));
        s.photo_policy = PhotoPolicy::AsIs;
        let (pic, _) = picture(Some(&photo), &s);
        assert_eq!(pic, format!("data:image/jpg;base64,{}", jpeg_b64()));
    }

    #[test]
    fn prefix_counts_against_the_limit() {
        let mut s = settings(false);
        let photo = Photo { name: None, jpeg_base64: jpeg_b64() };
        s.photo_limit = s.photo_prefix.len() + photo.jpeg_base64.len();
        assert_eq!(picture(Some(&photo), &s).1, Some(PhotoOutcome::Unchanged));
        s.photo_limit -= 1;
        assert_eq!(picture(Some(&photo), &s).1, Some(PhotoOutcome::Dropped(DropReason::TooLarge)));
    }

    #[test]
    fn skips_unbound_lots_and_other_types() {
        let eps = Endpoints::new(100);
        let hb = event("lot.heartbeat", json!({}));
        assert_eq!(map_event(&hb, &settings(false), &eps, &bindings()), Ok(Mapping::Skip(SkipReason::TypeNotHandled)));
        let mut e = event("spaces.changed", json!({"total": 10, "free": 1}));
        e.lot = "elsewhere".into();
        assert_eq!(map_event(&e, &settings(false), &eps, &bindings()), Ok(Mapping::Skip(SkipReason::LotNotBound)));
    }

    #[test]
    fn batches_are_json_arrays() {
        let eps = Endpoints::new(100);
        let body = assemble(&eps.entrance, &[br#"{"a":1}"#, br#"{"a":2}"#]);
        assert_eq!(&body[..], br#"[{"a":1},{"a":2}]"#);
    }
}
