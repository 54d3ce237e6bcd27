//! A small seeded generator and the distributions the workload draws from.
//!
//! The simulator owns its generator (SplitMix64) rather than borrowing one
//! from a crate whose streams may change between versions: a seed must give
//! the same workload, byte for byte, in every build.

/// SplitMix64: 64 bits of state, one multiply-xorshift per draw.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// An independent stream for item `index` of a seeded run (a function,
    /// an app): the same index always gets the same stream.
    pub fn stream(seed: u64, index: u64) -> Self {
        let mut r = Rng(seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe to take the logarithm of.
    fn open_uniform(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// Standard normal (Box-Muller; one of the pair is dropped).
    pub fn normal(&mut self) -> f64 {
        let r = (-2.0 * self.open_uniform().ln()).sqrt();
        r * (std::f64::consts::TAU * self.uniform()).cos()
    }

    /// Log-normal with the given median and sigma of its logarithm.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Poisson with mean `lambda`: inversion below 30, a rounded normal
    /// above (where the two differ by less than a count in a thousand).
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda >= 30.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let mut k = 0u64;
        let mut p = (-lambda).exp();
        let mut cdf = p;
        let u = self.uniform();
        while u > cdf && k < 1000 {
            k += 1;
            p *= lambda / k as f64;
            cdf += p;
        }
        k
    }

    /// Poisson with mean `lambda` given that it is at least one.
    pub fn poisson_at_least_one(&mut self, lambda: f64) -> u64 {
        let p0 = (-lambda).exp();
        let mut k = 1u64;
        let mut p = p0 * lambda;
        let mut cdf = p;
        let u = self.uniform() * (1.0 - p0);
        while u > cdf && k < 1000 {
            k += 1;
            p *= lambda / k as f64;
            cdf += p;
        }
        k
    }

    /// Failures before the first success, each trial succeeding with `p`.
    pub fn geometric(&mut self, p: f64) -> u64 {
        if p >= 1.0 {
            return 0;
        }
        let g = self.open_uniform().ln() / (1.0 - p).ln();
        if g.is_finite() {
            g.floor().min(u64::MAX as f64 / 2.0) as u64
        } else {
            u64::MAX / 2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::stream(7, 1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::stream(7, 1).next_u64(), Rng::stream(7, 2).next_u64());
        assert_ne!(Rng::stream(7, 1).next_u64(), Rng::stream(8, 1).next_u64());
    }

    #[test]
    fn distributions_have_their_means() {
        let mut r = Rng::new(42);
        let n = 200_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / n as f64;
        let u = mean(&mut || r.uniform());
        assert!((u - 0.5).abs() < 0.01, "{u}");
        for lambda in [0.2, 4.0, 80.0] {
            let m = mean(&mut || r.poisson(lambda) as f64);
            assert!((m - lambda).abs() < 0.02 * lambda.max(1.0), "{lambda}: {m}");
        }
        // E[k | k >= 1] = lambda / (1 - e^-lambda).
        let m = mean(&mut || r.poisson_at_least_one(0.5) as f64);
        assert!((m - 0.5 / (1.0 - (-0.5f64).exp())).abs() < 0.02, "{m}");
        // Geometric failures: (1 - p) / p.
        let m = mean(&mut || r.geometric(0.25) as f64);
        assert!((m - 3.0).abs() < 0.1, "{m}");
        let mut logs: Vec<f64> = (0..n).map(|_| r.log_normal(2.0, 1.0)).collect();
        logs.sort_by(f64::total_cmp);
        let median = logs[n / 2];
        assert!((median - 2.0).abs() < 0.05, "{median}");
    }
}
