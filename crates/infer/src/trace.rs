//! Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", §2.1):
//! the subject's token embeddings are corrupted with Gaussian noise, then each (layer, token)
//! state of the clean run is restored in the corrupted run, and the probability of the target
//! token is recorded. Where restoring one state brings the answer back, that state carries it.
//!
//! As in the paper's code, three kinds of state are restored: a layer's output (the residual
//! stream), and the MLP or attention outputs of a window of layers around a layer; every cell
//! uses the same seeded noise samples.
//!
//! Where this differs from the reference implementation (which reruns the whole prompt for
//! every cell): a restoration at (layer `l`, token `t`) changes nothing below `l` nor before
//! `t`, so a cell runs only the layers from its first restored one, only on the positions from
//! `t` on, after the corrupted run's keys and values of the earlier positions; and the
//! positions before the subject, which no noise reaches, are computed once, for the clean and
//! every corrupted run. The probabilities are the same; the work per cell falls with the
//! layers and tokens it can skip. A cell whose final state is exactly the clean or the
//! corrupted one takes that run's probability, so a restoration that changes nothing gives
//! the corrupted probability exactly and restoring the last token of the last layer gives the
//! clean one exactly.

use crate::llama::{causal_mask, Llama, Part, Replace, EMBED};
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, Normal};
use std::sync::atomic::{AtomicBool, Ordering};
use tensor_surgeon_wire::{CausalTrace, TokenRef, TraceKind, TraceRequest};

/// Most corrupted runs a trace may average.
pub const MAX_SAMPLES: u32 = 100;
/// The noise is this many standard deviations of the embedding's elements unless given.
pub const NOISE_STDS: f64 = 3.0;

/// What a running trace reports.
pub enum TraceEvent<'a> {
    /// The clean and corrupted runs are done: the trace's tokens, target and end points.
    Started(&'a CausalTrace),
    /// One layer's row of one kind: p(target) for each token; `done` of `total` rows.
    Row {
        kind: TraceKind,
        layer: usize,
        p: &'a [f64],
        done: u64,
        total: u64,
    },
}

/// The clean run and the corrupted ones, kept for the cells to start from.
struct Runs {
    layers: usize,
    hidden: usize,
    /// Prompt positions.
    positions: usize,
    /// The first corrupted position (the subject's first token).
    first: usize,
    samples: usize,
    target: u32,
    /// Per layer, `[positions, hidden]`: the clean run's output, attention and MLP outputs.
    clean_out: Vec<Vec<f32>>,
    clean_attention: Vec<Vec<f32>>,
    clean_mlp: Vec<Vec<f32>>,
    p_clean: f64,
    /// Per sample, `[positions, hidden]`: the corrupted embeddings.
    noisy: Vec<Vec<f32>>,
    /// Per layer, per sample: the corrupted run's output `[positions, hidden]` and its keys
    /// and values (`[positions, kv_heads, head_width]` each).
    out: Vec<Vec<Vec<f32>>>,
    kv: Vec<Vec<(Vec<f32>, Vec<f32>)>>,
    /// Per sample: p(target) of the corrupted run.
    p_corrupted: Vec<f64>,
}

impl Runs {
    fn row<'a>(&self, m: &'a [f32], position: usize) -> &'a [f32] {
        &m[position * self.hidden..(position + 1) * self.hidden]
    }

    /// The final state of the clean run at the last position.
    fn clean_final(&self) -> &[f32] {
        self.row(&self.clean_out[self.layers - 1], self.positions - 1)
    }

    fn corrupted_final(&self, sample: usize) -> &[f32] {
        self.row(&self.out[self.layers - 1][sample], self.positions - 1)
    }
}

impl RunnableModel {
    /// Traces where the model keeps its answer about `req.subject` in `req.prompt`. `stop`
    /// ends the trace after the row under way (the rows so far are kept, `stopped` set);
    /// `on` hears of the start and of every finished row.
    pub fn trace(
        &self,
        w: &Weights,
        req: &TraceRequest,
        stop: &AtomicBool,
        on: &mut dyn FnMut(TraceEvent<'_>),
    ) -> Result<CausalTrace> {
        self.trace_with(w, req, stop, on, cell)
    }

    /// [`RunnableModel::trace`] the reference implementation's way: the whole corrupted
    /// prompt rerun through every layer for each cell. The same probabilities, at the cost the
    /// fast trace saves; for benchmarks.
    pub fn trace_by_rerun(
        &self,
        w: &Weights,
        req: &TraceRequest,
        stop: &AtomicBool,
        on: &mut dyn FnMut(TraceEvent<'_>),
    ) -> Result<CausalTrace> {
        self.trace_with(w, req, stop, on, rerun_cell)
    }

    fn trace_with(
        &self,
        w: &Weights,
        req: &TraceRequest,
        stop: &AtomicBool,
        on: &mut dyn FnMut(TraceEvent<'_>),
        cell: CellFn,
    ) -> Result<CausalTrace> {
        let model = self.llama()?;
        let layers = model.config.num_hidden_layers;
        check(req)?;
        let spans = self.encode_spans(&req.prompt)?;
        let ids: Vec<u32> = spans.iter().map(|(id, _)| *id).collect();
        let subject = subject_tokens(&req.prompt, &req.subject, &spans)?;
        let target = match &req.target {
            Some(t) => Some(self.resolve(t)?),
            None => None,
        };
        let noise = match req.noise {
            Some(n) => n,
            None => NOISE_STDS * embedding_std(&model, w)?,
        };
        let runs = runs(&model, w, &ids, subject, target, noise, req)?;
        let mut trace = CausalTrace {
            tokens: self.token_refs(&ids),
            subject: [subject.0 as u32, subject.1 as u32],
            target: TokenRef {
                id: runs.target,
                token: self.token_text(runs.target),
            },
            clean: runs.p_clean,
            corrupted: mean(&runs.p_corrupted),
            noise,
            samples: req.samples,
            window: req.window,
            layers: layers as u32,
            residual: None,
            mlp: None,
            attention: None,
            stopped: false,
        };
        on(TraceEvent::Started(&trace));
        let kinds: Vec<TraceKind> = TraceKind::ALL
            .into_iter()
            .filter(|k| req.kinds.contains(k))
            .collect();
        let total = (kinds.len() * layers) as u64;
        let mut done = 0;
        for kind in kinds {
            let mut map = Vec::with_capacity(layers);
            for layer in 0..layers {
                if stop.load(Ordering::Relaxed) {
                    trace.stopped = true;
                    break;
                }
                let row = (0..runs.positions)
                    .map(|t| cell(&model, w, &runs, kind, layer, t, req.window as usize))
                    .collect::<Result<Vec<f64>>>()?;
                done += 1;
                on(TraceEvent::Row {
                    kind,
                    layer,
                    p: &row,
                    done,
                    total,
                });
                map.push(row);
            }
            match kind {
                TraceKind::Residual => trace.residual = Some(map),
                TraceKind::Mlp => trace.mlp = Some(map),
                TraceKind::Attention => trace.attention = Some(map),
            }
            if trace.stopped {
                break;
            }
        }
        Ok(trace)
    }
}

/// Refuses requests out of range before any work.
fn check(req: &TraceRequest) -> Result<()> {
    let bad = |what: String| Err(InferError::Request(what));
    if req.subject.trim().is_empty() {
        return bad("name the subject: text that occurs in the prompt".into());
    }
    if !(1..=MAX_SAMPLES).contains(&req.samples) {
        return bad(format!(
            "samples must be 1 to {MAX_SAMPLES} (asked {})",
            req.samples
        ));
    }
    if req.window == 0 {
        return bad("the window must cover at least one layer".into());
    }
    if let Some(n) = req.noise {
        if !(n.is_finite() && n > 0.0) {
            return bad(format!("the noise must be a positive number (asked {n})"));
        }
    }
    if req.kinds.is_empty() {
        return bad("say what to restore: residual, mlp or attention".into());
    }
    Ok(())
}

/// The tokens (`start..end`) that stand for the first occurrence of `subject` in `prompt`.
fn subject_tokens(
    prompt: &str,
    subject: &str,
    spans: &[(u32, std::ops::Range<usize>)],
) -> Result<(usize, usize)> {
    let Some(at) = prompt.find(subject) else {
        return Err(InferError::Request(format!(
            "the subject {subject:?} does not occur in the prompt {prompt:?}"
        )));
    };
    let text = at..at + subject.len();
    let covered: Vec<usize> = spans
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| !r.is_empty() && r.start < text.end && r.end > text.start)
        .map(|(i, _)| i)
        .collect();
    match (covered.first(), covered.last()) {
        (Some(&a), Some(&b)) => Ok((a, b + 1)),
        _ => Err(InferError::Request(format!(
            "the subject {subject:?} has no tokens of its own in the prompt"
        ))),
    }
}

/// The standard deviation of the embedding matrix's elements.
fn embedding_std(model: &Llama, w: &Weights) -> Result<f64> {
    let c = &model.config;
    let (mut sum, mut squares, mut n) = (0f64, 0f64, 0f64);
    let mut add = |row: &[f32]| {
        for &v in row {
            let v = v as f64;
            sum += v;
            squares += v * v;
        }
        n += row.len() as f64;
    };
    match w.stored(EMBED, c.vocab_size, c.hidden_size) {
        Some(e) => (0..c.vocab_size).for_each(|r| add(&e.row(r, c.hidden_size))),
        None => add(&w.get(EMBED)?.flatten_all()?.to_vec1::<f32>()?),
    }
    let mean = sum / n;
    Ok((squares / n - mean * mean).max(0.0).sqrt())
}

/// The mean, exact when every value is the same (a cell that is the clean run in every sample
/// reports the clean p, not a rounding of it).
fn mean(p: &[f64]) -> f64 {
    let first = p[0];
    first + p.iter().map(|v| v - first).sum::<f64>() / p.len() as f64
}

/// Runs `x` (`[sequences * n, hidden]`, `n` positions each after `past`) through layers
/// `from..`, with `kv` (per layer, per sequence) extended as it goes; `replace` gives the
/// restorations of each layer. Returns the last layer's output.
#[allow(clippy::too_many_arguments)]
fn run_layers<'r>(
    model: &Llama,
    w: &Weights,
    mut x: Tensor,
    n: usize,
    past: usize,
    from: usize,
    kv: &mut [Vec<(Vec<f32>, Vec<f32>)>],
    replace: &dyn Fn(usize) -> Vec<Replace<'r>>,
    record: &mut dyn FnMut(usize, &crate::llama::Block) -> Result<()>,
) -> Result<Tensor> {
    let rope = model.rope_tables(past, n)?;
    let mask = causal_mask(n, past)?;
    for (layer, kv) in kv.iter_mut().enumerate().skip(from) {
        let out = model.block(
            w,
            layer,
            &x,
            kv,
            past,
            &rope,
            mask.as_ref(),
            &replace(layer),
        )?;
        record(layer, &out)?;
        x = out.x;
    }
    Ok(x)
}

/// The last of every sequence's `n` rows (`[sequences * n, hidden]` in, `[sequences, hidden]`
/// out): the states the next token is read from.
fn last_rows(rows: &[f32], n: usize, hidden: usize) -> Vec<f32> {
    rows.chunks(n * hidden)
        .flat_map(|seq| seq[(n - 1) * hidden..].iter().copied())
        .collect()
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// p(target) for each of `rows` final states (`[n, hidden]`).
fn probabilities(model: &Llama, w: &Weights, rows: &[f32], target: u32) -> Result<Vec<f64>> {
    let hidden = model.config.hidden_size;
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
fn runs(
    model: &Llama,
    w: &Weights,
    ids: &[u32],
    (first, end): (usize, usize),
    target: Option<u32>,
    noise: f64,
    req: &TraceRequest,
) -> Result<Runs> {
    let c = &model.config;
    let (layers, hidden, positions) = (c.num_hidden_layers, c.hidden_size, ids.len());
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
        positions,
        0,
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
    let kv_heads_width = c.kv_heads() * c.head_width();
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
        n,
        first,
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

/// How a cell is computed: p(target), averaged over the samples, with the state `kind` at
/// (`layer`, token `t`) restored.
type CellFn = fn(&Llama, &Weights, &Runs, TraceKind, usize, usize, usize) -> Result<f64>;

/// The layers a window of `window` layers around `layer` covers (ROME's range).
fn window_of(layer: usize, window: usize, layers: usize) -> std::ops::Range<usize> {
    layer.saturating_sub(window / 2)..(layer + window.div_ceil(2)).min(layers)
}

/// A cell computed the reference's way: every sample's whole corrupted prompt through every
/// layer, the restoration put in on the way.
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
fn cell(
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

#[cfg(test)]
mod tests {
    //! The trace on the tiny demo Llama: its exact invariants, and every cell against a
    //! reference that reruns the whole corrupted prompt with the restoration (the paper's
    //! way), for every kind.

    use super::*;
    use crate::distribution::Distribution;
    use crate::tests::{runnable as runner, tiny_llama};
    use crate::Edited;

    const PROMPT: &str = "the cat sat on the";

    fn request(kinds: Vec<TraceKind>) -> TraceRequest {
        TraceRequest {
            samples: 3,
            window: 2,
            seed: 5,
            kinds,
            ..TraceRequest::new(PROMPT, "cat")
        }
    }

    fn traced(req: &TraceRequest) -> (RunnableModel, CausalTrace, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_llama(dir.path(), None);
        let r = runner(&model);
        let w = r.weights(&model, Edited::default());
        let t = r
            .trace(&w, req, &AtomicBool::new(false), &mut |_| {})
            .unwrap();
        drop(w);
        (r, t, dir)
    }

    #[test]
    fn a_trace_keeps_its_exact_invariants() {
        let (_, t, _dir) = traced(&request(TraceKind::ALL.to_vec()));
        let (layers, tokens) = (t.layers as usize, t.tokens.len());
        let [s0, s1] = t.subject;
        assert!(
            s0 >= 1 && s1 > s0 && (s1 as usize) < tokens,
            "{:?}",
            t.subject
        );
        assert!(t.clean != t.corrupted, "the noise changes the answer");
        let residual = t.residual.as_ref().unwrap();
        // Restoring the last token's final state is the clean run.
        assert_eq!(residual[layers - 1][tokens - 1], t.clean);
        // The last layer's other tokens reach nothing that is read.
        for p in &residual[layers - 1][..tokens - 1] {
            assert_eq!(*p, t.corrupted);
        }
        // Tokens before the subject are never corrupted: restoring them changes nothing.
        for kind in TraceKind::ALL {
            let map = t.map(kind).unwrap();
            assert_eq!(map.len(), layers);
            for row in map {
                assert_eq!(row.len(), tokens);
                for p in &row[..s0 as usize] {
                    assert_eq!(*p, t.corrupted, "{kind:?}");
                }
            }
        }
    }

    /// p(target) with the restoration done the reference's way: the whole corrupted prompt
    /// rerun through every layer for each sample.
    fn rerun(
        r: &RunnableModel,
        w: &Weights,
        t: &CausalTrace,
        kind: TraceKind,
        layer: usize,
        token: usize,
    ) -> f64 {
        let model = r.llama().unwrap();
        let c = &model.config;
        let (hidden, n) = (c.hidden_size, t.tokens.len());
        let ids: Vec<u32> = t.tokens.iter().map(|t| t.id).collect();
        let [s0, s1] = t.subject.map(|v| v as usize);
        let rope = model.rope_tables(0, n).unwrap();
        let mask = causal_mask(n, 0).unwrap();
        let x0 = model.embed_rows(w, &ids).unwrap();
        let run = |x: Tensor,
                   after: &mut dyn FnMut(usize, Tensor) -> Tensor,
                   replace: &dyn Fn(usize) -> Option<(Part, Vec<f32>)>| {
            let mut x = x;
            let mut parts = Vec::new();
            for l in 0..c.num_hidden_layers {
                let mut kv = vec![(Vec::new(), Vec::new())];
                let value = replace(l);
                let rep: Vec<Replace<'_>> = value
                    .iter()
                    .map(|(part, v)| Replace {
                        part: *part,
                        position: token,
                        value: v,
                    })
                    .collect();
                let b = model
                    .block(w, l, &x, &mut kv, 0, &rope, mask.as_ref(), &rep)
                    .unwrap();
                parts.push((
                    values(&b.x).unwrap(),
                    values(&b.attention).unwrap(),
                    values(&b.mlp).unwrap(),
                ));
                x = after(l, b.x);
            }
            (values(&x).unwrap(), parts)
        };
        let (_, clean) = run(x0.clone(), &mut |_, x| x, &|_| None);
        let normal = Normal::new(0.0, t.noise).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut sum = 0.0;
        for _ in 0..t.samples {
            let mut x = values(&x0).unwrap();
            for v in &mut x[s0 * hidden..s1 * hidden] {
                *v += normal.sample(&mut rng) as f32;
            }
            let x = Tensor::from_vec(x, (n, hidden), &Device::Cpu).unwrap();
            let row = |m: &[f32]| m[token * hidden..(token + 1) * hidden].to_vec();
            let (lo, hi) = (
                layer.saturating_sub(t.window as usize / 2),
                layer + (t.window as usize).div_ceil(2),
            );
            let (out, _) = run(
                x,
                &mut |l, x| {
                    if kind != TraceKind::Residual || l != layer {
                        return x;
                    }
                    let mut v = values(&x).unwrap();
                    v[token * hidden..(token + 1) * hidden].copy_from_slice(&row(&clean[l].0));
                    Tensor::from_vec(v, (n, hidden), &Device::Cpu).unwrap()
                },
                &|l| match kind {
                    _ if l < lo || l >= hi => None,
                    TraceKind::Mlp => Some((Part::Mlp, row(&clean[l].2))),
                    TraceKind::Attention => Some((Part::Attention, row(&clean[l].1))),
                    TraceKind::Residual => None,
                },
            );
            let last = &out[(n - 1) * hidden..];
            let logits = model
                .logits(
                    w,
                    &Tensor::from_slice(last, (1, hidden), &Device::Cpu).unwrap(),
                )
                .unwrap();
            let d = Distribution::from_logits(values(&logits).unwrap());
            sum += d.prob(t.target.id);
        }
        sum / t.samples as f64
    }

    #[test]
    fn the_fast_trace_equals_rerunning_the_whole_prompt_for_every_cell() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_llama(dir.path(), None);
        let r = runner(&model);
        let w = r.weights(&model, Edited::default());
        let t = r
            .trace(
                &w,
                &request(TraceKind::ALL.to_vec()),
                &AtomicBool::new(false),
                &mut |_| {},
            )
            .unwrap();
        let mut moved = 0;
        for kind in TraceKind::ALL {
            for (layer, row) in t.map(kind).unwrap().iter().enumerate() {
                for (token, &p) in row.iter().enumerate() {
                    let reference = rerun(&r, &w, &t, kind, layer, token);
                    assert!(
                        (p - reference).abs() < 1e-5,
                        "{kind:?} layer {layer} token {token}: {p} vs {reference}"
                    );
                    moved += usize::from((p - t.corrupted).abs() > 1e-6);
                }
            }
        }
        assert!(moved > 0, "some restoration brings the answer back");
        let slow = r
            .trace_by_rerun(
                &w,
                &request(TraceKind::ALL.to_vec()),
                &AtomicBool::new(false),
                &mut |_| {},
            )
            .unwrap();
        for kind in TraceKind::ALL {
            for (fast, slow) in t.map(kind).unwrap().iter().zip(slow.map(kind).unwrap()) {
                for (a, b) in fast.iter().zip(slow) {
                    assert!((a - b).abs() < 1e-5, "{kind:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn a_stopped_trace_keeps_its_finished_rows_and_asked_kinds_only() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_llama(dir.path(), None);
        let r = runner(&model);
        let w = r.weights(&model, Edited::default());
        let stop = AtomicBool::new(false);
        let mut rows = 0;
        let t = r
            .trace(&w, &request(vec![TraceKind::Mlp]), &stop, &mut |e| {
                if let TraceEvent::Row { done, total, .. } = e {
                    rows += 1;
                    assert_eq!(total, 2);
                    assert_eq!(done, 1);
                    stop.store(true, Ordering::Relaxed);
                }
            })
            .unwrap();
        assert_eq!(rows, 1);
        assert!(t.stopped);
        assert_eq!(t.mlp.as_ref().map(Vec::len), Some(1));
        assert!(t.residual.is_none() && t.attention.is_none());
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_llama(dir.path(), None);
        let r = runner(&model);
        let w = r.weights(&model, Edited::default());
        let err = |req: TraceRequest| {
            r.trace(&w, &req, &AtomicBool::new(false), &mut |_| {})
                .unwrap_err()
                .to_string()
        };
        let msg = err(TraceRequest::new(PROMPT, "dog"));
        assert!(msg.contains("\"dog\" does not occur"), "{msg}");
        let msg = err(TraceRequest {
            samples: 0,
            ..TraceRequest::new(PROMPT, "cat")
        });
        assert!(msg.contains("samples must be 1 to"), "{msg}");
        let msg = err(TraceRequest {
            noise: Some(-1.0),
            ..TraceRequest::new(PROMPT, "cat")
        });
        assert!(msg.contains("positive"), "{msg}");
    }
}
