//! k-means on projected points (2-D / 3-D), for colouring a scatter by cluster. Small and
//! deterministic: k-means++ seeding from a fixed seed, then Lloyd iterations. It runs in the
//! browser on the few coordinates per point the projection returns.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Lloyd iterations at most.
const ITERATIONS: usize = 50;

fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The cluster of every point (`points` row-major, `dims` per point), `k` clusters.
pub fn kmeans(points: &[f32], dims: usize, k: usize) -> Vec<u32> {
    let n = points.len() / dims.max(1);
    if n == 0 || dims == 0 {
        return Vec::new();
    }
    let k = k.clamp(1, n);
    let point = |i: usize| &points[i * dims..(i + 1) * dims];
    let mut rng = ChaCha8Rng::seed_from_u64(0xC1);
    // k-means++: each next centre drawn with probability proportional to squared distance.
    let mut centres: Vec<Vec<f32>> = vec![point(rng.random_range(0..n)).to_vec()];
    let mut nearest: Vec<f32> = (0..n).map(|i| dist2(point(i), &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = nearest.iter().map(|&d| f64::from(d)).sum();
        let pick = if total > 0.0 {
            let mut target = rng.random::<f64>() * total;
            (0..n)
                .find(|&i| {
                    target -= f64::from(nearest[i]);
                    target <= 0.0
                })
                .unwrap_or(n - 1)
        } else {
            rng.random_range(0..n)
        };
        let c = point(pick).to_vec();
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(dist2(point(i), &c));
        }
        centres.push(c);
    }
    let mut labels = vec![0u32; n];
    for _ in 0..ITERATIONS {
        let mut changed = false;
        for (i, l) in labels.iter_mut().enumerate() {
            let best = (0..k)
                .min_by(|&a, &b| {
                    dist2(point(i), &centres[a]).total_cmp(&dist2(point(i), &centres[b]))
                })
                .unwrap_or(0) as u32;
            changed |= *l != best;
            *l = best;
        }
        let mut sums = vec![vec![0f64; dims]; k];
        let mut counts = vec![0usize; k];
        for (i, &l) in labels.iter().enumerate() {
            counts[l as usize] += 1;
            for (s, &x) in sums[l as usize].iter_mut().zip(point(i)) {
                *s += f64::from(x);
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                centres[c] = sums[c]
                    .iter()
                    .map(|s| (s / counts[c] as f64) as f32)
                    .collect();
            }
        }
        if !changed {
            break;
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_blobs_get_one_cluster_each() {
        let mut pts = Vec::new();
        for (cx, cy) in [(0.0f32, 0.0f32), (10.0, 0.0), (0.0, 10.0)] {
            for i in 0..20 {
                pts.extend([cx + (i % 5) as f32 * 0.1, cy + (i / 5) as f32 * 0.1]);
            }
        }
        let labels = kmeans(&pts, 2, 3);
        for blob in labels.chunks(20) {
            assert!(blob.iter().all(|&l| l == blob[0]), "{blob:?}");
        }
        let firsts: std::collections::BTreeSet<u32> = labels.chunks(20).map(|b| b[0]).collect();
        assert_eq!(firsts.len(), 3);
        assert_eq!(kmeans(&pts, 2, 3), labels, "deterministic");
        assert!(kmeans(&[], 2, 3).is_empty());
    }
}
