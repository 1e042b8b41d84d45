//! `[sinks.inspur_isp]`: the checks of the table and the [`Settings`] an adapter is built
//! from. The table as written, with its defaults and the spec's paths, is
//! [`crate::config::vendor::isp`] (re-exported here).

use crate::config::{Bindings, ConfigError};
use crate::photo::PhotoPolicy;
use crate::secret::{Secret, SecretRef};
use crate::vendors::isp::mapping::MapSettings;
use crate::vendors::isp::token::TokenRequest;
use crate::vendors::SinkContext;
use http::header::{HeaderName, HeaderValue};
use std::path::Path;

pub use crate::config::vendor::isp::{
    Config, TokenAnswerField, TokenField, DEPARTURE_PATH, ENTRANCE_PATH, SPEC_PHOTO_LIMIT, SPEC_PHOTO_PREFIX,
    SPOT_NUM_PATH, SPOT_PATH, TOKEN_PATH,
};

/// Largest `max_batch` accepted: the spec gives no limit, so stay near what a JSON body of
/// departures with photos can carry.
const MAX_BATCH_LIMIT: usize = 1_000;
/// Smallest photo limit that still leaves room for a usable JPEG.
const MIN_PHOTO_LIMIT: usize = 4 * 1024;

/// The absolute URLs of the data endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataUrls {
    /// Lot upserts and deletions.
    pub spot: String,
    /// Space counts.
    pub spot_num: String,
    /// Entries.
    pub entrance: String,
    /// Departures.
    pub departure: String,
}
/// How a data request carries the token.
#[derive(Debug, Clone)]
pub struct AuthHeader {
    /// Header name.
    pub name: HeaderName,
    /// Text before the token, with its trailing space (empty for a bare token).
    pub prefix: String,
}

/// A checked `[sinks.inspur_isp]`, with its secrets resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL without a trailing `/`.
    pub base_url: String,
    /// The data endpoints.
    pub urls: DataUrls,
    /// The token request.
    pub token: TokenRequest,
    /// The token header of data requests.
    pub auth: AuthHeader,
    /// Most records per request, already capped by the sink's batch limit.
    pub max_batch: usize,
    /// What the mapping needs.
    pub map: MapSettings,
}

impl Config {
    /// Checks every key and resolves the secrets; errors name the sink and the key.
    pub fn settings(&self, ctx: &SinkContext<'_>) -> Result<Settings, ConfigError> {
        let sink = ctx.name;
        let base_url = check_base_url(&self.base_url).map_err(|e| invalid(sink, "base_url", e))?;
        self.check_text_keys(sink)?;
        check_bindings(&ctx.bindings).map_err(|e| invalid(sink, "bindings", e))?;
        let fields = token_fields(self, ctx.base_dir, sink)?;
        let token = TokenRequest { url: self.token_url(sink)?, fields, answer_field: self.token_field };
        let auth = auth_header(&self.auth_header, &self.auth_prefix, sink)?;
        let max_batch = self.max_batch.min(ctx.max_records).max(1);
        let urls = self.data_urls(sink)?;
        Ok(Settings { base_url, urls, token, auth, max_batch, map: self.map_settings(ctx.photo) })
    }

    /// The absolute token URL. Shared with the simulator, which serves it there.
    pub fn token_url(&self, sink: &str) -> Result<String, ConfigError> {
        let base = check_base_url(&self.base_url).map_err(|e| invalid(sink, "base_url", e))?;
        join(sink, "token_path", &base, &self.token_path)
    }

    /// The absolute data URLs. Shared with the simulator, which serves them there.
    pub fn data_urls(&self, sink: &str) -> Result<DataUrls, ConfigError> {
        let base = check_base_url(&self.base_url).map_err(|e| invalid(sink, "base_url", e))?;
        let urls = DataUrls {
            spot: join(sink, "spot_path", &base, &self.spot_path)?,
            spot_num: join(sink, "spot_num_path", &base, &self.spot_num_path)?,
            entrance: join(sink, "entrance_path", &base, &self.entrance_path)?,
            departure: join(sink, "departure_path", &base, &self.departure_path)?,
        };
        let all = [&urls.spot, &urls.spot_num, &urls.entrance, &urls.departure];
        if all.iter().enumerate().any(|(i, u)| all[..i].contains(u)) {
            return Err(invalid(sink, "spot_path", "the four data endpoints must have distinct URLs"));
        }
        Ok(urls)
    }

    fn check_text_keys(&self, sink: &str) -> Result<(), ConfigError> {
        let checks = [
            ("client_id", self.client_id.trim().is_empty(), "must not be empty"),
            ("max_batch", !(1..=MAX_BATCH_LIMIT).contains(&self.max_batch), "must be between 1 and 1000"),
            ("pay_type_other_code", self.pay_type_other_code.trim().is_empty(), "must not be empty"),
            ("pay_type_other_label", self.pay_type_other_label.trim().is_empty(), "must not be empty"),
            ("no_plate", self.no_plate.trim().is_empty(), "must not be empty: the platform requires a plate"),
            (
                "photo_limit_bytes",
                self.photo_limit_bytes < self.photo_prefix.len() + MIN_PHOTO_LIMIT,
                "must leave at least 4096 bytes for the photo after photo_prefix",
            ),
        ];
        match checks.into_iter().find(|(_, bad, _)| *bad) {
            Some((key, _, problem)) => Err(invalid(sink, key, problem)),
            None => Ok(()),
        }
    }

    fn map_settings(&self, photo_policy: PhotoPolicy) -> MapSettings {
        MapSettings {
            labels: self.labels,
            pay_type_other_code: self.pay_type_other_code.clone(),
            pay_type_other_label: self.pay_type_other_label.clone(),
            no_plate: self.no_plate.clone(),
            unknown_brand: self.unknown_brand.clone(),
            photo_limit: self.photo_limit_bytes,
            photo_prefix: self.photo_prefix.clone(),
            photo_policy,
            plate_spaces: self.plate_spaces,
            missing_photo: self.missing_photo,
        }
    }
}

/// A path appended to `base`, or an absolute `http(s)://` URL taken as it is.
fn join(sink: &str, key: &str, base: &str, path: &str) -> Result<String, ConfigError> {
    let path = path.trim();
    if path.starts_with("http://") || path.starts_with("https://") {
        return check_base_url(path).map_err(|e| invalid(sink, key, e));
    }
    if !path.starts_with('/') || path.contains(char::is_whitespace) || path.contains(['?', '#']) {
        return Err(invalid(sink, key, format!("{path:?} must start with / (or be an absolute URL), without spaces")));
    }
    Ok(format!("{base}{path}"))
}

/// The token request's fields in order (id, secret, extras), secrets resolved from `base_dir`.
/// Shared with the simulator, which expects exactly these.
pub fn token_fields(cfg: &Config, base_dir: &Path, sink: &str) -> Result<Vec<(String, Secret)>, ConfigError> {
    let names = [("client_id_field", &cfg.client_id_field), ("client_secret_field", &cfg.client_secret_field)];
    for (key, name) in names {
        if name.trim().is_empty() {
            return Err(invalid(sink, key, "must not be empty"));
        }
    }
    if cfg.client_id_field == cfg.client_secret_field {
        return Err(invalid(sink, "client_secret_field", "must differ from client_id_field"));
    }
    let secret = resolve(&cfg.client_secret, base_dir, sink, "client_secret")?;
    let mut fields = vec![
        (cfg.client_id_field.clone(), Secret::new(cfg.client_id.clone())),
        (cfg.client_secret_field.clone(), secret),
    ];
    for (name, value) in &cfg.token_extra_fields {
        let key = format!("token_extra_fields.{name}");
        if name.trim().is_empty() || fields.iter().any(|(n, _)| n == name) {
            return Err(invalid(sink, &key, "must be a new, non-empty field name"));
        }
        let value = match value {
            TokenField::Text(text) => Secret::new(text.clone()),
            TokenField::Secret(r) => resolve(r, base_dir, sink, &key)?,
        };
        fields.push((name.clone(), value));
    }
    Ok(fields)
}

fn resolve(r: &SecretRef, base_dir: &Path, sink: &str, key: &str) -> Result<Secret, ConfigError> {
    r.resolve(base_dir).map_err(|source| ConfigError::Secret { context: format!("sink {sink:?} {key}"), source })
}

fn check_base_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{text:?} must be an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not carry a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The platform deletes several lots in one call by joining their codes with `,`, so a
/// code containing one would delete the wrong lots.
fn check_bindings(bindings: &Bindings) -> Result<(), String> {
    match bindings.iter().find(|b| b.vendor_lot.contains(',')) {
        Some(b) => Err(format!("lot {:?}: vendor_lot {:?} must not contain ','", b.lot, b.vendor_lot)),
        None => Ok(()),
    }
}

/// The checked `auth_header` and `auth_prefix`. Shared with the simulator, which expects them.
pub fn auth_header(name: &str, prefix: &str, sink: &str) -> Result<AuthHeader, ConfigError> {
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| invalid(sink, "auth_header", format!("{name:?} is not a valid header name")))?;
    let prefix = prefix.trim();
    if HeaderValue::from_str(prefix).is_err() || prefix.contains(' ') {
        return Err(invalid(sink, "auth_prefix", format!("{prefix:?} must be one word of visible ASCII")));
    }
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix} ") };
    Ok(AuthHeader { name, prefix })
}

fn invalid(sink: &str, key: &str, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("sink {sink:?}: {key}: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Binding;
    use crate::vendors::plate::PlateSpaces;
    use std::sync::Arc;

    const MINIMAL: &str = r#"
        base_url = "http://127.0.0.1:9/isp/"
        client_id = "dongyinglamp"
        client_secret = { value = "s3cr3t-value" }
    "#;

    fn parse(extra: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(&format!("{MINIMAL}\n{extra}"))
    }

    fn settings_of(cfg: &Config, bindings: Vec<Binding>) -> Result<Settings, ConfigError> {
        let ctx = SinkContext {
            name: "isp-east",
            bindings: Arc::new(Bindings::from_list(bindings)),
            photo: PhotoPolicy::Recompress,
            max_records: 500,
            base_dir: Path::new("."),
            http: reqwest::Client::new(),
        };
        cfg.settings(&ctx)
    }

    fn error_of(extra: &str) -> String {
        let cfg = parse(extra).unwrap();
        settings_of(&cfg, Vec::new()).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_the_spec_notes() {
        let s = settings_of(&parse("").unwrap(), Vec::new()).unwrap();
        assert_eq!(s.base_url, "http://127.0.0.1:9/isp");
        assert_eq!(s.token.url, "http://127.0.0.1:9/isp/oauth/token");
        let names: Vec<&str> = s.token.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["client_id", "client_secret"]);
        assert_eq!((s.auth.name.as_str(), s.auth.prefix.as_str()), ("authorization", "Bearer "));
        assert_eq!(s.max_batch, 100);
        assert!(!s.map.labels);
        assert_eq!(s.map.pay_type_other_code, "8");
        assert_eq!((s.map.no_plate.as_str(), s.map.unknown_brand.as_str()), ("无牌车", "未知"));
        assert_eq!((s.map.photo_limit, s.map.photo_prefix.as_str()), (524_288, "data:image/jpg;base64,"));
        assert_eq!(s.urls.departure, "http://127.0.0.1:9/isp/park/departure");
        assert_eq!(s.token.answer_field, TokenAnswerField::AccessToken);
        assert_eq!(s.map.plate_spaces, PlateSpaces::Strip);
    }

    #[test]
    fn paths_and_token_field_are_configurable() {
        let cfg = parse(
            r#"
            token_path = "https://auth.example.cn/uaa/oauth/token"
            spot_path = "/v2/park/spot"
            spot_num_path = "/v2/park/spot-num"
            entrance_path = "/v2/park/entrance"
            departure_path = "https://isp.example.cn/v2/park/departure"
            token_field = "token"
            plate_spaces = "keep"
            "#,
        )
        .unwrap();
        let s = settings_of(&cfg, Vec::new()).unwrap();
        assert_eq!(s.token.url, "https://auth.example.cn/uaa/oauth/token");
        assert_eq!(s.urls.spot, "http://127.0.0.1:9/isp/v2/park/spot");
        assert_eq!(s.urls.spot_num, "http://127.0.0.1:9/isp/v2/park/spot-num");
        assert_eq!(s.urls.entrance, "http://127.0.0.1:9/isp/v2/park/entrance");
        assert_eq!(s.urls.departure, "https://isp.example.cn/v2/park/departure");
        assert_eq!(s.token.answer_field, TokenAnswerField::Token);
        assert_eq!(s.map.plate_spaces, PlateSpaces::Keep);
    }

    #[test]
    fn extra_token_fields_and_custom_names() {
        std::env::set_var("LOTBRIDGE_ISP_TEST_PASSWORD", "pw-from-env");
        let cfg = parse(
            r#"
            client_id_field = "clientId"
            client_secret_field = "clientSecret"
            auth_prefix = ""
            token_extra_fields = { grant_type = "client_credentials", password = { env = "LOTBRIDGE_ISP_TEST_PASSWORD" } }
            "#,
        )
        .unwrap();
        let s = settings_of(&cfg, Vec::new()).unwrap();
        let fields: Vec<(&str, &str)> = s.token.fields.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
        assert_eq!(
            fields,
            [
                ("clientId", "dongyinglamp"),
                ("clientSecret", "s3cr3t-value"),
                ("grant_type", "client_credentials"),
                ("password", "pw-from-env")
            ]
        );
        assert_eq!(s.auth.prefix, "");
    }

    #[test]
    fn batch_is_capped_by_the_sink() {
        let cfg = parse("max_batch = 800").unwrap();
        assert_eq!(settings_of(&cfg, Vec::new()).unwrap().max_batch, 500, "[sinks.batch] max_records = 500");
    }

    #[test]
    fn errors_name_sink_and_key() {
        let cases = [
            ("max_batch = 0", "max_batch"),
            ("max_batch = 1001", "max_batch"),
            ("no_plate = \" \"", "no_plate"),
            ("pay_type_other_code = \"\"", "pay_type_other_code"),
            ("photo_limit_bytes = 100", "photo_limit_bytes"),
            ("auth_header = \"bad header\"", "auth_header"),
            ("auth_prefix = \"Bearer x\"", "auth_prefix"),
            ("client_secret_field = \"client_id\"", "client_secret_field"),
            ("token_extra_fields = { client_id = \"again\" }", "token_extra_fields.client_id"),
            ("token_path = \"oauth/token\"", "token_path"),
            ("entrance_path = \"/park/spot\"", "spot_path"),
            ("departure_path = \"ftp://x/y\"", "departure_path"),
        ];
        for (extra, key) in cases {
            let err = error_of(extra);
            assert!(err.starts_with(&format!("sink \"isp-east\": {key}:")), "{extra} -> {err}");
        }
    }

    #[test]
    fn bad_base_urls_are_rejected() {
        let mut cfg = parse("").unwrap();
        for (url, problem) in [("not a url", "is not a URL"), ("ftp://x", "must be an http:// or https:// URL")] {
            cfg.base_url = url.into();
            let err = settings_of(&cfg, Vec::new()).unwrap_err().to_string();
            assert!(err.starts_with(&format!("sink \"isp-east\": base_url: {url:?} {problem}")), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("label = true").unwrap_err().to_string();
        assert!(err.contains("unknown field `label`"), "{err}");
        assert!(parse("token_field = \"jwt\"").is_err());
        assert!(parse("plate_spaces = \"trim\"").is_err());
    }

    #[test]
    fn comma_in_a_vendor_lot_is_refused() {
        let binding = Binding { lot: "P1".into(), vendor_lot: "ATXL/1,ATXL/2".into(), token: None };
        let err = settings_of(&parse("").unwrap(), vec![binding]).unwrap_err().to_string();
        assert!(err.contains("bindings: lot \"P1\""), "{err}");
    }

    #[test]
    fn missing_secret_names_the_key_not_the_value() {
        let mut cfg = parse("").unwrap();
        cfg.client_secret = SecretRef::Env("LOTBRIDGE_ISP_TEST_UNSET".into());
        let err = settings_of(&cfg, Vec::new()).unwrap_err().to_string();
        assert!(err.contains("sink \"isp-east\" client_secret"), "{err}");
    }

    #[test]
    fn secrets_never_printed() {
        let cfg = parse("token_extra_fields = { password = { value = \"hunter2-pw\" } }").unwrap();
        let s = settings_of(&cfg, Vec::new()).unwrap();
        let printed = format!("{cfg:?} {s:?}");
        assert!(!printed.contains("s3cr3t-value") && !printed.contains("hunter2-pw"), "{printed}");
    }
}
