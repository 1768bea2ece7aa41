//! A model's tensors under the two names an adapter may use: Hugging Face's
//! (`model.layers.3.self_attn.q_proj.weight`, what PEFT names) and llama.cpp's
//! (`blk.3.attn_q.weight`, what a GGUF adapter names), paired by the one description of the
//! architecture ([`crate::arch::stored_part`]). llama.cpp's converter also interleaves the
//! rotary halves of each query and key head's rows in Llama-architecture files, so an
//! adapter's output rows move when it crosses from one naming to the other.

use crate::arch::{Architecture, Qkv};
use crate::config::Family;
use crate::error::Result;
use std::collections::HashMap;
use std::path::Path;
use tensor_surgeon_core::gguf::GgufHeader;

/// Which names a file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Hugging Face's (safetensors checkpoints, PEFT adapters).
    HuggingFace,
    /// llama.cpp's (GGUF files and adapters).
    Gguf,
}

/// The order of a tensor's rows as one scheme stores them, against the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// The same rows in the same order.
    Same,
    /// Hugging Face's rows put in llama.cpp's order (per head of this many: row
    /// `s·d/2 + j` goes to `2j + s`).
    Interleave(usize),
    /// llama.cpp's rows put back in Hugging Face's order.
    Restore(usize),
}

impl Rows {
    /// `values` (`rows` rows of equal length) in the other order.
    pub fn apply(self, values: &[f32], rows: usize) -> Vec<f32> {
        let (heads, interleave) = match self {
            Rows::Same => return values.to_vec(),
            Rows::Interleave(h) => (h, true),
            Rows::Restore(h) => (h, false),
        };
        let width = values.len() / rows.max(1);
        let d = rows / heads.max(1);
        let mut out = vec![0f32; values.len()];
        for h in 0..heads {
            for s in 0..2 {
                for j in 0..d / 2 {
                    let hf = h * d + s * (d / 2) + j;
                    let file = h * d + 2 * j + s;
                    let (to, from) = if interleave { (file, hf) } else { (hf, file) };
                    out[to * width..(to + 1) * width]
                        .copy_from_slice(&values[from * width..(from + 1) * width]);
                }
            }
        }
        out
    }
}

/// One tensor under both names.
#[derive(Clone, Debug)]
struct Named {
    hf: String,
    gguf: String,
    /// Query or key heads whose rows llama.cpp interleaves.
    heads: Option<usize>,
}

/// A model's tensors under both names.
#[derive(Clone, Debug, Default)]
pub struct Naming {
    /// The scheme of the model's own names (what edits and patches name).
    own: Option<Scheme>,
    /// By the model's own name.
    by_own: HashMap<String, Named>,
    /// Either name -> the model's own.
    to_own: HashMap<String, String>,
    /// llama.cpp's `general.architecture` of the family.
    gguf_architecture: Option<&'static str>,
}

impl Naming {
    /// The naming of a GGUF model (its own names are llama.cpp's).
    pub fn of_gguf(header: &GgufHeader) -> Result<Naming> {
        let (family, _) = crate::gguf::family(header)?;
        Ok(Naming::of_family(&family, Scheme::Gguf))
    }

    /// The naming of a checkpoint folder's model (its own names are Hugging Face's), from its
    /// `config.json`; a model without one (or an encoder) has only its own names.
    pub fn of_folder(model_path: &Path) -> Naming {
        match Family::detect(model_path) {
            Ok((family, _)) => Naming::of_family(&family, Scheme::HuggingFace),
            Err(_) => Naming::default(),
        }
    }

    fn of_family(family: &Family, own: Scheme) -> Naming {
        let Family::Llama(a) = family else {
            return Naming {
                own: Some(own),
                ..Naming::default()
            };
        };
        Naming::of_architecture(a, own)
    }

    /// The naming of a model described by `a` whose own names are `own`'s.
    pub fn of_architecture(a: &Architecture, own: Scheme) -> Naming {
        let mut heads: HashMap<&str, usize> = HashMap::new();
        if a.kind.interleaves_rotary_rows() {
            for l in &a.layers {
                if let Qkv::Split { q, k, .. } = &l.qkv {
                    heads.insert(&q.weight, a.heads);
                    heads.insert(&k.weight, a.kv_heads);
                }
            }
        }
        let mut n = Naming {
            own: Some(own),
            gguf_architecture: Some(a.kind.gguf_architecture()),
            ..Naming::default()
        };
        for hf in a.tensor_names() {
            let Some(gguf) = a.stored_name(&hf) else {
                continue;
            };
            let own_name = match own {
                Scheme::HuggingFace => hf.clone(),
                Scheme::Gguf => gguf.clone(),
            };
            n.to_own.insert(hf.clone(), own_name.clone());
            n.to_own.insert(gguf.clone(), own_name.clone());
            let heads = heads.get(hf.as_str()).copied();
            n.by_own.insert(own_name, Named { hf, gguf, heads });
        }
        n
    }

    /// llama.cpp's `general.architecture` of the model's family, when it has one.
    pub fn gguf_architecture(&self) -> Option<&'static str> {
        self.gguf_architecture
    }

    /// The model's own name of a tensor an adapter names (in either scheme), and how the
    /// adapter's rows map onto the model's; `None` when the description does not know it
    /// (the caller then tries the name as it is).
    pub fn to_own(&self, name: &str) -> Option<(String, Rows)> {
        let own = self.to_own.get(name)?;
        let named = &self.by_own[own];
        let from = if named.hf == name && named.gguf != name {
            Scheme::HuggingFace
        } else {
            Scheme::Gguf
        };
        let rows = match (named.heads, from, self.own) {
            (Some(h), Scheme::HuggingFace, Some(Scheme::Gguf)) => Rows::Interleave(h),
            (Some(h), Scheme::Gguf, Some(Scheme::HuggingFace)) => Rows::Restore(h),
            _ => Rows::Same,
        };
        Some((own.clone(), rows))
    }

    /// The name of the model's tensor `own` in `scheme`, and how its rows map from the
    /// model's order to that scheme's; `None` when the description does not know it.
    pub fn name_in(&self, own: &str, scheme: Scheme) -> Option<(String, Rows)> {
        let named = self.by_own.get(own)?;
        let name = match scheme {
            Scheme::HuggingFace => named.hf.clone(),
            Scheme::Gguf => named.gguf.clone(),
        };
        let rows = match (named.heads, self.own, scheme) {
            (Some(h), Some(Scheme::HuggingFace), Scheme::Gguf) => Rows::Interleave(h),
            (Some(h), Some(Scheme::Gguf), Scheme::HuggingFace) => Rows::Restore(h),
            _ => Rows::Same,
        };
        Some((name, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_and_restoring_rows_are_inverse_and_match_the_converter() {
        // Two heads of four rows, rows of two values: HF row r holds (r, r).
        let rows = 8;
        let hf: Vec<f32> = (0..rows).flat_map(|r| [r as f32, r as f32]).collect();
        let file = Rows::Interleave(2).apply(&hf, rows);
        // In each head of d = 4: file rows are HF rows 0, 2, 1, 3 (pairs of the two halves).
        let order: Vec<f32> = file.chunks(2).map(|c| c[0]).collect();
        assert_eq!(order, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        assert_eq!(Rows::Restore(2).apply(&file, rows), hf);
        assert_eq!(Rows::Same.apply(&hf, rows), hf);
    }

    #[test]
    fn a_llama_gguf_names_both_ways_and_moves_only_query_and_key_rows() {
        let a = Architecture::resolve(&crate::family_tests::constants(crate::arch::Kind::Llama));
        let n = Naming::of_architecture(&a, Scheme::Gguf);
        assert_eq!(n.gguf_architecture(), Some("llama"));
        let (own, rows) = n.to_own("model.layers.1.self_attn.q_proj.weight").unwrap();
        assert_eq!(own, "blk.1.attn_q.weight");
        assert_eq!(rows, Rows::Interleave(a.heads));
        let (own, rows) = n.to_own("model.layers.1.self_attn.k_proj.weight").unwrap();
        assert_eq!(
            (own.as_str(), rows),
            ("blk.1.attn_k.weight", Rows::Interleave(a.kv_heads))
        );
        let (own, rows) = n.to_own("blk.1.attn_q.weight").unwrap();
        assert_eq!((own.as_str(), rows), ("blk.1.attn_q.weight", Rows::Same));
        let (own, rows) = n.to_own("model.layers.0.mlp.down_proj.weight").unwrap();
        assert_eq!((own.as_str(), rows), ("blk.0.ffn_down.weight", Rows::Same));
        assert_eq!(
            n.name_in("blk.1.attn_q.weight", Scheme::HuggingFace),
            Some((
                "model.layers.1.self_attn.q_proj.weight".into(),
                Rows::Restore(a.heads)
            ))
        );
        assert_eq!(
            n.name_in("token_embd.weight", Scheme::HuggingFace),
            Some(("model.embed_tokens.weight".into(), Rows::Same))
        );
        assert!(n.to_own("no.such.weight").is_none());
        // The same model as a checkpoint folder: its own names are Hugging Face's.
        let h = Naming::of_architecture(&a, Scheme::HuggingFace);
        assert_eq!(
            h.to_own("blk.1.attn_q.weight"),
            Some((
                "model.layers.1.self_attn.q_proj.weight".into(),
                Rows::Restore(a.heads)
            ))
        );
    }
}
