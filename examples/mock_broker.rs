//! A standalone Kafka-protocol broker for local runs: librdkafka's mock cluster in a process
//! of its own. It prints its bootstrap address and runs until killed.
//!
//! The system suite normally runs against Tansu, whose 0.6 release stores the metadata of a
//! committed offset but does not return it (its `offset_fetch` selects only the offset), so
//! lotbridge's finished-ahead map is never read back there. Against this broker the crash
//! test shows the map at work (RELIABILITY.md):
//!
//! ```sh
//! mkdir -p /tmp/mock-topics
//! target/release/examples/mock_broker /tmp/mock-topics > /tmp/mock.addr &
//! LOTBRIDGE_SYSTEM_BROKER=$(cat /tmp/mock.addr) LOTBRIDGE_SYSTEM_MOCK_TOPICS=/tmp/mock-topics \
//!   cargo test --release --test system -- --ignored five_sigkills --nocapture
//! ```
//!
//! The mock cluster does not create topics through the admin API, so the suite asks for
//! them by writing `<partitions>` into a file named after the topic in the folder given as
//! the first argument; this process creates them and removes the file. It keeps about
//! 5 MiB per partition.

use std::path::PathBuf;
use std::time::Duration;

fn main() {
    let requests = std::env::args().nth(1).map(PathBuf::from);
    let cluster = match rdkafka::mocking::MockCluster::new(1) {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("mock cluster: {e}");
            std::process::exit(1);
        }
    };
    println!("{}", cluster.bootstrap_servers());
    let _ = std::io::Write::flush(&mut std::io::stdout());
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let Some(dir) = &requests else { continue };
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let (name, path) = (entry.file_name().to_string_lossy().into_owned(), entry.path());
            let partitions = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<i32>().ok());
            if let Some(partitions) = partitions {
                if let Err(e) = cluster.create_topic(&name, partitions, 1) {
                    eprintln!("create {name}: {e}");
                }
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}
