//! The clean run and the corrupted ones that every cell starts from, and the passes they are
//! made of.

use super::TraceRequest;
use crate::llama::{Batch, Llama, Replace};
use crate::weights::Weights;
use crate::{InferError, Result};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Normal};

pub(super) struct Runs {
    pub(super) layers: usize,
    pub(super) hidden: usize,
    /// Prompt positions.
    pub(super) positions: usize,
    /// The first corrupted position (the subject's first token).
    pub(super) first: usize,
    pub(super) samples: usize,
    pub(super) target: u32,
    /// Per layer, `[positions, hidden]`: the clean run's output, attention and MLP outputs.
    pub(super) clean_out: Vec<Vec<f32>>,
    pub(super) clean_attention: Vec<Vec<f32>>,
    pub(super) clean_mlp: Vec<Vec<f32>>,
    pub(super) p_clean: f64,
    /// Per sample, `[positions, hidden]`: the corrupted embeddings.
    pub(super) noisy: Vec<Vec<f32>>,
    /// Per layer, per sample: the corrupted run's output `[positions, hidden]` and its keys
    /// and values (`[positions, kv_heads, head_width]` each).
    pub(super) out: Vec<Vec<Vec<f32>>>,
    pub(super) kv: Vec<Vec<(Vec<f32>, Vec<f32>)>>,
    /// Per sample: p(target) of the corrupted run.
    pub(super) p_corrupted: Vec<f64>,
}

impl Runs {
    pub(super) fn row<'a>(&self, m: &'a [f32], position: usize) -> &'a [f32] {
        &m[position * self.hidden..(position + 1) * self.hidden]
    }

    /// The final state of the clean run at the last position.
    pub(super) fn clean_final(&self) -> &[f32] {
        self.row(&self.clean_out[self.layers - 1], self.positions - 1)
    }

    pub(super) fn corrupted_final(&self, sample: usize) -> &[f32] {
        self.row(&self.out[self.layers - 1][sample], self.positions - 1)
    }
}

/// Runs `x` (the new rows of `batch`'s sequences) through layers `from..`, with `kv` (per
/// layer, per sequence) extended as it goes; `replace` gives the restorations of each layer.
/// Returns the last layer's output.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_layers<'r>(
    model: &Llama,
    w: &Weights,
    mut x: Tensor,
    batch: &Batch,
    from: usize,
    kv: &mut [Vec<(Vec<f32>, Vec<f32>)>],
    replace: &dyn Fn(usize) -> Vec<Replace<'r>>,
    record: &mut dyn FnMut(usize, &crate::llama::Block) -> Result<()>,
) -> Result<Tensor> {
    for (layer, kv) in kv.iter_mut().enumerate().skip(from) {
        let out = model.block(w, layer, &x, kv, batch, &replace(layer))?;
        record(layer, &out)?;
        x = out.x;
    }
    Ok(x)
}

/// The last of every sequence's `n` rows (`[sequences * n, hidden]` in, `[sequences, hidden]`
/// out): the states the next token is read from.
pub(crate) fn last_rows(rows: &[f32], n: usize, hidden: usize) -> Vec<f32> {
    rows.chunks(n * hidden)
        .flat_map(|seq| seq[(n - 1) * hidden..].iter().copied())
        .collect()
}

pub(crate) fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// p(target) for each of `rows` final states (`[n, hidden]`).
pub(super) fn probabilities(
    model: &Llama,
    w: &Weights,
    rows: &[f32],
    target: u32,
) -> Result<Vec<f64>> {
    let hidden = model.arch.hidden;
    let n = rows.len() / hidden;
    let logits = model.logits(w, &Tensor::from_slice(rows, (n, hidden), &Device::Cpu)?)?;
    Ok(logits
        .to_vec2::<f32>()?
        .iter()
        .map(|l| {
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = l.iter().map(|&v| (v as f64 - max).exp()).sum();
            (l[target as usize] as f64 - max - z.ln()).exp()
        })
        .collect())
}

/// The clean run, then the corrupted runs (the positions before the subject shared with the
/// clean run).
pub(super) fn runs(
    model: &Llama,
    w: &Weights,
    ids: &[u32],
    (first, end): (usize, usize),
    target: Option<u32>,
    noise: f64,
    req: &TraceRequest,
) -> Result<Runs> {
    let a = &model.arch;
    let (layers, hidden, positions) = (a.depth(), a.hidden, ids.len());
    let samples = req.samples as usize;
    let x0 = model.embed_rows(w, ids)?;
    let embedded = values(&x0)?;
    // The clean run.
    let mut clean_kv = vec![vec![(Vec::new(), Vec::new())]; layers];
    let mut clean = (Vec::new(), Vec::new(), Vec::new());
    let last = run_layers(
        model,
        w,
        x0,
        &model.batch(&[(0, positions)])?,
        0,
        &mut clean_kv,
        &|_| Vec::new(),
        &mut |_, b| {
            clean.0.push(values(&b.x)?);
            clean.1.push(values(&b.attention)?);
            clean.2.push(values(&b.mlp)?);
            Ok(())
        },
    )?;
    let last = values(&last)?;
    let final_row = &last[(positions - 1) * hidden..];
    let target = match target {
        Some(t) => t,
        None => {
            let logits = values(&model.logits(
                w,
                &Tensor::from_slice(final_row, (1, hidden), &Device::Cpu)?,
            )?)?;
            crate::argmax(&logits)
        }
    };
    let p_clean = probabilities(model, w, final_row, target)?[0];
    // The corrupted runs: noise on the subject's embeddings, the same seeded samples for
    // every cell.
    let normal =
        Normal::new(0.0, noise).map_err(|e| InferError::Request(format!("noise {noise}: {e}")))?;
    let mut rng = ChaCha8Rng::seed_from_u64(req.seed);
    let noisy: Vec<Vec<f32>> = (0..samples)
        .map(|_| {
            let mut x = embedded.clone();
            for v in &mut x[first * hidden..end * hidden] {
                *v += normal.sample(&mut rng) as f32;
            }
            x
        })
        .collect();
    let n = positions - first;
    let rows: Vec<f32> = noisy
        .iter()
        .flat_map(|x| x[first * hidden..].iter().copied())
        .collect();
    let x = Tensor::from_vec(rows, (samples * n, hidden), &Device::Cpu)?;
    let kv_heads_width = a.kv_width();
    let mut kv: Vec<Vec<(Vec<f32>, Vec<f32>)>> = clean_kv
        .iter()
        .map(|l| {
            let (k, v) = &l[0];
            let keep = first * kv_heads_width;
            vec![(k[..keep].to_vec(), v[..keep].to_vec()); samples]
        })
        .collect();
    let mut out: Vec<Vec<Vec<f32>>> = Vec::with_capacity(layers);
    let last = run_layers(
        model,
        w,
        x,
        &model.batch(&vec![(first, n); samples])?,
        0,
        &mut kv,
        &|_| Vec::new(),
        &mut |layer, b| {
            let new = values(&b.x)?;
            let prefix = &clean.0[layer][..first * hidden];
            out.push(
                new.chunks(n * hidden)
                    .map(|rows| [prefix, rows].concat())
                    .collect(),
            );
            Ok(())
        },
    )?;
    let finals = last_rows(&values(&last)?, n, hidden);
    let p_corrupted = probabilities(model, w, &finals, target)?;
    Ok(Runs {
        layers,
        hidden,
        positions,
        first,
        samples,
        target,
        clean_out: clean.0,
        clean_attention: clean.1,
        clean_mlp: clean.2,
        p_clean,
        noisy,
        out,
        kv,
        p_corrupted,
    })
}
