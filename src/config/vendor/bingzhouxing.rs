//! `[sinks.bingzhouxing]` as written: the keys and their defaults. The spec and the
//! deployed protocol family disagree on the `ts` unit and on whether `data` is a JSON object
//! or a JSON string; both are options here with the family's behaviour (milliseconds,
//! object) as the default. The checks, settings and per-lot credentials are in
//! `vendors::bingzhouxing::config`.

use super::MissingPhoto;

/// The platform's limit on `imgData`, read as the length of the base64 text.
pub const DEFAULT_PHOTO_LIMIT: usize = 50_000;

/// `[sinks.bingzhouxing]` settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the platform, e.g. `https://bzx.example.cn/api` (paths are appended).
    pub base_url: String,
    /// Unit of the `ts` field: `"ms"` (Unix milliseconds, default) or `"s"` (Unix seconds).
    #[serde(default)]
    pub ts_unit: TsUnit,
    /// How `data` is sent: `"object"` (a JSON object or array, default) or `"string"`
    /// (the same JSON serialized into a JSON string, as the spec's type table says).
    #[serde(default)]
    pub data_encoding: DataEncoding,
    /// Longest `imgData` (base64 text) the platform accepts; longer photos follow the
    /// sink's photo policy. Default 50 000.
    #[serde(default = "default_photo_limit")]
    pub photo_limit: usize,
    /// What the required `imgData` holds when the vehicle has no usable photo: `placeholder`
    /// (default: a small grey JPEG, so a strict platform accepts the passage), `empty`
    /// (`""`, as the spec's example sends) or `reject` (dead-letter the record).
    #[serde(default)]
    pub missing_photo: MissingPhoto,
    /// Path of the heartbeat endpoint (cmd `heartbeat`). Default `/park/heartbeat`.
    #[serde(default = "default_heartbeat_path")]
    pub heartbeat_path: String,
    /// Path of the space-count endpoint (cmd `parkSpace`). Default `/dataSync/parkSpace`.
    #[serde(default = "default_park_space_path")]
    pub park_space_path: String,
    /// Path of the vehicle in/out endpoint (cmd `carInOut`). Default `/dataSync/carInOut`.
    #[serde(default = "default_car_in_out_path")]
    pub car_in_out_path: String,
}

/// Unit of the envelope's `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum TsUnit {
    /// Unix milliseconds (what deployed platforms of this family expect).
    #[default]
    #[serde(rename = "ms")]
    Millis,
    /// Unix seconds.
    #[serde(rename = "s")]
    Seconds,
}

/// Encoding of the envelope's `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataEncoding {
    /// `"data": {...}` or `"data": [...]`.
    #[default]
    Object,
    /// `"data": "{...}"`: the JSON text as a string.
    String,
}

fn default_photo_limit() -> usize {
    DEFAULT_PHOTO_LIMIT
}
fn default_heartbeat_path() -> String {
    "/park/heartbeat".into()
}
fn default_park_space_path() -> String {
    "/dataSync/parkSpace".into()
}
fn default_car_in_out_path() -> String {
    "/dataSync/carInOut".into()
}
