//! Lot bindings: which lots a sink serves, under which vendor code, with which per-lot
//! secret. Inline (`[[sinks.bindings]]`) or from a CSV file with the columns
//! `lot,vendor_lot,token` (`token` as `env:NAME` or `file:PATH`, optional).

use super::{invalid, ConfigError, SinkConfig};
use crate::secret::{Secret, SecretRef};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// One inline binding.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// Platform lot code (the events' `lot`).
    pub lot: String,
    /// The vendor's code for the lot (defaults to `lot`).
    #[serde(default)]
    pub vendor_lot: Option<String>,
    /// Per-lot secret (Bingzhouxing's lot token).
    #[serde(default)]
    pub token: Option<SecretRef>,
}

/// A lot bound to a sink, with its secret resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Platform lot code.
    pub lot: String,
    /// The vendor's code for it.
    pub vendor_lot: String,
    /// Its per-lot secret, if the vendor issues one.
    pub token: Option<Secret>,
}

/// The lots bound to one sink, by platform lot code.
#[derive(Debug, Clone, Default)]
pub struct Bindings(HashMap<String, Binding>);

impl Bindings {
    /// The binding of a platform lot.
    pub fn get(&self, lot: &str) -> Option<&Binding> {
        self.0.get(lot)
    }

    /// Number of bound lots.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no lot is bound.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every platform lot code, sorted.
    pub fn lots(&self) -> Vec<String> {
        let mut lots: Vec<String> = self.0.keys().cloned().collect();
        lots.sort();
        lots
    }

    /// Every binding.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.0.values()
    }

    /// Builds bindings from a list (used by tests and the demo).
    pub fn from_list(list: Vec<Binding>) -> Self {
        Bindings(list.into_iter().map(|b| (b.lot.clone(), b)).collect())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvRow {
    lot: String,
    #[serde(default)]
    vendor_lot: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// Reads a sink's inline and CSV bindings and resolves their secrets.
pub fn load_bindings(sink: &SinkConfig, base: &Path) -> Result<Bindings, ConfigError> {
    let mut out: HashMap<String, Binding> = HashMap::new();
    let mut add = |b: Binding, origin: &dyn Fn() -> String| -> Result<(), ConfigError> {
        if b.lot.is_empty() || b.vendor_lot.is_empty() {
            return Err(invalid(format!("{}: lot and vendor_lot must not be empty", origin())));
        }
        if out.contains_key(&b.lot) {
            return Err(invalid(format!("{}: lot {:?} is bound twice", origin(), b.lot)));
        }
        out.insert(b.lot.clone(), b);
        Ok(())
    };
    for (i, b) in sink.bindings.iter().enumerate() {
        let origin = || format!("sink {:?} bindings[{i}]", sink.name);
        let token = resolve_opt(b.token.as_ref(), base, &origin)?;
        let vendor_lot = b.vendor_lot.clone().unwrap_or_else(|| b.lot.clone());
        add(Binding { lot: b.lot.clone(), vendor_lot, token }, &origin)?;
    }
    if let Some(csv_path) = &sink.bindings_csv {
        let path = base.join(csv_path);
        let csv_err = |message: String| ConfigError::Csv { path: path.clone(), message };
        let mut reader =
            csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(&path).map_err(|e| csv_err(e.to_string()))?;
        for (i, row) in reader.deserialize::<CsvRow>().enumerate() {
            let line = i + 2;
            let row = row.map_err(|e| csv_err(format!("line {line}: {e}")))?;
            let origin = || format!("{} line {line}", path.display());
            let token = match row.token.as_deref().filter(|t| !t.is_empty()) {
                Some(text) => Some(
                    SecretRef::parse_compact(text)
                        .map_err(|source| ConfigError::Secret { context: origin(), source })?,
                ),
                None => None,
            };
            let token = resolve_opt(token.as_ref(), base, &origin)?;
            let vendor_lot = row.vendor_lot.filter(|v| !v.is_empty()).unwrap_or_else(|| row.lot.clone());
            add(Binding { lot: row.lot, vendor_lot, token }, &origin)?;
        }
    }
    Ok(Bindings(out))
}

fn resolve_opt(r: Option<&SecretRef>, base: &Path, origin: &dyn Fn() -> String) -> Result<Option<Secret>, ConfigError> {
    r.map(|r| r.resolve(base).map_err(|source| ConfigError::Secret { context: origin(), source })).transpose()
}
