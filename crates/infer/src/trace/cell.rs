//! A row of a trace: p(target) with one state restored at each token of one layer, computed
//! the fast way (only what the restorations can change, the row's cells as one pass) or the
//! reference's way (the whole prompt rerun for each cell).

use super::mean;
use super::runs::{probabilities, run_layers, values, Runs};
use crate::llama::{Llama, Part, Replace};
use crate::weights::Weights;
use crate::Result;
use candle_core::{Device, Tensor};
use tensor_surgeon_wire::TraceKind;

/// How a row is computed: for each token `t`, p(target), averaged over the samples, with the
/// state `kind` at (`layer`, `t`) restored.
pub(super) type RowFn = fn(&Llama, &Weights, &Runs, TraceKind, usize, usize) -> Result<Vec<f64>>;

/// The layers a window of `window` layers around `layer` covers (ROME's range).
pub(super) fn window_of(layer: usize, window: usize, layers: usize) -> std::ops::Range<usize> {
    layer.saturating_sub(window / 2)..(layer + window.div_ceil(2)).min(layers)
}

/// A row computed the reference's way: for each cell, every sample's whole corrupted prompt
/// through every layer, the restoration put in on the way.
pub(super) fn rerun_row(
    model: &Llama,
    w: &Weights,
    r: &Runs,
    kind: TraceKind,
    layer: usize,
    window: usize,
) -> Result<Vec<f64>> {
    (0..r.positions)
        .map(|t| rerun_cell(model, w, r, kind, layer, t, window))
        .collect()
}

fn rerun_cell(
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
    let batch = model.batch(&vec![(0, n); r.samples])?;
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
            .into_iter()
            .flat_map(|(part, clean)| {
                (0..r.samples).map(move |s| Replace {
                    part,
                    row: s * n + t,
                    value: r.row(clean, t),
                })
            })
            .collect();
        x = model.block(w, l, &x, &mut kv, &batch, &replace)?.x;
        if kind == TraceKind::Residual && l == layer {
            let mut v = values(&x)?;
            for s in 0..r.samples {
                let at = (s * n + t) * hidden;
                v[at..at + hidden].copy_from_slice(r.row(&r.clean_out[l], t));
            }
            x = Tensor::from_vec(v, (r.samples * n, hidden), &Device::Cpu)?;
        }
    }
    let finals = batch.last_rows(&values(&x)?, hidden);
    Ok(mean(&probabilities(model, w, &finals, r.target)?))
}

/// A row computed with only what its restorations can change: a restoration at (`layer`, `t`)
/// changes nothing before `t` nor below the first layer it restores, so each cell's sequences
/// run from that layer on the positions from `t` on, after the corrupted runs' keys and values
/// of the earlier positions; and all the row's cells (every token, every sample) run as one
/// pass, so each weight is read once per layer for the whole row.
pub(super) fn row(
    model: &Llama,
    w: &Weights,
    r: &Runs,
    kind: TraceKind,
    layer: usize,
    window: usize,
) -> Result<Vec<f64>> {
    let hidden = r.hidden;
    // The first layer that changes, and the restorations of each layer.
    let span = window_of(layer, window, r.layers);
    let from = match kind {
        TraceKind::Residual => layer + 1,
        TraceKind::Mlp | TraceKind::Attention => span.start,
    };
    // No noise reaches the positions before the subject: their states are the clean ones.
    let cells: Vec<usize> = (r.first..r.positions).collect();
    // Each cell's sequences: every sample's positions from `t` on, the restored state in.
    let mut shapes = Vec::new();
    let mut rows = Vec::new();
    for &t in &cells {
        for s in 0..r.samples {
            let input = match (kind, from) {
                (TraceKind::Residual, _) => &r.out[layer][s],
                (_, 0) => &r.noisy[s],
                (_, from) => &r.out[from - 1][s],
            };
            let start = rows.len();
            rows.extend_from_slice(&input[t * hidden..]);
            if kind == TraceKind::Residual {
                rows[start..start + hidden].copy_from_slice(r.row(&r.clean_out[layer], t));
            }
            shapes.push((t, r.positions - t));
        }
    }
    let batch = model.batch(&shapes)?;
    let finals = if from >= r.layers {
        batch.last_rows(&rows, hidden)
    } else {
        let x = Tensor::from_vec(rows, (batch.rows(), hidden), &Device::Cpu)?;
        let kv_width = model.arch.kv_width();
        let mut kv: Vec<Vec<(Vec<f32>, Vec<f32>)>> =
            r.kv.iter()
                .enumerate()
                .map(|(l, per_sample)| {
                    if l < from {
                        return Vec::new();
                    }
                    shapes
                        .iter()
                        .enumerate()
                        .map(|(i, &(t, _))| {
                            let (k, v) = &per_sample[i % r.samples];
                            (k[..t * kv_width].to_vec(), v[..t * kv_width].to_vec())
                        })
                        .collect()
                })
                .collect();
        let part = match kind {
            TraceKind::Mlp => Some((Part::Mlp, &r.clean_mlp)),
            TraceKind::Attention => Some((Part::Attention, &r.clean_attention)),
            TraceKind::Residual => None,
        };
        // Each sequence's first row is its cell's token.
        let starts: Vec<(usize, usize)> = shapes
            .iter()
            .scan(0, |row, &(t, n)| {
                let at = *row;
                *row += n;
                Some((at, t))
            })
            .collect();
        let replace = |l: usize| match part {
            Some((part, clean)) if span.contains(&l) => starts
                .iter()
                .map(|&(row, t)| Replace {
                    part,
                    row,
                    value: r.row(&clean[l], t),
                })
                .collect(),
            _ => Vec::new(),
        };
        let last = run_layers(model, w, x, &batch, from, &mut kv, &replace, &mut |_, _| {
            Ok(())
        })?;
        batch.last_rows(&values(&last)?, hidden)
    };
    // A final state that is exactly the clean or the corrupted one has that run's p.
    let mut p = vec![f64::NAN; finals.len() / hidden];
    let mut rest = Vec::new();
    let mut rest_rows = Vec::new();
    for (i, state) in finals.chunks(hidden).enumerate() {
        let s = i % r.samples;
        if state == r.clean_final() {
            p[i] = r.p_clean;
        } else if state == r.corrupted_final(s) {
            p[i] = r.p_corrupted[s];
        } else {
            rest.push(i);
            rest_rows.extend_from_slice(state);
        }
    }
    if !rest.is_empty() {
        for (i, q) in rest
            .into_iter()
            .zip(probabilities(model, w, &rest_rows, r.target)?)
        {
            p[i] = q;
        }
    }
    let corrupted = mean(&r.p_corrupted);
    let mut row = vec![corrupted; r.first];
    row.extend(p.chunks(r.samples).map(mean));
    Ok(row)
}
