//! One cell of a trace: p(target) with one state restored, computed the fast way (only what
//! the restoration can change) or the reference's way (the whole prompt rerun).

use super::mean;
use super::runs::{last_rows, probabilities, run_layers, values, Runs};
use crate::llama::{causal_mask, Llama, Part, Replace};
use crate::weights::Weights;
use crate::Result;
use candle_core::{Device, Tensor};
use tensor_surgeon_wire::TraceKind;

/// How a cell is computed: p(target), averaged over the samples, with the state `kind` at
/// (`layer`, token `t`) restored.
pub(super) type CellFn = fn(&Llama, &Weights, &Runs, TraceKind, usize, usize, usize) -> Result<f64>;

/// The layers a window of `window` layers around `layer` covers (ROME's range).
pub(super) fn window_of(layer: usize, window: usize, layers: usize) -> std::ops::Range<usize> {
    layer.saturating_sub(window / 2)..(layer + window.div_ceil(2)).min(layers)
}

/// A cell computed the reference's way: every sample's whole corrupted prompt through every
/// layer, the restoration put in on the way.
pub(super) fn rerun_cell(
    model: &Llama,
    w: &Weights,
    r: &Runs,
    kind: TraceKind,
    layer: usize,
    t: usize,
    window: usize,
) -> Result<f64> {
    let (hidden, n) = (r.hidden, r.positions);
    let rows: Vec<f32> = r.noisy.concat();
    let mut x = Tensor::from_vec(rows, (r.samples * n, hidden), &Device::Cpu)?;
    let rope = model.rope_tables(0, n)?;
    let mask = causal_mask(n, 0)?;
    let span = window_of(layer, window, r.layers);
    for l in 0..r.layers {
        let mut kv = vec![(Vec::new(), Vec::new()); r.samples];
        let part = match kind {
            TraceKind::Mlp if span.contains(&l) => Some((Part::Mlp, &r.clean_mlp[l])),
            TraceKind::Attention if span.contains(&l) => {
                Some((Part::Attention, &r.clean_attention[l]))
            }
            _ => None,
        };
        let replace: Vec<Replace<'_>> = part
            .map(|(part, clean)| Replace {
                part,
                position: t,
                value: r.row(clean, t),
            })
            .into_iter()
            .collect();
        x = model
            .block(w, l, &x, &mut kv, 0, &rope, mask.as_ref(), &replace)?
            .x;
        if kind == TraceKind::Residual && l == layer {
            let mut v = values(&x)?;
            for s in 0..r.samples {
                let at = (s * n + t) * hidden;
                v[at..at + hidden].copy_from_slice(r.row(&r.clean_out[l], t));
            }
            x = Tensor::from_vec(v, (r.samples * n, hidden), &Device::Cpu)?;
        }
    }
    let finals = last_rows(&values(&x)?, n, hidden);
    Ok(mean(&probabilities(model, w, &finals, r.target)?))
}

/// p(target), averaged over the samples, with the state `kind` at (`layer`, token `t`)
/// restored: only what the restoration can change is computed.
pub(super) fn cell(
    model: &Llama,
    w: &Weights,
    r: &Runs,
    kind: TraceKind,
    layer: usize,
    t: usize,
    window: usize,
) -> Result<f64> {
    // No noise reaches the positions before the subject: their states are the clean ones.
    if t < r.first {
        return Ok(mean(&r.p_corrupted));
    }
    let hidden = r.hidden;
    let n = r.positions - t;
    // The first layer that changes, what enters it, and the restorations of each layer.
    let (from, restored_input) = match kind {
        TraceKind::Residual => (layer + 1, Some(r.row(&r.clean_out[layer], t))),
        TraceKind::Mlp | TraceKind::Attention => (window_of(layer, window, r.layers).start, None),
    };
    let window_end = window_of(layer, window, r.layers).end;
    let mut rows = Vec::with_capacity(r.samples * n * hidden);
    for s in 0..r.samples {
        let input = match (kind, from) {
            (TraceKind::Residual, _) => &r.out[layer][s],
            (_, 0) => &r.noisy[s],
            (_, from) => &r.out[from - 1][s],
        };
        let start = rows.len();
        rows.extend_from_slice(&input[t * hidden..]);
        if let Some(clean) = restored_input {
            rows[start..start + hidden].copy_from_slice(clean);
        }
    }
    let finals = if from >= r.layers {
        last_rows(&rows, n, hidden)
    } else {
        let x = Tensor::from_vec(rows, (r.samples * n, hidden), &Device::Cpu)?;
        let kv_width = model.config.kv_heads() * model.config.head_width();
        let mut kv: Vec<Vec<(Vec<f32>, Vec<f32>)>> =
            r.kv.iter()
                .enumerate()
                .map(|(l, per_sample)| {
                    if l < from {
                        return Vec::new();
                    }
                    per_sample
                        .iter()
                        .map(|(k, v)| (k[..t * kv_width].to_vec(), v[..t * kv_width].to_vec()))
                        .collect()
                })
                .collect();
        let part = match kind {
            TraceKind::Mlp => Some((Part::Mlp, &r.clean_mlp)),
            TraceKind::Attention => Some((Part::Attention, &r.clean_attention)),
            TraceKind::Residual => None,
        };
        let replace = |l: usize| match part {
            Some((part, clean)) if l >= from && l < window_end => vec![Replace {
                part,
                position: 0,
                value: r.row(&clean[l], t),
            }],
            _ => Vec::new(),
        };
        let last = run_layers(model, w, x, n, t, from, &mut kv, &replace, &mut |_, _| {
            Ok(())
        })?;
        last_rows(&values(&last)?, n, hidden)
    };
    // A final state that is exactly the clean or the corrupted one has that run's p.
    let mut p = vec![f64::NAN; r.samples];
    let mut rest = Vec::new();
    let mut rest_rows = Vec::new();
    for (s, row) in finals.chunks(hidden).enumerate() {
        if row == r.clean_final() {
            p[s] = r.p_clean;
        } else if row == r.corrupted_final(s) {
            p[s] = r.p_corrupted[s];
        } else {
            rest.push(s);
            rest_rows.extend_from_slice(row);
        }
    }
    if !rest.is_empty() {
        for (s, q) in rest
            .into_iter()
            .zip(probabilities(model, w, &rest_rows, r.target)?)
        {
            p[s] = q;
        }
    }
    Ok(mean(&p))
}
