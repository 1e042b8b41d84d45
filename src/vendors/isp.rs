//! The Inspur City Sensing Platform (ISP) adapter: lot upserts and deletions, space counts,
//! entries and departures, as JSON arrays behind a bearer token.
//!
//! - [`config`]: `[sinks.inspur_isp]` keys, defaults and checks.
//! - [`mapping`]: events to records (pure), endpoints, code tables, fees.
//! - [`token`]: the `/oauth/token` call behind the shared [`TokenCache`].
//! - [`codes`]: responses to verdicts.

pub mod codes;
pub mod config;
pub mod mapping;
pub mod token;

pub use config::{Config, TokenAnswerField, TokenField};

use super::SinkContext;
use crate::auth::{TokenCache, TokenError, TokenPolicy};
use crate::config::{Bindings, ConfigError};
use crate::event::Event;
use crate::secret::Secret;
use crate::vendors::adjust::Adjustments;
use crate::vendors::{
    Adapter, Endpoint, HttpRequest, HttpResponse, MapError, Mapping, PrepareError, VendorKind, Verdict,
};
use bytes::Bytes;
use config::Settings;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::Method;
use mapping::Endpoints;
use std::fmt;
use std::sync::Arc;

/// The adapter of one `[sinks.inspur_isp]` sink.
pub struct IspAdapter {
    settings: Settings,
    bindings: Arc<Bindings>,
    endpoints: Endpoints,
    tokens: TokenCache,
    adjustments: Adjustments,
}

impl fmt::Debug for IspAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IspAdapter")
            .field("base_url", &self.settings.base_url)
            .field("lots", &self.bindings.len())
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// Builds the adapter of one sink.
pub fn build(cfg: &Config, ctx: &SinkContext<'_>) -> Result<IspAdapter, ConfigError> {
    let settings = cfg.settings(ctx)?;
    let fetcher = token::IspTokenFetcher::new(ctx.http.clone(), settings.token.clone());
    Ok(IspAdapter {
        endpoints: Endpoints::new(settings.max_batch),
        tokens: TokenCache::new(Box::new(fetcher), TokenPolicy::default()),
        bindings: ctx.bindings.clone(),
        adjustments: Adjustments::new(ctx.name),
        settings,
    })
}

impl IspAdapter {
    /// The endpoints this sink sends to, with their batch limits.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// A token for one attempt.
    async fn token(&self) -> Result<Secret, PrepareError> {
        self.tokens.get().await.map_err(prepare_error)
    }

    fn headers(&self, token: &str) -> Result<HeaderMap, PrepareError> {
        let auth = &self.settings.auth;
        let mut value = HeaderValue::from_str(&format!("{}{token}", auth.prefix))
            .map_err(|_| PrepareError::AuthUnavailable("the token cannot be sent in a header".into()))?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json;charset=UTF-8"));
        headers.insert(auth.name.clone(), value);
        Ok(headers)
    }
}

/// Method and URL of an endpoint label: deletions share the upserts' URL; `None` for a
/// label this adapter never maps to.
fn route<'a>(urls: &'a config::DataUrls, name: &str) -> Option<(Method, &'a str)> {
    match name {
        mapping::SPOT => Some((Method::POST, &urls.spot)),
        mapping::SPOT_DELETE => Some((Method::DELETE, &urls.spot)),
        mapping::SPOT_NUM => Some((Method::POST, &urls.spot_num)),
        mapping::ENTRANCE => Some((Method::POST, &urls.entrance)),
        mapping::DEPARTURE => Some((Method::POST, &urls.departure)),
        _ => None,
    }
}

fn prepare_error(e: TokenError) -> PrepareError {
    match e {
        TokenError::Rejected(reason) => PrepareError::AuthRejected(reason),
        TokenError::Unavailable(reason) => PrepareError::AuthUnavailable(reason),
    }
}

#[async_trait::async_trait]
impl Adapter for IspAdapter {
    fn kind(&self) -> VendorKind {
        VendorKind::InspurIsp
    }

    fn map(&self, event: &Event) -> Result<Mapping, MapError> {
        let (mapping, adjusted) =
            mapping::map_event_adjusted(event, &self.settings.map, &self.endpoints, &self.bindings)?;
        self.adjustments.record(&event.lot, &adjusted);
        Ok(mapping)
    }

    fn adjustments(&self) -> Option<&Adjustments> {
        Some(&self.adjustments)
    }

    fn assemble(&self, endpoint: &Endpoint, records: &[&[u8]]) -> Bytes {
        mapping::assemble(endpoint, records)
    }

    async fn prepare(&self, lot: &str, endpoint: &Endpoint, data: &Bytes) -> Result<HttpRequest, PrepareError> {
        if self.bindings.get(lot).is_none() {
            return Err(PrepareError::Unbound);
        }
        let Some((method, url)) = route(&self.settings.urls, endpoint.name) else {
            return Err(PrepareError::Internal(format!("no ISP endpoint {:?}", endpoint.name)));
        };
        let token = self.token().await?;
        let headers = self.headers(token.expose())?;
        Ok(HttpRequest { method, url: url.to_string(), headers, body: data.clone() })
    }

    fn classify(&self, endpoint: &Endpoint, response: &HttpResponse) -> Verdict {
        codes::classify(endpoint, response)
    }

    async fn invalidate_auth(&self, refused: &http::HeaderMap) {
        let auth = &self.settings.auth;
        let sent = refused.get(&auth.name).and_then(|v| v.to_str().ok());
        match sent.and_then(|v| v.strip_prefix(auth.prefix.as_str())) {
            Some(token) => self.tokens.invalidate(&Secret::new(token)).await,
            None => self.tokens.invalidate_now(),
        }
    }

    async fn check_auth(&self) -> Result<(), PrepareError> {
        self.tokens.get().await.map(drop).map_err(prepare_error)
    }

    fn token_stats(&self) -> Option<&crate::auth::TokenStats> {
        Some(&self.tokens.stats)
    }

    fn bound_lots(&self) -> Vec<String> {
        self.bindings.lots()
    }

    fn daily_full_push(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Binding;
    use crate::photo::PhotoPolicy;
    use std::path::Path;

    fn adapter(base_url: &str) -> IspAdapter {
        let cfg: Config = toml::from_str(&format!(
            "base_url = \"{base_url}\"\nclient_id = \"id\"\nclient_secret = {{ value = \"very-secret\" }}"
        ))
        .unwrap();
        let lot = Binding { lot: "P1".into(), vendor_lot: "ATXL/1".into(), token: None };
        let ctx = SinkContext {
            name: "isp",
            bindings: Arc::new(Bindings::from_list(vec![lot])),
            photo: PhotoPolicy::Recompress,
            max_records: 50,
            base_dir: Path::new("."),
            http: reqwest::Client::new(),
        };
        build(&cfg, &ctx).unwrap()
    }

    #[test]
    fn routes_follow_the_spec() {
        let a = adapter("http://127.0.0.1:9/isp");
        let urls = &a.settings.urls;
        let r = |name| route(urls, name).map(|(m, u)| (m, u.to_string()));
        assert_eq!(r(mapping::SPOT), Some((Method::POST, "http://127.0.0.1:9/isp/park/spot".into())));
        assert_eq!(r(mapping::SPOT_DELETE), Some((Method::DELETE, "http://127.0.0.1:9/isp/park/spot".into())));
        assert_eq!(r(mapping::SPOT_NUM), Some((Method::POST, "http://127.0.0.1:9/isp/park/spot-num".into())));
        assert_eq!(r(mapping::ENTRANCE), Some((Method::POST, "http://127.0.0.1:9/isp/park/entrance".into())));
        assert_eq!(r(mapping::DEPARTURE), Some((Method::POST, "http://127.0.0.1:9/isp/park/departure".into())));
        assert_eq!(r("heartbeat"), None);
    }

    #[test]
    fn bearer_header_is_sensitive() {
        let a = adapter("http://127.0.0.1:9");
        let headers = a.headers("tok123").unwrap();
        let value = headers.get("authorization").unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer tok123");
        assert!(value.is_sensitive());
        assert_eq!(a.endpoints().entrance.max_records, 50, "capped by [sinks.batch] max_records");
        assert!(a.daily_full_push());
        assert_eq!(a.bound_lots(), ["P1"]);
        assert!(!format!("{a:?}").contains("very-secret"));
    }

    #[tokio::test]
    async fn unbound_lot_is_not_prepared() {
        let a = adapter("http://127.0.0.1:9");
        let ep = a.endpoints().entrance;
        assert_eq!(a.prepare("nowhere", &ep, &Bytes::new()).await.unwrap_err(), PrepareError::Unbound);
    }
}
