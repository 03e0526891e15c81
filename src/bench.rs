//! `vigil bench`: the end-to-end benchmark (issue 5).
//!
//! Generates a shop workload with the built-in generator, measures the parse-into-`Value`
//! ceiling on one thread, then runs every measured configuration of Vigil in a child process
//! of its own (`vigil bench --child TOPOLOGY`), so that each configuration's peak RSS
//! (`VmHWM`) is its own. Every figure it prints is a ratio or a rate measured in this one run;
//! see docs/performance.md.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vigil_actors::job::{self, RunOptions};
use vigil_actors::shop::{self, ShopConfig};

/// The example topology the full benchmark topology is built from.
const ORDER_FULFILMENT: &str = include_str!("../examples/order-fulfilment/topology.toml");

/// The velocity window (examples/order-velocity) and the two CEP patterns
/// (examples/order-patterns), on the same generated events, with their sinks.
const VELOCITY_AND_PATTERNS: &str = r#"
[processes.order_velocity]
template = "window"
name = "ORDER_VELOCITY"
events = ["ORDER_CREATED"]
group_by = ["country"]
size = "1h"
slide = "15m"
allowed_lateness = "10m"

[processes.order_velocity.aggregates]
orders = "count"
revenue = { sum = "amount" }
average_basket = { avg = "amount" }
largest_basket = { max = "amount" }
customers = { distinct_count = "customer_id" }

[processes.all_parcels_shipped]
template = "pattern"
name = "ALL_PARCELS_SHIPPED"
within = "24h"
timeout = "SHIPPING_TIMEOUT"

[[processes.all_parcels_shipped.steps]]
name = "created"
on = "ORDER_CREATED"

[[processes.all_parcels_shipped.steps]]
name = "shipped"
on = "PARCEL_SHIPPED"
times_from = "created.parcels"

[processes.unpaid]
template = "pattern"
name = "ORDER_UNPAID"
within = "30m"

[[processes.unpaid.steps]]
name = "created"
on = "ORDER_CREATED"

[[processes.unpaid.steps]]
name = "paid"
on = "PAYMENT_AUTHORIZED"
where = "event.amount >= created.amount"
occurs = "never"

[sinks.velocity]
kind = "file"
path = "${VIGIL_OUT:-out}/order_velocity.jsonl"
inputs = ["order_velocity"]
kinds = ["window"]

[sinks.patterns]
kind = "file"
path = "${VIGIL_OUT:-out}/patterns.jsonl"
inputs = ["all_parcels_shipped", "unpaid"]
kinds = ["pattern"]
"#;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Orders of the generated shop day (~7.5 lines per order: 150 000 give ~1.1 million).
    #[arg(long, default_value_t = 150_000)]
    orders: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Working directory (data, topologies, state and outputs of every configuration).
    #[arg(long, default_value = "bench")]
    dir: PathBuf,
    /// Runs of each configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Distinct keys of the small and the large key-scaling workload (the issue's 10 thousand
    /// and 10 million).
    #[arg(long, default_value_t = 10_000)]
    keys_small: u64,
    #[arg(long, default_value_t = 10_000_000)]
    keys_large: u64,
    /// Events of each key-scaling workload (at least `keys_large`). With the defaults the two
    /// workloads take 4.3 GB on disk.
    #[arg(long, default_value_t = 10_000_000)]
    key_events: u64,
    /// Open orders (ORDER_CREATED only, each its own key) of the scale run, which then
    /// restarts over them.
    #[arg(long, default_value_t = 1_000_000)]
    scale_orders: u64,
    /// Only these parts (comma separated): ceiling, full, checkpoint, keys, scale, latency.
    #[arg(long, default_value = "ceiling,full,checkpoint,keys,scale,latency")]
    parts: String,
    /// Keep the generated data of an earlier run with the same --orders and --seed.
    #[arg(long)]
    reuse: bool,
    /// ORDER_CREATED + PARCEL_SHIPPED pairs fed to stdin in the latency measurement. The
    /// default leaves more orders open than `max_resident` (300 000), so the run includes
    /// passivating them.
    #[arg(long, default_value_t = 500_000)]
    latency_pairs: u64,
    /// Internal: run one configuration and report on stdout (used by the parent).
    #[arg(long, hide = true)]
    child: Option<PathBuf>,
}

/// What a child run reports.
#[derive(Debug, Clone, Default)]
struct ChildReport {
    lines: u64,
    /// Seconds inside `job::run` (opening state, reading, processing, final checkpoint).
    secs: f64,
    /// Seconds from the child's `main` to the first line read.
    first_line_secs: f64,
    /// Peak resident set size, KiB (`VmHWM`).
    hwm_kib: u64,
    records: u64,
    /// Wall time of the whole child process as the parent saw it.
    wall: f64,
    /// CPU time and run-queue wait by thread role, seconds (see [`thread_role`]).
    threads: Vec<(String, f64, f64)>,
}

impl ChildReport {
    fn rate(&self) -> f64 {
        self.lines as f64 / self.secs.max(1e-9)
    }

    /// CPU time of the threads of `role` per input line, microseconds.
    fn cpu_per_line(&self, role: &str) -> Option<f64> {
        let (_, cpu, _) = self.threads.iter().find(|(r, _, _)| r == role)?;
        Some(cpu * 1e6 / self.lines.max(1) as f64)
    }

    /// CPU time of all threads per input line, microseconds.
    fn cpu_per_line_all(&self) -> Option<f64> {
        let cpu: f64 = self.threads.iter().map(|(_, cpu, _)| cpu).sum();
        (!self.threads.is_empty()).then(|| cpu * 1e6 / self.lines.max(1) as f64)
    }
}

/// The roles [`thread_role`] sorts a child run's threads into, in the order reported.
const THREAD_ROLES: [&str; 6] = ["shards", "reader", "source", "commits", "free", "other"];

/// What a thread of a child run does, by its name: the shard workers (`actix-rt…`), the
/// reader (the main thread: decoding and routing), the sources, the blocking pool (commits,
/// census), the thread that frees checkpointed batches, and anything else.
fn thread_role(name: &str, main: bool) -> &'static str {
    if main {
        "reader"
    } else if name.starts_with("actix-rt") {
        "shards"
    } else if name.starts_with("source-") {
        "source"
    } else if name.starts_with("tokio-rt") {
        "commits"
    } else if name == "vigil-free" {
        "free"
    } else {
        "other"
    }
}

/// Which build this is, in the bench's first line: `scripts/build-pgo` names its two builds
/// (`VIGIL_BUILD`); otherwise the cargo profile's kind.
const BUILD: &str = match option_env!("VIGIL_BUILD") {
    Some(build) => build,
    None if cfg!(debug_assertions) => "debug",
    None => "release",
};

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    if let Some(topology) = &args.child {
        return child(topology);
    }
    let started = Instant::now();
    let parts: Vec<&str> = args.parts.split(',').map(str::trim).collect();
    let want = |part: &str| parts.contains(&part);
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    let data = dir.join(format!("shop-{}-{}", args.orders, args.seed));
    println!(
        "== vigil bench: {} build, {} cores available, {} rep(s) per configuration, medians reported",
        BUILD,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.reps
    );
    let shop_needed = ["ceiling", "full", "checkpoint"].iter().any(|p| want(p));
    let lines = if !shop_needed {
        0
    } else if args.reuse && data.join("events-0000.jsonl").exists() {
        let n = count_lines(&event_files(&data)?)?;
        println!("workload: reusing {n} lines under {}", data.display());
        n
    } else {
        let _ = std::fs::remove_dir_all(&data);
        let config = ShopConfig {
            seed: args.seed,
            orders: args.orders,
            ..ShopConfig::default()
        };
        let t = Instant::now();
        let summary = shop::generate(&config, &data, &mut |_, _| {})
            .with_context(|| format!("cannot write to {}", data.display()))?;
        println!(
            "workload: {} orders, {} lines ({} events, {} duplicates, {} malformed) in {} file(s), generated in {:.1} s",
            args.orders,
            summary.lines,
            summary.events,
            summary.duplicates,
            summary.malformed,
            summary.files.len(),
            t.elapsed().as_secs_f64()
        );
        summary.lines
    };
    if shop_needed && lines < 1_000_000 {
        println!("note: fewer than 1 million lines; raise --orders for the issue's workload");
    }

    // The shop configurations run in rounds, one run of each (and of the ceiling) per round,
    // and every ratio is the median of the ratios within a round: the machine's load drifts
    // over minutes, and a ratio of runs far apart measures the drift too.
    let mut shop_configs = Vec::new();
    let config = |name: &'static str, topology: String| Config {
        name,
        topology,
        data: data.clone(),
    };
    if want("full") {
        shop_configs.push(config("full-w1", full_topology(1, CHECKPOINTS_1S)));
        shop_configs.push(config("full-wall", full_topology(0, CHECKPOINTS_1S)));
        shop_configs.push(config(
            "fulfilment-w1",
            topology_with(ORDER_FULFILMENT, 1, CHECKPOINTS_1S),
        ));
    }
    if want("checkpoint") {
        if !want("full") {
            shop_configs.push(config("full-w1", full_topology(1, CHECKPOINTS_1S)));
        }
        shop_configs.push(config("full-w1-nockpt", full_topology(1, CHECKPOINTS_OFF)));
    }
    let ceiling_files = if want("ceiling") {
        Some(event_files(&data)?)
    } else {
        None
    };
    if ceiling_files.is_some() || !shop_configs.is_empty() {
        println!(
            "\n== shop workload: {} round(s), each a run of the ceiling and of every configuration below, in turn; ratios are medians of the ratios within a round",
            args.reps
        );
    }
    let shop = run_rounds(&dir, &shop_configs, args.reps, ceiling_files.as_deref())?;
    if let Some(ceiling) = shop.ceiling() {
        println!(
            "\n== ceiling: read + serde_json::from_str::<Value> per line, one thread\n  {} events/s (runs: {})",
            fmt_rate(ceiling),
            shop.ceiling.iter().map(|r| fmt_rate(*r)).collect::<Vec<_>>().join(", ")
        );
    }
    let of_ceiling = |name: &str| shop.ratio_to_ceiling(name);
    let mut targets = Vec::new();
    if want("full") {
        println!("\n== full topology: order-fulfilment + velocity window + 2 patterns, file source and sinks, checkpoints every 1 s");
        report(
            "1 worker thread",
            &shop.median("full-w1"),
            of_ceiling("full-w1"),
        );
        report(
            "all cores (workers = 0)",
            &shop.median("full-wall"),
            of_ceiling("full-wall"),
        );
        if let Some(ratio) = of_ceiling("full-w1") {
            targets.push(Target {
                what: "full topology on 1 worker, share of the ceiling".into(),
                measured: format!("{:.1}%", 100.0 * ratio),
                target: ">= 50%",
                met: ratio >= 0.5,
            });
        }
        println!(
            "  all cores / 1 worker: {:.2}x",
            shop.ratio("full-wall", "full-w1")
        );
        report(
            "order-fulfilment alone, 1 worker",
            &shop.median("fulfilment-w1"),
            of_ceiling("fulfilment-w1"),
        );
    }

    if want("checkpoint") {
        println!("\n== checkpoint overhead: full topology, 1 worker, checkpoint_interval 1s vs 1h and no early checkpoints (only the final one)");
        let (on, off) = (shop.median("full-w1"), shop.median("full-w1-nockpt"));
        report("checkpoints every 1 s", &on, of_ceiling("full-w1"));
        report("checkpoints off", &off, of_ceiling("full-w1-nockpt"));
        let cost = 1.0 - shop.ratio("full-w1", "full-w1-nockpt");
        let target = Target {
            what: "throughput cost of checkpoints every 1 s".into(),
            measured: format!("{:.1}%", 100.0 * cost),
            target: "<= 15%",
            met: cost <= 0.15,
        };
        println!(
            "  throughput cost of 1 s checkpoints: {} (target {})",
            target.measured, target.target
        );
        targets.push(target);
        if let (Some(on_cpu), Some(off_cpu)) =
            (on.cpu_per_line("shards"), off.cpu_per_line("shards"))
        {
            println!(
                "  shard threads' CPU per line: {on_cpu:.2} µs with 1 s checkpoints, {off_cpu:.2} µs off (+{:.1}%)",
                100.0 * (on_cpu / off_cpu.max(1e-9) - 1.0)
            );
        }
    }

    let topology = topology_with(ORDER_FULFILMENT, 1, CHECKPOINTS_1S);
    if want("keys") {
        let events = args.key_events.max(args.keys_large);
        let small = key_workload(&dir, events, args.keys_small, args.reuse)?;
        let large = key_workload(&dir, events, args.keys_large, args.reuse)?;
        println!("\n== key scaling: {events} ORDER_CREATED events over N distinct order numbers, order-fulfilment, 1 worker; {} round(s) of one run each", args.reps);
        let configs = [
            Config {
                name: "keys-small",
                topology: topology.clone(),
                data: small,
            },
            Config {
                name: "keys-large",
                topology: topology.clone(),
                data: large,
            },
        ];
        let keys = run_rounds(&dir, &configs, args.reps, None)?;
        // Their state is not needed again, and with 10 million keys it is gigabytes.
        for config in &configs {
            let _ = std::fs::remove_dir_all(dir.join("runs").join(config.name));
        }
        let (s, l) = (keys.median("keys-small"), keys.median("keys-large"));
        report(&format!("{} keys", args.keys_small), &s, None);
        report(&format!("{} keys", args.keys_large), &l, None);
        let ratio = keys.ratio("keys-large", "keys-small");
        let target = Target {
            what: format!(
                "{} keys / {} keys throughput",
                args.keys_large, args.keys_small
            ),
            measured: format!("{ratio:.2}"),
            target: ">= 0.5",
            met: ratio >= 0.5,
        };
        println!(
            "  {}: {} (target {})",
            target.what, target.measured, target.target
        );
        targets.push(target);
        if let (Some(s_cpu), Some(l_cpu)) = (s.cpu_per_line_all(), l.cpu_per_line_all()) {
            println!(
                "  CPU per line, all threads: {s_cpu:.2} µs with {} keys, {l_cpu:.2} µs with {} keys ({:.2})",
                args.keys_small,
                args.keys_large,
                s_cpu / l_cpu.max(1e-9)
            );
        }
    }
    if want("scale") {
        let orders = args.scale_orders;
        let data = key_workload(&dir, orders, orders, args.reuse)?;
        println!("\n== scale: {orders} open orders (ORDER_CREATED only, none finished), then a restart over that state");
        let (first, restart) = scale_run(&dir, &topology, &data)?;
        report("first run", &first, None);
        println!(
            "  restart: {:.3} s process wall time, {:.3} s from main to first line read, peak RSS {} (1 new line processed)",
            restart.wall,
            restart.first_line_secs,
            fmt_kib(restart.hwm_kib)
        );
        targets.push(Target {
            what: format!("{orders} open orders, peak RSS"),
            measured: fmt_kib(first.hwm_kib),
            target: "<= 1 GiB",
            met: first.hwm_kib <= 1 << 20,
        });
        targets.push(Target {
            what: format!("restart over {orders} open orders, main to first line read"),
            measured: format!("{:.3} s", restart.first_line_secs),
            target: "<= 2 s",
            met: restart.first_line_secs <= 2.0,
        });
    }
    if want("latency") {
        println!("\n== latency: order-fulfilment, stdin source, stdout sink, 1 worker; ORDER_CREATED + PARCEL_SHIPPED pairs (1 parcel): each PARCEL_SHIPPED emits ALL_PARCELS_SHIPPED");
        let toml = dir.join("latency.toml");
        std::fs::write(&toml, latency_topology())?;
        let pairs = args.latency_pairs;
        let max = latency_run(&dir, &toml, pairs, None)?;
        println!(
            "  unthrottled: {} lines/s fed and processed",
            fmt_rate(max.rate)
        );
        let half = latency_run(&dir, &toml, pairs, Some(max.rate / 2.0))?;
        let p99 = percentile(&half.latencies_ms, 0.99);
        let target = Target {
            what: format!("p99 event-to-output latency at half the maximum rate, {pairs} pairs"),
            measured: format!("{p99:.2} ms"),
            target: "<= 10 ms",
            met: p99 <= 10.0,
        };
        println!(
            "  at half that ({} lines/s target, {} achieved): {} outputs; event-to-output latency p50 {:.2} ms, p99 {}, max {:.2} ms (target p99 {})",
            fmt_rate(max.rate / 2.0),
            fmt_rate(half.rate),
            half.latencies_ms.len(),
            percentile(&half.latencies_ms, 0.50),
            target.measured,
            percentile(&half.latencies_ms, 1.0),
            target.target,
        );
        targets.push(target);
    }
    print_targets(&targets);
    println!("\nbench done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// The full benchmark topology: order-fulfilment plus velocity and patterns.
fn full_topology(workers: usize, checkpoints: &str) -> String {
    topology_with(
        &format!("{ORDER_FULFILMENT}\n{VELOCITY_AND_PATTERNS}"),
        workers,
        checkpoints,
    )
}

/// `[state]` settings: checkpoints every second (with the default early checkpoints).
const CHECKPOINTS_1S: &str = "checkpoint_interval = \"1s\"";

/// `[state]` settings of the "checkpoints off" run: an interval longer than any benchmark,
/// and no early checkpoint to bound memory either.
const CHECKPOINTS_OFF: &str = "checkpoint_interval = \"1h\"\nmax_resident_overshoot = 0";

/// `base` with `[job] workers` set and `checkpoints` (`[state]` settings) in place of its
/// `checkpoint_interval`.
fn topology_with(base: &str, workers: usize, checkpoints: &str) -> String {
    let mut text = String::with_capacity(base.len() + 64);
    for line in base.lines() {
        if line.starts_with("checkpoint_interval") {
            continue;
        }
        text.push_str(line);
        text.push('\n');
        if line.trim() == "[job]" {
            let _ = writeln!(text, "workers = {workers}");
        }
        if line.trim() == "[state]" {
            let _ = writeln!(text, "{checkpoints}");
        }
    }
    text
}

fn event_files(data: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no events-*.jsonl under {}", data.display());
    }
    Ok(files)
}

fn count_lines(files: &[PathBuf]) -> Result<u64> {
    let mut n = 0;
    for file in files {
        n += BufReader::new(std::fs::File::open(file)?).lines().count() as u64;
    }
    Ok(n)
}

/// Lines per second of reading the files and parsing every line into a `serde_json::Value`
/// on this thread (malformed lines count: they are read and rejected, as Vigil does).
fn parse_ceiling(files: &[PathBuf]) -> Result<f64> {
    let started = Instant::now();
    let mut lines = 0u64;
    let mut objects = 0u64;
    let mut line = String::with_capacity(1024);
    for file in files {
        let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            lines += 1;
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(line.trim_end()) {
                objects += u64::from(value.is_object());
                std::hint::black_box(value);
            }
        }
    }
    std::hint::black_box(objects);
    Ok(lines as f64 / started.elapsed().as_secs_f64())
}

/// A configuration measured by [`run_rounds`]: a topology over a data directory.
struct Config {
    name: &'static str,
    topology: String,
    data: PathBuf,
}

/// The runs of [`run_rounds`]: of each configuration, and the ceiling's, in round order.
struct Rounds {
    runs: Vec<(&'static str, Vec<ChildReport>)>,
    ceiling: Vec<f64>,
}

impl Rounds {
    fn runs(&self, name: &str) -> &[ChildReport] {
        let (_, runs) = self
            .runs
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a measured configuration");
        runs
    }

    /// The median run by throughput; of an even number, the slower of the two middle ones.
    fn median(&self, name: &str) -> ChildReport {
        let mut runs = self.runs(name).to_vec();
        runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        runs[(runs.len() - 1) / 2].clone()
    }

    /// `name`'s throughput in each round.
    fn rates(&self, name: &str) -> impl Iterator<Item = f64> + '_ {
        self.runs(name).iter().map(ChildReport::rate)
    }

    /// The median over rounds of `a`'s throughput divided by `b`'s in the same round.
    fn ratio(&self, a: &str, b: &str) -> f64 {
        median_of_ratios(self.rates(a), self.rates(b))
    }

    /// The median ceiling, if it was measured.
    fn ceiling(&self) -> Option<f64> {
        (!self.ceiling.is_empty()).then(|| median(self.ceiling.clone()))
    }

    /// The median over rounds of `name`'s throughput divided by the round's ceiling.
    fn ratio_to_ceiling(&self, name: &str) -> Option<f64> {
        (!self.ceiling.is_empty())
            .then(|| median_of_ratios(self.rates(name), self.ceiling.iter().copied()))
    }
}

/// The median of `a[i] / b[i]`: ratios of runs in the same round.
fn median_of_ratios(a: impl Iterator<Item = f64>, b: impl Iterator<Item = f64>) -> f64 {
    median(a.zip(b).map(|(a, b)| a / b.max(1e-9)).collect())
}

/// Runs `reps` rounds: in each, the ceiling over `ceiling_files` (if given), then every
/// configuration once, each in a fresh state and output directory. Prints every
/// configuration's runs.
fn run_rounds(
    dir: &Path,
    configs: &[Config],
    reps: usize,
    ceiling_files: Option<&[PathBuf]>,
) -> Result<Rounds> {
    let mut rounds = Rounds {
        runs: configs.iter().map(|c| (c.name, Vec::new())).collect(),
        ceiling: Vec::new(),
    };
    let mut tomls = Vec::with_capacity(configs.len());
    for config in configs {
        let toml = dir.join(format!("{}.toml", config.name));
        std::fs::write(&toml, &config.topology)?;
        tomls.push(toml);
    }
    for _ in 0..reps.max(1) {
        if let Some(files) = ceiling_files {
            rounds.ceiling.push(parse_ceiling(files)?);
        }
        for ((config, toml), (_, runs)) in configs.iter().zip(&tomls).zip(&mut rounds.runs) {
            let work = dir.join("runs").join(config.name);
            let _ = std::fs::remove_dir_all(&work);
            runs.push(spawn_child(toml, &config.data, &work)?);
        }
    }
    for (name, runs) in &rounds.runs {
        let rates: Vec<String> = runs.iter().map(|r| fmt_rate(r.rate())).collect();
        println!("  [{name}] runs: {} lines/s", rates.join(", "));
    }
    Ok(rounds)
}

/// This `vigil` binary as a child process with its outputs and state under `work`, logging
/// what `RUST_LOG` asks for (warnings by default).
fn vigil_child(work: &Path) -> Result<Process> {
    let mut child = Process::new(std::env::current_exe()?);
    child
        .env("VIGIL_OUT", work.join("out"))
        .env("VIGIL_STATE", work.join("state"))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    Ok(child)
}

/// Runs `vigil bench --child TOML` with the data, output and state under `work`.
fn spawn_child(toml: &Path, data: &Path, work: &Path) -> Result<ChildReport> {
    std::fs::create_dir_all(work)?;
    let started = Instant::now();
    let output = vigil_child(work)?
        .arg("bench")
        .arg("--child")
        .arg(toml)
        .env("VIGIL_DATA", data)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "child run of {} failed: {}\n{stdout}",
            toml.display(),
            output.status
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("BENCH "))
        .with_context(|| format!("no report from the child run:\n{stdout}"))?;
    let mut report = ChildReport {
        wall,
        ..ChildReport::default()
    };
    for field in line["BENCH ".len()..].split_whitespace() {
        let Some((name, value)) = field.split_once('=') else {
            continue;
        };
        match name {
            "lines" => report.lines = value.parse()?,
            "secs" => report.secs = value.parse()?,
            "first_line_secs" => report.first_line_secs = value.parse()?,
            "hwm_kib" => report.hwm_kib = value.parse()?,
            "records" => report.records = value.parse()?,
            "threads" => {
                for role in value.split(',') {
                    let mut parts = role.split(':');
                    if let (Some(name), Some(cpu), Some(wait)) =
                        (parts.next(), parts.next(), parts.next())
                    {
                        report
                            .threads
                            .push((name.to_owned(), cpu.parse()?, wait.parse()?));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(report)
}

/// The child: compile the topology (with the environment the parent set), run it, report.
fn child(topology: &Path) -> Result<ExitCode> {
    let started = Instant::now();
    let spec = match vigil_topology::compile_file(topology) {
        Ok(spec) => spec,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            return Ok(ExitCode::from(2));
        }
    };
    let lines = Arc::new(AtomicU64::new(0));
    let first_line = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::Builder::new()
            .name("bench-sampler".into())
            .spawn(move || sample_threads(&done))?
    };
    let watcher = {
        let (lines, first_line, done) = (lines.clone(), first_line.clone(), done.clone());
        std::thread::Builder::new()
            .name("bench-watcher".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if lines.load(Ordering::Relaxed) > 0 {
                        first_line.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            })?
    };
    let options = RunOptions {
        lines_read: Some(lines),
        ..RunOptions::default()
    };
    let t = Instant::now();
    let summary = job::run(spec, options)?;
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let threads = sampler.join().unwrap_or_default();
    let records: u64 = summary.sinks.iter().map(|(_, n)| n).sum();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "BENCH lines={} secs={secs:.6} first_line_secs={:.6} hwm_kib={} records={records} threads={threads}",
        summary.lines_this_run,
        first_line.load(Ordering::Relaxed) as f64 / 1e6,
        vm_hwm_kib().unwrap_or(0)
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Samples every thread's CPU time and run-queue wait (`/proc/self/task/*/schedstat`) every
/// 20 ms until `done`, and sums them by [`thread_role`]: `role:cpu:wait,…` in seconds. A thread
/// that ends loses at most its last 20 ms; the bench's own threads are left out.
fn sample_threads(done: &std::sync::atomic::AtomicBool) -> String {
    let pid = std::process::id().to_string();
    let mut last: std::collections::HashMap<String, (&'static str, u64, u64)> =
        std::collections::HashMap::new();
    loop {
        let finished = done.load(Ordering::Relaxed);
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let tid = task.file_name().to_string_lossy().into_owned();
                let (Ok(name), Ok(stat)) = (
                    std::fs::read_to_string(task.path().join("comm")),
                    std::fs::read_to_string(task.path().join("schedstat")),
                ) else {
                    continue; // ended meanwhile
                };
                let name = name.trim_end();
                if name.starts_with("bench-") {
                    continue;
                }
                let mut fields = stat
                    .split_whitespace()
                    .map(|f| f.parse::<u64>().unwrap_or(0));
                let (cpu, wait) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
                let role = thread_role(name, tid == pid);
                last.insert(tid, (role, cpu, wait));
            }
        }
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut by_role = String::new();
    for role in THREAD_ROLES {
        let (cpu, wait) = last
            .values()
            .filter(|(r, _, _)| *r == role)
            .fold((0, 0), |(c, w), (_, cpu, wait)| (c + cpu, w + wait));
        if cpu > 0 {
            let sep = if by_role.is_empty() { "" } else { "," };
            let _ = write!(
                by_role,
                "{sep}{role}:{:.3}:{:.3}",
                cpu as f64 / 1e9,
                wait as f64 / 1e9
            );
        }
    }
    by_role
}

/// This process's peak resident set size (`VmHWM` in /proc/self/status), KiB.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The directory of the workload [`write_key_workload`] writes for `events` and `keys`,
/// written unless `reuse` finds it there.
fn key_workload(dir: &Path, events: u64, keys: u64, reuse: bool) -> Result<PathBuf> {
    let path = dir.join(format!("keys-{keys}-events-{events}"));
    if !(reuse && path.join("events-0000.jsonl").exists()) {
        let _ = std::fs::remove_dir_all(&path);
        write_key_workload(&path, events, keys).with_context(|| {
            format!(
                "cannot write {events} events to {} (about {} MB; fewer with --key-events, --keys-large or --scale-orders)",
                path.display(),
                events * 215 / 1_000_000
            )
        })?;
    }
    Ok(path)
}

/// `events` ORDER_CREATED lines over `keys` distinct order numbers (key `i % keys`), one
/// millisecond apart, each with its own event id: with fewer keys than events, later events of
/// a key are repeated starts (ignored by the process, but each is a lookup, a dedup check and
/// a handler call of a resident instance).
fn write_key_workload(dir: &Path, events: u64, keys: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::File::create(dir.join("events-0000.jsonl"))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let start = 1_793_577_600_000i64; // 2026-11-02T00:00:00Z
    for i in 0..events {
        let key = i % keys.max(1);
        writeln!(
            out,
            r#"{{"type":"ORDER_CREATED","event_id":"evt-{i:016x}","occurred_at":{},"order_number":"ORD-{key:010}","customer_id":"CUS-{:08}","country":"DE","amount":{}.95,"payment_method":"card","parcels":1}}"#,
            start + i as i64,
            key % 500_000,
            10 + key % 190
        )?;
    }
    out.flush()?;
    Ok(())
}

/// The scale run: a key workload of one event per key (every order open) from empty state,
/// then one more event in a new file and a second run over the same state (the restart).
fn scale_run(dir: &Path, topology: &str, data: &Path) -> Result<(ChildReport, ChildReport)> {
    let toml = dir.join("scale.toml");
    std::fs::write(&toml, topology)?;
    let work = dir.join("runs").join("scale");
    let _ = std::fs::remove_dir_all(&work);
    let extra = data.join("events-0001.jsonl");
    let _ = std::fs::remove_file(&extra);
    let first = spawn_child(&toml, data, &work)?;
    std::fs::write(
        &extra,
        r#"{"type":"ORDER_CREATED","event_id":"evt-restart","occurred_at":1793587600000,"order_number":"ORD-RESTART","customer_id":"CUS-1","country":"DE","amount":10.0,"payment_method":"card","parcels":1}
"#,
    )?;
    let restart = spawn_child(&toml, data, &work);
    let _ = std::fs::remove_file(&extra);
    Ok((first, restart?))
}

/// One of issue 5's targets as this run measured it, for the summary at the end.
struct Target {
    what: String,
    measured: String,
    target: &'static str,
    met: bool,
}

/// The summary of the targets this run measured, one line each.
fn print_targets(targets: &[Target]) {
    if targets.is_empty() {
        return;
    }
    println!("\n== targets measured in this run");
    for t in targets {
        let verdict = if t.met { "met" } else { "NOT MET" };
        println!(
            "  {}: {} (target {}): {verdict}",
            t.what, t.measured, t.target
        );
    }
    println!("  (the window target, a 48 h window sliding by 1 min against a 1 min tumbling one, is a micro-benchmark's: cargo bench -p vigil-benches --bench window)");
}

/// Prints a configuration's median run; `of_ceiling`: its throughput over the ceiling's.
fn report(label: &str, r: &ChildReport, of_ceiling: Option<f64>) {
    let ratio = of_ceiling
        .map(|ratio| format!(", {:.1}% of the ceiling", 100.0 * ratio))
        .unwrap_or_default();
    println!(
        "  {label}: {} lines/s ({} lines in {:.2} s{ratio}); peak RSS {}; {} records",
        fmt_rate(r.rate()),
        r.lines,
        r.secs,
        fmt_kib(r.hwm_kib),
        r.records
    );
    if !r.threads.is_empty() {
        let cpu: Vec<String> = r
            .threads
            .iter()
            .map(|(role, cpu, _)| format!("{role} {:.2}", cpu * 1e6 / r.lines.max(1) as f64))
            .collect();
        let wait: Vec<String> = r
            .threads
            .iter()
            .map(|(role, _, wait)| format!("{role} {wait:.2} s"))
            .collect();
        println!(
            "    CPU per line, µs: {}; waiting for a core: {}",
            cpu.join(", "),
            wait.join(", ")
        );
    }
}

/// The middle value; of an even number, the mean of the two middle ones (not the upper one,
/// which would favour a ratio measured twice).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    }
}

fn fmt_rate(r: f64) -> String {
    format!("{:.0}", r)
}

fn fmt_kib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

/// order-fulfilment reading stdin and writing its records to stdout (line buffered: a record
/// is visible to the reader of stdout as soon as the shard writes it).
fn latency_topology() -> String {
    let mut text = String::new();
    let mut skip = false;
    for line in topology_with(ORDER_FULFILMENT, 1, CHECKPOINTS_1S).lines() {
        if line.starts_with('[') {
            skip = line.starts_with("[sources.") || line.starts_with("[sinks.");
        }
        if !skip {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(
        r#"
[sources.feed]
kind = "stdin"

[sinks.stdout]
kind = "stdout"
inputs = ["order"]
kinds = ["event", "alert"]
"#,
    );
    text
}

/// The order of the pair that tells the latency run its child is up (not timed).
const WARM_UP_ORDER: &str = "ORD-WARM-UP";

struct LatencyRun {
    /// Input lines per second over the run (feeding and processing).
    rate: f64,
    latencies_ms: Vec<f64>,
}

/// Feeds `pairs` ORDER_CREATED + PARCEL_SHIPPED pairs (as fast as possible, or paced at
/// `rate` lines/s, written every millisecond) to a `vigil run` child's stdin and times each
/// ALL_PARCELS_SHIPPED record on its stdout from the moment just before its PARCEL_SHIPPED
/// line was flushed into the pipe. The feed and the clock start once the child is up: after
/// the output of a warm-up pair. (Fed while the child still started, the first tens of
/// milliseconds of lines waited for its start-up, about 1 % of them at half the maximum
/// rate: the p99 measured the start, which the scale run measures apart.)
fn latency_run(dir: &Path, toml: &Path, pairs: u64, rate: Option<f64>) -> Result<LatencyRun> {
    let work = dir.join("runs").join("latency");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut child = vigil_child(&work)?
        .arg("run")
        .arg("--quiet")
        .arg(toml)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..pairs).map(|_| AtomicU64::new(0)).collect());
    let up = Arc::new(AtomicBool::new(false));
    let stdout = child.stdout.take().context("child stdout")?;
    let collector = {
        let (sent, up) = (sent.clone(), up.clone());
        std::thread::spawn(move || -> Vec<f64> {
            let mut latencies = Vec::with_capacity(sent.len());
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let now = base.elapsed().as_nanos() as u64;
                if line.contains(WARM_UP_ORDER) {
                    up.store(true, Ordering::Release);
                    continue;
                }
                let Some(at) = line.find("\"key\":\"ORD-") else {
                    continue;
                };
                let digits: String = line[at + 11..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let Ok(i) = digits.parse::<usize>() else {
                    continue;
                };
                if let Some(t) = sent.get(i).map(|t| t.load(Ordering::Acquire)) {
                    if t > 0 && line.contains("ALL_PARCELS_SHIPPED") {
                        latencies.push(now.saturating_sub(t) as f64 / 1e6);
                    }
                }
            }
            latencies
        })
    };
    let mut stdin =
        std::io::BufWriter::with_capacity(1 << 16, child.stdin.take().context("stdin")?);
    let start = 1_793_577_600_000i64;
    writeln!(
        stdin,
        r#"{{"type":"ORDER_CREATED","event_id":"evt-warm-up-c","occurred_at":{},"order_number":"{WARM_UP_ORDER}","customer_id":"CUS-0","country":"DE","amount":1.0,"payment_method":"card","parcels":1}}"#,
        start - 2
    )?;
    writeln!(
        stdin,
        r#"{{"type":"PARCEL_SHIPPED","event_id":"evt-warm-up-s","occurred_at":{},"order_number":"{WARM_UP_ORDER}","parcel_id":"P-warm-up","carrier":"DHL"}}"#,
        start - 1
    )?;
    stdin.flush()?;
    let waiting = Instant::now();
    while !up.load(Ordering::Acquire) {
        if waiting.elapsed() > Duration::from_secs(60) || collector.is_finished() {
            let _ = child.kill();
            bail!("the latency child did not answer its warm-up pair");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let mut pending: Vec<usize> = Vec::new();
    let mut line = String::with_capacity(512);
    let mut written = 0u64;
    for i in 0..pairs {
        for shipped in [false, true] {
            line.clear();
            let t = start + 2 * i as i64 + i64::from(shipped);
            if shipped {
                let _ = writeln!(
                    line,
                    r#"{{"type":"PARCEL_SHIPPED","event_id":"evt-s{i}","occurred_at":{t},"order_number":"ORD-{i:010}","parcel_id":"P{i}-1","carrier":"DHL"}}"#
                );
                pending.push(i as usize);
            } else {
                let _ = writeln!(
                    line,
                    r#"{{"type":"ORDER_CREATED","event_id":"evt-c{i}","occurred_at":{t},"order_number":"ORD-{i:010}","customer_id":"CUS-{:08}","country":"DE","amount":19.95,"payment_method":"card","parcels":1}}"#,
                    i % 500_000
                );
            }
            stdin.write_all(line.as_bytes())?;
            written += 1;
        }
        let due = rate.map(|r| Duration::from_secs_f64(written as f64 / r));
        let flush = match due {
            Some(due) => {
                let ahead = due.saturating_sub(started.elapsed());
                if ahead >= Duration::from_millis(1) {
                    std::thread::sleep(ahead);
                    true
                } else {
                    pending.len() >= 64
                }
            }
            None => pending.len() >= 512,
        };
        if flush || i + 1 == pairs {
            // Stamped before the flush: an output can come back before `flush` returns.
            let now = base.elapsed().as_nanos() as u64;
            for p in pending.drain(..) {
                sent[p].store(now.max(1), Ordering::Release);
            }
            stdin.flush()?;
        }
    }
    stdin.flush()?;
    drop(stdin);
    let status = child.wait()?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = collector
        .join()
        .map_err(|_| anyhow::anyhow!("collector panicked"))?;
    if !status.success() {
        bail!("latency child run failed: {status}");
    }
    latencies.sort_by(f64::total_cmp);
    Ok(LatencyRun {
        rate: written as f64 / elapsed,
        latencies_ms: latencies,
    })
}

/// The `q` quantile of sorted values (0 when empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lines: u64, secs: f64) -> ChildReport {
        ChildReport {
            lines,
            secs,
            ..ChildReport::default()
        }
    }

    #[test]
    fn ratios_are_medians_of_the_ratios_within_a_round() {
        // `a` runs at half `b`'s rate in two rounds; in the third, the machine slows `a` down
        // more. The ratio of the medians (60 / 200 lines/s) would say 0.3.
        let rounds = Rounds {
            runs: vec![
                ("a", vec![run(100, 1.0), run(100, 4.0), run(60, 1.0)]),
                ("b", vec![run(100, 0.5), run(100, 2.0), run(200, 1.0)]),
            ],
            ceiling: vec![400.0, 100.0, 300.0],
        };
        assert_eq!(rounds.ratio("a", "b"), 0.5);
        assert_eq!(rounds.median("a").rate(), 60.0);
        // 0.25, 0.25 and 0.2 of the round's ceiling; the medians would say 60 / 300.
        assert_eq!(rounds.ratio_to_ceiling("a"), Some(0.25));
        assert_eq!(rounds.ceiling(), Some(300.0));
        let without = Rounds {
            ceiling: Vec::new(),
            ..rounds
        };
        assert_eq!(without.ratio_to_ceiling("a"), None);
    }

    /// Of two rounds, the ratio is the mean of both (not the better one), and the median run
    /// the slower.
    #[test]
    fn two_rounds_give_the_mean_ratio_and_the_slower_run() {
        let rounds = Rounds {
            runs: vec![
                ("a", vec![run(40, 1.0), run(30, 1.0)]),
                ("b", vec![run(100, 1.0), run(100, 1.0)]),
            ],
            ceiling: vec![100.0, 100.0],
        };
        assert_eq!(rounds.ratio("a", "b"), 0.35);
        assert_eq!(rounds.median("a").rate(), 30.0);
        assert_eq!(rounds.ceiling(), Some(100.0));
    }
}
