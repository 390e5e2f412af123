//! Latency samples, percentiles (sorted samples, nearest rank) and result printing.

use std::time::Duration;

use serde_json::{Value, json};

/// Latency samples in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<u64>);

impl Samples {
    /// An empty sample set with room for `n` samples.
    pub fn with_capacity(n: usize) -> Samples {
        Samples(Vec::with_capacity(n))
    }

    /// Record one latency.
    pub fn push(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Append every sample of `other`.
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// Sort the samples and summarise them.
    pub fn summary(&mut self) -> Summary {
        self.0.sort_unstable();
        let n = self.0.len();
        let pick = |p: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least p% of the samples at or below it.
            let rank = ((p / 100.0) * n as f64).ceil() as usize;
            let idx = rank.clamp(1, n) - 1;
            self.0[idx] as f64 / 1e6
        };
        let mean = if n == 0 {
            0.0
        } else {
            self.0.iter().map(|&v| v as f64).sum::<f64>() / n as f64 / 1e6
        };
        Summary {
            count: n,
            min_ms: pick(0.0),
            p50_ms: pick(50.0),
            p95_ms: pick(95.0),
            p99_ms: pick(99.0),
            max_ms: if n == 0 {
                0.0
            } else {
                self.0[n - 1] as f64 / 1e6
            },
            mean_ms: mean,
        }
    }
}

/// Percentiles of a sample set, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    /// As a JSON object (milliseconds rounded to µs).
    pub fn json(&self) -> Value {
        json!({
            "count": self.count,
            "min_ms": round3(self.min_ms),
            "p50_ms": round3(self.p50_ms),
            "p95_ms": round3(self.p95_ms),
            "p99_ms": round3(self.p99_ms),
            "max_ms": round3(self.max_ms),
            "mean_ms": round3(self.mean_ms),
        })
    }

    /// `p50 1.234 ms, p95 …, p99 …, max …`.
    pub fn human(&self) -> String {
        format!(
            "p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms (n={})",
            self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// Round to 3 decimals (µs resolution for milliseconds).
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Round to 1 decimal.
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Median of a few durations, in milliseconds.
pub fn median_ms(v: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    match ms.len() {
        0 => 0.0,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}

/// One target check: `value` against `target` (`<=` or `>=`).
pub fn check(name: &str, value: f64, op: &str, target: f64) -> Value {
    let pass = match op {
        ">=" => value >= target,
        _ => value <= target,
    };
    json!({"what": name, "value": round3(value), "target": format!("{op} {target}"), "pass": pass})
}

/// Print the human summary lines, the PASS/FAIL lines of `checks` and then the one-line JSON
/// result (`{"bench": name, ..., "checks": [...], "pass": bool}`) as the last line of stdout.
pub fn report(name: &str, mut result: Value, human: &[String], checks: Vec<Value>) {
    let load = loadavg();
    println!("== {name}");
    for line in human {
        println!("   {line}");
    }
    println!("   machine load average (1/5/15 min) at the end: {load}");
    let all = checks.iter().all(|c| c["pass"].as_bool().unwrap_or(false));
    for c in &checks {
        let ok = c["pass"].as_bool().unwrap_or(false);
        println!(
            "   [{}] {}: {} (target {})",
            if ok { "PASS" } else { "FAIL" },
            c["what"].as_str().unwrap_or(""),
            c["value"],
            c["target"].as_str().unwrap_or("")
        );
    }
    if let Value::Object(m) = &mut result {
        m.insert("bench".into(), json!(name));
        m.insert("loadavg".into(), json!(load));
        m.insert("checks".into(), Value::Array(checks));
        m.insert("pass".into(), json!(all));
    }
    println!("{result}");
}

/// `/proc/loadavg`'s first three fields (other processes on the machine share its cores).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for ms in 1..=100u64 {
            s.push(Duration::from_millis(ms));
        }
        let sum = s.summary();
        assert_eq!(sum.count, 100);
        assert_eq!(sum.p50_ms, 50.0);
        assert_eq!(sum.p95_ms, 95.0);
        assert_eq!(sum.p99_ms, 99.0);
        assert_eq!(sum.max_ms, 100.0);
        assert_eq!(sum.min_ms, 1.0);
        assert!((sum.mean_ms - 50.5).abs() < 1e-9);
    }

    #[test]
    fn single_and_empty() {
        let mut s = Samples::default();
        assert_eq!(s.summary().p99_ms, 0.0);
        s.push(Duration::from_micros(1500));
        let sum = s.summary();
        assert_eq!(sum.p50_ms, 1.5);
        assert_eq!(sum.p99_ms, 1.5);
    }

    #[test]
    fn median_even_odd() {
        let d = |ms| Duration::from_millis(ms);
        assert_eq!(median_ms(&[d(3), d(1), d(2)]), 2.0);
        assert_eq!(median_ms(&[d(4), d(1), d(2), d(3)]), 2.5);
    }

    #[test]
    fn checks_compare_both_ways() {
        assert_eq!(check("x", 10.0, "<=", 10.0)["pass"], true);
        assert_eq!(check("x", 10.1, "<=", 10.0)["pass"], false);
        assert_eq!(check("x", 2000.0, ">=", 2000.0)["pass"], true);
        assert_eq!(check("x", 1999.0, ">=", 2000.0)["pass"], false);
    }
}
