//! What a model is made of, for its first screen: parameters by module kind, and the layer
//! map (one row per layer, one column per kind of tensor the layers repeat).

use crate::stats::scan::sibling_pattern;
use std::collections::BTreeMap;

/// The kind of a tensor: its name with the layer number as `*` (`model.layers.*.mlp.down_proj.weight`),
/// or the whole name for a tensor outside the layers.
pub fn kind_of(name: &str) -> String {
    sibling_pattern(name).map_or_else(|| name.to_string(), |(p, _)| p)
}

/// A kind as a column header: what follows the layer number (`mlp.down_proj`), without the
/// `.weight` every matrix has.
pub fn short_kind(kind: &str) -> &str {
    let tail = kind.rsplit_once("*.").map_or(kind, |(_, t)| t);
    tail.strip_suffix(".weight").unwrap_or(tail)
}

/// Parameters per kind, largest first (ties by name).
pub fn params_by_kind<'a>(tensors: impl Iterator<Item = (&'a str, u64)>) -> Vec<(String, u64)> {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for (name, elements) in tensors {
        *by.entry(kind_of(name)).or_default() += elements;
    }
    let mut out: Vec<(String, u64)> = by.into_iter().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The layer map of a model: the layers (by their number), the kinds that recur across them
/// (in the order they first appear), and the tensor at each (layer, kind).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerMap {
    pub layers: Vec<u64>,
    pub kinds: Vec<String>,
    /// `cells[row][column]`: the tensor's name, if that layer has that kind.
    pub cells: Vec<Vec<Option<String>>>,
}

impl LayerMap {
    /// The map of `names`: kinds present in at least two layers (a lone numbered tensor is
    /// not a layer structure).
    pub fn of<'a>(names: impl Iterator<Item = &'a str>) -> LayerMap {
        let mut kinds: Vec<String> = Vec::new();
        let mut at: BTreeMap<(u64, String), String> = BTreeMap::new();
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for name in names {
            if let Some((kind, layer)) = sibling_pattern(name) {
                if !kinds.contains(&kind) {
                    kinds.push(kind.clone());
                }
                *count.entry(kind.clone()).or_default() += 1;
                at.insert((layer, kind), name.to_string());
            }
        }
        kinds.retain(|k| count[k] >= 2);
        let mut layers: Vec<u64> = at
            .keys()
            .filter(|(_, k)| kinds.contains(k))
            .map(|(l, _)| *l)
            .collect();
        layers.dedup();
        let cells = layers
            .iter()
            .map(|&l| {
                kinds
                    .iter()
                    .map(|k| at.get(&(l, k.clone())).cloned())
                    .collect()
            })
            .collect();
        LayerMap {
            layers,
            kinds,
            cells,
        }
    }

    /// Whether there is nothing to draw.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

/// Each value's position within its column's range, `[0, 1]` (`None` stays `None`): a layer
/// map coloured per kind, since kinds differ by orders of magnitude (norms ~1, projections
/// ~0.02).
pub fn normalise_columns(values: &[Vec<Option<f64>>]) -> Vec<Vec<Option<f64>>> {
    let columns = values.first().map_or(0, Vec::len);
    let mut range = vec![(f64::INFINITY, f64::NEG_INFINITY); columns];
    for row in values {
        for (c, v) in row.iter().enumerate() {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                range[c] = (range[c].0.min(v), range[c].1.max(v));
            }
        }
    }
    values
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(c, v)| {
                    let (lo, hi) = range[c];
                    v.filter(|v| v.is_finite()).map(|v| {
                        if hi > lo {
                            (v - lo) / (hi - lo)
                        } else {
                            0.5
                        }
                    })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_the_layer_map() {
        let names = [
            "model.embed_tokens.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.0.input_layernorm.weight",
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.1.input_layernorm.weight",
            "model.layers.10.mlp.down_proj.weight",
            "model.extra.5.weight",
            "model.norm.weight",
        ];
        assert_eq!(kind_of(names[3]), "model.layers.*.mlp.down_proj.weight");
        assert_eq!(kind_of(names[0]), "model.embed_tokens.weight");
        assert_eq!(
            short_kind("model.layers.*.mlp.down_proj.weight"),
            "mlp.down_proj"
        );
        assert_eq!(short_kind("model.norm.weight"), "model.norm");
        let m = LayerMap::of(names.iter().copied());
        assert_eq!(m.layers, vec![0, 1, 10]);
        assert_eq!(
            m.kinds,
            vec![
                "model.layers.*.mlp.down_proj.weight",
                "model.layers.*.input_layernorm.weight"
            ],
            "in order of appearance; the lone numbered tensor is not a kind"
        );
        assert_eq!(
            m.cells[2][0].as_deref(),
            Some("model.layers.10.mlp.down_proj.weight")
        );
        assert_eq!(m.cells[2][1], None, "layer 10 has no norm");
        let p = params_by_kind(
            [
                (names[1], 10),
                (names[3], 10),
                (names[0], 15),
                (names[7], 1),
            ]
            .into_iter(),
        );
        assert_eq!(
            p,
            vec![
                ("model.layers.*.mlp.down_proj.weight".to_string(), 20),
                ("model.embed_tokens.weight".to_string(), 15),
                ("model.norm.weight".to_string(), 1),
            ]
        );
    }

    #[test]
    fn columns_are_normalised_on_their_own() {
        let v = vec![
            vec![Some(1.0), Some(0.02)],
            vec![Some(3.0), None],
            vec![Some(2.0), Some(0.02)],
        ];
        let n = normalise_columns(&v);
        assert_eq!(n[0], vec![Some(0.0), Some(0.5)]);
        assert_eq!(n[1], vec![Some(1.0), None]);
        assert_eq!(n[2][0], Some(0.5));
    }
}
