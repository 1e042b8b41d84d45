//! The zvcms adapter (being written: this placeholder only compiles).

use crate::config::{ConfigError, SinkContext};
use crate::event::Event;
use crate::vendors::{
    Adapter, Endpoint, HttpRequest, HttpResponse, MapError, Mapping, PrepareError, VendorKind, Verdict,
};
use bytes::Bytes;

/// `[sinks.zvcms]` settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the platform.
    pub base_url: String,
}

/// The adapter.
pub struct ZvcmsAdapter;

/// Builds the adapter of one sink.
pub fn build(_cfg: &Config, _ctx: &SinkContext<'_>) -> Result<ZvcmsAdapter, ConfigError> {
    Err(ConfigError::Invalid("adapter not written yet".into()))
}

#[async_trait::async_trait]
impl Adapter for ZvcmsAdapter {
    fn kind(&self) -> VendorKind {
        VendorKind::Zvcms
    }
    fn map(&self, _event: &Event) -> Result<Mapping, MapError> {
        Err(MapError::new("", "not written yet"))
    }
    fn assemble(&self, _endpoint: &Endpoint, records: &[&[u8]]) -> Bytes {
        crate::vendors::json_array(records)
    }
    async fn prepare(&self, _lot: &str, _endpoint: &Endpoint, _data: &Bytes) -> Result<HttpRequest, PrepareError> {
        Err(PrepareError::Unbound)
    }
    fn classify(&self, _endpoint: &Endpoint, _response: &HttpResponse) -> Verdict {
        Verdict::Reject { reason: "not written yet".into(), per_record: false }
    }
    fn bound_lots(&self) -> Vec<String> {
        Vec::new()
    }
}
