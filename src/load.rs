//! A configuration built into runnable sinks: each sink's HTTP client, its bindings with
//! their secrets, and its vendor adapter. This sits above [`crate::config`] (what is
//! written, checked without any vendor's rules) and [`crate::vendors`] (each vendor checks
//! its own table as it builds its adapter), so neither imports the other's builder.
//! Also the `check-config` summary of a loaded configuration.

use crate::config::{load_bindings, Bindings, Config, ConfigError, SinkConfig, VendorKind};
use crate::vendors::{self, Adapter, SinkContext};
use std::path::Path;
use std::sync::Arc;

/// A sink ready to run.
pub struct LoadedSink {
    /// Its settings as written.
    pub config: SinkConfig,
    /// Which vendor.
    pub kind: VendorKind,
    /// Bound lots.
    pub bindings: Arc<Bindings>,
    /// The vendor adapter.
    pub adapter: Arc<dyn Adapter>,
    /// Its HTTP client, built from `[sinks.network]`.
    pub http: reqwest::Client,
}

/// A checked configuration.
pub struct Loaded {
    /// The file as written.
    pub config: Config,
    /// Every sink, built.
    pub sinks: Vec<LoadedSink>,
}

/// Reads, parses, checks and builds everything a run needs from the file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let config = Config::read(path)?;
    build(config, path.parent().unwrap_or(Path::new(".")))
}

/// Checks a parsed configuration and builds its sinks, each with its own HTTP client;
/// `base` is the config file's folder (relative secret and CSV paths start there).
pub fn build(config: Config, base: &Path) -> Result<Loaded, ConfigError> {
    let config = config.check(base)?;
    let mut sinks = Vec::with_capacity(config.sinks.len());
    for sink in &config.sinks {
        sinks.push(build_sink(sink, base)?);
    }
    Ok(Loaded { config, sinks })
}

fn build_sink(sink: &SinkConfig, base: &Path) -> Result<LoadedSink, ConfigError> {
    let kind = sink.kind()?;
    let http = sink.network.client(base).map_err(|source| ConfigError::Network { sink: sink.name.clone(), source })?;
    let bindings = Arc::new(load_bindings(sink, base)?);
    let ctx = SinkContext {
        name: &sink.name,
        bindings: bindings.clone(),
        photo: sink.photo,
        max_records: sink.batch.max_records,
        base_dir: base,
        http: http.clone(),
    };
    let adapter: Arc<dyn Adapter> = match kind {
        VendorKind::BarrierCoupon => Arc::new(vendors::barrier::build(cfg(&sink.barrier_coupon)?, &ctx)?),
        VendorKind::InspurIsp => Arc::new(vendors::isp::build(cfg(&sink.inspur_isp)?, &ctx)?),
        VendorKind::Bingzhouxing => Arc::new(vendors::bingzhouxing::build(cfg(&sink.bingzhouxing)?, &ctx)?),
        VendorKind::Zvcms => Arc::new(vendors::zvcms::build(cfg(&sink.zvcms)?, &ctx)?),
    };
    Ok(LoadedSink { config: sink.clone(), kind, bindings, adapter, http })
}

fn cfg<T>(table: &Option<T>) -> Result<&T, ConfigError> {
    table.as_ref().ok_or_else(|| ConfigError::Invalid("vendor table missing".into()))
}

/// A one-screen summary for `check-config` in the configuration's own words: topics,
/// sinks, options and bound lots (their count; every lot code with `verbose`). Never a secret.
pub fn summary(loaded: &Loaded, verbose: bool) -> String {
    let c = &loaded.config;
    let k = &c.kafka;
    let mut out = format!(
        "kafka: brokers={} topics={} group_prefix={} dead_letter_topic={} results_topic={}\n",
        k.brokers,
        k.topics.join(","),
        k.group_prefix,
        k.dead_letter_topic,
        k.results_topic
    );
    if !k.properties.is_empty() {
        out.push_str(&format!("kafka.properties: {}\n", k.properties_summary()));
    }
    out.push_str(&format!("metrics: listen={}\n", c.metrics.listen));
    out.push_str(&format!("log: json={} filter={}\n", c.log.json, c.log.filter.as_deref().unwrap_or("info")));
    for s in &loaded.sinks {
        out.push_str(&sink_summary(s, &k.group_prefix, verbose));
    }
    out
}

fn sink_summary(s: &LoadedSink, group_prefix: &str, verbose: bool) -> String {
    let c = &s.config;
    let mut out = format!(
        "sink {} ({}): base_url={} group={group_prefix}.{}\n",
        c.name,
        s.kind.as_str(),
        c.base_url().unwrap_or("?"),
        c.name
    );
    out.push_str(&format!(
        "  concurrency={} photo={} memory_budget_bytes={} request_timeout_ms={}\n",
        c.concurrency,
        word(&c.photo),
        c.memory_budget_bytes,
        c.request_timeout_ms
    ));
    let r = &c.rate_limit;
    let per_lot = r.per_lot_per_second.map_or("none".to_string(), |n| n.to_string());
    out.push_str(&format!(
        "  rate_limit: requests_per_second={} burst={} per_lot_per_second={per_lot}\n",
        r.requests_per_second, r.burst
    ));
    out.push_str(&format!("  network: {}\n", c.network.summary()));
    let lots = s.bindings.lots();
    if lots.is_empty() {
        out.push_str("  lots: none bound\n");
    } else if verbose {
        out.push_str(&format!("  lots ({}): {}\n", lots.len(), lots.join(" ")));
    } else {
        out.push_str(&format!("  lots: {} bound (--verbose lists them)\n", lots.len()));
    }
    out
}

/// A unit enum as the configuration spells it (`as_is`, not `AsIs`).
fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
topics = ["events"]
[[sinks]]
name = "bzx"
bindings_csv = "lots.csv"
[sinks.bingzhouxing]
base_url = "http://127.0.0.1:1"
"#;

    fn build_text(text: &str, dir: &Path) -> Result<Loaded, ConfigError> {
        build(Config::parse(text, Path::new("t.toml"))?, dir)
    }

    #[test]
    fn ten_thousand_csv_bindings_load() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("LOTBRIDGE_TEST_BZX_TOKEN", "t0k3n-value");
        let mut csv = String::from("lot,vendor_lot,token\n");
        for i in 0..10_000 {
            csv.push_str(&format!("P{i:05},{},env:LOTBRIDGE_TEST_BZX_TOKEN\n", 1000 + i));
        }
        std::fs::write(dir.path().join("lots.csv"), csv).unwrap();
        let start = std::time::Instant::now();
        let loaded = build_text(BASE, dir.path()).unwrap();
        println!("10,000 CSV bindings loaded in {:?}", start.elapsed());
        let b = &loaded.sinks[0].bindings;
        assert_eq!(b.len(), 10_000);
        assert_eq!(b.get("P00042").unwrap().vendor_lot, "1042");
        let short = summary(&loaded, false);
        assert!(short.contains("lots: 10000 bound") && !short.contains("t0k3n-value"), "{short}");
        let long = summary(&loaded, true);
        assert!(long.contains("lots (10000): P00000 P00001") && !long.contains("t0k3n-value"), "{long}");
    }

    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lots.csv"), "lot,vendor_lot,token\nP1,350,env:LOTBRIDGE_TEST_UNSET_X\n")
            .unwrap();
        let unknown = build_text(&BASE.replace("topics", "topicz"), dir.path()).err().unwrap().to_string();
        assert!(unknown.contains("topicz"), "{unknown}");
        let missing = build_text(BASE, dir.path()).err().unwrap().to_string();
        assert!(missing.contains("LOTBRIDGE_TEST_UNSET_X") && missing.contains("line 2"), "{missing}");
        let twice = format!("{BASE}\n[[sinks]]\nname = \"bzx\"\n[sinks.zvcms]\nbase_url = \"x\"\nopen_id = \"o\"\ngrant_code = {{ value = \"g\" }}\nsecret_key = {{ value = \"k\" }}\n");
        assert!(build_text(&twice, dir.path()).err().unwrap().to_string().contains("used twice"));
        let none = BASE.replace("[sinks.bingzhouxing]\nbase_url = \"http://127.0.0.1:1\"\n", "");
        assert!(build_text(&none, dir.path()).err().unwrap().to_string().contains("add one vendor table"));
        let dup = "lot,vendor_lot,token\nP1,350,\nP1,351,\n";
        std::fs::write(dir.path().join("lots.csv"), dup).unwrap();
        assert!(build_text(BASE, dir.path()).err().unwrap().to_string().contains("bound twice"));
        let bad_time = BASE.replace("bindings_csv", "daily_push_at = \"1am\"\nbindings_csv");
        assert!(build_text(&bad_time, dir.path()).err().unwrap().to_string().contains("daily_push_at"));
    }

    #[test]
    fn kafka_properties_take_secret_references_and_never_print_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lots.csv"), "lot,vendor_lot,token\n").unwrap();
        std::fs::write(dir.path().join("kafka-password"), "pw-from-file\n").unwrap();
        std::env::set_var("LOTBRIDGE_TEST_KAFKA_USER_PW", "pw-from-env");
        let props = "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
                     \"sasl.password\" = { file = \"kafka-password\" }\n\
                     \"sasl.oauthbearer.client.secret\" = { env = \"LOTBRIDGE_TEST_KAFKA_USER_PW\" }\n\
                     \"ssl.key.password\" = \"inline-pw\"\n";
        let text = BASE.replace("[[sinks]]", &format!("{props}[[sinks]]"));
        let loaded = build_text(&text, dir.path()).unwrap();
        let cfg = crate::kafka::client_config(&loaded.config.kafka);
        assert_eq!(cfg.get("sasl.password"), Some("pw-from-file"));
        assert_eq!(cfg.get("sasl.oauthbearer.client.secret"), Some("pw-from-env"));
        assert_eq!(cfg.get("security.protocol"), Some("SASL_SSL"));
        let shown = format!("{}{:?}", summary(&loaded, false), loaded.config);
        for secret in ["pw-from-file", "pw-from-env", "inline-pw"] {
            assert!(!shown.contains(secret), "{secret} printed: {shown}");
        }
        assert!(shown.contains("security.protocol=SASL_SSL"), "{shown}");
        let number = text.replace("\"SASL_SSL\"", "5000");
        let err = build_text(&number, dir.path()).err().unwrap().to_string();
        assert!(err.contains("security.protocol") && err.contains("quoted"), "{err}");
        let unset = text.replace("LOTBRIDGE_TEST_KAFKA_USER_PW", "LOTBRIDGE_TEST_KAFKA_UNSET");
        let err = build_text(&unset, dir.path()).err().unwrap().to_string();
        assert!(err.contains("sasl.oauthbearer.client.secret") && err.contains("LOTBRIDGE_TEST_KAFKA_UNSET"), "{err}");
    }

    #[test]
    fn the_shipped_example_checks() {
        // No environment: the example's secrets are FAKE files under deploy/secrets/.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/lotbridge.example.toml");
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.sinks.len(), 4);
    }
}
