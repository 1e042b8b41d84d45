//! The annotated example configuration is a newcomer's first contact: it must check cleanly
//! as shipped, with no environment set, and show every key the configuration structs accept.
//!
//! The keys are not listed by hand: a probing deserializer walks [`Config`] the way serde
//! does, recording every field name of every struct (vendor tables included), so a field
//! added tomorrow fails this test until the example shows it.

use lotbridge::config::Config;
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

type Error = de::value::Error;

/// Every key path (`sinks.rate_limit.burst`) serde asks for while deserializing `Config`.
fn config_keys() -> BTreeSet<String> {
    let keys = RefCell::new(BTreeSet::new());
    let probe = Probe { path: "", keys: Some(&keys) };
    if let Err(e) = <Config as serde::Deserialize>::deserialize(probe) {
        panic!("the probe could not walk Config: {e}");
    }
    keys.into_inner()
}

#[derive(Clone, Copy)]
struct Probe<'a> {
    path: &'a str,
    /// `None` inside enum variants: their content is not a key of the file.
    keys: Option<&'a RefCell<BTreeSet<String>>>,
}

// `path` borrows from a String that lives on the stack of the caller.
impl<'a> Probe<'a> {
    fn at<'b>(self, path: &'b str) -> Probe<'b>
    where
        'a: 'b,
    {
        Probe { path, keys: self.keys }
    }
}

macro_rules! forward_to_number {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_u64(1)
        }
    )*};
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("probe")
    }
    forward_to_number!(deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_i8
        deserialize_i16 deserialize_i32 deserialize_i64 deserialize_f32 deserialize_f64);
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(false)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(One(Some(self)))
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Fields { probe: self, fields: &[], at: 0, path: String::new() })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(Fields { probe: self, fields, at: 0, path: String::new() })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(FirstVariant { probe: Probe { keys: None, ..self }, variant: variants[0] })
    }
    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any i128 u128
    }
}

/// A sequence of one element.
struct One<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        self.0.take().map(|probe| seed.deserialize(probe)).transpose()
    }
}

/// The fields of a struct, each recorded and given a probe as its value.
struct Fields<'a> {
    probe: Probe<'a>,
    fields: &'static [&'static str],
    at: usize,
    path: String,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.get(self.at) else { return Ok(None) };
        self.at += 1;
        self.path = if self.probe.path.is_empty() { field.to_string() } else { format!("{}.{field}", self.probe.path) };
        if let Some(keys) = self.probe.keys {
            keys.borrow_mut().insert(self.path.clone());
        }
        seed.deserialize((*field).into_deserializer()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(self.probe.at(&self.path))
    }
}

struct FirstVariant<'a> {
    probe: Probe<'a>,
    variant: &'static str,
}

impl<'de, 'a> EnumAccess<'de> for FirstVariant<'a> {
    type Error = Error;
    type Variant = Probe<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Probe<'a>), Error> {
        Ok((seed.deserialize(self.variant.into_deserializer())?, self.probe))
    }
}

impl<'de> VariantAccess<'de> for Probe<'_> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
        self.deserialize_struct("", fields, visitor)
    }
}

/// Keys written in the example (commented-out ones too: an optional key without a default
/// is shown commented), by the table header they appear under.
fn example_keys(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut sections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = String::new();
    sections.insert(current.clone(), BTreeSet::new());
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches('#').trim();
        let line = line.split(" #").next().unwrap_or_default();
        if let Some(header) = line.strip_prefix('[') {
            let name = header.trim_matches(|c| c == '[' || c == ']').trim();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.".contains(c)) {
                current = name.to_string();
                sections.entry(current.clone()).or_default();
                continue;
            }
        }
        let keys = sections.entry(current.clone()).or_default();
        keys.extend(assigned_names(line));
    }
    sections
}

/// Every `name =` in a line (inline tables included), quotes removed.
fn assigned_names(line: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let before = rest[..eq].trim_end().trim_end_matches('"');
        let start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).map_or(0, |i| i + 1);
        let name = &before[start..];
        if !name.is_empty() {
            names.push(name.to_string());
        }
        rest = &rest[eq + 1..];
    }
    names
}

/// Whether the example shows `path`: as a table header, or as a key in the deepest table
/// of the path the example has (inline tables belong to the table they are written in).
fn shown(path: &str, sections: &BTreeMap<String, BTreeSet<String>>) -> bool {
    if sections.contains_key(path) {
        return true;
    }
    let leaf = path.rsplit('.').next().unwrap_or(path);
    let mut parent = path.rsplit_once('.').map_or("", |(p, _)| p);
    loop {
        if let Some(keys) = sections.get(parent) {
            return keys.contains(leaf);
        }
        match parent.rsplit_once('.') {
            Some((up, _)) => parent = up,
            None if !parent.is_empty() => parent = "",
            None => return false,
        }
    }
}

fn example_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/lotbridge.example.toml")
}

#[test]
fn the_probe_sees_every_table() {
    let keys = config_keys();
    for key in [
        "kafka.brokers",
        "kafka.properties",
        "sinks.rate_limit.burst",
        "sinks.bindings.token",
        "sinks.network.ca_file",
        "sinks.bingzhouxing.base_url",
        "sinks.inspur_isp.token_extra_fields",
        "sinks.zvcms.int_params",
        "sinks.barrier_coupon.credentials_cooldown_secs",
    ] {
        assert!(keys.contains(key), "{key} not found by the probe: {keys:#?}");
    }
}

#[test]
fn every_config_key_is_in_the_example() {
    let text = std::fs::read_to_string(example_path()).expect("example");
    let sections = example_keys(&text);
    let missing: Vec<String> = config_keys().into_iter().filter(|k| !shown(k, &sections)).collect();
    assert!(missing.is_empty(), "keys missing from deploy/lotbridge.example.toml: {missing:#?}");
}

#[test]
fn the_coverage_check_notices_a_missing_key() {
    let text = std::fs::read_to_string(example_path()).expect("example");
    let without = text.replace("linger_ms", "lingering");
    assert!(!shown("sinks.batch.linger_ms", &example_keys(&without)));
    assert!(shown("sinks.batch.linger_ms", &example_keys(&text)));
}

fn lotbridge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lotbridge"));
    cmd.env_clear().current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

#[test]
fn the_example_checks_cleanly_with_no_environment() {
    let out = lotbridge().args(["check-config", "--config", "deploy/lotbridge.example.toml"]).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn lotbridge_config_names_the_default_file() {
    let out =
        lotbridge().arg("check-config").env("LOTBRIDGE_CONFIG", "deploy/lotbridge.example.toml").output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_configuration_error_exits_78_and_says_why() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopicz = [\"t\"]\n").expect("write");
    for command in ["check-config", "run"] {
        let out = lotbridge().args([command, "--config"]).arg(&path).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{command}: {stderr}");
        assert!(stderr.contains("topicz"), "{command}: {stderr}");
        assert!(!stderr.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {stderr:?}");
    }
}

#[test]
fn a_configuration_error_is_a_json_log_line_when_logs_are_json() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[log]\njson = true\n[kafka]\nbrokers = \"127.0.0.1:1\"\ntopicz = [\"t\"]\n").expect("write");
    let out = lotbridge().args(["run", "--config"]).arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.contains("topicz")).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(json["level"], "ERROR", "{json}");
}
