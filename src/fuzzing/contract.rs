//! Kafka records: the contract v1 decoder, the mapping of what it accepts by every vendor
//! adapter, and the results record lotbridge writes back.

use super::bounded;
use crate::config::Config;
use crate::event::{decode, encode_listed, CouponsListed, Event, EventData, ListedCoupon};
use crate::load::Loaded;
use crate::photo::PhotoOutcome;
use crate::vendors::{MapError, Mapping, SkipReason};
use chrono::DateTime;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;

/// The contract v1 decoder on arbitrary bytes: an event or a reason naming a field; an
/// accepted event, written back as contract JSON, decodes to the same event (what the
/// decoder accepts is what the contract describes).
pub fn decode_event(data: &[u8]) {
    match decode(data) {
        Ok(event) => check_round_trip(&event),
        Err(e) => {
            // Reasons go to dead-letter headers: bounded, and never empty.
            let chars = e.to_string().chars().count();
            assert!(chars <= 1_000, "decode reason is {chars} characters: {e}");
            assert!(!e.reason.is_empty(), "empty reason for field {:?}", e.field);
        }
    }
}

/// A decoded event mapped by every sink of [`MAP_CONFIG`]: a `MapError` names a contract
/// field with a bounded reason; a record is JSON of bounded size; a recompressed photo fits
/// the sink's limit, and so does one sent unchanged. An event of a lot no sink binds is mapped again as one of `P310105001`
/// (a bound lot must not be skipped as unbound), so mutated lot codes still reach mapping.
pub fn map_event(data: &[u8]) {
    let Ok(event) = decode(data) else { return };
    for sink in &map_sinks().sinks {
        let limit = photo_limit(&sink.config.name);
        match sink.adapter.map(&event) {
            Ok(Mapping::Skip(SkipReason::LotNotBound)) => {
                let again = sink.adapter.map(&rebound(&event));
                assert!(
                    !matches!(again, Ok(Mapping::Skip(SkipReason::LotNotBound))),
                    "sink {}: a bound lot is skipped as unbound",
                    sink.config.name
                );
                check_mapping(&sink.config.name, limit, &event, again);
            }
            mapping => check_mapping(&sink.config.name, limit, &event, mapping),
        }
    }
}

/// One sink per vendor with its defaults, and one more per vendor with the options that
/// change what mapping writes; every sink binds the lots the seeds use.
pub const MAP_CONFIG: &str = r#"
[kafka]
brokers = "127.0.0.1:9"
topics = ["events"]

[[sinks]]
name = "barrier"
[sinks.barrier_coupon]
base_url = "http://127.0.0.1:9/artemis"
client_id = "244221"
client_secret = { value = "fuzz-secret" }

[[sinks]]
name = "barrier-typed"
[sinks.barrier_coupon]
base_url = "http://127.0.0.1:9/artemis"
client_id = "244221"
client_secret = { value = "fuzz-secret" }
field_encoding = "typed"
plate_spaces = "keep"

[[sinks]]
name = "isp"
[sinks.inspur_isp]
base_url = "http://127.0.0.1:9"
client_id = "id"
client_secret = { value = "fuzz-secret" }

[[sinks]]
name = "isp-labels"
[sinks.inspur_isp]
base_url = "http://127.0.0.1:9"
client_id = "id"
client_secret = { value = "fuzz-secret" }
labels = true
plate_spaces = "keep"
missing_photo = "reject"
photo_limit_bytes = 4200

[[sinks]]
name = "bzx"
[sinks.bingzhouxing]
base_url = "http://127.0.0.1:9"

[[sinks]]
name = "bzx-small"
[sinks.bingzhouxing]
base_url = "http://127.0.0.1:9"
data_encoding = "string"
ts_unit = "s"
photo_limit = 400
missing_photo = "empty"

[[sinks]]
name = "zvcms"
[sinks.zvcms]
base_url = "http://127.0.0.1:9/"
open_id = "fuzz-open-id"
grant_code = { value = "fuzz-grant-code" }
secret_key = { value = "fuzz-secret-key" }

[[sinks]]
name = "zvcms-all"
[sinks.zvcms]
base_url = "http://127.0.0.1:9/"
open_id = "fuzz-open-id"
grant_code = { value = "fuzz-grant-code" }
secret_key = { value = "fuzz-secret-key" }
all_lots = true
"#;

/// The lots the seeds name (`schemas/examples/valid/`), bound to every sink.
const BOUND_LOTS: [&str; 9] = ["P310105001", "P310105009", "P002", "P003", "P004", "P005", "P006", "P007", "P001"];

/// A mapped record's size beyond its photo: every text field of the contract at its
/// longest, JSON-escaped, fits many times over.
pub const MAX_RECORD_BYTES_BEYOND_PHOTO: usize = 64 * 1024;

/// The sinks of [`MAP_CONFIG`], built once as `lotbridge` builds a configuration.
fn map_sinks() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        let bindings: Vec<String> = BOUND_LOTS
            .iter()
            .map(|lot| format!("{{ lot = \"{lot}\", vendor_lot = \"V-{lot}\", token = {{ value = \"t-{lot}\" }} }}"))
            .collect();
        let bindings = format!("bindings = [{}]\n", bindings.join(", "));
        let text = MAP_CONFIG.replace("[[sinks]]\n", &format!("[[sinks]]\n{bindings}"));
        let config = Config::parse(&text, Path::new("fuzz.toml")).unwrap_or_else(|e| panic!("fuzz config: {e}"));
        crate::load::build(config, Path::new(".")).unwrap_or_else(|e| panic!("fuzz config: {e}"))
    })
}

/// The base64 photo limit of a sink of [`MAP_CONFIG`] (0: the vendor takes no photo).
fn photo_limit(sink: &str) -> usize {
    match sink {
        "isp" => crate::vendors::isp::config::SPEC_PHOTO_LIMIT,
        "isp-labels" => 4200,
        "bzx" => crate::vendors::bingzhouxing::config::DEFAULT_PHOTO_LIMIT,
        "bzx-small" => 400,
        _ => 0,
    }
}

/// The event as one of a bound lot (for a coupon, also its first lot).
fn rebound(event: &Event) -> Event {
    let mut event = event.clone();
    event.lot = BOUND_LOTS[0].into();
    if let EventData::CouponGranted(grant) = &mut event.data {
        match grant.lots.first_mut() {
            Some(first) => *first = BOUND_LOTS[0].into(),
            None => grant.lots.push(BOUND_LOTS[0].into()),
        }
    }
    event
}

fn check_mapping(sink: &str, photo_limit: usize, event: &Event, mapping: Result<Mapping, MapError>) {
    match mapping {
        Ok(Mapping::Skip(_)) => {}
        Ok(Mapping::Record(mapped)) => {
            let len = mapped.record.len();
            let most = photo_limit + MAX_RECORD_BYTES_BEYOND_PHOTO;
            assert!(len <= most, "sink {sink}: record of {len} bytes, over {most}");
            if let Err(e) = serde_json::from_slice::<Value>(&mapped.record) {
                panic!("sink {sink}: record is not JSON ({e}): {}", String::from_utf8_lossy(&mapped.record));
            }
            let sent = event.photo().map(|p| p.jpeg_base64.len());
            match (mapped.photo, sent) {
                (Some(PhotoOutcome::Recompressed { after_bytes, .. }), Some(_)) => {
                    assert!(
                        after_bytes <= photo_limit,
                        "sink {sink}: photo recompressed to {after_bytes}, over {photo_limit}"
                    )
                }
                // Every sink of MAP_CONFIG recompresses: a photo sent as it is must fit.
                (Some(PhotoOutcome::Unchanged), Some(len)) => {
                    assert!(len <= photo_limit, "sink {sink}: photo of {len} bytes sent unchanged, over {photo_limit}")
                }
                (Some(PhotoOutcome::Dropped(_)), Some(_)) | (None, _) => {}
                (Some(outcome), None) => panic!("sink {sink}: photo outcome {outcome:?} without a photo"),
            }
        }
        Err(e) => {
            assert!(names_a_field(&e.field), "sink {sink}: mapping error names no contract field: {e}");
            assert!(!e.reason.trim().is_empty(), "sink {sink}: mapping error without a reason: {e}");
            bounded("mapping error", &e.to_string());
        }
    }
}

/// `at`, `lot`, `id`, `type`, `data` or a path below `data` (`data.to.plate`, `data.lots[3]`).
fn names_a_field(field: &str) -> bool {
    let mut parts = field.split('.');
    let root = matches!(parts.next(), Some("id" | "lot" | "at" | "type" | "data"));
    root && parts.all(|part| {
        let (name, index) = part.split_once('[').unwrap_or((part, "0]"));
        let index_ok = index.strip_suffix(']').is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
        index_ok && !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    })
}

/// The `member.coupons.listed` record the engine publishes for an answered coupon list: JSON
/// with every coupon, normalized values and RFC 3339 dates, and refused as an input.
pub(super) fn check_listed(coupons: Vec<ListedCoupon>) {
    for c in &coupons {
        assert!(["amount", "discount", "unknown"].contains(&c.kind.as_str()), "kind {:?}", c.kind);
        assert!(["usable", "used", "expired", "unknown"].contains(&c.status.as_str()), "status {:?}", c.status);
        for date in [&c.valid_from, &c.valid_until].into_iter().flatten() {
            assert!(DateTime::parse_from_rfc3339(date).is_ok(), "coupon date {date:?} is not RFC 3339");
        }
    }
    let n = coupons.len();
    let data = CouponsListed { in_reply_to: "q-1".into(), member_id: "1003".into(), coupons };
    let at = chrono::Utc::now().fixed_offset();
    let record = encode_listed("P001", "q-1.listed", at, &data);
    let json: Value = serde_json::from_slice(&record).unwrap_or_else(|e| panic!("results record is not JSON: {e}"));
    assert_eq!(json["data"]["coupons"].as_array().map(Vec::len), Some(n), "coupons lost in the record");
    assert!(decode(&record).is_err(), "an output record was accepted as input");
}

fn check_round_trip(event: &Event) {
    let data = contract_data(&event.data);
    let envelope = json!({
        "v": 1,
        "id": event.id,
        "type": event.event_type().as_str(),
        "lot": event.lot,
        "at": event.at.to_rfc3339(),
        "data": data,
    });
    let again = decode(envelope.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("accepted event, re-encoded, is rejected: {e}\n{envelope}"));
    assert_eq!(again.event_type(), event.event_type());
    assert_eq!((&again.id, &again.lot, again.at), (&event.id, &event.lot, event.at));
    let (a, b) = (Some(contract_data(&again.data)), Some(data));
    assert!(same(a.as_ref(), b.as_ref()), "re-decoded event differs: {a:?} vs {b:?}");
}

/// The `data` object as the contract writes it.
fn contract_data(data: &EventData) -> Value {
    match serde_json::to_value(data) {
        // Types without data (lot.deleted, lot.heartbeat) serialize as null; the contract says {}.
        Ok(Value::Null) => json!({}),
        Ok(v) => v,
        Err(e) => panic!("accepted event does not serialize: {e}"),
    }
}

/// JSON equality that lets floats differ in their last bits (serde_json's float parsing
/// is not exact without its `float_roundtrip` feature).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            (x - y).abs() <= 1e-9 * x.abs().max(1.0)
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(Some(x), Some(y)))
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.len() == y.len() && x.iter().all(|(k, v)| same(Some(v), y.get(k)))
        }
        (x, y) => x == y,
    }
}
