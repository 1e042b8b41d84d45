//! Proxies come from the configuration only: `HTTP_PROXY`/`HTTPS_PROXY` in the environment
//! are ignored unless a sink says `proxy = "env"`. (Its own test binary: it sets the
//! process environment.)

mod common;

use common::Kafka;
use lotbridge::secret::Secret;
use lotbridge::sim::bingzhouxing;

#[tokio::test]
async fn environment_proxies_apply_only_when_asked() {
    // A proxy that refuses every connection: a request sent through it fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_proxy = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    std::env::set_var("HTTP_PROXY", &dead_proxy);
    std::env::set_var("http_proxy", &dead_proxy);
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    let sim = bingzhouxing::Simulator::new([("350".to_string(), Secret::new("t"))])
        .start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator");
    let kafka = Kafka::new();
    let sink = |proxy: &str| {
        format!(
            "{}[[sinks]]\nname = \"bzx\"\n[sinks.network]\nproxy = \"{proxy}\"\n[sinks.bingzhouxing]\nbase_url = \"{}\"\n",
            common::kafka_section(&kafka, "proxy"),
            sim.base_url()
        )
    };
    let url = format!("{}/_sim/records", sim.base_url());
    let direct = common::load(&sink("none"));
    let status = direct.sinks[0].http.get(&url).send().await.expect("direct, environment ignored").status();
    assert_eq!(status, 200);
    let via_env = common::load(&sink("env"));
    assert!(via_env.sinks[0].http.get(&url).send().await.is_err(), "proxy = \"env\" uses HTTP_PROXY");
}
