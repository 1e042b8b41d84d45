//! The contract v1 decoder on arbitrary bytes: it must answer every record with an event or
//! a reason naming a field, never panic; an accepted event, written back as contract JSON,
//! must decode to the same event (what the decoder accepts is what the contract describes).

#![no_main]

use libfuzzer_sys::fuzz_target;
use lotbridge::event::{decode, DecodeError, Event, EventData};
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(event) => check_round_trip(&event),
        Err(e) => check_reason(&e),
    }
});

/// Reasons go to dead-letter headers: bounded, and the path names a field or the record.
fn check_reason(e: &DecodeError) {
    let chars = e.to_string().chars().count();
    assert!(chars <= 1_000, "decode reason is {chars} characters: {e}");
    assert!(!e.reason.is_empty(), "empty reason for field {:?}", e.field);
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
    let again = match decode(envelope.to_string().as_bytes()) {
        Ok(again) => again,
        Err(e) => panic!("accepted event, re-encoded, is rejected: {e}\n{envelope}"),
    };
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
