//! The timer wheel at 1 000 000 timers: insert, cancel, expire.
//!
//! Deadlines are spread pseudo-randomly (fixed seed) over the next 10 s at
//! nanosecond resolution, as request timeouts, server delays and pacing
//! deadlines are. Throughput is per timer operation.
//!
//! - `insert_1M`: an empty wheel takes 1 000 000 timers.
//! - `cancel_1M`: a wheel holding them cancels every one, in random order.
//! - `expire_1M`: a wheel holding them is polled through time the way the
//!   loops do it (wake at `next_wakeup`, poll, repeat) until all have fired.
//! - `insert_then_expire_1M`: both, timed together.

use conntest::event::timer::{TimerKey, TimerWheel};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::time::Duration;

const N: usize = 1_000_000;
const T0: u64 = 1_000_000_000_000;
const SPAN_NS: u64 = 10_000_000_000;

fn deadlines() -> Vec<u64> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..N)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            T0 + 1 + z % SPAN_NS
        })
        .collect()
}

fn filled(deadlines: &[u64]) -> (TimerWheel<u32>, Vec<TimerKey>) {
    let mut wheel = TimerWheel::new(T0);
    let keys = deadlines
        .iter()
        .enumerate()
        .map(|(i, &d)| wheel.insert(d, i as u32))
        .collect();
    (wheel, keys)
}

/// Polls the wheel forward as an event loop would; returns timers fired.
fn expire_all(wheel: &mut TimerWheel<u32>) -> usize {
    let mut fired = Vec::with_capacity(1024);
    let mut count = 0;
    let mut now = T0;
    while let Some(wake) = wheel.next_wakeup() {
        now = now.max(wake);
        fired.clear();
        wheel.poll(now, &mut fired);
        count += fired.len();
    }
    count
}

fn timer(c: &mut Criterion) {
    let deadlines = deadlines();
    // Cancel in an order unrelated to insertion: a fixed permutation.
    let order: Vec<usize> = {
        let mut v: Vec<usize> = (0..N).collect();
        let mut state: u64 = 12345;
        for i in (1..N).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.swap(i, (state >> 33) as usize % (i + 1));
        }
        v
    };

    let mut group = c.benchmark_group("timer");
    // Each iteration is 1M operations: a flat 10 samples bounds the run.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(N as u64));

    group.bench_function("insert_1M", |b| {
        b.iter_batched(
            || TimerWheel::<u32>::new(T0),
            |mut wheel| {
                for (i, &d) in deadlines.iter().enumerate() {
                    black_box(wheel.insert(d, i as u32));
                }
                assert_eq!(wheel.len(), N);
                wheel
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("cancel_1M", |b| {
        b.iter_batched(
            || filled(&deadlines),
            |(mut wheel, keys)| {
                for &i in &order {
                    black_box(wheel.cancel(keys[i]));
                }
                assert!(wheel.is_empty());
                (wheel, keys)
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("expire_1M", |b| {
        b.iter_batched(
            || filled(&deadlines).0,
            |mut wheel| {
                assert_eq!(expire_all(&mut wheel), N);
                wheel
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("insert_then_expire_1M", |b| {
        b.iter_batched(
            || TimerWheel::<u32>::new(T0),
            |mut wheel| {
                for (i, &d) in deadlines.iter().enumerate() {
                    wheel.insert(d, i as u32);
                }
                assert_eq!(expire_all(&mut wheel), N);
                wheel
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, timer);
criterion_main!(benches);
