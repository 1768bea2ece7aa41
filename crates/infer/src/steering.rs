//! Control vectors: a vector per layer added to that layer's output (the residual stream
//! after block `N`, at every position), as llama.cpp applies its control vectors
//! (`direction.N` to the output of layer `N`). Every pass that runs a block sees them: the
//! run, the decode step, probes, continuations and the trace.
//!
//! Computed from paired prompts (Zou et al. 2023, "Representation Engineering"; the way
//! repeng reads them): for each pair, the last token's hidden state after each layer, positive
//! minus negative. `Pca` takes the first principal component of those differences (centred,
//! unit length: repeng's `pca_diff`), its sign chosen so the positive prompts project higher
//! on average; `Mean` takes their mean (the difference of the two lists' means; its length is
//! the states' own scale). Where this differs from repeng: the sign is decided by the mean
//! projections rather than by counting pairs, and a prompt is used as given (no chat template).

use crate::llama::{Capture, Captured, KvCache};
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};
use std::collections::BTreeMap;

/// Per layer, the vector added to its output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Steering {
    layers: BTreeMap<usize, Vec<f32>>,
}

impl Steering {
    /// Adds `strength · v` at `layer` (several vectors at one layer add up).
    pub fn add(&mut self, layer: usize, v: &[f32], strength: f32) {
        let at = self
            .layers
            .entry(layer)
            .or_insert_with(|| vec![0.0; v.len()]);
        for (a, b) in at.iter_mut().zip(v) {
            *a += strength * b;
        }
    }

    /// The vector added to `layer`'s output, if any.
    pub fn at(&self, layer: usize) -> Option<&[f32]> {
        self.layers.get(&layer).map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers it acts on.
    pub fn layers(&self) -> impl Iterator<Item = usize> + '_ {
        self.layers.keys().copied()
    }
}

/// How a control vector is read from the differences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The first principal component of the differences (unit length).
    Pca,
    /// The mean difference.
    Mean,
}

/// One layer's vector and how well it separates the two lists.
#[derive(Clone, Debug)]
pub struct LayerVector {
    pub layer: usize,
    pub vector: Vec<f32>,
    /// The share of pairs whose positive prompt projects above its negative one.
    pub agreement: f64,
}

impl RunnableModel {
    /// The last token's hidden state after every layer, for each prompt.
    pub(crate) fn states_after_layers(
        &self,
        w: &Weights,
        prompts: &[String],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let model = self.llama()?;
        prompts
            .iter()
            .map(|p| {
                let ids = self.encode(p)?;
                let mut captured = Captured::default();
                let capture = Capture {
                    layer: None,
                    residuals: true,
                };
                model.forward(w, &ids, &mut KvCache::default(), capture, &mut captured)?;
                captured
                    .residuals
                    .iter()
                    .map(|t| Ok(t.to_vec1::<f32>()?))
                    .collect()
            })
            .collect()
    }

    /// A control vector for `layers` from `positive` and `negative` prompts (paired, in order).
    pub fn control_vector(
        &self,
        w: &Weights,
        positive: &[String],
        negative: &[String],
        layers: &[usize],
        method: Method,
    ) -> Result<Vec<LayerVector>> {
        if positive.is_empty() || positive.len() != negative.len() {
            return Err(InferError::Request(format!(
                "a control vector is read from pairs: {} positive and {} negative prompts",
                positive.len(),
                negative.len()
            )));
        }
        if method == Method::Pca && positive.len() < 2 {
            return Err(InferError::Request(
                "a principal component needs at least two pairs (or use the mean difference)"
                    .into(),
            ));
        }
        let depth = self.layers()?;
        if let Some(&l) = layers.iter().find(|&&l| l >= depth) {
            return Err(InferError::Request(format!(
                "layer {l} is beyond the model's {depth} layers"
            )));
        }
        let pos = self.states_after_layers(w, positive)?;
        let neg = self.states_after_layers(w, negative)?;
        layers
            .iter()
            .map(|&layer| {
                let diffs: Vec<Vec<f64>> = pos
                    .iter()
                    .zip(&neg)
                    .map(|(p, n)| {
                        p[layer]
                            .iter()
                            .zip(&n[layer])
                            .map(|(a, b)| f64::from(*a) - f64::from(*b))
                            .collect()
                    })
                    .collect();
                let mut v = match method {
                    Method::Mean => mean(&diffs),
                    Method::Pca => first_component(&diffs)?,
                };
                let project =
                    |s: &[f32]| -> f64 { s.iter().zip(&v).map(|(a, b)| f64::from(*a) * b).sum() };
                let side = |states: &[Vec<Vec<f32>>]| -> Vec<f64> {
                    states.iter().map(|s| project(&s[layer])).collect()
                };
                let (p, n) = (side(&pos), side(&neg));
                let gap = p.iter().sum::<f64>() - n.iter().sum::<f64>();
                if gap < 0.0 {
                    v.iter_mut().for_each(|x| *x = -*x);
                }
                let above = p
                    .iter()
                    .zip(&n)
                    .filter(|(a, b)| (*a > *b) == (gap >= 0.0))
                    .count();
                Ok(LayerVector {
                    layer,
                    vector: v.iter().map(|x| *x as f32).collect(),
                    agreement: above as f64 / p.len() as f64,
                })
            })
            .collect()
    }
}

fn mean(rows: &[Vec<f64>]) -> Vec<f64> {
    let n = rows.len() as f64;
    let mut m = vec![0.0; rows[0].len()];
    for r in rows {
        for (a, b) in m.iter_mut().zip(r) {
            *a += b / n;
        }
    }
    m
}

/// The unit first principal component of `rows` (centred): the top eigenvector of their
/// `n x n` Gram matrix (a few pairs to a few hundred) by power iteration, mapped back through
/// the rows. Where the largest eigenvalues tie, any unit vector of their span is a first
/// component; the iteration returns one, the same one every time.
fn first_component(rows: &[Vec<f64>]) -> Result<Vec<f64>> {
    let m = mean(rows);
    let centred: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().zip(&m).map(|(a, b)| a - b).collect())
        .collect();
    let n = centred.len();
    let gram: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| centred[i].iter().zip(&centred[j]).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect();
    let trace: f64 = (0..n).map(|i| gram[i][i]).sum();
    if trace <= 0.0 {
        return Err(InferError::Request(
            "the prompt pairs differ by the same state: they have no principal component (use \
             the mean difference)"
                .into(),
        ));
    }
    // A start with a part along every direction (not orthogonal to the top one).
    let mut e: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 / n as f64).collect();
    for _ in 0..10_000 {
        let next: Vec<f64> = gram
            .iter()
            .map(|row| row.iter().zip(&e).map(|(a, b)| a * b).sum())
            .collect();
        let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            break;
        }
        let next: Vec<f64> = next.iter().map(|x| x / norm).collect();
        let moved = next
            .iter()
            .zip(&e)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        e = next;
        if moved < 1e-13 {
            break;
        }
    }
    let mut v = vec![0.0; m.len()];
    for (c, row) in e.iter().zip(&centred) {
        for (a, b) in v.iter_mut().zip(row) {
            *a += c * b;
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    Ok(v.iter().map(|x| x / norm).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_component_is_the_direction_the_differences_spread_along() {
        // Differences (1, 0, 0) + t (0, 3, 4)/5 for t = -2, 0, 2, 4: centred, they lie on (0, 0.6, 0.8).
        let rows: Vec<Vec<f64>> = [-2.0, 0.0, 2.0, 4.0]
            .iter()
            .map(|t| vec![1.0, 0.6 * t, 0.8 * t])
            .collect();
        let v = first_component(&rows).unwrap();
        let dot = v[1] * 0.6 + v[2] * 0.8;
        assert!((dot.abs() - 1.0).abs() < 1e-9 && v[0].abs() < 1e-9, "{v:?}");
        assert_eq!(mean(&rows), vec![1.0, 0.6, 0.8]);
        // Identical differences have no spread.
        assert!(first_component(&[vec![1.0, 2.0], vec![1.0, 2.0]]).is_err());
    }

    #[test]
    fn vectors_at_one_layer_add_up_with_their_strengths() {
        let mut s = Steering::default();
        assert!(s.is_empty());
        s.add(2, &[1.0, 2.0], 0.5);
        s.add(2, &[1.0, 0.0], -1.0);
        s.add(4, &[0.0, 1.0], 2.0);
        assert_eq!(s.at(2), Some(&[-0.5f32, 1.0][..]));
        assert_eq!(s.at(4), Some(&[0.0f32, 2.0][..]));
        assert_eq!(s.at(3), None);
        assert_eq!(s.layers().collect::<Vec<_>>(), vec![2, 4]);
    }
}
