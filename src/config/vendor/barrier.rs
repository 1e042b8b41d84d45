//! `[sinks.barrier_coupon]` as written: the barrier-gate coupon platform's keys and their
//! defaults (the ones `specs/README.md` gives where the spec leaves a choice open). The
//! checks and the URLs, token policy and code table built from it are in
//! `vendors::barrier::config`.

use crate::secret::SecretRef;
use std::collections::BTreeMap;

/// `[sinks.barrier_coupon]` settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the platform's gateway, including any path prefix the gateway puts in
    /// front of its APIs. The spec's example calls `http://IP:9016/artemis/api/v1/sendCoupon`,
    /// so such a gateway is written `base_url = "http://IP:9016/artemis"`.
    pub base_url: String,
    /// Access id (`client_id`, 接入 id) issued by the platform.
    pub client_id: String,
    /// Access secret (`client_secret`, 接入密钥): `{ env = "NAME" }` or `{ file = "path" }`.
    pub client_secret: SecretRef,
    /// Token endpoint: a path from the root of `base_url`'s host (the spec gives
    /// `{ip}:{port}/oauth/token`, outside the `/artemis` API prefix), or an absolute
    /// `http(s)://` URL. Default `/oauth/token`.
    #[serde(default = "default_token_path")]
    pub token_path: String,
    /// Put `token_path` under `base_url`'s path instead of the host root, for gateways that
    /// serve the token behind the same prefix as the APIs (`/artemis/oauth/token`).
    /// Default false (the spec's root path).
    #[serde(default)]
    pub token_under_base_path: bool,
    /// Spaces inside `plateNo`: `strip` (default: canonical plates have none) or `keep`.
    #[serde(default)]
    pub plate_spaces: super::PlateSpaces,
    /// Coupon endpoint: a path appended to `base_url`, or an absolute URL.
    /// Default `/api/v1/sendCoupon`.
    #[serde(default = "default_send_path")]
    pub send_path: String,
    /// Extra form fields sent with `client_id` and `client_secret` in the token request,
    /// e.g. `{ grant_type = "client_credentials" }` (some gateways of this family require it).
    /// Default: none.
    #[serde(default)]
    pub token_form: BTreeMap<String, String>,
    /// How `sendCoupon` fields are encoded: `strings` (default: every field a JSON string,
    /// as the spec's example sends them) or `typed` (the spec table's types: numbers for
    /// `generateObj`, `couponType`, `deductContent`, `startTime`; `endTime` a string).
    #[serde(default)]
    pub field_encoding: FieldEncoding,
    /// Never use a token closer than this to its expiry, in seconds (capped at half the
    /// token's lifetime). Default 60.
    #[serde(default = "default_token_margin_secs")]
    pub token_margin_secs: u64,
    /// Fetch a new token once this share of its lifetime has passed, 0.1 to 1.0. Default 0.8.
    #[serde(default = "default_token_refresh_ratio")]
    pub token_refresh_ratio: f64,
    /// Lifetime assumed when the token answer has no usable `expires_in`, in seconds.
    /// Default 43200 (the 12 hours the spec's overview states).
    #[serde(default = "default_token_lifetime_fallback_secs")]
    pub token_lifetime_fallback_secs: u64,
    /// After the platform rejects the credentials (`invalid_client`), wait this long before
    /// asking again, in seconds; the wait doubles on each rejection up to 10 minutes.
    /// Default 30.
    #[serde(default = "default_credentials_cooldown_secs")]
    pub credentials_cooldown_secs: u64,
    /// Timeout of one token request, in milliseconds. Default 10000.
    #[serde(default = "default_token_timeout_ms")]
    pub token_timeout_ms: u64,
    /// In-body `code` values that mean the token was refused: the token is fetched again
    /// and the coupon retried. Default `["401"]`.
    #[serde(default = "default_auth_failure_codes")]
    pub auth_failure_codes: Vec<String>,
    /// In-body `code` values worth retrying (the platform failed, not the coupon). Any other
    /// code except `200` and `429` dead-letters the coupon. Default `["500", "502", "503", "504"]`.
    #[serde(default = "default_retryable_codes")]
    pub retryable_codes: Vec<String>,
}

/// Encoding of the `sendCoupon` fields (the spec's table and example disagree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldEncoding {
    /// Every field a JSON string, as in the spec's example.
    #[default]
    Strings,
    /// The types of the spec's table.
    Typed,
}

fn default_token_path() -> String {
    "/oauth/token".into()
}
fn default_send_path() -> String {
    "/api/v1/sendCoupon".into()
}
fn default_token_margin_secs() -> u64 {
    60
}
fn default_token_refresh_ratio() -> f64 {
    0.8
}
fn default_token_lifetime_fallback_secs() -> u64 {
    12 * 3600
}
fn default_credentials_cooldown_secs() -> u64 {
    30
}
fn default_token_timeout_ms() -> u64 {
    10_000
}
fn default_auth_failure_codes() -> Vec<String> {
    vec!["401".into()]
}
fn default_retryable_codes() -> Vec<String> {
    ["500", "502", "503", "504"].map(String::from).to_vec()
}
