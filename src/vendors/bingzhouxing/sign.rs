//! The request envelope `{"cmd","lotCode","ts","auth","data"}` and its signature
//! `auth = md5(cmd + lotCode + ts + token)`, lowercase hex.
//!
//! The platform rejects a `ts` older than 10 s, so the envelope is built per attempt, right
//! before sending. `data` is spliced in as the bytes `assemble` produced: re-parsing
//! and re-serializing a batch of photos on every attempt would cost far more than it buys.

use super::config::{DataEncoding, TsUnit};
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};

/// `md5(cmd + lot_code + ts + token)` as 32 lowercase hex characters.
pub fn auth(cmd: &str, lot_code: &str, ts: &str, token: &Secret) -> String {
    let mut hasher = Md5::new();
    for part in [cmd, lot_code, ts, token.expose()] {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The `ts` text for `now` in `unit`.
pub fn timestamp(now: DateTime<Utc>, unit: TsUnit) -> String {
    match unit {
        TsUnit::Millis => now.timestamp_millis().to_string(),
        TsUnit::Seconds => now.timestamp().to_string(),
    }
}

/// What one envelope carries besides its signature.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The command (`carInOut`).
    pub cmd: &'a str,
    /// The lot's `lotCode`.
    pub lot_code: &'a str,
    /// The `ts` text.
    pub ts: &'a str,
    /// Serialized JSON of the data, or `None` for commands without data (heartbeat).
    pub data: Option<&'a [u8]>,
    /// How the data is written.
    pub encoding: DataEncoding,
}

impl Envelope<'_> {
    /// The signed request body. `auth` is computed over the same `ts` text that is written.
    pub fn to_body(&self, token: &Secret) -> Vec<u8> {
        let auth = auth(self.cmd, self.lot_code, self.ts, token);
        let data_len = self.data.map_or(0, |d| d.len() + d.len() / 8 + 16);
        let mut out = Vec::with_capacity(96 + self.cmd.len() + self.lot_code.len() + data_len);
        out.extend_from_slice(b"{\"cmd\":");
        push_json_string(&mut out, self.cmd);
        out.extend_from_slice(b",\"lotCode\":");
        push_json_string(&mut out, self.lot_code);
        out.extend_from_slice(b",\"ts\":");
        push_json_string(&mut out, self.ts);
        out.extend_from_slice(b",\"auth\":");
        push_json_string(&mut out, &auth);
        if let Some(data) = self.data {
            out.extend_from_slice(b",\"data\":");
            match self.encoding {
                DataEncoding::Object => out.extend_from_slice(data),
                // The data was serialized by this adapter, so it is UTF-8; lossy only guards.
                DataEncoding::String => push_json_string(&mut out, &String::from_utf8_lossy(data)),
            }
        }
        out.push(b'}');
        out
    }
}

/// Appends `text` as a JSON string literal (quoted and escaped).
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    // Serializing a &str into a Vec cannot fail: no I/O, no non-string keys.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::{json, Value};

    /// The digest computed independently of `auth`: format the concatenation, hash it whole.
    fn reference_md5(text: &str) -> String {
        let digest = md5::Md5::digest(text.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn auth_is_md5_of_the_concatenation() {
        let token = Secret::new("9f8e7d6c5b4a");
        for (cmd, lot, ts) in [("heartbeat", "350", "1"), ("carInOut", "350", "1700000000123"), ("parkSpace", "", "1")]
        {
            let expected = reference_md5(&format!("{cmd}{lot}{ts}9f8e7d6c5b4a"));
            assert_eq!(auth(cmd, lot, ts, &token), expected);
        }
    }

    #[test]
    fn auth_matches_md5sum() {
        // printf '%s' 'parkSpace3501700000000000tok-350' | md5sum
        let got = auth("parkSpace", "350", "1700000000000", &Secret::new("tok-350"));
        assert_eq!(got, "d7a7d20afa5c45e50c340ee1107c8188");
    }

    #[test]
    fn timestamps_in_both_units() {
        let now = Utc.timestamp_millis_opt(1_700_000_000_123).unwrap();
        assert_eq!(timestamp(now, TsUnit::Millis), "1700000000123");
        assert_eq!(timestamp(now, TsUnit::Seconds), "1700000000");
    }

    fn parse(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn heartbeat_envelope_has_no_data_key() {
        let env = Envelope { cmd: "heartbeat", lot_code: "350", ts: "1", data: None, encoding: DataEncoding::Object };
        let token = Secret::new("tok");
        let expected =
            json!({"cmd": "heartbeat", "lotCode": "350", "ts": "1", "auth": reference_md5("heartbeat3501tok")});
        assert_eq!(parse(&env.to_body(&token)), expected);
    }

    #[test]
    fn data_as_object_or_string() {
        let data = br#"[{"carNo":"\u4eacQ8K271","nodeName":"\"East\" gate"}]"#;
        let mut env =
            Envelope { cmd: "carInOut", lot_code: "350", ts: "17", data: Some(data), encoding: DataEncoding::Object };
        let token = Secret::new("tok");
        let object = parse(&env.to_body(&token));
        assert_eq!(object["data"], json!([{"carNo": "京Q8K271", "nodeName": "\"East\" gate"}]));
        assert_eq!(object["auth"], json!(reference_md5("carInOut35017tok")));
        env.encoding = DataEncoding::String;
        let string = parse(&env.to_body(&token));
        let inner = string["data"].as_str().expect("data is a JSON string");
        assert_eq!(inner.as_bytes(), data);
        assert_eq!(string["auth"], object["auth"], "the data is not signed");
    }

    #[test]
    fn lot_codes_are_escaped() {
        let env = Envelope { cmd: "heartbeat", lot_code: "a\"b", ts: "1", data: None, encoding: DataEncoding::Object };
        assert_eq!(parse(&env.to_body(&Secret::new("t")))["lotCode"], json!("a\"b"));
    }
}
