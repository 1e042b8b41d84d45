//! The hostile-input corpus of `tests/corpus/`: every file in the folder plus the records too
//! large to commit (built here), each with the field path its rejection must name, from
//! `tests/corpus/EXPECTED.tsv`. Unit tests, the engine test on the mock cluster and the system
//! tests against a standalone broker all read it through [`load`].

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One record value that the decoder must reject without panicking.
#[derive(Clone)]
pub struct Hostile {
    /// File name (`017-overlong-nul-in-lot.bin`) or `generated:<name>`.
    pub name: String,
    /// The Kafka record value.
    pub bytes: Vec<u8>,
    /// Field path the rejection must name; `None` for a whole-record rejection (broken JSON,
    /// too large) and for `fuzz-*` files, which only have to be rejected.
    pub field: Option<String>,
}

impl Hostile {
    /// A minimized fuzzer input: no manifest row, any rejection will do.
    pub fn is_fuzz(&self) -> bool {
        self.name.starts_with("fuzz-")
    }
}

impl std::fmt::Debug for Hostile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a 10 MB value in an assertion message.
        write!(f, "Hostile({}, {} bytes, field {:?})", self.name, self.bytes.len(), self.field)
    }
}

/// The record size limit the generated oversize records are built around (the engine's
/// default `max_record_bytes`).
pub const MAX_RECORD_BYTES: usize = 10 * 1024 * 1024;

/// The corpus folder.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("corpus")
}

/// Every hostile record: the files, then the generated ones, in name order. Panics when the
/// manifest and the folder disagree (a file without a row, a row without a file).
pub fn load() -> Vec<Hostile> {
    let mut expected = manifest();
    let mut out = Vec::new();
    for (name, bytes) in files() {
        let field = if name.starts_with("fuzz-") {
            None
        } else {
            expected.remove(&name).unwrap_or_else(|| panic!("tests/corpus/{name} has no EXPECTED.tsv row"))
        };
        out.push(Hostile { name, bytes, field });
    }
    for (name, bytes) in generated() {
        let key = format!("generated:{name}");
        let field = expected.remove(&key).unwrap_or_else(|| panic!("{key} has no EXPECTED.tsv row"));
        out.push(Hostile { name: key, bytes, field });
    }
    let orphans: Vec<&String> = expected.keys().collect();
    assert!(orphans.is_empty(), "EXPECTED.tsv rows without a record: {orphans:?}");
    out
}

/// `EXPECTED.tsv`: name → expected field (`-` becomes `None`).
fn manifest() -> BTreeMap<String, Option<String>> {
    let path = dir().join("EXPECTED.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let mut cols = line.split('\t');
        let (Some(name), Some(field)) = (cols.next(), cols.next()) else {
            panic!("EXPECTED.tsv: a row needs file, field and note: {line:?}");
        };
        let field = (field != "-").then(|| field.to_string());
        assert!(rows.insert(name.to_string(), field).is_none(), "EXPECTED.tsv lists {name} twice");
    }
    rows
}

/// Every file of the folder except the manifest and the README.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir())
        .expect("tests/corpus")
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            if name == "EXPECTED.tsv" || name == "README.md" {
                return None;
            }
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Some((name, bytes))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

const AT: &str = "2026-11-23T08:00:00+08:00";

/// An envelope around raw `data` JSON text.
fn envelope(ty: &str, data: &str) -> Vec<u8> {
    format!(r#"{{"v":1,"id":"g-1","type":"{ty}","lot":"P1","at":"{AT}","data":{data}}}"#).into_bytes()
}

fn vehicle_with(plate: &str, gate: &str, photo: &str) -> Vec<u8> {
    let data = format!(r#"{{"plate":{plate},"vehicle_type":"small","gate":{gate},"photo":{photo}}}"#);
    envelope("vehicle.entered", &data)
}

/// A well-formed heartbeat padded with an ignored field to exactly `size` bytes: rejected
/// only when `size` is over the record limit.
pub fn padded_heartbeat(size: usize) -> Vec<u8> {
    let empty = envelope("lot.heartbeat", r#"{"note":""}"#);
    let pad = "x".repeat(size - empty.len());
    envelope("lot.heartbeat", &format!(r#"{{"note":"{pad}"}}"#))
}

fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

fn many_keys(n: usize) -> String {
    (0..n).map(|i| format!(r#""k{i}":{i},"#)).collect()
}

/// The records too large to commit, by name (without the `generated:` prefix).
pub fn generated() -> Vec<(String, Vec<u8>)> {
    let photo9 = format!(r#"{{"jpeg_base64":"/9j/{}"}}"#, "A".repeat(9 * 1024 * 1024));
    let plate = format!("\"{}\"", "京".repeat(1024 * 1024 / 3));
    let gate = format!("\"{}\"", "G".repeat(100 * 1024));
    let ok_photo = r#"{"jpeg_base64":"/9j/4AAQ"}"#;
    let lot = "L".repeat(1024 * 1024);
    let id = "\\u0041".repeat(1024 * 1024 / 6);
    let keys = many_keys(100_000);
    let records: Vec<(&str, Vec<u8>)> = vec![
        ("message-10mb", padded_heartbeat(MAX_RECORD_BYTES + 1)),
        ("message-11.8mb", padded_heartbeat(11_800_000)),
        ("photo-9mb", vehicle_with("\"京A1\"", "\"East\"", &photo9)),
        ("plate-1mb", vehicle_with(&plate, "\"East\"", ok_photo)),
        ("gate-100kb", vehicle_with("\"京A1\"", &gate, ok_photo)),
        (
            "lot-1mb",
            format!(r#"{{"v":1,"id":"g-1","type":"lot.heartbeat","lot":"{lot}","at":"{AT}","data":{{}}}}"#)
                .into_bytes(),
        ),
        (
            "id-1mb-of-escapes",
            format!(r#"{{"v":1,"id":"{id}","type":"lot.heartbeat","lot":"P1","at":"{AT}","data":{{}}}}"#).into_bytes(),
        ),
        (
            "depth-bomb-arrays-in-total",
            envelope("spaces.changed", &format!(r#"{{"total":{},"free":1}}"#, nested("[", "1", "]", 10_000))),
        ),
        ("depth-bomb-objects-in-gate", vehicle_with("null", &nested("{\"a\":", "1", "}", 10_000), ok_photo)),
        ("depth-bomb-arrays-as-data", envelope("lot.heartbeat", &nested("[", "", "]", 10_000))),
        (
            "depth-bomb-objects-in-unknown-field",
            format!(
                r#"{{"deep":{},"id":"g-1","type":"lot.heartbeat","lot":"P1","at":"{AT}","data":{{}}}}"#,
                nested("{\"a\":", "1", "}", 100_000)
            )
            .into_bytes(),
        ),
        (
            "depth-bomb-arrays-in-v",
            format!(
                r#"{{"v":{},"id":"g-1","type":"lot.heartbeat","lot":"P1","at":"{AT}","data":{{}}}}"#,
                nested("[", "1", "]", 100_000)
            )
            .into_bytes(),
        ),
        ("100k-keys-in-data", envelope("spaces.changed", &format!(r#"{{{keys}"total":10}}"#))),
        (
            "100k-keys-then-duplicate-lot",
            format!(
                r#"{{"v":1,"id":"g-1","type":"lot.heartbeat","lot":"P1",{keys}"at":"{AT}","data":{{}},"lot":"P2"}}"#
            )
            .into_bytes(),
        ),
    ];
    records.into_iter().map(|(name, bytes)| (name.to_string(), bytes)).collect()
}
