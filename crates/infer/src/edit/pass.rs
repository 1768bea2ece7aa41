//! The optimisation's forward pass: the later layers from the edited one's output, on the
//! positions the edit reaches, written in differentiable operations.

use super::graph;
use super::problem::Problem;
use crate::Result;
use candle_core::{Device, Tensor};

impl Problem {
    /// With `delta` added at every sequence's first row: the target's mean negative
    /// log-likelihood over the rewriting prompts, the KL prompt's log-probabilities, and the
    /// target's mean probability.
    pub(super) fn run(&self, delta: &Tensor) -> Result<(Tensor, Tensor, f64)> {
        let c = &self.model.config;
        let eps = c.rms_norm_eps;
        let (heads, kvh, hd) = (c.num_attention_heads, c.kv_heads(), c.head_width());
        let rows: Vec<Tensor> = self
            .seqs
            .iter()
            .map(|s| {
                let first = (s.x.get(0)? + delta)?.unsqueeze(0)?;
                let n = s.x.dim(0)?;
                if n == 1 {
                    Ok(first)
                } else {
                    Tensor::cat(&[&first, &s.x.narrow(0, 1, n - 1)?], 0)
                }
            })
            .collect::<candle_core::Result<_>>()?;
        let mut x = Tensor::cat(&rows, 0)?;
        let lens: Vec<usize> = self
            .seqs
            .iter()
            .map(|s| s.x.dim(0))
            .collect::<candle_core::Result<_>>()?;
        for (li, lw) in self.later.iter().enumerate() {
            let h = graph::rms_norm(&x, &lw.input_norm, eps)?;
            let mut qkv = [lw.q.apply(&h)?, lw.k.apply(&h)?, lw.v.apply(&h)?];
            for (m, b) in qkv.iter_mut().zip(&lw.biases) {
                if let Some(b) = b {
                    *m = m.broadcast_add(b)?;
                }
            }
            let [q_all, k_all, v_all] = qkv;
            let mut atts = Vec::with_capacity(self.seqs.len());
            let mut off = 0;
            for (s, &n) in self.seqs.iter().zip(&lens) {
                let split = |m: &Tensor, heads: usize| -> candle_core::Result<Tensor> {
                    m.narrow(0, off, n)?
                        .reshape((n, heads, hd))?
                        .transpose(0, 1)?
                        .contiguous()
                };
                let (cos, sin) = &s.rope;
                let q = graph::rope(&split(&q_all, heads)?, cos, sin)?;
                let k = graph::rope(&split(&k_all, kvh)?, cos, sin)?;
                let v = split(&v_all, kvh)?;
                let (pk, pv) = &s.past[li];
                let (k, v) = if s.at > 0 {
                    (Tensor::cat(&[pk, &k], 1)?, Tensor::cat(&[pv, &v], 1)?)
                } else {
                    (k, v)
                };
                let total = s.at + n;
                let rep = heads / kvh;
                let expand = |m: Tensor| -> candle_core::Result<Tensor> {
                    if rep == 1 {
                        return Ok(m);
                    }
                    m.unsqueeze(1)?
                        .expand((kvh, rep, total, hd))?
                        .reshape((heads, total, hd))
                };
                let (k, v) = (expand(k)?, expand(v)?);
                let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
                let scores = match &s.mask {
                    Some(m) => scores.broadcast_add(m)?,
                    None => scores,
                };
                let probs = graph::softmax(&scores)?;
                atts.push(
                    probs
                        .matmul(&v)?
                        .transpose(0, 1)?
                        .reshape((n, heads * hd))?,
                );
                off += n;
            }
            let att = Tensor::cat(&atts, 0)?;
            x = (x + lw.o.apply(&att)?)?;
            let h = graph::rms_norm(&x, &lw.post_norm, eps)?;
            let act = (lw.gate.apply(&h)?.silu()? * lw.up.apply(&h)?)?;
            x = (x + lw.down.apply(&act)?)?;
        }
        // The scored rows.
        let mut index = Vec::new();
        let mut off = 0;
        for (s, &n) in self.seqs.iter().zip(&lens) {
            index.extend(s.scored.iter().map(|&(r, _)| (off + r) as u32));
            off += n;
        }
        let picked = x.index_select(&Tensor::new(index.as_slice(), &Device::Cpu)?, 0)?;
        let h = graph::rms_norm(&picked, &self.final_norm, eps)?;
        let lp = graph::log_softmax(&self.unembed.apply(&h)?)?;
        let rewriting = self.seqs.len() - 1;
        let mut row = 0;
        let mut nll_terms = Vec::new();
        let mut p_sum = 0.0;
        for s in &self.seqs[..rewriting] {
            let mut seq_lp = Vec::new();
            for &(_, token) in &s.scored {
                seq_lp.push(lp.get(row)?.get(token as usize)?);
                row += 1;
            }
            let total = Tensor::stack(&seq_lp, 0)?.sum_all()?;
            p_sum += (total.to_scalar::<f32>()? as f64).exp();
            nll_terms.push((total.neg()? / self.target.len() as f64)?);
        }
        let nll = (Tensor::stack(&nll_terms, 0)?.sum_all()? / rewriting as f64)?;
        let kl_lp = lp.get(row)?;
        Ok((nll, kl_lp, p_sum / rewriting as f64))
    }
}
