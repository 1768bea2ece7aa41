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
//!
//! A runner keeps each layer's moment, factored, while the weights that make that layer's keys
//! (the embedding and every layer below it, and the layer itself but its `down_proj`) are the
//! base's: edits of the `down_proj`s themselves, the usual fact edits, leave it valid.

use super::problem::unedited_act;
use crate::arch::Architecture;
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The text the moment is estimated from.
pub const CORPUS: &str = include_str!("../../corpus/keys.txt");

/// The ridge added to `C`, as a fraction of its mean eigenvalue (`tr C / d`).
pub const RIDGE: f64 = 0.05;

/// A layer's key moment, factored for solves: `C + λI = L Lᵀ`, and the number of tokens it
/// averages.
pub struct KeyMoment {
    pub d: usize,
    /// `L`, row-major `[d, d]` (the lower triangle).
    l: Vec<f64>,
    pub tokens: usize,
}

/// Key moments by layer, for the base's keys.
#[derive(Default)]
pub struct Moments(Mutex<HashMap<usize, Arc<KeyMoment>>>);

impl RunnableModel {
    /// `layer`'s key moment for the weights `w`: kept from an earlier edit when the edits of
    /// `w` leave that layer's keys as the base makes them.
    pub fn key_moment(&self, w: &Weights, layer: usize) -> Result<Arc<KeyMoment>> {
        let keeps = !w.edited_names().any(|name| self.changes_keys(name, layer));
        let held = self.moments.0.lock().unwrap_or_else(|p| p.into_inner());
        if let (true, Some(m)) = (keeps, held.get(&layer)) {
            return Ok(m.clone());
        }
        drop(held);
        let m = Arc::new(self.measure_moment(w, layer)?);
        if keeps {
            let mut held = self.moments.0.lock().unwrap_or_else(|p| p.into_inner());
            held.insert(layer, m.clone());
        }
        Ok(m)
    }

    /// Whether an edit of the tensor the model names `name` changes `layer`'s keys: the
    /// embedding and the layers below do, the layer's own tensors but its `down_proj` do,
    /// later layers and the final norm and unembedding do not.
    fn changes_keys(&self, name: &str, layer: usize) -> bool {
        if self
            .down_proj(layer)
            .is_ok_and(|d| name == self.stored_name(&d))
        {
            return false;
        }
        let Some(a) = self.architecture() else {
            return true;
        };
        if name == self.stored_name(&a.embedding) {
            return true;
        }
        match Architecture::layer_of(name) {
            Some(i) => i <= layer,
            None => ![
                self.stored_name(&a.final_norm),
                self.stored_name(&a.unembedding),
            ]
            .contains(&name),
        }
    }

    /// The second moment of `layer`'s `down_proj` inputs over [`CORPUS`], one paragraph a
    /// sequence (all in one batch), factored.
    fn measure_moment(&self, w: &Weights, layer: usize) -> Result<KeyMoment> {
        let model = self.llama()?;
        let d = model.arch.intermediate;
        let paragraphs: Vec<Vec<u32>> = CORPUS
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| self.encode(p))
            .collect::<Result<_>>()?;
        let texts: Vec<&[u32]> = paragraphs.iter().map(Vec::as_slice).collect();
        let act = unedited_act(&model, w, &texts, layer)?; // [tokens, d]
        let tokens = act.dim(0)?;
        let sum = act.t()?.matmul(&act)?;
        let c = (sum / tokens as f64)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(KeyMoment {
            d,
            l: factor(&c, d)?,
            tokens,
        })
    }
}

/// The Cholesky factor `L` of `C + λI`, `λ` = [`RIDGE`] x `tr C / d` (`c` is `[d, d]`): made
/// once per layer and kept, so its `d³/3` operations are paid once.
fn factor(c: &[f32], d: usize) -> Result<Vec<f64>> {
    let trace: f64 = (0..d).map(|i| c[i * d + i] as f64).sum();
    let ridge = RIDGE * trace / d as f64;
    let mut l: Vec<f64> = c.iter().map(|&v| v as f64).collect();
    for i in 0..d {
        l[i * d + i] += ridge;
    }
    // In place, row by row: the lower triangle becomes L with C + λI = L Lᵀ (each entry a dot
    // product of two rows' first `j` entries, contiguous in memory).
    for j in 0..d {
        let row_j = &mut l[j * d..(j + 1) * d];
        let diag = row_j[j] - row_j[..j].iter().map(|v| v * v).sum::<f64>();
        if diag <= 0.0 {
            return Err(InferError::Internal(
                "the key moment is not positive definite",
            ));
        }
        let diag = diag.sqrt();
        row_j[j] = diag;
        for i in j + 1..d {
            let (upper, lower) = l.split_at_mut(i * d);
            let row_j = &upper[j * d..j * d + j];
            let row_i = &mut lower[..d];
            let s: f64 = row_i[..j].iter().zip(row_j).map(|(a, b)| a * b).sum();
            row_i[j] = (row_i[j] - s) / diag;
        }
    }
    Ok(l)
}

impl KeyMoment {
    /// `(C + λI)⁻¹ k`: `L y = k`, then `Lᵀ x = y`.
    pub fn solve(&self, k: &[f32]) -> Result<Vec<f64>> {
        let (d, l) = (self.d, &self.l);
        if k.len() != d {
            return Err(InferError::Internal("a key of the wrong width"));
        }
        let mut y: Vec<f64> = k.iter().map(|&v| v as f64).collect();
        for i in 0..d {
            let s: f64 = (0..i).map(|j| l[i * d + j] * y[j]).sum();
            y[i] = (y[i] - s) / l[i * d + i];
        }
        for i in (0..d).rev() {
            let s: f64 = (i + 1..d).map(|j| l[j * d + i] * y[j]).sum();
            y[i] = (y[i] - s) / l[i * d + i];
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{runnable, tiny_llama};
    use crate::Edited;
    use tensor_surgeon_core::overlay::Overlay;

    #[test]
    fn the_solve_inverts_the_ridged_moment() {
        let d = 3;
        let c = [4.0f32, 1.0, 0.0, 1.0, 3.0, 1.0, 0.0, 1.0, 2.0];
        let m = KeyMoment {
            d,
            l: factor(&c, d).unwrap(),
            tokens: 0,
        };
        let k = [1.0f32, -2.0, 0.5];
        let x = m.solve(&k).unwrap();
        let ridge = RIDGE * 9.0 / 3.0;
        for i in 0..d {
            let row: f64 = (0..d)
                .map(|j| (c[i * d + j] as f64 + if i == j { ridge } else { 0.0 }) * x[j])
                .sum();
            assert!((row - k[i] as f64).abs() < 1e-9, "row {i}: {row}");
        }
        assert!(m.solve(&[1.0]).is_err());
    }

    #[test]
    fn the_key_moment_is_kept_while_the_layer_s_keys_are_the_base_s() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_llama(dir.path(), None);
        let r = runnable(&model);
        let base = r.weights(&model, Edited::default());
        let kept = r.key_moment(&base, 1).unwrap();
        assert!(Arc::ptr_eq(&kept, &r.key_moment(&base, 1).unwrap()));
        let edited = |tensor: &str| {
            let mut o = Overlay::default();
            o.write(tensor, 0, &[0x40; 16]);
            r.cache.edited_from_overlay(&model, &o).unwrap()
        };
        // The layer's own down_proj and the layers above leave its keys as they were.
        for tensor in ["model.layers.1.mlp.down_proj.weight", "model.norm.weight"] {
            let w = r.weights(&model, edited(tensor));
            assert!(w.is_edited());
            assert!(
                Arc::ptr_eq(&kept, &r.key_moment(&w, 1).unwrap()),
                "{tensor}"
            );
        }
        // A tensor below changes them: measured again for those weights, and not kept.
        let w = r.weights(&model, edited("model.layers.0.mlp.up_proj.weight"));
        let again = r.key_moment(&w, 1).unwrap();
        assert!(!Arc::ptr_eq(&kept, &again));
        let k: Vec<f32> = (0..kept.d).map(|i| (i % 5) as f32 - 2.0).collect();
        assert_ne!(kept.solve(&k).unwrap(), again.solve(&k).unwrap());
        assert!(Arc::ptr_eq(&kept, &r.key_moment(&base, 1).unwrap()));
    }
}
