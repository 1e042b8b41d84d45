//! The one place a Kafka client's cluster settings are built from the configuration:
//! brokers plus the `[kafka.properties]` pass-through, secret references resolved.
//!
//! Every client lotbridge creates against the configured cluster (the sinks' consumers, the
//! dead-letter producer, the lot-book reader, the dead-letter tools, the go-live check)
//! starts from [`client_config`], so a TLS or SASL setting applies to all of them alike.
//!
//! librdkafka is built with OpenSSL (vendored) and zstd: `security.protocol` `SSL` and
//! `SASL_SSL`, SASL `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` and `OAUTHBEARER` (unsecured
//! JWT or a token callback; not the `oidc` method, which needs libcurl), and the codecs
//! gzip, snappy, lz4 and zstd. Kerberos (`GSSAPI`) is not built in.

use crate::config::{KafkaConfig, PropertyValue};
use rdkafka::ClientConfig;
use std::path::Path;

/// A client configuration for the configured cluster: `bootstrap.servers` and every
/// `[kafka.properties]` entry.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    apply(&mut cfg, kafka);
    cfg
}

/// Sets `bootstrap.servers` and every `[kafka.properties]` entry on `cfg`. Call it after a
/// role's own defaults (group, acks...), so the operator's properties win.
pub(crate) fn apply(cfg: &mut ClientConfig, kafka: &KafkaConfig) {
    cfg.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in &kafka.properties {
        match value {
            PropertyValue::Text(text) => {
                cfg.set(key, text);
            }
            // `KafkaConfig::resolve_properties` ran at load and left only inline values;
            // a reference still here is resolved from the working directory.
            PropertyValue::Secret(reference) => match reference.resolve(Path::new(".")) {
                Ok(secret) => {
                    cfg.set(key, secret.expose());
                }
                Err(e) => tracing::error!(property = %key, error = %e, "Kafka property secret not resolved; not set"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretRef;
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;
    use std::collections::BTreeMap;

    fn kafka(props: &[(&str, PropertyValue)]) -> KafkaConfig {
        let text = "brokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n";
        let mut k: KafkaConfig = toml::from_str(text).expect("kafka table");
        k.properties = props.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>();
        k
    }

    fn text(v: &str) -> PropertyValue {
        PropertyValue::Text(v.into())
    }

    /// librdkafka refuses at `create()` a setting whose feature was compiled out
    /// ("OpenSSL not available at build time", "libzstd not available"...).
    fn creates(props: &[(&str, PropertyValue)]) -> Result<(), String> {
        let cfg = client_config(&kafka(props));
        let producer: Result<BaseProducer, _> = cfg.create();
        producer.map(drop).map_err(|e| e.to_string())?;
        let mut consumer_cfg = cfg.clone();
        consumer_cfg.set("group.id", "lotbridge.feature-test");
        consumer_cfg.remove("compression.codec");
        let consumer: Result<BaseConsumer, _> = consumer_cfg.create();
        consumer.map(drop).map_err(|e| e.to_string())
    }

    #[test]
    fn tls_sasl_and_every_codec_are_compiled_in() {
        let scram = |mechanism: &str| {
            vec![
                ("security.protocol", text("SASL_SSL")),
                ("sasl.mechanism", text(mechanism)),
                ("sasl.username", text("lotbridge")),
                ("sasl.password", PropertyValue::Secret(SecretRef::Value(crate::secret::Secret::new("pw")))),
            ]
        };
        let cases: Vec<(&str, Vec<(&str, PropertyValue)>)> = vec![
            ("SSL", vec![("security.protocol", text("SSL"))]),
            ("SASL_SSL SCRAM-SHA-512", scram("SCRAM-SHA-512")),
            ("SASL_SSL SCRAM-SHA-256", scram("SCRAM-SHA-256")),
            ("SASL_SSL PLAIN", scram("PLAIN")),
            (
                "SASL_SSL OAUTHBEARER",
                vec![
                    ("security.protocol", text("SASL_SSL")),
                    ("sasl.mechanism", text("OAUTHBEARER")),
                    ("enable.sasl.oauthbearer.unsecure.jwt", text("true")),
                ],
            ),
            ("zstd", vec![("compression.codec", text("zstd"))]),
            ("lz4", vec![("compression.codec", text("lz4"))]),
            ("snappy", vec![("compression.codec", text("snappy"))]),
            ("gzip", vec![("compression.codec", text("gzip"))]),
        ];
        let failed: Vec<String> =
            cases.iter().filter_map(|(name, props)| creates(props).err().map(|e| format!("{name}: {e}"))).collect();
        assert!(failed.is_empty(), "librdkafka lacks features: {failed:#?}");
    }

    #[test]
    fn secret_properties_are_resolved_and_operator_properties_win() {
        std::env::set_var("LOTBRIDGE_TEST_KAFKA_PW", "s3cret-pw");
        let k = kafka(&[
            ("sasl.password", PropertyValue::Secret(SecretRef::Env("LOTBRIDGE_TEST_KAFKA_PW".into()))),
            ("linger.ms", text("50")),
        ]);
        let cfg = client_config(&k);
        assert_eq!(cfg.get("sasl.password"), Some("s3cret-pw"));
        assert_eq!(cfg.get("bootstrap.servers"), Some("127.0.0.1:1"));
        let mut role = ClientConfig::new();
        role.set("linger.ms", "5").set("acks", "all");
        apply(&mut role, &k);
        assert_eq!((role.get("linger.ms"), role.get("acks")), (Some("50"), Some("all")));
        assert!(!format!("{:?}", k.properties).contains("s3cret"), "{:?}", k.properties);
    }
}
