//! Timing helpers: rates over a fixed wall time, per thread, and summaries.

use serde_json::{Value, json};
use std::sync::Barrier;
use std::time::Instant;

/// Runs `threads` copies of an operation at once (each thread its own
/// closure, made before the clock starts) for `secs` seconds and returns the
/// total rate in operations per second: the sum of each thread's own
/// operations divided by its own elapsed time up to the end of its last
/// operation, so no partial operation is counted or lost.
pub fn rate<F>(threads: usize, secs: f64, mut make: impl FnMut(usize) -> F) -> f64
where
    F: FnMut() + Send,
{
    let ops: Vec<F> = (0..threads).map(&mut make).collect();
    let barrier = Barrier::new(threads);
    std::thread::scope(|sc| {
        let handles: Vec<_> = ops
            .into_iter()
            .map(|mut op| {
                let b = &barrier;
                sc.spawn(move || {
                    b.wait();
                    let t = Instant::now();
                    let mut n = 0u64;
                    loop {
                        op();
                        n += 1;
                        let e = t.elapsed().as_secs_f64();
                        if e >= secs {
                            return n as f64 / e;
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark thread panicked"))
            .sum()
    })
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// `{"median", "min", "max", "runs"}` of several runs.
pub fn stats(v: &[f64]) -> Value {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    json!({ "median": round(median(v)), "min": round(min), "max": round(max), "runs": v.iter().map(|x| round(*x)).collect::<Vec<_>>() })
}

/// Four significant digits are plenty for numbers measured under emulation.
pub fn round(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let mag = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(3 - mag);
    (x * scale).round() / scale
}

/// The median of a stats object.
pub fn med(v: &Value) -> f64 {
    v["median"].as_f64().unwrap_or(f64::NAN)
}
