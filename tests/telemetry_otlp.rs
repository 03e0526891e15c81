//! Traces: with the standard `OTEL_EXPORTER_OTLP_ENDPOINT` set, `vigil run` exports its
//! per-event and per-instance spans over OTLP/HTTP (protobuf) to that endpoint, with service
//! name `vigil`; without it (or with it empty), nothing is sent and the run is the same.
//!
//! The collector is a few lines of HTTP/1.1 on a local port that records every request and
//! answers `200 OK` with an empty `ExportTraceServiceResponse`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_matches_ground_truth, Workdir, EXAMPLE};

/// One request the collector received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// A minimal OTLP/HTTP collector on 127.0.0.1: records every request, answers 200.
struct Collector {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        // Detached: it lives as long as the test process.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let recorded = recorded.clone();
                std::thread::spawn(move || serve(stream, &recorded));
            }
        });
        Collector { port, requests }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves one connection: requests one after another (the exporter keeps connections alive).
fn serve(stream: TcpStream, recorded: &Mutex<Vec<Request>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().expect("clone the connection");
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        recorded.lock().unwrap().push(request);
        let response =
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if writer
            .write_all(response.as_bytes())
            .and_then(|_| writer.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Reads one request: the head, then a `Content-Length` or chunked body. `None` at the end.
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut content_length = 0usize;
    let mut chunked = false;
    let mut content_type = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.parse().ok()?,
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-type" => content_type = Some(value.to_owned()),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2]; // the chunk and its CRLF
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(content_length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some(Request {
        method,
        path,
        content_type,
        body,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The protobuf bytes of `Span.name` (field 5, length-delimited) equal to `name`.
fn span_name(name: &str) -> Vec<u8> {
    let mut bytes = vec![0x2a, name.len() as u8];
    bytes.extend_from_slice(name.as_bytes());
    bytes
}

/// The protobuf bytes of the resource attribute `service.name = "vigil"`: a `KeyValue` with
/// key (field 1) and an `AnyValue` (field 2) holding `string_value` (field 1).
const SERVICE_NAME_VIGIL: &[u8] = b"\x0a\x0cservice.name\x12\x07\x0a\x05vigil";

/// A work directory with 50 orders of generated traffic and the example topology.
fn workdir() -> Workdir {
    let work = Workdir::new();
    work.generate(3, 50);
    std::fs::write(work.path().join("topology.toml"), EXAMPLE).unwrap();
    work
}

/// Runs `vigil run topology.toml --quiet` in `work` with `extra` variables, no inherited
/// `OTEL_*` or `RUST_LOG`; fails the test if it does not end within two minutes.
fn run_vigil(work: &Workdir, extra: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command
        .arg("run")
        .arg(work.path().join("topology.toml"))
        .arg("--quiet")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.envs(work.env());
    command.envs(extra.iter().copied());
    let mut child = command.spawn().expect("start vigil");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vigil run did not end within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The run succeeded and emitted exactly the generator's ground truth.
fn assert_ran(output: &Output, work: &Workdir) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vigil run failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("job `order-fulfilment` finished"),
        "{stdout}\n{stderr}"
    );
    assert_matches_ground_truth(work);
}

/// The outputs of a run, with the work directory's path (in dead-letter records) masked.
fn outputs(work: &Workdir) -> Vec<String> {
    let path = work.path().display().to_string();
    work.output_lines()
        .iter()
        .map(|l| l.replace(&path, "WORK"))
        .collect()
}

/// The requests that are OTLP trace exports.
fn trace_exports(requests: &[Request]) -> Vec<Request> {
    requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/traces")
        .cloned()
        .collect()
}

/// Waits up to `within` for `ready` to hold over the collector's requests.
fn wait_for(
    collector: &Collector,
    within: Duration,
    ready: impl Fn(&[Request]) -> bool,
) -> Vec<Request> {
    let deadline = Instant::now() + within;
    loop {
        let requests = collector.requests();
        if ready(&requests) || Instant::now() > deadline {
            return requests;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the collector got, for failure messages.
fn summary(requests: &[Request]) -> Vec<(String, String, usize)> {
    requests
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.body.len()))
        .collect()
}

#[test]
fn spans_per_event_and_per_instance_are_exported_over_otlp_http() {
    let collector = Collector::start();
    let work = workdir();
    let endpoint = collector.endpoint();
    let output = run_vigil(
        &work,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    assert_ran(&output, &work);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("OTLP export disabled"), "{stderr}");

    // The exporter flushes on shutdown, before the process exits; the wait only guards
    // against a slow collector thread.
    let requests = wait_for(&collector, Duration::from_secs(5), |r| {
        !trace_exports(r).is_empty()
    });
    let seen = summary(&requests);
    let traces = trace_exports(&requests);
    assert!(
        !traces.is_empty(),
        "no POST /v1/traces reached the collector; requests: {seen:?}\nstderr:\n{stderr}"
    );
    for request in &traces {
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/x-protobuf"),
            "{seen:?}"
        );
    }
    let exported = |needle: &[u8]| traces.iter().any(|r| contains(&r.body, needle));
    assert!(
        exported(&span_name("event")),
        "no `event` span exported; requests: {seen:?}"
    );
    assert!(
        exported(&span_name("instance")),
        "no `instance` span exported; requests: {seen:?}"
    );
    assert!(
        traces.iter().all(|r| contains(&r.body, SERVICE_NAME_VIGIL)),
        "every export carries the resource `service.name = vigil`; requests: {seen:?}"
    );
}

#[test]
fn spans_still_queued_at_exit_are_flushed() {
    // A schedule delay far longer than the run: only the flush at shutdown (the `Telemetry`
    // guard's drop) can deliver the spans.
    let collector = Collector::start();
    let work = workdir();
    let endpoint = collector.endpoint();
    let output = run_vigil(
        &work,
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &format!("{endpoint}/v1/traces"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    assert_ran(&output, &work);
    let requests = wait_for(&collector, Duration::from_secs(5), |r| {
        !trace_exports(r).is_empty()
    });
    let traces = trace_exports(&requests);
    assert!(
        traces
            .iter()
            .any(|r| contains(&r.body, &span_name("event"))),
        "spans were not flushed at exit; requests: {:?}\nstderr:\n{}",
        summary(&requests),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn without_an_otlp_endpoint_nothing_is_exported_and_the_run_is_the_same() {
    let collector = Collector::start();
    let endpoint = collector.endpoint();

    // Not set at all (only the batch setting, which alone must not turn export on).
    let work = workdir();
    let output = run_vigil(&work, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    assert_ran(&output, &work);

    // Set but empty counts as not set.
    let empty = workdir();
    let output = run_vigil(
        &empty,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    assert_ran(&output, &empty);
    assert_eq!(outputs(&empty), outputs(&work), "same input, same outputs");

    // The collector was listening all along, and nothing came.
    std::thread::sleep(Duration::from_millis(300));
    let requests = collector.requests();
    assert!(
        requests.is_empty(),
        "requests reached {endpoint} without an OTLP endpoint: {:?}",
        summary(&requests)
    );
}
