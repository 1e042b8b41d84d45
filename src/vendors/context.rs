//! [`SinkContext`]: what a vendor adapter needs from its sink's common settings to build
//! itself. It lives with the adapters, not in `config`, because it carries built things
//! (the HTTP client, the resolved bindings); `load` fills it in.

use crate::config::{Bindings, ConfigError};
use crate::photo::PhotoPolicy;
use crate::secret::{Secret, SecretRef};
use std::path::Path;
use std::sync::Arc;

/// What a vendor adapter needs from its sink's common settings to build itself.
pub struct SinkContext<'a> {
    /// Sink name.
    pub name: &'a str,
    /// Bound lots.
    pub bindings: Arc<Bindings>,
    /// Photo policy.
    pub photo: PhotoPolicy,
    /// Batch record limit from `[sinks.batch]` (the adapter caps it at the vendor's).
    pub max_records: usize,
    /// Folder relative secret files are read from.
    pub base_dir: &'a Path,
    /// The sink's HTTP client (its `[sinks.network]` settings applied).
    pub http: reqwest::Client,
}

impl SinkContext<'_> {
    /// Resolves a required secret of the vendor table, naming the sink and key on failure.
    pub fn resolve_secret(&self, r: &SecretRef, key: &str) -> Result<Secret, ConfigError> {
        r.resolve(self.base_dir)
            .map_err(|source| ConfigError::Secret { context: format!("sink {:?} {key}", self.name), source })
    }
}
