//! A next-token distribution: probabilities from logits, the top candidates, KL divergence.

/// The next-token distribution of one model after a prompt (natural-log probabilities).
#[derive(Debug)]
pub struct Distribution {
    pub log_probs: Vec<f64>,
    pub logits: Vec<f32>,
}

impl Distribution {
    pub(super) fn from_logits(logits: Vec<f32>) -> Distribution {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        let log_z = max + sum.ln();
        let log_probs = logits.iter().map(|&l| l as f64 - log_z).collect();
        Distribution { log_probs, logits }
    }

    pub fn prob(&self, id: u32) -> f64 {
        self.log_probs.get(id as usize).map_or(0.0, |l| l.exp())
    }

    /// The `k` most likely ids, most likely first (ties: lower id first).
    pub fn top(&self, k: usize) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..self.log_probs.len() as u32).collect();
        let k = k.min(ids.len());
        if k == 0 {
            return Vec::new();
        }
        let by = |a: &u32, b: &u32| {
            self.log_probs[*b as usize]
                .total_cmp(&self.log_probs[*a as usize])
                .then(a.cmp(b))
        };
        ids.select_nth_unstable_by(k - 1, by);
        ids.truncate(k);
        ids.sort_by(by);
        ids
    }

    /// KL(self || other), in nats.
    pub fn kl(&self, other: &Distribution) -> f64 {
        self.log_probs
            .iter()
            .zip(&other.log_probs)
            .map(|(&p, &q)| {
                if p == f64::NEG_INFINITY {
                    0.0
                } else {
                    p.exp() * (p - q)
                }
            })
            .sum::<f64>()
            .max(0.0)
    }
}

/// `ln p/(1-p)`, finite at the ends.
pub(super) fn log_odds(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_top_k_and_kl() {
        let d = Distribution::from_logits(vec![1.0, 3.0, 2.0, 3.0]);
        assert_eq!(d.top(3), vec![1, 3, 2]);
        let total: f64 = (0..4).map(|i| d.prob(i)).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(d.kl(&d), 0.0);
        let e = Distribution::from_logits(vec![3.0, 1.0, 2.0, 3.0]);
        // Hand computation: sum p_i (ln p_i - ln q_i).
        let expect: f64 = (0..4)
            .map(|i| d.prob(i) * (d.prob(i).ln() - e.prob(i).ln()))
            .sum();
        assert!((d.kl(&e) - expect).abs() < 1e-12 && expect > 0.0);
        assert!((log_odds(0.5)).abs() < 1e-12);
        assert!(log_odds(1.0).is_finite());
    }
}
