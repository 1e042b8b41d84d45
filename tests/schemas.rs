//! The JSON Schemas in `schemas/` and the Rust decoder (`lotbridge::event::decode`) describe the
//! same input contract: every example in `schemas/examples/valid/` passes both, every example in
//! `schemas/examples/invalid/` fails both (or only the decoder, for the few cross-field rules the
//! manifest marks `decoder-only`), and each decoder rejection names the field the manifest expects.
//!
//! Schemas are resolved offline: every file is loaded into the validator's resource registry under
//! its `$id`, and the validator is built without any network or file retriever.

use jsonschema::{Draft, Resource, Validator};
use lotbridge::event::{self, CouponsListed, DecodeError, EventType, ListedCoupon};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const INPUT_TYPES: [&str; 8] = [
    "lot.upserted",
    "lot.deleted",
    "lot.heartbeat",
    "spaces.changed",
    "vehicle.entered",
    "vehicle.exited",
    "coupon.granted",
    "member.coupons.requested",
];

/// A producer reads the reason in a dead letter; a reason that echoes a whole photo is unreadable.
const MAX_REASON_CHARS: usize = 300;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn examples_dir(kind: &str) -> PathBuf {
    schemas_dir().join("examples").join(kind)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// File names (not paths) of the `.json` files directly in `dir`, sorted.
fn json_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// Every schema file, by file name.
fn load_schemas() -> BTreeMap<String, Value> {
    let dir = schemas_dir();
    json_files(&dir).into_iter().map(|name| (name.clone(), read_json(&dir.join(&name)))).collect()
}

/// A validator for the schema file `name`, with every schema file registered under its `$id`
/// and format assertion on (`date-time` is checked, not just annotated).
fn validator(schemas: &BTreeMap<String, Value>, name: &str) -> Validator {
    let resources = schemas.values().map(|s| {
        let id = s["$id"].as_str().expect("every schema has an $id").to_string();
        (id, Resource::from_contents(s.clone()).expect("schema is a resource"))
    });
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_resources(resources)
        .build(&schemas[name])
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

/// One line of `EXPECTED.tsv`.
struct Expected {
    file: String,
    field: String,
    decoder_only: bool,
}

fn manifest() -> Vec<Expected> {
    let path = examples_dir("invalid").join("EXPECTED.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    lines.map(parse_manifest_line).collect()
}

fn parse_manifest_line(line: &str) -> Expected {
    let cols: Vec<&str> = line.split('\t').collect();
    assert_eq!(cols.len(), 3, "EXPECTED.tsv line needs file<TAB>field<TAB>yes|no: {line:?}");
    assert!(matches!(cols[2], "yes" | "no"), "decoder_only must be yes or no: {line:?}");
    Expected { file: cols[0].to_string(), field: cols[1].to_string(), decoder_only: cols[2] == "yes" }
}

fn decode_file(path: &Path) -> Result<event::Event, DecodeError> {
    event::decode(&std::fs::read(path).unwrap())
}

/// `data.lots[1]` -> `["data", "lots", "1"]`; `""` (the whole record) -> `[]`.
fn field_segments(field: &str) -> Vec<String> {
    field.split(['.', '[', ']']).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// `/data/lots/1` -> `["data", "lots", "1"]`.
fn pointer_segments(pointer: &str) -> Vec<String> {
    pointer.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect()
}

#[test]
fn every_schema_is_draft_2020_12_with_its_own_id() {
    let schemas = load_schemas();
    for (name, schema) in &schemas {
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema", "{name}");
        let id = schema["$id"].as_str().unwrap_or_default();
        assert!(id.ends_with(&format!("/{name}")), "{name}: $id {id:?} must end with the file name");
        if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
            panic!("{name} is not a valid draft 2020-12 schema: {e}");
        }
        validator(&schemas, name);
    }
    let mut expected: BTreeSet<String> = INPUT_TYPES.iter().map(|t| format!("{t}.json")).collect();
    expected.extend(["common.json", "envelope.json", "event.json", "member.coupons.listed.json"].map(String::from));
    assert_eq!(schemas.keys().cloned().collect::<BTreeSet<_>>(), expected);
}

/// Producers read the schemas as documentation: every property explains itself.
#[test]
fn every_property_has_a_description() {
    fn walk(node: &Value, at: &str, missing: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::Object(props)) = map.get("properties") {
                    for (key, prop) in props {
                        let described = prop.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty());
                        if !described {
                            missing.push(format!("{at}/properties/{key}"));
                        }
                    }
                }
                // An `if` only selects a branch; it documents nothing.
                let children = map.iter().filter(|(k, _)| k.as_str() != "if");
                children.for_each(|(k, v)| walk(v, &format!("{at}/{k}"), missing));
            }
            Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| walk(v, &format!("{at}/{i}"), missing)),
            _ => {}
        }
    }
    let mut missing = Vec::new();
    for (name, schema) in load_schemas() {
        walk(&schema, &name, &mut missing);
    }
    assert!(missing.is_empty(), "properties without a description: {missing:#?}");
}

#[test]
fn valid_examples_pass_schema_and_decoder() {
    let schemas = load_schemas();
    let any_event = validator(&schemas, "event.json");
    let per_type: BTreeMap<&str, Validator> =
        INPUT_TYPES.iter().map(|t| (*t, validator(&schemas, &format!("{t}.json")))).collect();
    let mut seen = BTreeSet::new();
    for name in json_files(&examples_dir("valid")) {
        let path = examples_dir("valid").join(&name);
        let value = read_json(&path);
        let decoded = decode_file(&path).unwrap_or_else(|e| panic!("decoder rejects {name}: {e}"));
        assert_eq!(decoded.event_type().as_str(), value["type"], "{name}");
        assert_eq!(
            (decoded.id.as_str(), decoded.lot.as_str()),
            (value["id"].as_str().unwrap(), value["lot"].as_str().unwrap())
        );
        assert_schema_valid(&any_event, &value, &format!("event.json on {name}"));
        for (ty, schema) in &per_type {
            let own = value["type"] == *ty;
            assert_eq!(schema.is_valid(&value), own, "{ty}.json on {name}: must accept its own type only");
        }
        seen.insert(decoded.event_type());
    }
    assert_eq!(seen, EventType::INPUTS.into_iter().collect(), "every input type needs a valid example");
}

fn assert_schema_valid(schema: &Validator, value: &Value, what: &str) {
    let errors: Vec<String> = schema.iter_errors(value).map(|e| format!("{}: {e}", e.instance_path)).collect();
    assert!(errors.is_empty(), "{what} fails: {errors:#?}");
}

#[test]
fn every_example_file_is_accounted_for() {
    let listed: Vec<String> = manifest().into_iter().map(|e| e.file).collect();
    let unique: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(unique.len(), listed.len(), "a file appears twice in EXPECTED.tsv");
    let on_disk: BTreeSet<String> = json_files(&examples_dir("invalid")).into_iter().collect();
    assert_only_json(&examples_dir("invalid"), &["EXPECTED.tsv"]);
    assert_only_json(&examples_dir("valid"), &[]);
    assert_eq!(unique, on_disk, "EXPECTED.tsv and the files in examples/invalid differ");
    assert!(on_disk.len() >= 35, "only {} invalid examples", on_disk.len());
}

/// A file the tests would skip (a `.jsn` typo, a stray note) must not sit among the examples.
fn assert_only_json(dir: &Path, allowed: &[&str]) {
    let others: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".json") && !allowed.contains(&n.as_str()))
        .collect();
    assert!(others.is_empty(), "unexpected files in {}: {others:?}", dir.display());
}

#[test]
fn invalid_examples_are_rejected_by_the_decoder_naming_the_field() {
    for expected in manifest() {
        let path = examples_dir("invalid").join(&expected.file);
        let err = match decode_file(&path) {
            Ok(_) => panic!("decoder accepts {}", expected.file),
            Err(e) => e,
        };
        assert_eq!(err.field, expected.field, "{}: {err}", expected.file);
        assert_plain_words(&err, &expected.file);
    }
}

/// The message a dead letter carries: `field: reason`, the reason short and free of parser noise.
fn assert_plain_words(err: &DecodeError, file: &str) {
    let message = err.to_string();
    assert_eq!(message, format!("{}: {}", err.field, err.reason), "{file}: the message must start with the field");
    assert!(!err.reason.trim().is_empty(), "{file}: empty reason");
    assert!(!err.reason.contains(" at line ") && !err.reason.contains("column"), "{file}: {message}");
}

/// Words of the decoder's implementation that mean nothing to a producer.
const RUST_JARGON: [&str; 6] = ["u32", "u64", "f64", "struct ", "Raw", "sequence"];

/// Known decoder defect, kept as the acceptance test for its fix: serde's wrong-type messages
/// reach producers as they are, naming Rust types (`expected u32`, `expected struct RawTarget`)
/// and echoing the whole offending value (a photo sent as a plain string puts the full base64 in
/// the reason, up to 8 MiB in a dead-letter header).
#[test]

fn reasons_use_producer_words_and_stay_short() {
    let mut bad = Vec::new();
    for expected in manifest() {
        let err = decode_file(&examples_dir("invalid").join(&expected.file)).unwrap_err();
        let jargon = RUST_JARGON.iter().any(|w| err.reason.contains(w));
        if jargon || err.reason.chars().count() > MAX_REASON_CHARS {
            bad.push(format!("{}: {}", expected.file, err.to_string().chars().take(120).collect::<String>()));
        }
    }
    assert!(bad.is_empty(), "reasons a producer cannot act on: {bad:#?}");
}

#[test]
fn invalid_examples_are_rejected_by_the_schema_unless_decoder_only() {
    let schemas = load_schemas();
    let any_event = validator(&schemas, "event.json");
    for expected in manifest() {
        let value = read_json(&examples_dir("invalid").join(&expected.file));
        let errors: Vec<(Vec<String>, String)> = any_event
            .iter_errors(&value)
            .map(|e| (pointer_segments(&e.instance_path.to_string()), format!("{}: {e}", e.instance_path)))
            .collect();
        if expected.decoder_only {
            let found: Vec<&String> = errors.iter().map(|(_, m)| m).collect();
            assert!(
                errors.is_empty(),
                "{} is marked decoder-only but the schema rejects it: {found:#?}",
                expected.file
            );
            continue;
        }
        assert!(!errors.is_empty(), "event.json accepts {}", expected.file);
        // Each schema error must be about the manifest's field (or an object containing it), so the
        // example is wrong in exactly the one way the manifest says.
        let field = field_segments(&expected.field);
        for (at, message) in &errors {
            assert!(
                field.starts_with(at),
                "{}: schema error off the field {}: {message}",
                expected.file,
                expected.field
            );
        }
    }
}

#[test]
fn decoder_only_examples_break_a_cross_field_rule() {
    let cross_field = BTreeSet::from(["data.free", "data.valid_until"]);
    for expected in manifest().into_iter().filter(|e| e.decoder_only) {
        assert!(cross_field.contains(expected.field.as_str()), "{} is decoder-only but not cross-field", expected.file);
    }
}

fn sample_listed(request_id: &str) -> CouponsListed {
    let coupon = ListedCoupon {
        id: "UC20261101000871".into(),
        coupon_id: "C1001".into(),
        definition_id: "C1001".into(),
        title: "满100减20停车券".into(),
        description: "停车费满100元可用".into(),
        kind: "amount".into(),
        min_amount_cents: 10_000,
        valid_from: Some("2026-11-01T00:00:00+08:00".into()),
        valid_until: None,
        status: "usable".into(),
        verify_code: None,
        locked: false,
    };
    CouponsListed { in_reply_to: request_id.into(), member_id: "M20261123000317".into(), coupons: vec![coupon] }
}

#[test]
fn listed_output_matches_its_schema_and_is_not_an_input() {
    let schemas = load_schemas();
    let listed = validator(&schemas, "member.coupons.listed.json");
    let request = decode_file(&examples_dir("valid").join("member.coupons.requested.json")).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:05:00.412+08:00").unwrap();
    let bytes = event::encode_listed(&request.lot, "mq-7f3a9c2e-0001.listed", at, &sample_listed(&request.id));
    let value: Value = serde_json::from_slice(&bytes).unwrap();
    assert_schema_valid(&listed, &value, "encode_listed output");
    assert_eq!(value["data"]["in_reply_to"], request.id.as_str());
    assert!(!validator(&schemas, "event.json").is_valid(&value), "event.json must not accept an output event");
    assert!(event::decode(&bytes).is_err(), "the decoder must not accept an output event");
}

#[test]
fn listed_output_example_matches_schema_and_rust_type() {
    let schemas = load_schemas();
    let value = read_json(&examples_dir("output").join("member.coupons.listed.json"));
    assert_schema_valid(&validator(&schemas, "member.coupons.listed.json"), &value, "output example");
    let data: CouponsListed = serde_json::from_value(value["data"].clone()).unwrap();
    assert_eq!(data.coupons.len(), 2);
    assert_eq!(
        (data.coupons[0].definition_id.as_str(), data.coupons[0].description.as_str()),
        ("C1001", "停车费满100元可用")
    );
    let mut broken = value.clone();
    broken["data"]["coupons"][0]["kind"] = Value::from("percent");
    assert!(!validator(&schemas, "member.coupons.listed.json").is_valid(&broken));
}

/// The zvcms adapter's answer to the spec's own success example (empty `coupon_type` and
/// `status`, an expiry note) is published as `kind` / `status` values the output schema
/// must accept: the results topic's consumers validate against it.
#[test]
fn zvcms_answers_to_the_spec_example_match_the_output_schema() {
    use lotbridge::config::{Binding, Bindings};
    use lotbridge::vendors::zvcms::{build, Config, USER_COUPON_LIST};
    use lotbridge::vendors::SinkContext;
    use lotbridge::vendors::{Adapter, HttpResponse, Verdict};

    const SPEC_SUCCESS: &str = r#"{ "status": "true", "code": "0", "message": "说明", "data": { "item_list": [
        { "id": "", "coupon_id": "", "start_at": "1552924800", "end_at": "1553183999", "status": "", "verify_code": "",
          "is_lock": "", "date_time": "", "coupon": { "id": "", "title": "", "coupon_type": "", "min_amount_use": "", "desc": "" } },
        { "id": "7", "coupon_id": "70", "start_at": "1552924800", "end_at": "1553183999", "status": "0", "verify_code": "x",
          "is_lock": "0", "date_time": "已过期", "coupon": { "id": "70", "title": "t", "coupon_type": "1", "min_amount_use": "5", "desc": "" } } ] } }"#;
    let cfg: Config = toml::from_str(
        "base_url = \"http://127.0.0.1:9/\"\nopen_id = \"o\"\ngrant_code = { value = \"g\" }\nsecret_key = { value = \"k\" }\n",
    )
    .expect("zvcms config");
    let ctx = SinkContext {
        name: "members",
        bindings: std::sync::Arc::new(Bindings::from_list(vec![Binding {
            lot: "P001".into(),
            vendor_lot: "V-001".into(),
            token: None,
        }])),
        photo: Default::default(),
        max_records: 100,
        base_dir: Path::new("."),
        http: reqwest::Client::new(),
    };
    let adapter = build(&cfg, &ctx).expect("zvcms adapter");
    let response =
        HttpResponse { status: 200, retry_after: None, body: bytes::Bytes::from_static(SPEC_SUCCESS.as_bytes()) };
    let Verdict::Answered(coupons) = adapter.classify(&USER_COUPON_LIST, &response) else {
        panic!("the spec's success example is an answer");
    };
    assert_eq!(coupons[0].kind, "unknown", "an empty coupon_type");
    assert_eq!(coupons[0].status, "unknown", "an empty status without an expiry note");
    assert_eq!((coupons[1].definition_id.as_str(), coupons[1].description.as_str()), ("70", ""));
    let data = CouponsListed { in_reply_to: "q-1".into(), member_id: "1003".into(), coupons };
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:05:00+08:00").unwrap();
    let value: Value = serde_json::from_slice(&event::encode_listed("P001", "q-1.listed", at, &data)).unwrap();
    assert_schema_valid(&validator(&load_schemas(), "member.coupons.listed.json"), &value, "zvcms answer");
}

/// The results topic's key is written in three places that consumers read: the output
/// schema, the schema guide and the README. They must all say what lotbridge does (the
/// engine publishes answers keyed by the member id).
#[test]
fn listed_output_key_is_the_member_id_everywhere() {
    let schema = read_json(&schemas_dir().join("member.coupons.listed.json"));
    let description = schema["description"].as_str().unwrap_or_default();
    assert!(description.contains("member id as Kafka key"), "{description}");
    assert!(!description.contains("request's lot as Kafka key"), "{description}");
    let guide = std::fs::read_to_string(schemas_dir().join("README.md")).unwrap();
    assert!(guide.contains("keyed by the\n  member id"), "schemas/README.md must say answers are keyed by member id");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(readme.contains("(key =\n  member id)"), "README.md must say answers are keyed by member id");
}
