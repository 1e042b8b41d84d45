//! `[sinks.zvcms]` as written: the account, the signing variant and how answers are read.
//! The spec leaves several things open (signing details, the unit of `amount`, the global
//! error-code table); each is a key here with the default `specs/README.md` gives. The
//! checks are in `vendors::zvcms::config`, the signing in `vendors::zvcms::sign`.

use crate::secret::SecretRef;
use serde::Deserialize;

/// `[sinks.zvcms]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the platform, e.g. `http://openapi.zvcms.com`; requests go to
    /// `{base_url}/api/v2`.
    pub base_url: String,
    /// `OpenId`: the account's key id (not a secret; it travels in every request).
    pub open_id: String,
    /// `GrantCode`: the authorization code issued with the account.
    pub grant_code: SecretRef,
    /// The account's secret key, for the HMAC-SHA1 `Token`.
    pub secret_key: SecretRef,
    /// Serve member lookups from every lot, not only the bound ones (a member platform is
    /// often city-wide). `bound_lots` still lists only the explicit bindings.
    #[serde(default = "default_all_lots")]
    pub all_lots: bool,
    /// Spelling of the keys in the signed text: `camel` (`grantCode`, `nonce`, `openId`,
    /// `timestamp`, as in the published test vector) or `pascal` (`GrantCode`, ..., as in
    /// the request envelope).
    #[serde(default = "default_sign_key_style")]
    pub sign_key_style: KeyStyle,
    /// Also sign `Action` (as `action` or `Action`, per `sign_key_style`).
    #[serde(default = "default_sign_action")]
    pub sign_action: bool,
    /// Send every `Params` key, absent filters as `""`, as the spec's example does;
    /// `false` leaves absent filters out.
    #[serde(default = "default_send_absent_params")]
    pub send_absent_params: bool,
    /// How the integer params (`user_id`, `shopping`, `amount`) are written: `string`
    /// (`"1001"`, as the spec's example) or `number` (`1001`, as its table says).
    #[serde(default = "default_int_params")]
    pub int_params: IntParams,
    /// Unit of the `amount` filter: `yuan` (the spec says "满100元可用"; cents are rounded
    /// down so no coupon needing a larger order is listed) or `fen`.
    #[serde(default = "default_amount_unit")]
    pub amount_unit: AmountUnit,
    /// What a business refusal (`status` true with a non-zero `code`, e.g. "查询的信息不存在")
    /// becomes: `empty_list` (answer that the member has no coupons) or `reject`
    /// (dead-letter the request with the vendor's code and message).
    #[serde(default = "default_business_error")]
    pub business_error: BusinessError,
    /// `status` false codes that mean the configuration is wrong (signature, OpenId,
    /// GrantCode, malformed request): dead-lettered, never retried. The global code table is
    /// not public: the defaults are the simulator's; set the ones your platform documents.
    #[serde(default = "default_reject_codes")]
    pub reject_codes: Vec<String>,
    /// `status` false codes that mean the timestamp or nonce was refused: re-signed and
    /// retried a bounded number of times. Any other `status` false code is retried.
    #[serde(default = "default_stale_codes")]
    pub stale_codes: Vec<String>,
}

/// How integer params are written in `Params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntParams {
    /// As JSON strings: `"1001"`.
    String,
    /// As JSON numbers: `1001`.
    Number,
}

/// Unit of the `amount` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountUnit {
    /// Whole yuan (cents rounded down).
    Yuan,
    /// Fen (cents), as `min_amount_use` in the reply.
    Fen,
}

/// What a `status` true, non-zero `code` answer becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusinessError {
    /// An empty coupon list.
    EmptyList,
    /// A dead letter with the vendor's code and message.
    Reject,
}

fn default_all_lots() -> bool {
    false
}
fn default_sign_key_style() -> KeyStyle {
    KeyStyle::Camel
}
fn default_sign_action() -> bool {
    false
}
fn default_send_absent_params() -> bool {
    true
}
fn default_int_params() -> IntParams {
    IntParams::String
}
fn default_amount_unit() -> AmountUnit {
    AmountUnit::Yuan
}
fn default_business_error() -> BusinessError {
    BusinessError::EmptyList
}
/// Signature, OpenId/GrantCode and malformed-request codes of the simulator.
pub fn default_reject_codes() -> Vec<String> {
    vec!["40001".into(), "40002".into(), "40005".into()]
}
/// Stale-timestamp and reused-nonce codes of the simulator.
pub fn default_stale_codes() -> Vec<String> {
    vec!["40003".into(), "40004".into()]
}

/// How the parameter names are spelled in the signed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStyle {
    /// `grantCode`, `nonce`, `openId`, `timestamp` (and `action`): the published test vector.
    Camel,
    /// `GrantCode`, `Nonce`, `OpenId`, `Timestamp` (and `Action`): the envelope's own spelling.
    Pascal,
}
