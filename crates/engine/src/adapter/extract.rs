//! A difference cut into an adapter by truncated SVD, its error stated per module.

use super::export::{write, Factors};
use super::*;

/// How many singular triplets an extraction keeps per module.
#[derive(Clone, Copy, Debug)]
pub enum RankRule {
    /// At most this many (fewer where the difference has fewer).
    Rank(usize),
    /// The fewest whose dropped energy (share of `Σ σ²`) is at most this.
    Tolerance(f64),
}

/// The other side of an extraction: another model with the same tensors, or the base with
/// edits laid on.
pub enum Other<'a> {
    Model(&'a Model),
    Overlay(&'a Overlay),
}

/// An adapter of the difference `other − base`, per changed matrix (those `include`
/// matches): a truncated SVD kept by `rule`, written in `format` at `out`. Each module's
/// relative error is measured on the factors written.
pub fn extract(
    base: &Model,
    other: Other<'_>,
    rule: RankRule,
    include: Option<&regex_lite::Regex>,
    format: AdapterFormat,
    out: &Path,
) -> Result<ExtractReport> {
    match rule {
        RankRule::Rank(0) => return Err(AdapterFit::Rule.into()),
        RankRule::Tolerance(t) if !(0.0..1.0).contains(&t) => return Err(AdapterFit::Rule.into()),
        _ => {}
    }
    let empty = Overlay::default();
    let mut names: Vec<String> = base.tensors().map(|(_, i)| i.name.clone()).collect();
    names.sort();
    let (mut factors, mut modules, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for name in names {
        if include.is_some_and(|re| !re.is_match(&name)) {
            continue;
        }
        if let Other::Overlay(o) = other {
            if o.tensor(&name).is_none() {
                continue;
            }
        }
        let (_, info) = base.get(&name)?;
        let theirs = match other {
            Other::Model(m) => match m.get(&name) {
                Ok((_, i)) if i.shape == info.shape => values(m, &empty, &name)?,
                Ok((_, i)) => {
                    skipped.push(SkippedTensor {
                        tensor: name.clone(),
                        reason: format!("shapes differ: {:?} and {:?}", info.shape, i.shape),
                    });
                    continue;
                }
                Err(_) => {
                    skipped.push(SkippedTensor {
                        tensor: name.clone(),
                        reason: "not in the other model".into(),
                    });
                    continue;
                }
            },
            Other::Overlay(o) => values(base, o, &name)?,
        };
        let ours = values(base, &empty, &name)?;
        if ours == theirs {
            continue;
        }
        if info.shape.len() != 2 {
            skipped.push(SkippedTensor {
                tensor: name.clone(),
                reason: format!("changed, but it is not a matrix (shape {:?})", info.shape),
            });
            continue;
        }
        let (rows, cols) = (info.shape[0] as usize, info.shape[1] as usize);
        let delta: Vec<f32> = theirs.iter().zip(&ours).map(|(t, o)| t - o).collect();
        let svd = tensor_surgeon_layout::svd::thin(&delta, rows, cols)?;
        let nonzero = svd
            .s
            .iter()
            .take_while(|s| **s > svd.s[0] * 1e-7)
            .count()
            .max(1);
        let k = match rule {
            RankRule::Rank(r) => r.min(nonzero),
            RankRule::Tolerance(t) => (1..=svd.len())
                .find(|&k| svd.dropped_energy(k) <= t)
                .unwrap_or(svd.len()),
        };
        let n = svd.len();
        let u: Vec<f32> = (0..rows)
            .flat_map(|i| (0..k).map(move |c| (i, c)))
            .map(|(i, c)| (svd.u[i * n + c] * svd.s[c]) as f32)
            .collect();
        let v: Vec<f32> = (0..cols)
            .flat_map(|j| (0..k).map(move |c| (j, c)))
            .map(|(j, c)| svd.v[j * n + c] as f32)
            .collect();
        modules.push(ExtractedModule {
            tensor: name.clone(),
            rank: k as u32,
            relative_error: relative_error(&delta, &u, &v, cols, k),
            dropped_energy: svd.dropped_energy(k),
        });
        factors.push(Factors {
            tensor: name,
            rows,
            cols,
            rank: k,
            u,
            v,
        });
    }
    if factors.is_empty() {
        return Err(AdapterFit::Empty { byte_tensors: 0 }.into());
    }
    let (_, files) = write(base, &factors, format, out)?;
    Ok(ExtractReport {
        modules,
        files,
        skipped,
    })
}

/// `‖Δ − U Vᵀ‖_F / ‖Δ‖_F` in f64, with the factors as written (f32).
fn relative_error(delta: &[f32], u: &[f32], v: &[f32], cols: usize, k: usize) -> f64 {
    let (mut err, mut total) = (0f64, 0f64);
    for (i, row) in delta.chunks_exact(cols).enumerate() {
        let ui = &u[i * k..(i + 1) * k];
        for (j, d) in row.iter().enumerate() {
            let vj = &v[j * k..(j + 1) * k];
            let approx: f64 = ui
                .iter()
                .zip(vj)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let d = f64::from(*d);
            err += (d - approx).powi(2);
            total += d * d;
        }
    }
    if total == 0.0 {
        0.0
    } else {
        (err / total).sqrt()
    }
}
