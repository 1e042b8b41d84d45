//! `[sinks.bingzhouxing]`: the checks that turn the table into [`Settings`] and per-lot
//! [`LotCredentials`]. The table as written, with its defaults (`ts` unit, `data`
//! encoding), is [`crate::config::vendor::bingzhouxing`] (re-exported here).

use crate::config::{Bindings, ConfigError};
use crate::secret::Secret;
use std::collections::HashMap;

pub use crate::config::vendor::bingzhouxing::{Config, DataEncoding, TsUnit, DEFAULT_PHOTO_LIMIT};

/// Checked settings: absolute URLs per command and the envelope options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// URL of `heartbeat`.
    pub heartbeat_url: String,
    /// URL of `parkSpace`.
    pub park_space_url: String,
    /// URL of `carInOut`.
    pub car_in_out_url: String,
    /// `ts` unit.
    pub ts_unit: TsUnit,
    /// `data` encoding.
    pub data_encoding: DataEncoding,
    /// Longest `imgData`.
    pub photo_limit: usize,
    /// `imgData` without a usable photo.
    pub missing_photo: crate::vendors::missing_photo::MissingPhoto,
}

/// The credentials the platform issued for one lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotCredentials {
    /// The platform's `lotCode`.
    pub lot_code: String,
    /// The lot's signing token.
    pub token: Secret,
}

impl Config {
    /// Checks the values; `sink` names the sink in messages.
    pub fn validate(&self, sink: &str) -> Result<Settings, ConfigError> {
        let base = self.base_url.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(base).map_err(|e| invalid(sink, "base_url", &format!("{base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(invalid(sink, "base_url", &format!("{base:?} must be an http:// or https:// URL with a host")));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid(sink, "base_url", "must not carry a query or fragment (paths are appended to it)"));
        }
        if self.photo_limit == 0 {
            return Err(invalid(sink, "photo_limit", "must be at least 1"));
        }
        let placeholder = crate::vendors::missing_photo::placeholder_base64().len();
        if self.missing_photo == crate::vendors::missing_photo::MissingPhoto::Placeholder
            && self.photo_limit < placeholder
        {
            let why = format!("must be at least {placeholder} for missing_photo = \"placeholder\" to fit");
            return Err(invalid(sink, "photo_limit", &why));
        }
        let url = |key: &str, path: &str| -> Result<String, ConfigError> {
            if !path.starts_with('/') || path.contains(char::is_whitespace) || path.contains(['?', '#']) {
                return Err(invalid(
                    sink,
                    key,
                    &format!("{path:?} must be a path starting with / (no spaces, ? or #)"),
                ));
            }
            Ok(format!("{base}{path}"))
        };
        Ok(Settings {
            heartbeat_url: url("heartbeat_path", &self.heartbeat_path)?,
            park_space_url: url("park_space_path", &self.park_space_path)?,
            car_in_out_url: url("car_in_out_path", &self.car_in_out_path)?,
            ts_unit: self.ts_unit,
            data_encoding: self.data_encoding,
            photo_limit: self.photo_limit,
            missing_photo: self.missing_photo,
        })
    }
}

/// Every bound lot's `lotCode` and token, by platform lot code. Fails on the first lot
/// (in sorted order, so the message is stable) without a token: the platform issues one
/// per lot and nothing can be signed without it.
pub fn credentials(sink: &str, bindings: &Bindings) -> Result<HashMap<String, LotCredentials>, ConfigError> {
    let mut out = HashMap::with_capacity(bindings.len());
    for lot in bindings.lots() {
        let Some(binding) = bindings.get(&lot) else { continue };
        let token = match &binding.token {
            Some(token) if !token.expose().is_empty() => token.clone(),
            _ => {
                return Err(invalid(
                    sink,
                    "bindings",
                    &format!(
                        "lot {lot:?} (lotCode {:?}) has no token: Bingzhouxing issues one per lot; \
                         set token = {{ env = \"NAME\" }} inline or a token column (env:NAME or file:PATH) in the CSV",
                        binding.vendor_lot
                    ),
                ))
            }
        };
        out.insert(lot, LotCredentials { lot_code: binding.vendor_lot.clone(), token });
    }
    Ok(out)
}

fn invalid(sink: &str, key: &str, problem: &str) -> ConfigError {
    ConfigError::Invalid(format!("sink {sink:?}: {key}: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Binding;

    fn parse(toml_text: &str) -> Result<Config, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    fn binding(lot: &str, code: &str, token: Option<&str>) -> Binding {
        Binding { lot: lot.into(), vendor_lot: code.into(), token: token.map(Secret::new) }
    }

    #[test]
    fn defaults_follow_the_spec_and_the_protocol_family() {
        let cfg = parse(r#"base_url = "https://bzx.example.cn/api/""#).unwrap();
        let s = cfg.validate("bzx").unwrap();
        assert_eq!(s.heartbeat_url, "https://bzx.example.cn/api/park/heartbeat");
        assert_eq!(s.park_space_url, "https://bzx.example.cn/api/dataSync/parkSpace");
        assert_eq!(s.car_in_out_url, "https://bzx.example.cn/api/dataSync/carInOut");
        assert_eq!((s.ts_unit, s.data_encoding, s.photo_limit), (TsUnit::Millis, DataEncoding::Object, 50_000));
    }

    #[test]
    fn options_parse() {
        let cfg = parse(
            r#"base_url = "http://127.0.0.1:9000"
               ts_unit = "s"
               data_encoding = "string"
               photo_limit = 40000
               car_in_out_path = "/v2/carInOut""#,
        )
        .unwrap();
        let s = cfg.validate("bzx").unwrap();
        assert_eq!((s.ts_unit, s.data_encoding, s.photo_limit), (TsUnit::Seconds, DataEncoding::String, 40_000));
        assert_eq!(s.car_in_out_url, "http://127.0.0.1:9000/v2/carInOut");
    }

    #[test]
    fn unknown_keys_and_values_are_errors() {
        let err = parse("base_url = \"http://x\"\nts_units = \"s\"").unwrap_err();
        assert!(err.contains("ts_units"), "{err}");
        let err = parse("base_url = \"http://x\"\nts_unit = \"us\"").unwrap_err();
        assert!(err.contains("ms") && err.contains("us"), "{err}");
        let err = parse("base_url = \"http://x\"\ndata_encoding = \"form\"").unwrap_err();
        assert!(err.contains("object"), "{err}");
    }

    #[test]
    fn bad_values_name_sink_and_key() {
        let check = |extra: &str, key: &str| {
            let cfg = parse(&format!("base_url = \"http://127.0.0.1:1\"\n{extra}")).unwrap();
            let err = cfg.validate("north").unwrap_err().to_string();
            assert!(err.starts_with(&format!("sink \"north\": {key}: ")), "{err}");
        };
        check("photo_limit = 0", "photo_limit");
        check("photo_limit = 100", "photo_limit");
        let small = parse("base_url = \"http://127.0.0.1:1\"\nphoto_limit = 100\nmissing_photo = \"empty\"").unwrap();
        assert!(small.validate("north").is_ok(), "no placeholder to fit");
        check("heartbeat_path = \"park/heartbeat\"", "heartbeat_path");
        check("park_space_path = \"/a b\"", "park_space_path");
        for base in ["ftp://host", "not a url", "http://host/api?x=1", ""] {
            let err = parse(&format!("base_url = {base:?}")).unwrap().validate("north").unwrap_err().to_string();
            assert!(err.starts_with("sink \"north\": base_url: "), "{err}");
        }
    }

    #[test]
    fn every_bound_lot_needs_a_token() {
        let bindings = Bindings::from_list(vec![binding("P1", "350", Some("tok")), binding("P2", "351", None)]);
        let err = credentials("north", &bindings).unwrap_err().to_string();
        assert!(err.starts_with("sink \"north\": bindings: lot \"P2\" (lotCode \"351\") has no token"), "{err}");
        let bindings = Bindings::from_list(vec![binding("P1", "350", Some("tok")), binding("P3", "352", Some(""))]);
        assert!(credentials("north", &bindings).unwrap_err().to_string().contains("\"P3\""));
    }

    #[test]
    fn credentials_by_platform_lot() {
        let bindings = Bindings::from_list(vec![binding("P1", "350", Some("tok-350"))]);
        let creds = credentials("north", &bindings).unwrap();
        assert_eq!(creds["P1"].lot_code, "350");
        assert_eq!(creds["P1"].token.expose(), "tok-350");
        assert!(!format!("{creds:?}").contains("tok-350"), "tokens never print");
    }
}
