//! `vigil`: run, validate and try out business process monitoring topologies.

mod bench;
mod telemetry;
mod verify;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vigil_actors::job::{self, RunOptions, RunSummary};
use vigil_actors::shop::{self, ShopConfig};
use vigil_actors::spec::{JobSpec, SourceKind};
use vigil_actors::time::format_rfc3339;

/// mimalloc: many small allocations made on the reader thread are freed on shard threads;
/// glibc's allocator spends much of a run consolidating arenas for that pattern.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long memory stays free before mimalloc returns it to the OS, unless
/// `MIMALLOC_PURGE_DELAY` says otherwise. At mimalloc's default (1 s, one checkpoint interval)
/// the memory of one interval's batches went back to the OS and was faulted in, zeroed, by the
/// next: 350 000 page faults and 9 s of kernel time in a 10 M-line run, against 62 000 and 4.6 s
/// with 5 s (docs/performance.md). Memory freed after a spike still goes back, 5 s later.
const PURGE_DELAY_MS: std::ffi::c_long = 5_000;

/// The allocator's settings, made first in `main`, before any other thread exists.
fn tune_allocator() {
    /// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (the crate has no constant for it).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: no other thread exists yet (the option is a plain global that mimalloc
        // reads when it purges).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
    // Transparent huge pages off for the process, unless `MIMALLOC_ALLOW_THP` says otherwise.
    // The first touch of a huge page zeroes 2 MiB at once on the thread that touches it, which
    // took milliseconds at a time on a shard's thread as its instances grew: latency p99 6.75
    // to 15.34 ms against 1.87 to 3.47 ms without, in alternating runs (docs/performance.md),
    // and about 100 MiB more peak memory.
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: this prctl takes no pointers; it sets a flag of the process, which the kernel
        // reads at each page fault.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// The demo's topology (order fulfilment, fraud, customer contact and order velocity on the
/// generated day), built in so `vigil demo` works from anywhere.
const SHOP_DAY: &str = include_str!("../examples/shop-day/topology.toml");

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Real-time business process monitoring and streaming ETL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a topology until its sources end (or forever for endless ones; Ctrl-C stops cleanly).
    Run {
        topology: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Check topologies and report every mistake at once.
    Validate {
        #[arg(required = true)]
        topologies: Vec<PathBuf>,
    },
    /// Write a synthetic day of an online fashion shop, and the ground truths of the
    /// order-fulfilment and shop-day examples.
    Generate {
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 50_000)]
        orders: u64,
        #[arg(long, default_value = "data")]
        out: PathBuf,
    },
    /// Compare the records of a run (`*.jsonl` under OUT) with a ground truth.
    Verify {
        #[arg(long)]
        expected: PathBuf,
        #[arg(long, default_value = "out")]
        out: PathBuf,
    },
    /// Generate a day of shop traffic, monitor it with the shop-day example (order fulfilment,
    /// fraud, customer contact, order velocity), show what was found and check it against the
    /// ground truth.
    Demo {
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 50_000)]
        orders: u64,
        /// Working directory for data, state and output (emptied first).
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
    },
    /// Produce newline-delimited JSON files (e.g. `vigil generate`'s) to a Kafka topic, one
    /// record per line, keyed by the first of KEY_FIELDS each line has.
    Produce {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
        /// Partitions of the topic if it has to be created.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "order_number,customer_id"
        )]
        key_fields: Vec<String>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print every record of a Kafka topic, to its current end, one per line.
    Consume {
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long)]
        topic: String,
    },
    /// Ask the running nodes of a Kafka job for a snapshot of every shard, and wait for them.
    Snapshot {
        topology: PathBuf,
        /// How long to wait for every shard's snapshot.
        #[arg(long, default_value = "60")]
        timeout_secs: u64,
    },
    /// End-to-end benchmark: ceiling, throughput, checkpoint cost, RSS, key scaling, restart
    /// (docs/performance.md).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let _telemetry = telemetry::init();
    let result = match cli.command {
        Command::Run { topology, quiet } => run(&topology, quiet),
        Command::Validate { topologies } => validate(&topologies),
        Command::Generate { seed, orders, out } => {
            generate(seed, orders, &out).map(|_| ExitCode::SUCCESS)
        }
        Command::Verify { expected, out } => verify_command(&expected, &out),
        Command::Demo { seed, orders, dir } => demo(seed, orders, &dir),
        Command::Bench(args) => bench::run(args),
        Command::Produce {
            brokers,
            topic,
            partitions,
            key_fields,
            files,
        } => produce(&brokers, &topic, partitions, &key_fields, &files),
        Command::Consume { brokers, topic } => {
            let kafka = vigil_kafka::tools::cluster(&brokers);
            let lines = vigil_kafka::tools::read_topic(&kafka, &topic, Duration::from_secs(1));
            lines.map_err(anyhow::Error::from).map(|lines| {
                for line in lines {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            })
        }
        Command::Snapshot {
            topology,
            timeout_secs,
        } => snapshot(&topology, Duration::from_secs(timeout_secs)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn compile(topology: &Path) -> Result<JobSpec, ExitCode> {
    vigil_topology::compile_file(topology).map_err(|diagnostics| {
        eprint!("{diagnostics}");
        ExitCode::from(2)
    })
}

fn run(topology: &Path, quiet: bool) -> Result<ExitCode> {
    let spec = match compile(topology) {
        Ok(spec) => spec,
        Err(code) => return Ok(code),
    };
    let summary = run_spec(spec, quiet)?;
    print_summary(&summary);
    Ok(ExitCode::SUCCESS)
}

fn run_spec(spec: JobSpec, quiet: bool) -> Result<RunSummary> {
    let stop = Arc::new(AtomicBool::new(false));
    let on_interrupt = stop.clone();
    // Ctrl-C: stop reading, let every shard checkpoint, print the summary.
    let _ = ctrlc::set_handler(move || on_interrupt.store(true, Ordering::Relaxed));
    let lines = Arc::new(AtomicU64::new(0));
    let progress = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let watcher = progress.clone().map(|bar| {
        let lines = lines.clone();
        std::thread::spawn(move || {
            while !bar.is_finished() {
                let n = lines.load(Ordering::Relaxed);
                let rate = n as f64 / bar.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!("{n} lines read, {rate:.0}/s"));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    });
    let options = RunOptions {
        stop: Some(stop),
        lines_read: Some(lines),
        ..RunOptions::default()
    };
    let result = if spec.kafka.is_some()
        && spec
            .sources
            .iter()
            .any(|s| matches!(s.kind, SourceKind::Kafka { .. }))
    {
        vigil_kafka::run(spec, options).map_err(anyhow::Error::from)
    } else {
        job::run(spec, options).map_err(anyhow::Error::from)
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if let Some(watcher) = watcher {
        let _ = watcher.join();
    }
    result
}

fn produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    key_fields: &[String],
    files: &[PathBuf],
) -> Result<ExitCode> {
    let kafka = vigil_kafka::tools::cluster(brokers);
    let keys: Vec<&str> = key_fields.iter().map(String::as_str).collect();
    let mut total = 0;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        total += vigil_kafka::tools::produce_lines(&kafka, topic, partitions, &keys, text.lines())?;
    }
    println!("produced {total} records to {topic}");
    Ok(ExitCode::SUCCESS)
}

fn snapshot(topology: &Path, timeout: Duration) -> Result<ExitCode> {
    let spec = match compile(topology) {
        Ok(spec) => spec,
        Err(code) => return Ok(code),
    };
    let Some(dir) = spec.kafka.as_ref().and_then(|k| k.snapshot_dir.clone()) else {
        bail!("{} has no [kafka] snapshot_dir", topology.display());
    };
    let shards = spec.shards.max(1);
    let missing = vigil_kafka::snapshot::request(&dir, &spec.name, shards, timeout)?;
    if missing.is_empty() {
        println!(
            "snapshots of all {shards} shards of `{}` are in {}",
            spec.name,
            dir.join(&spec.name).display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "no snapshot after {} s for shards {missing:?}: are their nodes running?",
            timeout.as_secs()
        );
        Ok(ExitCode::FAILURE)
    }
}

fn print_summary(s: &RunSummary) {
    let c = &s.counts;
    let secs = s.elapsed.as_secs_f64();
    println!(
        "job `{}` {}",
        s.job,
        if s.finished { "finished" } else { "stopped" }
    );
    match s.resumed_at {
        Some(seq) => println!(
            "  resumed at line {seq}; read {} lines in {secs:.2} s",
            s.lines_this_run
        ),
        None => println!(
            "  read {} lines in {secs:.2} s ({:.0} lines/s)",
            s.lines_this_run,
            s.lines_this_run as f64 / secs.max(1e-9)
        ),
    }
    println!(
        "  lines {} = processed {} + dead-lettered {} + duplicates ignored {}",
        c.read, c.processed, c.dead_lettered, c.duplicates
    );
    println!(
        "  instances: {} started, {} ended, {} open, {} tombstones, {} reactivated from redb; {} timers pending",
        c.instances_started, c.instances_ended, s.live_instances, s.tombstones, c.instances_loaded, s.pending_timers
    );
    if s.watermark != vigil_actors::time::MIN_TIME {
        println!("  watermark {}", format_rfc3339(s.watermark));
    }
    for (sink, written) in &s.sinks {
        println!("  sink {sink}: {written} records written");
    }
    if s.shard_restarts > 0 {
        println!("  shard restarts: {}", s.shard_restarts);
    }
}

fn validate(topologies: &[PathBuf]) -> Result<ExitCode> {
    let mut ok = true;
    for path in topologies {
        match vigil_topology::compile_file(path) {
            Ok(spec) => println!(
                "{}: ok ({} sources, {} event types, {} processes, {} sinks, {} shards)",
                path.display(),
                spec.sources.len(),
                spec.event_types.len(),
                spec.processes.len(),
                spec.sinks.len(),
                spec.shards
            ),
            Err(diagnostics) => {
                eprint!("{diagnostics}");
                ok = false;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn generate(seed: u64, orders: u64, out: &Path) -> Result<shop::GenerateSummary> {
    let config = ShopConfig {
        seed,
        orders,
        ..ShopConfig::default()
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(orders);
        bar.set_style(
            ProgressStyle::with_template(
                "generating {bar:40} {pos}/{len} orders [{elapsed} < {eta}]",
            )
            .expect("valid template"),
        );
        bar
    });
    let mut progress = |done: u64, _total: u64| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    };
    let summary = shop::generate(&config, out, &mut progress)
        .with_context(|| format!("cannot write to {}", out.display()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    println!(
        "wrote {} lines ({} events, {} duplicates, {} malformed) in {} file(s) under {}",
        summary.lines,
        summary.events,
        summary.duplicates,
        summary.malformed,
        summary.files.len(),
        out.display()
    );
    println!(
        "ground truth: {} records in {} (examples/order-fulfilment)",
        summary.expected_records,
        out.join("expected.jsonl").display()
    );
    println!(
        "              {} records in {} (examples/shop-day)",
        summary.shop_day_records,
        out.join(shop::SHOP_DAY_FILE).display()
    );
    Ok(summary)
}

fn verify_command(expected: &Path, out: &Path) -> Result<ExitCode> {
    let files = verify::jsonl_files(out)?;
    if files.is_empty() {
        bail!("no *.jsonl files under {}", out.display());
    }
    let comparison = verify::compare(expected, &files)?;
    print_comparison(&comparison);
    Ok(if comparison.is_exact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_comparison(c: &verify::Comparison) {
    if c.is_exact() {
        println!(
            "exactly the ground truth: {} records, none missing, none extra, none duplicated",
            c.expected
        );
        return;
    }
    println!(
        "differs from the ground truth: expected {}, got {}; {} missing, {} extra, {} duplicated",
        c.expected,
        c.actual,
        c.missing.len(),
        c.extra.len(),
        c.duplicated.len()
    );
    for key in c.missing.iter().take(10) {
        println!("  missing    {}", verify::describe(key));
    }
    for key in c.extra.iter().take(10) {
        println!("  extra      {}", verify::describe(key));
    }
    for (key, n) in c.duplicated.iter().take(10) {
        println!("  duplicated {} ({n} times)", verify::describe(key));
    }
}

fn demo(seed: u64, orders: u64, dir: &Path) -> Result<ExitCode> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    let data = dir.join("data");
    let out = dir.join("out");
    println!("== 1. a day of an online fashion shop: {orders} orders (seed {seed})");
    generate(seed, orders, &data)?;

    println!(
        "\n== 2. monitoring it with examples/shop-day/topology.toml: order fulfilment, fraud, customer contact, order velocity"
    );
    let topology = dir.join("topology.toml");
    std::fs::write(&topology, SHOP_DAY)?;
    let env = |name: &str| match name {
        "VIGIL_DATA" => Some(data.display().to_string()),
        "VIGIL_OUT" => Some(out.display().to_string()),
        "VIGIL_STATE" => Some(dir.join("state").display().to_string()),
        other => std::env::var(other).ok(),
    };
    let spec = match vigil_topology::compile_str(SHOP_DAY, &topology.display().to_string(), &env) {
        Ok(spec) => spec,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            return Ok(ExitCode::from(2));
        }
    };
    let summary = run_spec(spec, false)?;
    print_summary(&summary);

    println!("\n== 3. what was found (and what the ground truth says)");
    let files = verify::jsonl_files(&out)?;
    let expected_file = data.join(shop::SHOP_DAY_FILE);
    let found = verify::count_by_name(&files)?;
    let expected = verify::count_by_name(std::slice::from_ref(&expected_file))?;
    let mut names: Vec<&(String, String)> = found.keys().chain(expected.keys()).collect();
    names.sort();
    names.dedup();
    println!("  {:>8}  {:>8}  {:<12} name", "found", "expected", "kind");
    for name in names {
        println!(
            "  {:>8}  {:>8}  {:<12} {}",
            found.get(name).copied().unwrap_or(0),
            expected.get(name).copied().unwrap_or(0),
            name.0,
            name.1
        );
    }
    println!("  for example:");
    let mut shown: BTreeMap<String, ()> = BTreeMap::new();
    for path in &files {
        for line in std::fs::read_to_string(path)?.lines() {
            let value: serde_json::Value = serde_json::from_str(line)?;
            let name = value["name"].as_str().unwrap_or_default();
            if shown.contains_key(name) {
                continue;
            }
            let key = value["key"].as_str().unwrap_or("?");
            let at = value["event_time"].as_str().unwrap_or("?");
            let text = match name {
                "SLA_BREACHED" => format!("order {key} had not shipped all parcels by {at}"),
                "FRAUD_SUSPECTED" => {
                    format!("customer {key}: failed payments, then another instrument at {at}")
                }
                "ADDRESS_SHARED" => {
                    format!("orders of several customers to \"{key}\" within the hour to {at}")
                }
                "CART_ABANDONED" => {
                    format!("customer {key} left items in the cart and had not ordered by {at}")
                }
                "CONTACT_CUSTOMER" => {
                    format!("order {key}: a parcel still not delivered at {at}")
                }
                "ORDER_VELOCITY" => format!(
                    "{key}: {} orders, {} EUR in the hour to {at}",
                    value["orders"],
                    value["revenue"]
                        .as_f64()
                        .map_or("?".into(), |r| format!("{r:.2}"))
                ),
                _ => continue,
            };
            println!(
                "  {:<6} {name}: {text}",
                value["kind"].as_str().unwrap_or("?")
            );
            shown.insert(name.to_owned(), ());
        }
    }
    println!("  records are in {}", out.display());

    println!(
        "\n== 4. checked against the generator's ground truth ({})",
        expected_file.display()
    );
    let comparison = verify::compare(&expected_file, &files)?;
    print_comparison(&comparison);
    Ok(if comparison.is_exact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
