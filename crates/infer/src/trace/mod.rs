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

/// Most corrupted runs a trace may average.
mod cell;
pub(crate) mod runs;
#[cfg(test)]
mod tests;

use crate::llama::Llama;
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};
use cell::{rerun_row, row, RowFn};
use runs::runs;
use std::sync::atomic::{AtomicBool, Ordering};
use tensor_surgeon_wire::{CausalTrace, TokenRef, TraceKind, TraceRequest};

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
        self.trace_with(w, req, stop, on, row)
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
        self.trace_with(w, req, stop, on, rerun_row)
    }

    fn trace_with(
        &self,
        w: &Weights,
        req: &TraceRequest,
        stop: &AtomicBool,
        on: &mut dyn FnMut(TraceEvent<'_>),
        row_of: RowFn,
    ) -> Result<CausalTrace> {
        let model = self.llama()?;
        let layers = model.arch.depth();
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
            mlp_tensors: model
                .arch
                .layers
                .iter()
                .map(|l| self.model_name(&l.down.weight))
                .collect(),
            attention_tensors: model
                .arch
                .layers
                .iter()
                .map(|l| self.model_name(&l.o.weight))
                .collect(),
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
                let row = candle_core::Device::Cpu
                    .with_context(|| row_of(&model, w, &runs, kind, layer, req.window as usize))?;
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
    subject_tokens_from(prompt, 0, subject, spans)
}

/// The tokens `[start, end)` of the first `subject` in `text` at or after byte `from`.
pub(crate) fn subject_tokens_from(
    text: &str,
    from: usize,
    subject: &str,
    spans: &[(u32, std::ops::Range<usize>)],
) -> Result<(usize, usize)> {
    let Some(at) = text
        .get(from..)
        .and_then(|t| t.find(subject))
        .map(|a| a + from)
    else {
        return Err(InferError::Request(format!(
            "the subject {subject:?} does not occur in the prompt {:?}",
            text.get(from..).unwrap_or(text)
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

/// The standard deviation of the embeddings as the first layer sees them (the matrix's
/// elements, times the model's embedding scale: Gemma's √hidden).
fn embedding_std(model: &Llama, w: &Weights) -> Result<f64> {
    let a = &model.arch;
    let (mut sum, mut squares, mut n) = (0f64, 0f64, 0f64);
    let mut add = |row: &[f32]| {
        for &v in row {
            let v = v as f64;
            sum += v;
            squares += v * v;
        }
        n += row.len() as f64;
    };
    match w.stored(&a.embedding, a.vocab, a.hidden) {
        Some(e) => (0..a.vocab).for_each(|r| add(&e.row(r, a.hidden))),
        None => add(&w.get(&a.embedding)?.flatten_all()?.to_vec1::<f32>()?),
    }
    let mean = sum / n;
    let scale = a.embedding_scale.map_or(1.0, f64::from);
    Ok((squares / n - mean * mean).max(0.0).sqrt() * scale)
}

/// The mean, exact when every value is the same (a cell that is the clean run in every sample
/// reports the clean p, not a rounding of it).
fn mean(p: &[f64]) -> f64 {
    let first = p[0];
    first + p.iter().map(|v| v - first).sum::<f64>() / p.len() as f64
}
