//! Layouts on planted clusters: kept apart, live frames, the stop, the same seed.

use super::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use tensor_surgeon_core::dtype::Dtype;
use tensor_surgeon_core::overlay::Patched;
use tensor_surgeon_core::view::ViewSpec;

/// `clusters x per` points in `d` dims around random centres; their bytes (F32) and labels.
fn planted(clusters: usize, per: usize, d: usize) -> (Vec<u8>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let unit = Normal::new(0.0f32, 1.0).unwrap();
    let mut bytes = Vec::new();
    let mut labels = Vec::new();
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..d).map(|_| unit.sample(&mut rng) * 3.0).collect())
        .collect();
    // Interleaved, so a cluster is not a block of rows.
    for i in 0..clusters * per {
        let c = i % clusters;
        for &m in &centres[c] {
            bytes.extend((m + unit.sample(&mut rng) * 0.3).to_le_bytes());
        }
        labels.push(c);
    }
    (bytes, labels)
}

/// Share of points whose nearest layout neighbour is in their own cluster.
fn neighbour_agreement(points: &[f32], dims: usize, labels: &[usize]) -> f64 {
    let n = labels.len();
    let mut same = 0;
    for i in 0..n {
        let nearest = (0..n)
            .filter(|&j| j != i)
            .min_by(|&a, &b| {
                let d = |j: usize| -> f32 {
                    (0..dims)
                        .map(|c| (points[i * dims + c] - points[j * dims + c]).powi(2))
                        .sum()
                };
                d(a).total_cmp(&d(b))
            })
            .unwrap();
        same += usize::from(labels[nearest] == labels[i]);
    }
    same as f64 / n as f64
}

struct Run {
    projection: Result<Projection>,
    frames: usize,
    phases: Vec<Phase>,
}

fn run(
    bytes: &[u8],
    shape: [u64; 2],
    dims: usize,
    method: Method,
    params: &LayoutParams,
    stop_after: Option<usize>,
) -> Run {
    let source = Patched {
        base: bytes,
        runs: None,
    };
    let input = Input {
        dtype: Dtype::F32,
        shape: &shape,
        spec: ViewSpec::default_for(&shape),
        source: &source,
        columns: false,
        normalize: false,
    };
    let stop = AtomicBool::new(false);
    let seen = Mutex::new((0usize, Vec::new()));
    let report = |r: Report<'_>| {
        let mut s = seen.lock().unwrap();
        if s.1.last() != Some(&r.phase) {
            s.1.push(r.phase);
        }
        if let Some(p) = r.points {
            assert_eq!(p.len(), shape[0] as usize * dims);
            s.0 += 1;
            if stop_after.is_some_and(|k| s.0 >= k) {
                stop.store(true, Ordering::Relaxed);
            }
        }
    };
    let live = Live {
        report: &report,
        stop: &stop,
    };
    let projection = layout(&input, dims, method, params, &live);
    let (frames, phases) = seen.into_inner().unwrap();
    Run {
        projection,
        frames,
        phases,
    }
}

#[test]
fn tsne_and_umap_keep_planted_clusters_apart() {
    let (bytes, labels) = planted(4, 60, 12);
    let params = LayoutParams {
        perplexity: 15.0,
        ..LayoutParams::default()
    };
    for (method, dims) in [
        (Method::Tsne, 2),
        (Method::Tsne, 3),
        (Method::Umap, 2),
        (Method::Umap, 3),
    ] {
        let r = run(&bytes, [240, 12], dims, method, &params, None);
        let p = r.projection.unwrap();
        assert_eq!((p.n, p.dims, p.method), (240, dims as u32, method));
        assert!(!p.stopped && p.iterations == p.total_iterations);
        assert!(p.loss.is_some_and(f64::is_finite));
        assert_eq!(p.index, (0..240).collect::<Vec<u64>>());
        let agree = neighbour_agreement(&p.points, dims, &labels);
        assert!(agree >= 0.98, "{method:?} {dims}-D: {agree}");
        // The start is shown first, while the neighbours are found; then the optimiser.
        assert_eq!(
            r.phases[..2],
            [Phase::Reading, Phase::Reducing][..r.phases.len().min(2)]
        );
        assert!(
            r.phases.ends_with(&[Phase::Neighbours, Phase::Optimising]),
            "{:?}",
            r.phases
        );
        assert!(r.frames >= 2, "{method:?}: {} frames", r.frames);
    }
}

#[test]
fn a_stopped_layout_keeps_what_it_had() {
    let (bytes, _) = planted(3, 50, 8);
    for method in [Method::Tsne, Method::Umap] {
        let params = LayoutParams {
            perplexity: 10.0,
            iterations: Some(20_000),
            ..LayoutParams::default()
        };
        let r = run(&bytes, [150, 8], 2, method, &params, Some(3));
        let p = r.projection.unwrap();
        assert!(p.stopped, "{method:?}");
        assert!(
            p.iterations < 20_000 && p.total_iterations == 20_000,
            "{method:?} {}",
            p.iterations
        );
        assert_eq!(p.points.len(), 300);
        assert!(p.points.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn the_same_seed_gives_the_same_umap() {
    let (bytes, _) = planted(3, 40, 8);
    let params = |seed| LayoutParams {
        seed,
        iterations: Some(100),
        ..LayoutParams::default()
    };
    let a = run(&bytes, [120, 8], 2, Method::Umap, &params(5), None)
        .projection
        .unwrap();
    let b = run(&bytes, [120, 8], 2, Method::Umap, &params(5), None)
        .projection
        .unwrap();
    let c = run(&bytes, [120, 8], 2, Method::Umap, &params(6), None)
        .projection
        .unwrap();
    assert_eq!(a.points, b.points);
    assert_ne!(a.points, c.points);
}

/// A layout in a pool of `threads` threads.
fn on_threads(threads: usize, bytes: &[u8], shape: [u64; 2], method: Method) -> Vec<f32> {
    let params = LayoutParams {
        seed: 3,
        iterations: Some(60),
        ..LayoutParams::default()
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| run(bytes, shape, 2, method, &params, None))
        .projection
        .unwrap()
        .points
}

#[test]
fn layouts_do_not_depend_on_the_number_of_threads() {
    // Enough points for several parallel tasks.
    let (bytes, _) = planted(4, 400, 8);
    for method in [Method::Umap, Method::Tsne] {
        let one = on_threads(1, &bytes, [1600, 8], method);
        assert_eq!(one, on_threads(2, &bytes, [1600, 8], method), "{method:?}");
        assert_eq!(one, on_threads(3, &bytes, [1600, 8], method), "{method:?}");
    }
}

#[test]
fn parameters_are_checked_before_any_work() {
    let (bytes, _) = planted(2, 10, 4);
    let bad = [
        (
            Method::Tsne,
            LayoutParams {
                perplexity: 0.5,
                ..LayoutParams::default()
            },
            "perplexity must be 1 to 500",
        ),
        (
            Method::Tsne,
            LayoutParams::default(),
            "perplexity 30 needs more than 90 points",
        ),
        (
            Method::Umap,
            LayoutParams {
                min_dist: -1.0,
                ..LayoutParams::default()
            },
            "min_dist must be between 0 and 1",
        ),
        (
            Method::Umap,
            LayoutParams {
                iterations: Some(0),
                ..LayoutParams::default()
            },
            "iterations must be 1 to",
        ),
        (
            Method::Umap,
            LayoutParams {
                pca_dims: 100_000,
                ..LayoutParams::default()
            },
            "pca_dims 100000 is more than",
        ),
    ];
    for (method, params, want) in bad {
        let r = run(&bytes, [20, 4], 2, method, &params, None);
        let e = r.projection.unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    let e = run(
        &bytes,
        [20, 4],
        4,
        Method::Umap,
        &LayoutParams::default(),
        None,
    )
    .projection
    .unwrap_err()
    .to_string();
    assert!(e.contains("layouts have 2 or 3 dims"), "{e}");
}
