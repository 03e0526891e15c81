//! Decoding input lines: `Decoder::decode` (parse, type, key, time, declared fields, id) on real
//! lines of the synthetic shop, against the ceiling of parsing the same lines into a
//! `serde_json::Value` and doing nothing else.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil_benches::{decoder, example_spec, shop_lines, type_field, valid_lines_of};

/// Lines per iteration of each benchmark.
const BATCH: usize = 256;

fn bench_decode(c: &mut Criterion) {
    let spec = example_spec();
    let decoder = decoder(&spec);
    let field = type_field(&spec).to_owned();
    let lines = shop_lines(2_000);
    let inputs = [
        (
            "ORDER_CREATED",
            valid_lines_of(&spec, &lines, "ORDER_CREATED", BATCH),
        ),
        (
            "PARCEL_SHIPPED",
            valid_lines_of(&spec, &lines, "PARCEL_SHIPPED", BATCH),
        ),
        // The stream as it arrives: every type, duplicates and malformed lines included.
        ("mixed", lines[..BATCH].to_vec()),
    ];

    let mut group = c.benchmark_group("decode");
    for (name, batch) in &inputs {
        assert_eq!(batch.len(), BATCH, "not enough {name} lines");
        group.throughput(Throughput::Elements(batch.len() as u64));
        group.bench_with_input(BenchmarkId::new("vigil", name), batch, |b, batch| {
            b.iter(|| {
                for (seq, line) in batch.iter().enumerate() {
                    let _ = black_box(decoder.decode(black_box(line), &field, seq as u64));
                }
            })
        });
        group.bench_with_input(
            BenchmarkId::new("value_ceiling", name),
            batch,
            |b, batch| {
                b.iter(|| {
                    for line in batch {
                        let _ =
                            black_box(serde_json::from_str::<serde_json::Value>(black_box(line)));
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_decode
}
criterion_main!(benches);
