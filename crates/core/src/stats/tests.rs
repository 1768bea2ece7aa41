use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Encodes values as a dtype's bytes (saturating, nearest).
fn bytes_of(dtype: Dtype, values: &[f64]) -> Vec<u8> {
    let opts = dtype::EncodeOptions {
        saturate: true,
        round: true,
    };
    let codes: Vec<Vec<u8>> = values
        .iter()
        .map(|&v| {
            // Specials a dtype cannot hold (NaN in F4, ...) become zero.
            dtype::encode(dtype, dtype::Number::Float(v), opts)
                .or_else(|_| dtype::encode(dtype, dtype::Number::Float(0.0), opts))
                .expect("zero is encodable")
        })
        .collect();
    if !dtype::is_packed(dtype) {
        return codes.concat();
    }
    let n = values.len() as u64;
    let mut out = vec![0u8; (n * dtype::bits(dtype) as u64).div_ceil(8) as usize];
    for (i, c) in codes.iter().enumerate() {
        let loc = crate::packed::locate(dtype, i as u64);
        let at = loc.offset as usize;
        let end = (at + loc.len).min(out.len());
        crate::packed::repack(dtype, loc, &mut out[at..end], c[0]);
    }
    out
}

/// The reference: every element decoded, finite ones sorted, numpy's formulas.
fn reference(dtype: Dtype, bytes: &[u8], n: u64) -> (Vec<f64>, Summary) {
    let all: Vec<f64> = (0..n)
        .map(|i| {
            let loc = crate::packed::locate(dtype, i);
            let raw = &bytes[loc.offset as usize..(loc.offset as usize + loc.len).min(bytes.len())];
            if dtype::is_packed(dtype) {
                dtype::decode_f64(dtype, &[crate::packed::unpack(dtype, loc, raw)])
            } else {
                dtype::decode_f64(dtype, raw)
            }
        })
        .collect();
    let mut finite: Vec<f64> = all.iter().copied().filter(|v| v.is_finite()).collect();
    finite.sort_by(f64::total_cmp);
    let m = finite.len() as u64;
    let mean = finite.iter().sum::<f64>() / m as f64;
    let var = finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m as f64;
    let s = Summary {
        count: n,
        finite: m,
        nan: all.iter().filter(|v| v.is_nan()).count() as u64,
        pos_inf: all.iter().filter(|v| **v == f64::INFINITY).count() as u64,
        neg_inf: all.iter().filter(|v| **v == f64::NEG_INFINITY).count() as u64,
        zero: all.iter().filter(|v| **v == 0.0).count() as u64,
        min: finite.first().copied(),
        max: finite.last().copied(),
        mean: Some(mean),
        std: Some(var.sqrt()),
        mean_abs: Some(finite.iter().map(|v| v.abs()).sum::<f64>() / m as f64),
        quantiles: QUANTILES
            .iter()
            .map(|&q| {
                let (lo, hi, t) = quantile_ranks(q, m);
                Quantile {
                    q,
                    value: lerp(finite[lo as usize], finite[hi as usize], t),
                }
            })
            .collect(),
        ..Summary::default()
    };
    (all, s)
}

fn close(a: Option<f64>, b: Option<f64>, rel: f64) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300),
        (a, b) => a == b,
    }
}

fn sample(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let x: f64 = rng.random_range(-3.0..3.0);
            x * x * x
        })
        .collect();
    // Specials and repeats: NaN, ±Inf, zeros, a subnormal for the wide floats.
    for (i, s) in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        1e-40,
        0.0,
    ]
    .into_iter()
    .enumerate()
    {
        v[i * 37 % n] = s;
    }
    v
}

#[test]
fn every_numeric_dtype_matches_the_sorted_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // Crosses several chunks and ends on a partial one.
    let n = (2 * CHUNK_ELEMENTS + 1234) as usize;
    for dtype in [
        Dtype::F32,
        Dtype::F64,
        Dtype::BF16,
        Dtype::F16,
        Dtype::I8,
        Dtype::I32,
        Dtype::U16,
        Dtype::I64,
        Dtype::F8_E4M3,
        Dtype::F8_E5M2,
        Dtype::F4,
        Dtype::F6_E3M2,
    ] {
        let kind = dtype::kind(dtype);
        let values: Vec<f64> = sample(&mut rng, n)
            .into_iter()
            .map(|v| match kind {
                Kind::Float => v,
                _ if v.is_finite() => (v * 4.0).round().clamp(0.0, 100.0),
                _ => 3.0,
            })
            .collect();
        let bytes = bytes_of(dtype, &values);
        let (all, want) = reference(dtype, &bytes, n as u64);
        let runner = InMemory {
            dtype,
            bytes: &bytes,
            elements: n as u64,
        };
        let (got, hist, table) = compute(dtype, &runner, 64);
        let name = dtype::name(dtype);
        assert_eq!(
            (
                got.count,
                got.finite,
                got.nan,
                got.pos_inf,
                got.neg_inf,
                got.zero
            ),
            (
                want.count,
                want.finite,
                want.nan,
                want.pos_inf,
                want.neg_inf,
                want.zero
            ),
            "{name} counts"
        );
        assert_eq!((got.min, got.max), (want.min, want.max), "{name} extremes");
        // The mean of a centred sample cancels: compare it at the scale of mean |x|.
        let scale = want.mean_abs.unwrap();
        let (gm, wm) = (got.mean.unwrap(), want.mean.unwrap());
        assert!(
            (gm - wm).abs() <= 1e-12 * scale,
            "{name} mean: {gm} vs {wm}"
        );
        for (a, b, what) in [
            (got.std, want.std, "std"),
            (got.mean_abs, want.mean_abs, "mean_abs"),
        ] {
            assert!(close(a, b, 1e-12), "{name} {what}: {a:?} vs {b:?}");
        }
        for (g, w) in got.quantiles.iter().zip(&want.quantiles) {
            assert!(
                close(Some(g.value), Some(w.value), 1e-12),
                "{name} p{}: {} vs {}",
                g.q * 100.0,
                g.value,
                w.value
            );
        }
        assert_eq!(table.is_some(), dtype::bits(dtype) <= 16, "{name}");
        // The histogram: every finite value in exactly the bin numpy's edges give it.
        let hist = hist.expect("finite values exist");
        let bins = Bins::new(want.min.unwrap(), want.max.unwrap(), 64).unwrap();
        let mut counts = vec![0u64; 64];
        for v in all.iter().filter(|v| v.is_finite()) {
            let i = (0..64)
                .find(|&i| *v >= bins.edge(i) && (*v < bins.edge(i + 1) || i == 63))
                .unwrap();
            counts[i] += 1;
        }
        assert_eq!(hist.counts, counts, "{name} histogram");
        assert_eq!(
            (hist.nan, hist.pos_inf, hist.neg_inf),
            (want.nan, want.pos_inf, want.neg_inf)
        );
        // A later histogram over other bins agrees with a fresh pass.
        let other = Bins::new(-1.0, 1.0, 10).unwrap();
        let again = super::histogram(dtype, &runner, table.as_ref(), &other);
        let fresh = super::histogram(dtype, &runner, None, &other);
        if table.is_some() {
            let mut naive = Histogram::empty(&other);
            all.iter().for_each(|&v| naive.add(&other, v, 1));
            assert_eq!(again, naive, "{name} table histogram");
        } else {
            assert_eq!(again, fresh);
        }
        assert_eq!(
            again.below + again.above + again.counts.iter().sum::<u64>(),
            want.finite
        );
    }
}

#[test]
fn subnormals_are_counted_from_the_bits() {
    // F16: 2^-20 is subnormal, 2^-14 the smallest normal.
    let values = [2f64.powi(-20), 2f64.powi(-14), 0.0, 1.0, -(2f64.powi(-24))];
    let bytes = bytes_of(Dtype::F16, &values);
    let runner = InMemory {
        dtype: Dtype::F16,
        bytes: &bytes,
        elements: 5,
    };
    let (s, _, _) = compute(Dtype::F16, &runner, 8);
    assert_eq!((s.subnormal, s.zero), (2, 1));
    let values = [1e-40f64, 1e-30, 0.0, f64::from(f32::MIN_POSITIVE)];
    let bytes = bytes_of(Dtype::F32, &values);
    let runner = InMemory {
        dtype: Dtype::F32,
        bytes: &bytes,
        elements: 4,
    };
    let (s, _, _) = compute(Dtype::F32, &runner, 8);
    assert_eq!((s.subnormal, s.zero), (1, 1));
    assert_eq!(s.sparsity, 0.25);
}

#[test]
fn all_nan_and_constant_tensors() {
    let bytes = bytes_of(Dtype::F32, &[f64::NAN; 5]);
    let runner = InMemory {
        dtype: Dtype::F32,
        bytes: &bytes,
        elements: 5,
    };
    let (s, h, _) = compute(Dtype::F32, &runner, 8);
    assert_eq!(
        (s.nan, s.finite, s.mean, s.quantiles.len()),
        (5, 0, None, 0)
    );
    assert!(h.is_none());
    let bytes = bytes_of(Dtype::BF16, &[2.0; 9]);
    let runner = InMemory {
        dtype: Dtype::BF16,
        bytes: &bytes,
        elements: 9,
    };
    let (s, h, _) = compute(Dtype::BF16, &runner, 4);
    assert_eq!((s.std, s.quantile(0.5)), (Some(0.0), Some(2.0)));
    // numpy widens a point range by 0.5 each side.
    let h = h.unwrap();
    assert_eq!((h.lo, h.hi), (1.5, 2.5));
    assert_eq!(h.counts, vec![0, 0, 9, 0]);
}

#[test]
fn the_mean_of_many_elements_keeps_its_precision() {
    // 1 + tiny offsets: a naive f32 sum would drift; chunked f64 + Chan's merge does not.
    let n = 3 * CHUNK_ELEMENTS as usize + 5;
    let values: Vec<f64> = (0..n).map(|i| 1.0 + (i % 1000) as f64 * 1e-3).collect();
    let bytes = bytes_of(Dtype::F64, &values);
    let runner = InMemory {
        dtype: Dtype::F64,
        bytes: &bytes,
        elements: n as u64,
    };
    let (s, _, _) = compute(Dtype::F64, &runner, 8);
    let exact: f64 = values.iter().sum::<f64>() / n as f64;
    assert!((s.mean.unwrap() - exact).abs() / exact < 1e-13);
}
