//! A mergeable latency sketch (DDSketch's logarithmic buckets): quantiles within 1 % of the true
//! value, in memory that follows the spread of the values, not their number. The monitor keeps one
//! per window and model, writes it with the window's document in `api_metrics`, and the statistics
//! merge the stored ones: percentiles over a day cost the day's windows, not its requests.
//!
//! Stored as text, `"v1:<first key>:<counts>"`, the counts of consecutive buckets from the first
//! as base64 (URL alphabet) of LEB128 varints: a window of requests between 0.2 s and 20 s is about
//! 300 bytes. A value v > 0 falls in bucket ⌈log_γ v⌉ with γ = (1 + α)/(1 − α), α = 0.01; the
//! bucket's representative 2γ^k/(γ + 1) is within α of every value in it. Values under 1 ms count
//! as 1 ms (the collector's timings are no finer).
//!
//! A leaf: imports nothing of the crate.

use base64::Engine;

const ALPHA: f64 = 0.01;
const MIN_SECONDS: f64 = 1e-3;
/// Buckets at most (beyond: the highest), 1 ms to about 11 days.
const MAX_KEYS: usize = 1200;

/// Counts per logarithmic bucket, from `first` on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sketch {
    first: i32,
    counts: Vec<u64>,
    total: u64,
}

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

fn key_of(seconds: f64) -> i32 {
    let v = if seconds.is_finite() {
        seconds.max(MIN_SECONDS)
    } else {
        MIN_SECONDS
    };
    (v.ln() / gamma().ln()).ceil() as i32
}

fn lowest_key() -> i32 {
    key_of(MIN_SECONDS)
}

impl Sketch {
    pub fn new() -> Sketch {
        Sketch::default()
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn add(&mut self, seconds: f64) {
        self.add_key(key_of(seconds), 1);
    }

    fn add_key(&mut self, key: i32, n: u64) {
        if n == 0 {
            return;
        }
        let key = key.clamp(lowest_key(), lowest_key() + MAX_KEYS as i32 - 1);
        if self.counts.is_empty() {
            self.first = key;
        }
        if key < self.first {
            let grow = (self.first - key) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.first = key;
        }
        let at = (key - self.first) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += n;
        self.total += n;
    }

    pub fn merge(&mut self, other: &Sketch) {
        for (i, n) in other.counts.iter().enumerate() {
            self.add_key(other.first + i as i32, *n);
        }
    }

    /// The nearest-rank `p`-quantile (0 < p ≤ 1), within 1 % of the exact one; None when empty.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let g = gamma();
                return Some(2.0 * g.powi(self.first + i as i32) / (g + 1.0));
            }
        }
        None
    }

    /// The stored text form.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(self.counts.len() + 8);
        for &n in &self.counts {
            let mut n = n;
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    bytes.push(b);
                    break;
                }
                bytes.push(b | 0x80);
            }
        }
        format!(
            "v1:{}:{}",
            self.first,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Reads [`Sketch::encode`]'s form; None for anything else.
    pub fn decode(text: &str) -> Option<Sketch> {
        let mut parts = text.splitn(3, ':');
        if parts.next()? != "v1" {
            return None;
        }
        let first: i32 = parts.next()?.parse().ok()?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts.next()?)
            .ok()?;
        let mut s = Sketch::new();
        let (mut n, mut shift, mut key) = (0u64, 0u32, first);
        for b in bytes {
            if shift > 63 {
                return None;
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                s.add_key(key, n);
                key = key.checked_add(1)?;
                n = 0;
                shift = 0;
            } else {
                shift += 7;
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent_of_the_nearest_rank_and_survive_encoding_and_merging() {
        let values: Vec<f64> = (1..=10_000).map(|i| 0.05 + (i as f64).powf(1.3) / 1000.0).collect();
        let (mut a, mut b) = (Sketch::new(), Sketch::new());
        for (i, v) in values.iter().enumerate() {
            if i % 3 == 0 {
                a.add(*v)
            } else {
                b.add(*v)
            }
        }
        let a = Sketch::decode(&a.encode()).unwrap();
        let mut all = Sketch::decode(&b.encode()).unwrap();
        all.merge(&a);
        assert_eq!(all.count(), 10_000);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for p in [0.5, 0.95, 0.99, 1.0] {
            let exact = sorted[((p * sorted.len() as f64).ceil() as usize).max(1) - 1];
            let got = all.quantile(p).unwrap();
            assert!((got - exact).abs() <= exact * ALPHA * 1.0001, "p{p}: {got} vs {exact}");
        }
        assert_eq!(Sketch::new().quantile(0.5), None);
        assert!(Sketch::decode("v2:0:AA").is_none());
        assert!(all.encode().len() < 1200, "{}", all.encode().len());
    }
}
