//! `vigil validate` and `vigil run` on a topology with several mistakes: every one is reported,
//! with file, line, column and a hint, and nothing runs.

use std::process::Command;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/topology/tests/fixtures/several_mistakes.toml"
);

#[test]
fn validate_reports_every_mistake_with_its_location_and_a_hint() {
    let output = Command::new(VIGIL)
        .arg("validate")
        .arg(FIXTURE)
        .env_remove("VIGIL_TEST_UNSET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    for (line, needle) in [
        (4, "shards"),
        (7, "VIGIL_TEST_UNSET"),
        (10, "5 min"),
        (15, "formt"),
        (34, "PARCEL_SHIPED"),
        (38, "shiped"),
    ] {
        let location = format!("several_mistakes.toml:{line}:");
        assert!(
            stderr.contains(&location),
            "no error at line {line} ({needle}) in:\n{stderr}"
        );
        assert!(
            stderr.contains(needle),
            "`{needle}` not mentioned in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("did you mean `PARCEL_SHIPPED`?"),
        "{stderr}"
    );
    assert!(stderr.contains("6 errors"), "{stderr}");

    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/order-fulfilment/topology.toml"
    );
    let ok = Command::new(VIGIL)
        .arg("validate")
        .arg(example)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn run_refuses_an_invalid_topology_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(VIGIL)
        .arg("run")
        .arg(FIXTURE)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("6 errors"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no state or output created"
    );
}

#[test]
fn validate_accepts_the_kafka_example() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/order-fulfilment/kafka.toml"
    );
    let output = Command::new(VIGIL)
        .arg("validate")
        .arg(example)
        .env_remove("KAFKA_BROKERS")
        .env_remove("POD_NAME")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("kafka.toml: ok (1 sources"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
