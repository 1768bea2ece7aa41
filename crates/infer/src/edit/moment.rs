//! The second moment `C = E[k kᵀ]` of a layer's `down_proj` inputs over text, which ROME's
//! update divides by: `ΔW = (v* - W k*) (C⁻¹ k*)ᵀ / ((C⁻¹ k*)ᵀ k*)`. An update aimed along
//! `C⁻¹ k*` changes the output at `k*` while moving the outputs at typical keys least.
//!
//! ROME estimates `C` from 100,000 Wikipedia samples. Here it comes from a short text that
//! ships with the project (`corpus/keys.txt`, about 2,000 tokens of plain prose on everyday
//! topics, written for it), a little more than `d_k` tokens on SmolLM2: FastMEMIT reports
//! that a few times `d_k` already gives most of the benefit. So few samples leave small
//! eigenvalues poorly estimated, so the solve adds a ridge of `RIDGE` x the mean eigenvalue
//! (`C + λI`).

use super::problem::unedited_act;
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};
use candle_core::{Device, Tensor};

/// The text the moment is estimated from.
pub const CORPUS: &str = include_str!("../../corpus/keys.txt");

/// The ridge added to `C`, as a fraction of its mean eigenvalue (`tr C / d`).
pub const RIDGE: f64 = 0.05;

/// A layer's key moment: `[d, d]` row-major, and the number of tokens it averages.
pub struct KeyMoment {
    pub d: usize,
    pub c: Vec<f64>,
    pub tokens: usize,
}

impl RunnableModel {
    /// The second moment of `layer`'s `down_proj` inputs over [`CORPUS`], one paragraph a
    /// sequence.
    pub fn key_moment(&self, w: &Weights, layer: usize) -> Result<KeyMoment> {
        let model = self.llama()?;
        let d = model.config.intermediate_size;
        let mut sum = Tensor::zeros((d, d), candle_core::DType::F32, &Device::Cpu)?;
        let mut tokens = 0;
        for paragraph in CORPUS
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let ids = self.encode(paragraph)?;
            let act = unedited_act(&model, w, &ids, layer)?; // [t, d]
            sum = (sum + act.t()?.matmul(&act)?)?;
            tokens += ids.len();
        }
        let c = (sum / tokens as f64)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        Ok(KeyMoment { d, c, tokens })
    }
}

impl KeyMoment {
    /// `(C + λI)⁻¹ k` by Cholesky, `λ` = [`RIDGE`] x `tr C / d`.
    pub fn solve(&self, k: &[f32]) -> Result<Vec<f64>> {
        let d = self.d;
        let trace: f64 = (0..d).map(|i| self.c[i * d + i]).sum();
        let ridge = RIDGE * trace / d as f64;
        let mut l = self.c.clone();
        for i in 0..d {
            l[i * d + i] += ridge;
        }
        // In place: the lower triangle becomes L with C + λI = L Lᵀ.
        for j in 0..d {
            let mut diag = l[j * d + j];
            for k in 0..j {
                diag -= l[j * d + k] * l[j * d + k];
            }
            if diag <= 0.0 {
                return Err(InferError::Internal(
                    "the key moment is not positive definite",
                ));
            }
            let diag = diag.sqrt();
            l[j * d + j] = diag;
            for i in j + 1..d {
                let mut s = l[i * d + j];
                for k in 0..j {
                    s -= l[i * d + k] * l[j * d + k];
                }
                l[i * d + j] = s / diag;
            }
        }
        // L y = k, then Lᵀ x = y.
        let mut y: Vec<f64> = k.iter().map(|&v| v as f64).collect();
        for i in 0..d {
            let s: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
            y[i] = (y[i] - s) / l[i * d + i];
        }
        for i in (0..d).rev() {
            let s: f64 = (i + 1..d).map(|k| l[k * d + i] * y[k]).sum();
            y[i] = (y[i] - s) / l[i * d + i];
        }
        Ok(y)
    }
}
