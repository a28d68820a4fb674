//! Mapping throughput: 10,000 mixed Feishu events from JSON text to ICS text.
//!
//! `cargo bench -p bridge-core --bench mapping`. The Python comparison is
//! `benches/python_icalendar.py` on the same events (see README).

use bridge_core::{RenderOptions, feishu_to_ics, input, sample};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const N: usize = 10_000;

fn bench(c: &mut Criterion) {
    let events = sample::events(N, 42, 1_735_689_600);
    let json = serde_json::to_string(&serde_json::json!({
        "code": 0, "msg": "success",
        "data": {"has_more": false, "items": events}
    }))
    .unwrap();
    let opts = RenderOptions {
        dtstamp: 1_735_689_600,
        ..RenderOptions::default()
    };
    let mut g = c.benchmark_group("mapping");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    g.bench_function("json_to_ics_10k", |b| {
        b.iter(|| {
            let parsed = input::parse_events(&json).unwrap();
            let out = feishu_to_ics(&parsed.events, &opts);
            assert!(out.vevents > N / 2);
            out.text.len()
        })
    });
    g.bench_function("map_and_render_10k_preparsed", |b| {
        b.iter(|| feishu_to_ics(&events, &opts).text.len())
    });
    // The two halves of `map_and_render`: mapping alone, rendering alone.
    g.bench_function("map_10k_preparsed", |b| {
        b.iter(|| {
            let mut warnings = Vec::new();
            events
                .iter()
                .filter_map(|e| bridge_core::map_event(e, &mut warnings).ok())
                .count()
        })
    });
    let items: Vec<bridge_core::Item> = {
        let mut warnings = Vec::new();
        events
            .iter()
            .filter_map(|e| bridge_core::map_event(e, &mut warnings).ok())
            .collect()
    };
    g.bench_function("render_10k_mapped", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            bridge_core::render_calendar_to(&items, &opts, &mut out).unwrap();
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
