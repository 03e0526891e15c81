//! Vigil against a real Kafka-protocol broker (`KAFKA_BROKERS`, default 127.0.0.1:9092;
//! `make test` and `.ci/run` start one): `vigil run` processes on loopback, generated shop
//! traffic produced to an input topic, outputs read back from the output topics to their end
//! and compared with the generator's ground truth — exactly, none missing, none duplicated.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_matches_ground_truth, Workdir};
use vigil_actors::spec::KafkaSpec;
use vigil_kafka::tools;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const TOPOLOGY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/order-fulfilment/kafka.toml"
);
const OUTPUTS: &[&str] = &["alerts", "events", "dead-letters"];
const TIMEOUT: Duration = Duration::from_secs(30);
/// Reading a topic ends when nothing more arrives for this long.
const QUIET: Duration = Duration::from_millis(200);

fn brokers() -> String {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = brokers.split(',').next().unwrap().to_owned();
    assert!(
        std::net::TcpStream::connect(&first).is_ok(),
        "no Kafka-protocol broker at {first}: `make test` starts one (tansu), or set KAFKA_BROKERS"
    );
    brokers
}

fn broker() -> KafkaSpec {
    tools::cluster(&brokers())
}

/// A name no other test run uses on the same broker.
fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Produces event lines keyed by their entity (order number, else customer), as a shop's
/// services would; lines without one (malformed) get no key.
fn produce(topic: &str, partitions: i32, lines: &[String]) {
    tools::produce_lines(
        &broker(),
        topic,
        partitions,
        &["order_number", "customer_id"],
        lines.iter().map(String::as_str),
    )
    .unwrap();
}

fn input_lines(work: &Workdir) -> Vec<String> {
    let mut lines = Vec::new();
    for file in common::jsonl_files(&work.data()) {
        if file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("events-"))
        {
            lines.extend(
                std::fs::read_to_string(file)
                    .unwrap()
                    .lines()
                    .map(str::to_owned),
            );
        }
    }
    lines
}

/// One Kafka job on the broker: its topics and the directories of its nodes.
struct Cluster {
    prefix: String,
    input: String,
    root: PathBuf,
}

impl Cluster {
    fn new(test: &str, root: &Path, input_partitions: i32) -> Cluster {
        let prefix = unique(test);
        let input = format!("{prefix}.shop-events");
        produce(&input, input_partitions, &[]);
        Cluster {
            prefix,
            input,
            root: root.to_owned(),
        }
    }

    fn output_topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// Starts a node. With `static_member`, `POD_NAME` gives it a `group.instance.id`.
    fn node(&self, name: &str, static_member: bool) -> Node {
        let state = self.root.join(name).join("state");
        let log = self.root.join(format!("{name}.log"));
        let child = Command::new(VIGIL)
            .args(["run", TOPOLOGY, "--quiet"])
            .env("KAFKA_BROKERS", brokers())
            .env("VIGIL_INPUT_TOPIC", &self.input)
            .env("VIGIL_TOPIC_PREFIX", &self.prefix)
            .env("VIGIL_GROUP", &self.prefix)
            .env("POD_NAME", if static_member { name } else { "" })
            .env("VIGIL_STATE", &state)
            .env("VIGIL_SNAPSHOTS", self.root.join("snapshots"))
            .env("VIGIL_IDLE_TIMEOUT", "1s")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Node { child, log, state }
    }

    fn output_size(&self) -> i64 {
        OUTPUTS
            .iter()
            .map(|o| {
                tools::read_topic(&broker(), &self.output_topic(o), QUIET)
                    .unwrap()
                    .len() as i64
            })
            .sum()
    }

    /// Waits until the output topics hold `expected` records (and a little longer, to see
    /// nothing more comes), then writes them to `out/<name>.jsonl`.
    fn collect(&self, expected: i64, out: &Path, timeout: Duration) {
        let started = Instant::now();
        while self.output_size() < expected && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(500));
        }
        std::thread::sleep(Duration::from_secs(3));
        std::fs::create_dir_all(out).unwrap();
        for name in OUTPUTS {
            let lines =
                tools::read_topic(&broker(), &self.output_topic(name), Duration::from_secs(1))
                    .unwrap();
            let ids: BTreeSet<String> = lines
                .iter()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
                .collect();
            assert_eq!(ids.len(), lines.len(), "{name}: a record id appears twice");
            let mut text = lines.join("\n");
            text.push('\n');
            std::fs::write(out.join(format!("{name}.jsonl")), text).unwrap();
        }
    }
}

struct Node {
    child: Child,
    log: PathBuf,
    state: PathBuf,
}

impl Node {
    fn signal(&mut self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM: the node checkpoints, gives its shards up and exits.
    fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                assert!(status.success(), "node failed: {status}\n{log}");
                return log;
            }
            if started.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                panic!(
                    "node did not stop\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn expected_records(work: &Workdir) -> i64 {
    std::fs::read_to_string(work.data().join("expected.jsonl"))
        .unwrap()
        .lines()
        .count() as i64
}

#[test]
fn a_kafka_run_gives_the_outputs_of_the_embedded_run() {
    let work = Workdir::new();
    work.generate(21, 1_500);
    let lines = input_lines(&work);
    // Every parcel shipment carries a W3C trace context; the records it causes carry it on.
    let traces: Vec<Option<String>> = (0..lines.len())
        .map(|i| {
            lines[i]
                .contains("\"PARCEL_SHIPPED\"")
                .then(|| format!("00-{:032x}-{:016x}-01", i + 1, i + 1))
        })
        .collect();
    let cluster = Cluster::new("same-as-embedded", work.path(), 3);
    tools::produce_traced(
        &broker(),
        &cluster.input,
        3,
        &["order_number", "customer_id"],
        lines
            .iter()
            .map(String::as_str)
            .zip(traces.iter().map(Option::as_deref)),
    )
    .unwrap();
    let node = cluster.node("n1", false);
    cluster.collect(
        expected_records(&work),
        &work.out(),
        Duration::from_secs(120),
    );
    let log = node.stop();
    assert!(log.contains("shard restored"), "{log}");
    assert_matches_ground_truth(&work);

    // The embedded run of the same topology over the same events.
    let embedded_out = work.path().join("embedded-out");
    let env = [
        ("VIGIL_DATA", work.data()),
        ("VIGIL_OUT", embedded_out.clone()),
        ("VIGIL_STATE", work.path().join("embedded-state")),
    ];
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.display().to_string())
    };
    let spec = vigil_topology::compile_str(common::EXAMPLE, "topology.toml", &lookup).unwrap();
    vigil_actors::job::run(spec, vigil_actors::job::RunOptions::default()).unwrap();
    assert_eq!(
        common::identities(&common::jsonl_files(&work.out())),
        common::identities(&common::jsonl_files(&embedded_out)),
        "the Kafka run and the embedded run emit the same records"
    );

    // Trace context: each ALL_PARCELS_SHIPPED carries that of one of its order's shipments.
    let mut shipments: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (line, trace) in lines.iter().zip(&traces) {
        if let (Some(trace), Ok(v)) = (trace, serde_json::from_str::<serde_json::Value>(line)) {
            if let Some(order) = v["order_number"].as_str() {
                shipments
                    .entry(order.to_owned())
                    .or_default()
                    .push(trace.clone());
            }
        }
    }
    let events = tools::read_traced(&broker(), &cluster.output_topic("events"), QUIET).unwrap();
    assert!(!events.is_empty());
    for (value, trace) in &events {
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        let order = v["key"].as_str().unwrap();
        let trace = trace
            .as_ref()
            .unwrap_or_else(|| panic!("no traceparent on {value}"));
        assert!(
            shipments.get(order).is_some_and(|t| t.contains(trace)),
            "{value} carries {trace}, not one of its shipments'"
        );
    }
    let alerts = tools::read_traced(&broker(), &cluster.output_topic("alerts"), QUIET).unwrap();
    // An SLA alert fired by its timer has no event behind it; one raised by a late shipment
    // carries that shipment's trace context.
    for (value, trace) in &alerts {
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        if let Some(trace) = trace {
            let order = v["key"].as_str().unwrap();
            assert!(
                shipments.get(order).is_some_and(|t| t.contains(trace)),
                "{value} carries {trace}, not one of its shipments'"
            );
        }
    }
}

#[test]
fn three_nodes_one_killed_restarted_and_one_added_deliver_exactly_once() {
    let work = Workdir::new();
    eprintln!("node logs in {}", work.path().display());
    work.generate(8, 3_000);
    let lines = input_lines(&work);
    let cluster = Cluster::new("chaos", work.path(), 6);
    // A backlog: the nodes are killed and added while they work through it. (Pauses in the
    // input would make partitions idle, and idleness lets event time run on: the ground
    // truth assumes one uninterrupted stream.)
    produce(&cluster.input, 6, &lines);
    let n1 = cluster.node("n1", true);
    let n2 = cluster.node("n2", true);
    let n3 = cluster.node("n3", true);
    // Killed a second after it took its shards: mid-way through them (a shard works through
    // its ~3 400 records in 1–2 s here), past its first checkpoint.
    let started = Instant::now();
    while !n2.log().contains("shard restored") && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let killed_at = Instant::now();
    let killed_log = n2.log();
    n2.kill();
    eprintln!(
        "n2 killed at {}",
        vigil_actors::time::format_rfc3339(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        )
    );
    let before_kill = cluster.output_size();
    std::thread::sleep(Duration::from_secs(2));
    let n2 = cluster.node("n2", true);
    let n4 = cluster.node("n4", true);
    cluster.collect(
        expected_records(&work),
        &work.out(),
        Duration::from_secs(180),
    );
    eprintln!(
        "outputs at the kill: {before_kill}; all {} outputs {:.1} s after the kill",
        cluster.output_size(),
        killed_at.elapsed().as_secs_f64()
    );
    let logs: Vec<String> = [n1, n2, n3, n4].into_iter().map(Node::stop).collect();
    let kept = std::env::temp_dir()
        .join("vigil-kafka-test")
        .join(&cluster.prefix);
    std::fs::create_dir_all(&kept).unwrap();
    for (i, log) in logs.iter().enumerate() {
        std::fs::write(kept.join(format!("n{}.log", i + 1)), log).unwrap();
    }
    for file in common::jsonl_files(&work.out()) {
        std::fs::copy(&file, kept.join(file.file_name().unwrap())).unwrap();
    }
    eprintln!("logs and outputs kept in {}", kept.display());
    assert!(killed_log.contains("shard restored"), "{killed_log}");
    assert_matches_ground_truth(&work);
    assert!(
        logs.iter().any(|l| l.contains("shard released")),
        "adding a node moved shards"
    );
}

#[test]
fn a_node_that_lost_its_state_restores_from_a_snapshot_and_replays_the_log() {
    let work = Workdir::new();
    work.generate(4, 2_000);
    let lines = input_lines(&work);
    let cluster = Cluster::new("snapshot", work.path(), 2);
    produce(&cluster.input, 2, &lines);
    let node = cluster.node("n1", false);
    let started = Instant::now();
    while cluster.output_size() == 0 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let snapshot = Command::new(VIGIL)
        .args(["snapshot", TOPOLOGY, "--timeout-secs", "30"])
        .env("KAFKA_BROKERS", brokers())
        .env("VIGIL_INPUT_TOPIC", &cluster.input)
        .env("VIGIL_TOPIC_PREFIX", &cluster.prefix)
        .env("VIGIL_SNAPSHOTS", work.path().join("snapshots"))
        .output()
        .unwrap();
    assert!(
        snapshot.status.success(),
        "{}{}",
        String::from_utf8_lossy(&snapshot.stdout),
        String::from_utf8_lossy(&snapshot.stderr)
    );
    let state = node.state.clone();
    node.kill();
    std::fs::remove_dir_all(&state).unwrap();
    let node = cluster.node("n1", false);
    // The killed member leaves the group after its session timeout; then the new one takes
    // every shard and replays each log from its snapshot.
    let started = Instant::now();
    while node.log().matches("shard caught up").count() < 8
        && started.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(250));
    }
    cluster.collect(
        expected_records(&work),
        &work.out(),
        Duration::from_secs(120),
    );
    let log = node.stop();
    assert_eq!(log.matches("from=\"snapshot\"").count(), 8, "{log}");
    assert_matches_ground_truth(&work);
}
