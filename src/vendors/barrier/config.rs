//! `[sinks.barrier_coupon]`: the checks of the barrier-gate coupon platform's table and
//! what the adapter is built from (URLs, token policy, code table). The table as written,
//! with its defaults, is [`crate::config::vendor::barrier`] (re-exported here).
//!
//! Everything the spec leaves open is a key with the default `specs/README.md` gives:
//! the `/artemis` gateway prefix (part of `base_url`), extra token form fields, the field
//! encoding of `sendCoupon` and which in-body codes mean "refresh the token" or "retry".

use crate::auth::TokenPolicy;
use crate::config::{Bindings, ConfigError};
use std::time::Duration;

pub use crate::config::vendor::barrier::{Config, FieldEncoding};

/// Longest wait between two token requests with rejected credentials.
const MAX_COOLDOWN: Duration = Duration::from_secs(600);

/// The two absolute URLs the adapter calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// Token endpoint.
    pub token: String,
    /// `sendCoupon` endpoint.
    pub send: String,
}

/// How in-body codes are classified, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeTable {
    /// Codes meaning the token was refused.
    pub auth: Vec<String>,
    /// Codes worth retrying.
    pub retryable: Vec<String>,
}

fn invalid(sink: &str, key: &str, problem: &str) -> ConfigError {
    ConfigError::Invalid(format!("sink {sink:?}: {key}: {problem}"))
}

impl Config {
    /// Checks every value (secrets aside) and the sink's bindings.
    pub fn validate(&self, sink: &str, bindings: &Bindings) -> Result<(), ConfigError> {
        self.urls(sink)?;
        if self.client_id.trim().is_empty() {
            return Err(invalid(sink, "client_id", "must not be empty"));
        }
        self.check_token_form(sink)?;
        self.check_timing(sink)?;
        self.check_codes(sink)?;
        check_bindings(sink, bindings)
    }

    /// The absolute token and `sendCoupon` URLs.
    pub fn urls(&self, sink: &str) -> Result<Urls, ConfigError> {
        let base = self.base_url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base).map_err(|e| invalid(sink, "base_url", &format!("{base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid(sink, "base_url", "must be an http:// or https:// URL with a host"));
        }
        // The spec's token lives at the host's root whatever prefix the APIs have.
        let origin = parsed.origin().ascii_serialization();
        let token_base = if self.token_under_base_path { base } else { origin.as_str() };
        Ok(Urls {
            token: join(sink, "token_path", token_base, &self.token_path)?,
            send: join(sink, "send_path", base, &self.send_path)?,
        })
    }

    /// The token cache's timing.
    pub fn token_policy(&self) -> TokenPolicy {
        let first_cooldown = Duration::from_secs(self.credentials_cooldown_secs);
        TokenPolicy {
            refresh_ratio: self.token_refresh_ratio,
            margin: Duration::from_secs(self.token_margin_secs),
            first_cooldown,
            max_cooldown: MAX_COOLDOWN.max(first_cooldown),
        }
    }

    /// The in-body code classification.
    pub fn code_table(&self) -> CodeTable {
        let clean = |codes: &[String]| codes.iter().map(|c| c.trim().to_string()).collect();
        CodeTable { auth: clean(&self.auth_failure_codes), retryable: clean(&self.retryable_codes) }
    }

    fn check_token_form(&self, sink: &str) -> Result<(), ConfigError> {
        for key in self.token_form.keys() {
            if key.trim().is_empty() {
                return Err(invalid(sink, "token_form", "field names must not be empty"));
            }
            if key == "client_id" || key == "client_secret" {
                return Err(invalid(sink, "token_form", &format!("{key} is set by client_id/client_secret")));
            }
        }
        Ok(())
    }

    fn check_timing(&self, sink: &str) -> Result<(), ConfigError> {
        if !(0.1..=1.0).contains(&self.token_refresh_ratio) {
            return Err(invalid(sink, "token_refresh_ratio", "must be between 0.1 and 1.0"));
        }
        let positive = [
            ("token_lifetime_fallback_secs", self.token_lifetime_fallback_secs),
            ("credentials_cooldown_secs", self.credentials_cooldown_secs),
            ("token_timeout_ms", self.token_timeout_ms),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((key, _)) => Err(invalid(sink, key, "must be at least 1")),
            None => Ok(()),
        }
    }

    fn check_codes(&self, sink: &str) -> Result<(), ConfigError> {
        let table = self.code_table();
        for (key, codes) in [("auth_failure_codes", &table.auth), ("retryable_codes", &table.retryable)] {
            if let Some(code) = codes.iter().find(|c| c.is_empty() || *c == "200") {
                return Err(invalid(sink, key, &format!("{code:?} cannot be a failure code")));
            }
        }
        if let Some(code) = table.auth.iter().find(|c| table.retryable.contains(c)) {
            return Err(invalid(sink, "retryable_codes", &format!("{code:?} is also in auth_failure_codes")));
        }
        Ok(())
    }
}

/// `base` + `path`, or `path` itself when it is an absolute URL.
fn join(sink: &str, key: &str, base: &str, path: &str) -> Result<String, ConfigError> {
    if path.starts_with("http://") || path.starts_with("https://") {
        reqwest::Url::parse(path).map_err(|e| invalid(sink, key, &format!("{path:?}: {e}")))?;
        return Ok(path.to_string());
    }
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        return Err(invalid(sink, key, "must start with / (or be an absolute http(s):// URL)"));
    }
    Ok(format!("{base}{path}"))
}

/// `parkCodes` is a comma-joined list, so a vendor code must not hold a comma.
fn check_bindings(sink: &str, bindings: &Bindings) -> Result<(), ConfigError> {
    match bindings.iter().find(|b| b.vendor_lot.contains(',')) {
        Some(b) => Err(invalid(
            sink,
            "bindings",
            &format!(
                "lot {:?}: vendor_lot {:?} must not contain a comma (parkCodes is comma-joined)",
                b.lot, b.vendor_lot
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Binding;

    fn parse(extra: &str) -> Config {
        let text = format!("base_url = \"http://10.0.0.1:9016/artemis/\"\nclient_id = \"244221\"\nclient_secret = {{ env = \"X\" }}\n{extra}");
        toml::from_str(&text).unwrap()
    }

    fn error(extra: &str) -> String {
        parse(extra).validate("coupons", &Bindings::default()).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let cfg = parse("");
        cfg.validate("coupons", &Bindings::default()).unwrap();
        assert_eq!(cfg.field_encoding, FieldEncoding::Strings);
        let urls = cfg.urls("coupons").unwrap();
        assert_eq!(urls.token, "http://10.0.0.1:9016/oauth/token", "the spec's root path, outside /artemis");
        assert_eq!(urls.send, "http://10.0.0.1:9016/artemis/api/v1/sendCoupon");
        assert_eq!(cfg.code_table().auth, vec!["401"]);
        assert_eq!(cfg.token_policy().margin, Duration::from_secs(60));
    }

    #[test]
    fn token_may_live_under_the_gateway_prefix_or_elsewhere() {
        let cfg = parse("token_under_base_path = true\nfield_encoding = \"typed\"");
        assert_eq!(cfg.urls("c").unwrap().token, "http://10.0.0.1:9016/artemis/oauth/token");
        assert_eq!(cfg.field_encoding, FieldEncoding::Typed);
        let cfg = parse("token_path = \"https://auth.example.cn/oauth/token\"");
        assert_eq!(cfg.urls("c").unwrap().token, "https://auth.example.cn/oauth/token");
        let cfg = parse("token_path = \"/gw/oauth/token\"");
        assert_eq!(cfg.urls("c").unwrap().token, "http://10.0.0.1:9016/gw/oauth/token");
    }

    #[test]
    fn unknown_keys_and_values_are_refused() {
        let text = "base_url = \"http://h\"\nclient_id = \"a\"\nclient_secret = { env = \"X\" }\ntoken_url = \"x\"";
        assert!(toml::from_str::<Config>(text).unwrap_err().to_string().contains("token_url"));
        let text =
            "base_url = \"http://h\"\nclient_id = \"a\"\nclient_secret = { env = \"X\" }\nfield_encoding = \"numbers\"";
        assert!(toml::from_str::<Config>(text).is_err());
    }

    #[test]
    fn bad_values_name_sink_and_key() {
        let cases = [
            ("send_path = \"api/v1/sendCoupon\"", "send_path"),
            ("token_form = { client_secret = \"x\" }", "token_form"),
            ("token_refresh_ratio = 1.5", "token_refresh_ratio"),
            ("credentials_cooldown_secs = 0", "credentials_cooldown_secs"),
            ("retryable_codes = [\"200\"]", "retryable_codes"),
            ("auth_failure_codes = [\"500\"]", "retryable_codes"),
        ];
        for (extra, key) in cases {
            let msg = error(extra);
            assert!(msg.starts_with("sink \"coupons\": ") && msg.contains(key), "{extra}: {msg}");
        }
        let bad_base = "base_url = \"ftp://h\"\nclient_id = \"a\"\nclient_secret = { env = \"X\" }";
        let cfg: Config = toml::from_str(bad_base).unwrap();
        assert!(cfg.validate("c", &Bindings::default()).unwrap_err().to_string().contains("base_url"));
    }

    #[test]
    fn a_vendor_code_with_a_comma_is_refused() {
        let b = Binding { lot: "P1".into(), vendor_lot: "A,B".into(), token: None };
        let msg = parse("").validate("c", &Bindings::from_list(vec![b])).unwrap_err().to_string();
        assert!(msg.contains("vendor_lot") && msg.contains("P1"), "{msg}");
    }
}
