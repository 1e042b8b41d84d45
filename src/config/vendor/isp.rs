//! `[sinks.inspur_isp]` as written: the keys, their defaults and the spec's paths and photo
//! limit they default to. The spec leaves the token request's field names illegible,
//! documents `car_type` and `pay_type` as codes while its examples send labels, and
//! requires fields the contract may lack (plate, brand, payment method): each choice is a
//! key here with the default given in `specs/README.md`. The checks and the resolved
//! settings are in `vendors::isp::config`.

use super::{MissingPhoto, PlateSpaces};
use crate::secret::SecretRef;
use std::collections::BTreeMap;

/// Path of the token endpoint below `base_url` (the spec's `接口地址`).
pub const TOKEN_PATH: &str = "/oauth/token";
/// Path of lot upserts and deletions.
pub const SPOT_PATH: &str = "/park/spot";
/// Path of space counts.
pub const SPOT_NUM_PATH: &str = "/park/spot-num";
/// Path of entries.
pub const ENTRANCE_PATH: &str = "/park/entrance";
/// Path of departures.
pub const DEPARTURE_PATH: &str = "/park/departure";
/// The spec's photo limit: 512 KB of text, prefix included.
pub const SPEC_PHOTO_LIMIT: usize = 512 * 1024;
/// The spec's example puts this before the base64 text.
pub const SPEC_PHOTO_PREFIX: &str = "data:image/jpg;base64,";

/// `[sinks.inspur_isp]` settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the platform (`https://isp.example.cn`); the paths below are appended.
    pub base_url: String,
    /// Token endpoint: a path appended to `base_url`, or an absolute `http(s)://` URL when
    /// the token server is elsewhere (default `/oauth/token`, the spec's).
    #[serde(default = "default_token_path")]
    pub token_path: String,
    /// Lot upserts (`POST`) and deletions (`DELETE`): path or absolute URL (default `/park/spot`).
    #[serde(default = "default_spot_path")]
    pub spot_path: String,
    /// Space counts: path or absolute URL (default `/park/spot-num`).
    #[serde(default = "default_spot_num_path")]
    pub spot_num_path: String,
    /// Entries: path or absolute URL (default `/park/entrance`).
    #[serde(default = "default_entrance_path")]
    pub entrance_path: String,
    /// Departures: path or absolute URL (default `/park/departure`).
    #[serde(default = "default_departure_path")]
    pub departure_path: String,
    /// Which field of the token answer is the token sent with data calls: `access_token`
    /// (default, the OAuth field) or `token` (the spec's answer carries both).
    #[serde(default)]
    pub token_field: TokenAnswerField,
    /// Spaces inside plates: `strip` (default: ASCII and ideographic spaces removed, the
    /// canonical plate) or `keep` (sent as received, as the spec's example shows one).
    #[serde(default)]
    pub plate_spaces: PlateSpaces,
    /// What the required `enter_pic`/`depart_pic` hold when the vehicle has no usable photo:
    /// `placeholder` (default: a small grey JPEG, so strict platforms accept the passage),
    /// `empty` (`""`, for lenient platforms) or `reject` (dead-letter the record).
    #[serde(default)]
    pub missing_photo: MissingPhoto,
    /// Client id sent to the token endpoint.
    pub client_id: String,
    /// Client secret sent to the token endpoint: `{ env = "NAME" }` or `{ file = "path" }`.
    pub client_secret: SecretRef,
    /// JSON field of the token request that carries `client_id` (default `client_id`).
    #[serde(default = "default_client_id_field")]
    pub client_id_field: String,
    /// JSON field of the token request that carries `client_secret` (default `client_secret`).
    #[serde(default = "default_client_secret_field")]
    pub client_secret_field: String,
    /// More string fields of the token request, e.g. `grant_type = "client_credentials"`;
    /// a value may be a secret reference (`password = { env = "ISP_PASSWORD" }`). Default none.
    #[serde(default)]
    pub token_extra_fields: BTreeMap<String, TokenField>,
    /// Request header carrying the token (default `Authorization`).
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    /// Word before the token in that header, followed by one space (default `Bearer`; empty
    /// sends the bare token).
    #[serde(default = "default_auth_prefix")]
    pub auth_prefix: String,
    /// Most records per request, 1..=1000 (default 100); `[sinks.batch] max_records` caps it too.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Send `car_type` and `pay_type` as the spec's Chinese labels (`小型车`, `支付宝`) instead
    /// of its codes (`"2"`, `"4"`) (default false: codes).
    #[serde(default)]
    pub labels: bool,
    /// `pay_type` code sent for the payment method `other` and for exits without one
    /// (default `8`: the spec lists 1-7 followed by "...").
    #[serde(default = "default_pay_type_other_code")]
    pub pay_type_other_code: String,
    /// `pay_type` label sent instead of `pay_type_other_code` when `labels` is on (default `其他`).
    #[serde(default = "default_pay_type_other_label")]
    pub pay_type_other_label: String,
    /// `plate_number` sent for a vehicle without plate (default `无牌车`).
    #[serde(default = "default_no_plate")]
    pub no_plate: String,
    /// `car_logo` sent when the event has no brand (default `未知`; may be empty).
    #[serde(default = "default_unknown_brand")]
    pub unknown_brand: String,
    /// Longest photo text the platform accepts, prefix included, in bytes (default 524288 =
    /// 512 KB); longer photos follow the sink's photo policy.
    #[serde(default = "default_photo_limit_bytes")]
    pub photo_limit_bytes: usize,
    /// Text sent before the base64 JPEG (default `data:image/jpg;base64,` as in the spec's
    /// example; may be empty).
    #[serde(default = "default_photo_prefix")]
    pub photo_prefix: String,
}

/// The field of the token answer whose value authorizes data calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAnswerField {
    /// `access_token`.
    #[default]
    AccessToken,
    /// `token`.
    Token,
}

impl TokenAnswerField {
    /// The JSON field name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAnswerField::AccessToken => "access_token",
            TokenAnswerField::Token => "token",
        }
    }
}

/// A value of `token_extra_fields`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum TokenField {
    /// Plain text, e.g. `"client_credentials"`.
    Text(String),
    /// A secret reference, e.g. `{ env = "ISP_PASSWORD" }`.
    Secret(SecretRef),
}

fn default_token_path() -> String {
    TOKEN_PATH.into()
}
fn default_spot_path() -> String {
    SPOT_PATH.into()
}
fn default_spot_num_path() -> String {
    SPOT_NUM_PATH.into()
}
fn default_entrance_path() -> String {
    ENTRANCE_PATH.into()
}
fn default_departure_path() -> String {
    DEPARTURE_PATH.into()
}
fn default_client_id_field() -> String {
    "client_id".into()
}
fn default_client_secret_field() -> String {
    "client_secret".into()
}
fn default_auth_header() -> String {
    "Authorization".into()
}
fn default_auth_prefix() -> String {
    "Bearer".into()
}
fn default_max_batch() -> usize {
    100
}
fn default_pay_type_other_code() -> String {
    "8".into()
}
fn default_pay_type_other_label() -> String {
    "其他".into()
}
fn default_no_plate() -> String {
    "无牌车".into()
}
fn default_unknown_brand() -> String {
    "未知".into()
}
fn default_photo_limit_bytes() -> usize {
    SPEC_PHOTO_LIMIT
}
fn default_photo_prefix() -> String {
    SPEC_PHOTO_PREFIX.into()
}
