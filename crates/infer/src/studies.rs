//! What the model computes, for the panels that point at what to edit: the probe table
//! (efficacy and locality), one layer's activations with the logit lens, and sentence
//! embeddings of encoders.

use super::bert::Bert;
use super::config::Family;
use super::llama::{Capture, Captured, KvCache};
use super::weights::Weights;
use super::{Distribution, RunnableModel, MAX_TOP_K};
use crate::arch::GateUp;
use crate::error::{InferError, Result};
use candle_core::Tensor;
use tensor_surgeon_wire::{
    Activations, ActivationsRequest, EmbedOutcome, EmbedSide, LensLayer, Matrix, NeuronHit, Probe,
    ProbeKind, ProbeRow,
};

impl RunnableModel {
    /// The probe table: each probe's target probability on both sides and the KL between
    /// their next-token distributions. `progress(done, total)` after each probe.
    pub fn probe_table(
        &self,
        base: &Weights,
        edited: &Weights,
        probes: &[Probe],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<ProbeRow>> {
        let mut rows = Vec::with_capacity(probes.len());
        for (i, p) in probes.iter().enumerate() {
            let ids = self.encode(&p.prompt)?;
            let target = if p.target.is_empty() {
                if p.kind != ProbeKind::Unrelated {
                    return Err(InferError::Request(format!(
                        "probe {:?} has no target token (only unrelated probes may omit it)",
                        p.prompt
                    )));
                }
                None
            } else {
                Some(self.resolve(&p.target)?)
            };
            let b = self.distribution(base, &ids)?;
            let e = if edited.is_edited() {
                self.distribution(edited, &ids)?
            } else {
                Distribution {
                    log_probs: b.log_probs.clone(),
                    logits: b.logits.clone(),
                }
            };
            rows.push(ProbeRow {
                prompt: p.prompt.clone(),
                target: p.target.clone(),
                kind: p.kind,
                base_prob: target.map(|t| b.prob(t) as f32),
                edited_prob: target.map(|t| e.prob(t) as f32),
                kl: b.kl(&e) as f32,
                base_top: self.token_text(b.top(1)[0]),
                edited_top: self.token_text(e.top(1)[0]),
            });
            progress(i + 1, probes.len());
        }
        Ok(rows)
    }

    /// What one layer computes for a prompt, and the logit lens of every layer.
    pub fn activations(&self, w: &Weights, req: &ActivationsRequest) -> Result<Activations> {
        let model = self.llama()?;
        let layers = model.arch.depth();
        if req.layer as usize >= layers {
            return Err(InferError::Request(format!(
                "layer {} is out of range: the model has layers 0..{}",
                req.layer,
                layers - 1
            )));
        }
        let ids = self.encode(&req.prompt)?;
        let capture = Capture {
            layer: Some(req.layer as usize),
            residuals: true,
        };
        let mut captured = Captured::default();
        model.forward(w, &ids, &mut KvCache::default(), capture, &mut captured)?;
        let (Some(mlp), Some(attention)) = (captured.mlp, captured.attention) else {
            return Err(InferError::Internal("the layer was not captured"));
        };
        let mlp = matrix(&mlp)?;
        let attention = matrix(&attention)?;
        let top = (req.top.clamp(1, MAX_TOP_K)) as usize;
        let last = &mlp.values[(mlp.rows as usize - 1) * mlp.cols as usize..];
        let mut neurons: Vec<u32> = (0..mlp.cols).collect();
        neurons.sort_by(|a, b| {
            last[*b as usize]
                .abs()
                .total_cmp(&last[*a as usize].abs())
                .then(a.cmp(b))
        });
        let top_neurons = neurons
            .iter()
            .take(top)
            .map(|&n| NeuronHit {
                neuron: n,
                value: last[n as usize],
            })
            .collect();
        let stacked = Tensor::stack(&captured.residuals, 0)?;
        let lens = model.logits(w, &stacked)?.to_vec2::<f32>()?;
        let lens_k = top.min(10);
        let logit_lens = lens
            .into_iter()
            .enumerate()
            .map(|(layer, logits)| {
                let d = Distribution::from_logits(logits);
                LensLayer {
                    layer: layer as u32,
                    top: d
                        .top(lens_k)
                        .into_iter()
                        .map(|id| self.token_prob(&d, id))
                        .collect(),
                }
            })
            .collect();
        // The model's own names (a GGUF's `blk.N.ffn_down.weight`): the app opens them. A
        // fused gate and up matrix (Phi-3) is named for both.
        let spec = &model.arch.layers[req.layer as usize];
        let (gate, up) = match &spec.gate_up {
            GateUp::Split { gate, up } => (&gate.weight, &up.weight),
            GateUp::Fused(m) => (&m.weight, &m.weight),
        };
        Ok(Activations {
            layer: req.layer,
            tokens: self.token_refs(&ids),
            mlp,
            attention,
            top_neurons,
            logit_lens,
            down_proj: self.model_name(&spec.down.weight),
            up_proj: self.model_name(up),
            gate_proj: self.model_name(gate),
            unembedding: self.model_name(model.unembedding_name()),
        })
    }

    /// Sentence embeddings of an encoder on the base and (when edited) the edited weights.
    pub fn embed(
        &self,
        base: &Weights,
        edited: Option<&Weights>,
        sentences: &[String],
    ) -> Result<EmbedOutcome> {
        let Family::Bert(c) = &self.family else {
            return Err(InferError::Request(
                "this is a causal language model: run a prompt instead of embedding sentences"
                    .into(),
            ));
        };
        if sentences.is_empty() {
            return Err(InferError::Request("give at least one sentence".into()));
        }
        let model = Bert { config: c.clone() };
        let ids: Vec<Vec<u32>> = sentences
            .iter()
            .map(|s| self.encode(s))
            .collect::<Result<_>>()?;
        let side = |w: &Weights| -> Result<EmbedSide> {
            let embeddings: Vec<Vec<f32>> = ids
                .iter()
                .map(|i| Ok(model.embed(w, i)?.to_vec1::<f32>()?))
                .collect::<Result<_>>()?;
            let similarity = embeddings
                .iter()
                .map(|a| embeddings.iter().map(|b| dot(a, b)).collect())
                .collect();
            Ok(EmbedSide {
                embeddings,
                similarity,
            })
        };
        Ok(EmbedOutcome {
            family: self.family.name().to_string(),
            base: side(base)?,
            edited: match edited.filter(|w| w.is_edited()) {
                Some(w) => Some(side(w)?),
                None => None,
            },
        })
    }
}

fn matrix(t: &Tensor) -> Result<Matrix> {
    let (rows, cols) = t.dims2()?;
    Ok(Matrix {
        rows: rows as u32,
        cols: cols as u32,
        values: t.flatten_all()?.to_vec1::<f32>()?,
    })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
