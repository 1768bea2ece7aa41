//! The model-wide health scan: per-tensor flags and outliers among siblings (tensors whose
//! names differ only by layer number).

use super::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Something worth a look in one tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "flag", rename_all = "snake_case")]
pub enum Flag {
    Nan {
        count: u64,
    },
    Inf {
        count: u64,
    },
    AllZero,
    /// Every element has the same (nonzero) value.
    Constant {
        value: f64,
    },
    /// The tensor's std is far from its siblings' median.
    Outlier {
        pattern: String,
        std: f64,
        median: f64,
    },
}

impl Flag {
    /// A short label for tables.
    pub fn label(&self) -> String {
        match self {
            Flag::Nan { count } => format!("NaN×{count}"),
            Flag::Inf { count } => format!("Inf×{count}"),
            Flag::AllZero => "all zero".into(),
            Flag::Constant { .. } => "constant".into(),
            Flag::Outlier { std, median, .. } => {
                format!("outlier: std {:.3}× siblings", std / median)
            }
        }
    }
}

/// One scanned tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanRow {
    pub tensor: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub summary: Summary,
    pub flags: Vec<Flag>,
}

impl ScanRow {
    /// A row with the flags its own statistics raise.
    pub fn new(tensor: String, dtype: String, shape: Vec<u64>, summary: Summary) -> ScanRow {
        let mut flags = Vec::new();
        if summary.nan > 0 {
            flags.push(Flag::Nan { count: summary.nan });
        }
        if summary.pos_inf + summary.neg_inf > 0 {
            flags.push(Flag::Inf {
                count: summary.pos_inf + summary.neg_inf,
            });
        }
        if summary.count > 0 && summary.zero == summary.count {
            flags.push(Flag::AllZero);
        } else if summary.count > 1 && summary.finite == summary.count {
            if let (Some(lo), Some(hi)) = (summary.min, summary.max) {
                if lo == hi {
                    flags.push(Flag::Constant { value: lo });
                }
            }
        }
        ScanRow {
            tensor,
            dtype,
            shape,
            summary,
            flags,
        }
    }
}

/// Tensors whose names differ only by their numeric parts, with one shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiblingGroup {
    /// The name with every numeric part as `*`: `model.layers.*.mlp.down_proj.weight`.
    pub pattern: String,
    pub shape: Vec<u64>,
    /// `(layer, tensor, std)` by layer (the first numeric part).
    pub members: Vec<(u64, String, f64)>,
    pub median: f64,
    /// Tensors flagged as outliers.
    pub outliers: Vec<String>,
}

/// The sibling pattern of a name and its first numeric part (`None` without one).
pub fn sibling_pattern(name: &str) -> Option<(String, u64)> {
    let mut layer = None;
    let parts: Vec<&str> = name
        .split('.')
        .map(|p| {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                layer = layer.or(p.parse().ok());
                "*"
            } else {
                p
            }
        })
        .collect();
    Some((parts.join("."), layer?))
}

/// Smallest group compared.
const MIN_SIBLINGS: usize = 3;
/// Modified z-score (Iglewicz & Hoaglin) above which a member is an outlier...
const Z_LIMIT: f64 = 3.5;
/// ...if its std is also this many times off the median (either way).
const RATIO_LIMIT: f64 = 2.0;

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Groups siblings, flags the outliers among them (on the rows too), returns the groups.
pub fn siblings(rows: &mut [ScanRow]) -> Vec<SiblingGroup> {
    let mut groups: BTreeMap<(String, Vec<u64>), Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let (Some((pattern, _)), Some(_)) = (sibling_pattern(&r.tensor), r.summary.std) {
            groups
                .entry((pattern, r.shape.clone()))
                .or_default()
                .push(i);
        }
    }
    let mut out = Vec::new();
    for ((pattern, shape), members) in groups {
        if members.len() < MIN_SIBLINGS {
            continue;
        }
        let stds: Vec<f64> = members
            .iter()
            .map(|&i| rows[i].summary.std.unwrap_or(0.0))
            .collect();
        let mut sorted = stds.clone();
        sorted.sort_by(f64::total_cmp);
        let med = median(&sorted);
        let mut deviations: Vec<f64> = stds.iter().map(|s| (s - med).abs()).collect();
        deviations.sort_by(f64::total_cmp);
        let mad = median(&deviations);
        let mut outliers = Vec::new();
        for (&i, &s) in members.iter().zip(&stds) {
            let z = if mad > 0.0 {
                0.6745 * (s - med).abs() / mad
            } else if s != med {
                f64::INFINITY
            } else {
                0.0
            };
            let ratio = if med > 0.0 { s / med } else { f64::INFINITY };
            if z > Z_LIMIT && !(1.0 / RATIO_LIMIT..=RATIO_LIMIT).contains(&ratio) {
                outliers.push(rows[i].tensor.clone());
                rows[i].flags.push(Flag::Outlier {
                    pattern: pattern.clone(),
                    std: s,
                    median: med,
                });
            }
        }
        let mut list: Vec<(u64, String, f64)> = members
            .iter()
            .zip(&stds)
            .map(|(&i, &s)| {
                let layer = sibling_pattern(&rows[i].tensor).map_or(0, |(_, l)| l);
                (layer, rows[i].tensor.clone(), s)
            })
            .collect();
        list.sort_by_key(|m| m.0);
        out.push(SiblingGroup {
            pattern,
            shape,
            members: list,
            median: med,
            outliers,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, std: f64) -> ScanRow {
        let s = Summary {
            count: 10,
            finite: 10,
            std: Some(std),
            min: Some(-1.0),
            max: Some(1.0),
            ..Summary::default()
        };
        ScanRow::new(name.into(), "F32".into(), vec![4, 4], s)
    }

    #[test]
    fn patterns_replace_numeric_parts() {
        assert_eq!(
            sibling_pattern("model.layers.12.mlp.experts.3.w1"),
            Some(("model.layers.*.mlp.experts.*.w1".into(), 12))
        );
        assert_eq!(sibling_pattern("lm_head.weight"), None);
        assert_eq!(sibling_pattern("h2o.layer1.weight"), None);
    }

    #[test]
    fn the_odd_layer_out_is_flagged_and_noise_is_not() {
        let mut rows: Vec<ScanRow> = [0.050, 0.052, 0.4, 0.049, 0.051]
            .iter()
            .enumerate()
            .map(|(l, &s)| row(&format!("m.layers.{l}.o.weight"), s))
            .collect();
        // Siblings of natural spread only (1.5x): nothing flagged.
        rows.extend(
            [0.04, 0.05, 0.06, 0.045]
                .iter()
                .enumerate()
                .map(|(l, &s)| row(&format!("m.layers.{l}.q.weight"), s)),
        );
        let groups = siblings(&mut rows);
        assert_eq!(groups.len(), 2);
        let o = groups
            .iter()
            .find(|g| g.pattern == "m.layers.*.o.weight")
            .unwrap();
        assert_eq!(o.outliers, vec!["m.layers.2.o.weight".to_string()]);
        assert_eq!(o.members[2].0, 2);
        let q = groups
            .iter()
            .find(|g| g.pattern == "m.layers.*.q.weight")
            .unwrap();
        assert!(q.outliers.is_empty());
        assert!(matches!(rows[2].flags[..], [Flag::Outlier { .. }]));
    }

    #[test]
    fn own_flags() {
        let mut s = Summary {
            count: 4,
            finite: 3,
            nan: 1,
            ..Summary::default()
        };
        assert_eq!(
            ScanRow::new("a".into(), "F32".into(), vec![4], s.clone()).flags,
            vec![Flag::Nan { count: 1 }]
        );
        s = Summary {
            count: 4,
            finite: 4,
            zero: 4,
            min: Some(0.0),
            max: Some(0.0),
            ..Summary::default()
        };
        assert_eq!(
            ScanRow::new("a".into(), "F32".into(), vec![4], s.clone()).flags,
            vec![Flag::AllZero]
        );
        s.zero = 0;
        s.min = Some(2.0);
        s.max = Some(2.0);
        assert_eq!(
            ScanRow::new("a".into(), "F32".into(), vec![4], s).flags,
            vec![Flag::Constant { value: 2.0 }]
        );
    }
}
