//! The forward pass of BERT encoders (MiniLM and friends) on candle ops: word + position +
//! token-type embeddings, post-LayerNorm encoder layers with GELU, then the sentence embedding
//! as sentence-transformers makes it: the mean over tokens, L2-normalised.

use super::config::BertConfig;
use super::weights::Weights;
use crate::error::{InferError, Result};
use candle_core::{Device, Tensor, D};

pub struct Bert {
    pub config: BertConfig,
}

impl Bert {
    /// Tensor names carry a `bert.` prefix in some checkpoints, none in others.
    fn prefix(w: &Weights) -> &'static str {
        if w.has("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        }
    }

    /// The unit-norm sentence embedding of one tokenised sentence ([hidden]).
    pub fn embed(&self, w: &Weights, ids: &[u32]) -> Result<Tensor> {
        let c = &self.config;
        let t = ids.len();
        if t == 0 {
            return Err(InferError::Request(
                "an empty sentence has no embedding".into(),
            ));
        }
        if t > c.max_position_embeddings {
            return Err(InferError::Request(format!(
                "the sentence has {t} tokens; the model reads at most {}",
                c.max_position_embeddings
            )));
        }
        let p = Self::prefix(w);
        let dev = Device::Cpu;
        let get = |n: &str| w.get(&format!("{p}{n}"));
        let ids_t = Tensor::from_vec(ids.to_vec(), t, &dev)?;
        let words = get("embeddings.word_embeddings.weight")?.index_select(&ids_t, 0)?;
        let positions = get("embeddings.position_embeddings.weight")?.narrow(0, 0, t)?;
        let types = get("embeddings.token_type_embeddings.weight")?.get(0)?;
        let x = (words + positions)?.broadcast_add(&types)?;
        let mut x = self.norm(w, &x, &format!("{p}embeddings.LayerNorm"))?;
        let (heads, hidden) = (c.num_attention_heads, c.hidden_size);
        let hd = hidden / heads.max(1);
        for l in 0..c.num_hidden_layers {
            let at = |part: &str| format!("{p}encoder.layer.{l}.{part}");
            let split = |m: Tensor| m.reshape((t, heads, hd))?.transpose(0, 1)?.contiguous();
            let q = split(self.dense(w, &x, &at("attention.self.query"))?)?;
            let k = split(self.dense(w, &x, &at("attention.self.key"))?)?;
            let v = split(self.dense(w, &x, &at("attention.self.value"))?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(0, 1)?.reshape((t, hidden))?;
            let a = self.dense(w, &ctx, &at("attention.output.dense"))?;
            x = self.norm(w, &(a + &x)?, &at("attention.output.LayerNorm"))?;
            let i = self.dense(w, &x, &at("intermediate.dense"))?;
            let i = match c.hidden_act.as_deref() {
                None | Some("gelu") => i.gelu_erf()?,
                Some("gelu_new") | Some("gelu_pytorch_tanh") => i.gelu()?,
                Some("relu") => i.relu()?,
                Some(other) => {
                    let supported = "gelu, gelu_new, relu";
                    return Err(InferError::Unsupported(format!(
                        "cannot run this model: activation {other:?} (supported: {supported})"
                    )));
                }
            };
            let o = self.dense(w, &i, &at("output.dense"))?;
            x = self.norm(w, &(o + &x)?, &at("output.LayerNorm"))?;
        }
        let mean = x.mean(0)?;
        let norm = mean.sqr()?.sum_all()?.sqrt()?;
        Ok(mean.broadcast_div(&norm)?)
    }

    fn dense(&self, w: &Weights, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let weight = w.get(&format!("{prefix}.weight"))?;
        let bias = w.get(&format!("{prefix}.bias"))?;
        if weight.dim(1)? != x.dim(D::Minus1)? {
            return Err(InferError::Unsupported(format!(
                "cannot run this model: {prefix}.weight has shape {:?}, its input is {} wide",
                weight.dims(),
                x.dim(D::Minus1)?
            )));
        }
        Ok(x.matmul(&weight.t()?)?.broadcast_add(&bias)?)
    }

    fn norm(&self, w: &Weights, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let alpha = w.get(&format!("{prefix}.weight"))?;
        let beta = w.get(&format!("{prefix}.bias"))?;
        Ok(candle_nn::ops::layer_norm(
            x,
            &alpha,
            &beta,
            self.config.layer_norm_eps as f32,
        )?)
    }
}
