//! A secured Kafka cluster as a city runs one: Tansu with SCRAM-SHA-512 authentication
//! behind stunnel's TLS, with a CA and server certificate made by the test. lotbridge
//! reaches it with `security.protocol = SASL_SSL` exactly as README.md shows.
//!
//! The test starts its own Tansu (its advertised address must be the TLS port, which the
//! shared CI broker's is not) and its own stunnel, and stops both when dropped.

#[path = "../common/tls.rs"]
#[allow(dead_code)]
mod tls;

use crate::harness::{free_port, unique, vehicle};
use lotbridge::secret::Secret;
use lotbridge::sim::{bingzhouxing, SimServer};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tls::Pki;

const USER: &str = "lotbridge";

/// Tansu (SCRAM required) behind stunnel (TLS), in a temporary folder.
struct SecureBroker {
    dir: tempfile::TempDir,
    tls_port: u16,
    password: String,
    ca: PathBuf,
    tansu: Child,
    stunnel: Child,
}

fn on_path(program: &str) -> bool {
    Command::new(program).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tansu(dir: &Path, plain: u16, advertised: u16, authentication: bool) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("tansu.log")).expect("log");
    let mut cmd = Command::new("tansu");
    cmd.current_dir(dir)
        .env("RUST_LOG", "warn")
        .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{plain}")])
        .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{advertised}")])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    if authentication {
        cmd.arg("--authentication");
    }
    let child = cmd.spawn().expect("spawn tansu");
    wait_port(plain, "tansu");
    child
}

impl SecureBroker {
    /// `None` (after saying SKIPPED) when `tansu` or `stunnel4` is not installed.
    fn start(pki: &Pki) -> Option<SecureBroker> {
        let stunnel = ["stunnel4", "stunnel"].into_iter().find(|p| on_path(p));
        let (Some(stunnel), true) = (stunnel, on_path("tansu")) else {
            eprintln!(
                "SKIPPED kafka_sasl_ssl: tansu and stunnel4 are needed; scripts/ci-system-tests.sh installs them"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("dir");
        let (plain, tls_port) = (free_port(), free_port());
        let password = format!("kafka-pw-{:032x}", rand::random::<u128>());
        // Users can only be created while authentication is off; the sqlite file keeps them.
        let mut open = tansu(dir.path(), plain, tls_port, false);
        let created = Command::new("tansu")
            .args(["user", "create", "--broker", &format!("tcp://127.0.0.1:{plain}"), "--mechanism", "scram512"])
            .args([USER, &password])
            .status()
            .expect("tansu user create");
        assert!(created.success(), "tansu user create failed");
        let _ = open.kill();
        let _ = open.wait();
        let tansu = tansu(dir.path(), plain, tls_port, true);
        let (cert, key) = pki.issue(&["127.0.0.1", "localhost"]).write(dir.path(), "broker");
        let ca = pki.write_ca(dir.path(), "kafka-ca.pem");
        let conf = dir.path().join("stunnel.conf");
        let text = format!(
            "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{plain}\ncert = {}\nkey = {}\n",
            cert.display(),
            key.display()
        );
        std::fs::write(&conf, text).expect("stunnel.conf");
        let log = std::fs::File::create(dir.path().join("stunnel.log")).expect("log");
        let stunnel = Command::new(stunnel)
            .arg(&conf)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn stunnel");
        wait_port(tls_port, "stunnel");
        Some(SecureBroker { dir, tls_port, password, ca, tansu, stunnel })
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port)
    }

    /// The `[kafka.properties]` lotbridge uses, with this CA file and password file.
    fn properties(&self, ca: &Path, password_file: &Path) -> String {
        format!(
            "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"{USER}\"\n\"sasl.password\" = {{ file = \"{}\" }}\n\
             \"ssl.ca.location\" = \"{}\"\n",
            password_file.display(),
            ca.display()
        )
    }

    /// A client of the secured cluster for the test itself.
    fn client(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", self.brokers())
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", USER)
            .set("sasl.password", &self.password)
            .set("ssl.ca.location", self.ca.display().to_string());
        cfg
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        for child in [&mut self.stunnel, &mut self.tansu] {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("lotbridge-system-secure-{}", self.tls_port));
            if std::fs::create_dir_all(&keep).is_ok() {
                for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
                    let _ = std::fs::copy(entry.path(), keep.join(entry.file_name()));
                }
                eprintln!("logs of the failed secure-broker test kept in {}", keep.display());
            }
        }
    }
}

/// lotbridge's configuration for the secured cluster and one Bingzhouxing sink.
fn config(topic: &str, brokers: &str, properties: &str, bzx: &SimServer, lots: &[String], port: u16) -> String {
    let bindings: Vec<String> = lots
        .iter()
        .enumerate()
        .map(|(i, lot)| {
            format!("{{ lot = \"{lot}\", vendor_lot = \"{}\", token = {{ value = \"tok-{lot}\" }} }}", 3500 + i)
        })
        .collect();
    format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [kafka]\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup_prefix = \"g-{topic}\"\n\
         dead_letter_topic = \"{topic}.dlq\"\nresults_topic = \"{topic}.results\"\ncommit_interval_ms = 100\n\
         [kafka.properties]\n{properties}\"session.timeout.ms\" = \"30000\"\n\
         [[sinks]]\nname = \"bzx\"\nbindings = [{}]\n[sinks.retry]\ninitial_ms = 100\nmax_interval_ms = 1000\n\
         [sinks.bingzhouxing]\nbase_url = \"{}\"\n",
        bindings.join(", "),
        bzx.base_url()
    )
}

fn lotbridge(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lotbridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run lotbridge")
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ready(port: u16) -> Option<u16> {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs tansu and stunnel4: run scripts/ci-system-tests.sh"]
async fn kafka_sasl_ssl_delivers_and_a_wrong_ca_or_password_fails_loudly() {
    let pki = Pki::new("city Kafka CA");
    let Some(broker) = SecureBroker::start(&pki) else { return };
    let dir = broker.dir.path().to_path_buf();
    let topic = unique("secure");

    // Topics and records over SASL_SSL from the test's own clients.
    let admin: AdminClient<DefaultClientContext> = broker.client().create().expect("admin");
    let names = [topic.clone(), format!("{topic}.dlq"), format!("{topic}.results")];
    let new: Vec<NewTopic> = names.iter().map(|n| NewTopic::new(n, 2, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &opts).await.expect("create topics over SASL_SSL") {
        result.expect("topic created");
    }
    let lots: Vec<String> = (0..4).map(|i| format!("L{i:02}")).collect();
    let producer: FutureProducer = broker.client().create().expect("producer");
    for seq in 0..10 {
        for lot in &lots {
            let value = vehicle(lot, seq);
            let record = FutureRecord::to(&topic).key(lot.as_str()).payload(&value[..]);
            producer.send(record, Duration::from_secs(30)).await.expect("produce over SASL_SSL");
        }
    }
    let expected = 10 * lots.len();

    let sim = bingzhouxing::Simulator::new(
        lots.iter().enumerate().map(|(i, lot)| ((3500 + i).to_string(), Secret::new(format!("tok-{lot}")))),
    )
    .start("127.0.0.1:0".parse().expect("addr"))
    .await
    .expect("simulator");
    let password = dir.join("kafka-password");
    std::fs::write(&password, format!("{}\n", broker.password)).expect("password file");
    let wrong_password = dir.join("wrong-password");
    std::fs::write(&wrong_password, "not-the-password\n").expect("password file");
    let wrong_ca = Pki::new("some other CA").write_ca(&dir, "wrong-ca.pem");
    let write = |name: &str, ca: &Path, pw: &Path, port: u16| {
        let path = dir.join(name);
        let text = config(&topic, &broker.brokers(), &broker.properties(ca, pw), &sim, &lots, port);
        std::fs::write(&path, text).expect("config");
        path
    };

    // The go-live check passes with the right settings and fails loudly with each wrong one.
    let good = write("good.toml", &broker.ca, &password, free_port());
    let out = lotbridge(&["check-config", "--connect"], &good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("SYSTEM check-config --connect over SASL_SSL:\n{stdout}");
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains(&broker.password), "the password was printed");
    let bad_ca = write("wrong-ca.toml", &wrong_ca, &password, free_port());
    let out = lotbridge(&["check-config", "--connect"], &bad_ca);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("SYSTEM wrong CA: {}", stdout.lines().find(|l| l.starts_with('✗')).unwrap_or_default());
    assert_eq!(out.status.code(), Some(69), "{stdout}");
    assert!(stdout.contains("✗ kafka brokers") && stdout.contains("SSL"), "{stdout}");
    let bad_pw = write("wrong-password.toml", &broker.ca, &wrong_password, free_port());
    let out = lotbridge(&["check-config", "--connect"], &bad_pw);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("SYSTEM wrong password: {}", stdout.lines().find(|l| l.starts_with('✗')).unwrap_or_default());
    assert_eq!(out.status.code(), Some(69), "{stdout}");
    assert!(stdout.contains("✗ kafka brokers") && stdout.contains("Authentication"), "{stdout}");

    // A run with the wrong CA: a clear TLS error, never ready, nothing consumed.
    let port = free_port();
    let bad_ca = write("wrong-ca-run.toml", &wrong_ca, &password, port);
    let log_path = dir.join("wrong-ca-run.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut run = Command::new(env!("CARGO_BIN_EXE_lotbridge"))
        .args(["run", "--config"])
        .arg(&bad_ca)
        .env_remove("RUST_LOG")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for("a TLS error in the log", Duration::from_secs(60), || read_log().contains("certificate verify failed"))
        .await;
    assert_eq!(ready(port).await, Some(503), "ready without a Kafka connection");
    assert!(sim.control.records().is_empty(), "consumed through a connection it must not trust");
    let _ = run.kill();
    let _ = run.wait();
    println!(
        "SYSTEM wrong CA run logged: {}",
        read_log().lines().find(|l| l.contains("certificate verify failed")).unwrap_or_default()
    );

    // The right CA and password: every record delivered.
    let port = free_port();
    let good = write("good-run.toml", &broker.ca, &password, port);
    let log = std::fs::File::create(dir.join("good-run.log")).expect("log");
    let mut run = Command::new(env!("CARGO_BIN_EXE_lotbridge"))
        .args(["run", "--config"])
        .arg(&good)
        .env_remove("RUST_LOG")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn");
    wait_for("every record delivered", Duration::from_secs(180), || {
        sim.control.records_for("carInOut").len() >= expected
    })
    .await;
    let _ = run.kill();
    let _ = run.wait();
    let all = std::fs::read_to_string(dir.join("good-run.log")).unwrap_or_default();
    assert!(!all.contains(&broker.password), "the password was logged");
    println!(
        "SYSTEM SASL_SSL SCRAM-SHA-512 via stunnel: {} of {expected} records delivered",
        sim.control.records_for("carInOut").len()
    );
}
