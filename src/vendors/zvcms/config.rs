//! `[sinks.zvcms]`: the checks of the table (account values, code lists) and the amount
//! unit's arithmetic. The table as written, with its defaults, is
//! [`crate::config::vendor::zvcms`] (re-exported here).

use crate::config::ConfigError;

pub use crate::config::vendor::zvcms::{
    default_reject_codes, default_stale_codes, AmountUnit, BusinessError, Config, IntParams, KeyStyle,
};

impl AmountUnit {
    /// The filter value for an order of `cents`.
    pub fn from_cents(self, cents: u64) -> u64 {
        match self {
            AmountUnit::Yuan => cents / 100,
            AmountUnit::Fen => cents,
        }
    }

    /// `amount` in fen.
    pub fn to_fen(self, amount: u64) -> u64 {
        match self {
            AmountUnit::Yuan => amount.saturating_mul(100),
            AmountUnit::Fen => amount,
        }
    }
}

impl Config {
    /// Checks the values serde cannot; `sink` names the sink in messages.
    pub fn validate(&self, sink: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: &str| Err(invalid(sink, key, problem));
        let url = self.base_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(char::is_whitespace) {
            return bad("base_url", "must be an http:// or https:// URL");
        }
        check_sign_value(sink, "open_id", &self.open_id)?;
        self.validate_codes(sink)
    }

    fn validate_codes(&self, sink: &str) -> Result<(), ConfigError> {
        for (key, codes) in [("reject_codes", &self.reject_codes), ("stale_codes", &self.stale_codes)] {
            if codes.iter().any(|c| c.trim().is_empty() || c.trim() == "0") {
                return Err(invalid(sink, key, "codes must be non-empty and not 0 (0 is success)"));
            }
        }
        if let Some(both) = self.reject_codes.iter().find(|c| self.stale_codes.contains(c)) {
            return Err(invalid(sink, "stale_codes", &format!("code {both:?} is also in reject_codes")));
        }
        Ok(())
    }

    /// The request URL.
    pub fn url(&self) -> String {
        format!("{}/api/v2", self.base_url.trim().trim_end_matches('/'))
    }
}

/// A value that goes into the signed `k=v&k=v` text must not contain `&`, `=` or
/// whitespace, or the signed text would be ambiguous. The message never shows the value.
pub fn check_sign_value(sink: &str, key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 256 {
        return Err(invalid(sink, key, "must be 1-256 characters"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '&' || c == '=') {
        return Err(invalid(sink, key, "must not contain whitespace, '&' or '='"));
    }
    Ok(())
}

fn invalid(sink: &str, key: &str, problem: &str) -> ConfigError {
    ConfigError::Invalid(format!("sink {sink:?}: zvcms.{key}: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<Config, toml::de::Error> {
        let text = format!(
            "base_url = \"http://127.0.0.1:1\"\nopen_id = \"oid\"\n\
             grant_code = {{ env = \"G\" }}\nsecret_key = {{ env = \"K\" }}\n{extra}"
        );
        toml::from_str(&text)
    }

    fn problem(change: impl FnOnce(&mut Config)) -> String {
        let mut cfg = parse("").unwrap();
        change(&mut cfg);
        cfg.validate("z1").unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let cfg = parse("").unwrap();
        assert!(!cfg.all_lots && !cfg.sign_action && cfg.send_absent_params);
        assert_eq!(cfg.sign_key_style, KeyStyle::Camel);
        assert_eq!(cfg.int_params, IntParams::String);
        assert_eq!(cfg.amount_unit, AmountUnit::Yuan);
        assert_eq!(cfg.business_error, BusinessError::EmptyList);
        assert_eq!(cfg.reject_codes, ["40001", "40002", "40005"]);
        assert_eq!(cfg.stale_codes, ["40003", "40004"]);
        assert_eq!(cfg.url(), "http://127.0.0.1:1/api/v2");
        cfg.validate("z1").unwrap();
    }

    #[test]
    fn options_parse() {
        let cfg = parse(
            "all_lots = true\nsign_key_style = \"pascal\"\nsign_action = true\nint_params = \"number\"\n\
             amount_unit = \"fen\"\nbusiness_error = \"reject\"\nsend_absent_params = false",
        )
        .unwrap();
        assert!(cfg.all_lots && cfg.sign_action && !cfg.send_absent_params);
        assert_eq!(cfg.sign_key_style, KeyStyle::Pascal);
        assert_eq!(cfg.int_params, IntParams::Number);
        assert_eq!(cfg.amount_unit, AmountUnit::Fen);
        assert_eq!(cfg.business_error, BusinessError::Reject);
    }

    #[test]
    fn unknown_keys_and_values_are_errors() {
        assert!(parse("sign_keys = \"camel\"").unwrap_err().to_string().contains("sign_keys"));
        assert!(parse("sign_key_style = \"snake\"").is_err());
        assert!(parse("secret_key = \"inline\"").is_err());
    }

    #[test]
    fn bad_values_name_sink_and_key() {
        let msg = problem(|c| c.base_url = "openapi.zvcms.com".into());
        assert_eq!(msg, "sink \"z1\": zvcms.base_url: must be an http:// or https:// URL");
        assert!(problem(|c| c.open_id = "a&b".into()).starts_with("sink \"z1\": zvcms.open_id:"));
        assert!(problem(|c| c.open_id = String::new()).contains("1-256 characters"));
        assert!(problem(|c| c.reject_codes = vec!["0".into()]).contains("zvcms.reject_codes"));
        assert!(problem(|c| c.stale_codes = vec!["40001".into()]).contains("also in reject_codes"));
    }

    #[test]
    fn amount_units() {
        assert_eq!(AmountUnit::Yuan.from_cents(15_099), 150);
        assert_eq!(AmountUnit::Fen.from_cents(15_099), 15_099);
        assert_eq!(AmountUnit::Yuan.to_fen(150), 15_000);
    }
}
