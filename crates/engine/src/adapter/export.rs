//! Low-rank entries leaving as an adapter: named for the format, rows in its order, each
//! module at scale 1.

use super::*;

/// The format `out` asks for: `format` when given, else `.gguf` files are GGUF and anything
/// else a PEFT folder.
pub fn format_for(out: &Path, format: Option<AdapterFormat>) -> AdapterFormat {
    format.unwrap_or_else(|| match out.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("gguf") => AdapterFormat::Gguf,
        _ => AdapterFormat::Peft,
    })
}

fn format_name(f: AdapterFormat) -> &'static str {
    match f {
        AdapterFormat::Peft => "peft",
        AdapterFormat::Gguf => "gguf",
    }
}

/// One module on its way out: the model's tensor and its factors in the model's row order.
pub(super) struct Factors {
    pub(super) tensor: String,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) rank: usize,
    pub(super) u: Vec<f32>,
    pub(super) v: Vec<f32>,
}

/// What a written adapter says of `model`.
fn base_note(model: &Model, naming: &Naming) -> BaseNote {
    BaseNote {
        name: model
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        fingerprint: serde_json::to_string(&model.fingerprints()).unwrap_or_default(),
        architecture: model
            .gguf()
            .and_then(|h| h.architecture())
            .map(str::to_string)
            .or_else(|| naming.gguf_architecture().map(str::to_string)),
    }
}

/// Writes `factors` (in the model's names and row order) as an adapter at `out`.
pub(super) fn write(
    model: &Model,
    factors: &[Factors],
    format: AdapterFormat,
    out: &Path,
) -> Result<(Vec<ExportedModule>, Vec<String>)> {
    let naming = naming(model);
    let scheme = match format {
        AdapterFormat::Peft => Scheme::HuggingFace,
        AdapterFormat::Gguf => Scheme::Gguf,
    };
    let mut named: Vec<(String, Vec<f32>)> = Vec::new();
    for f in factors {
        let (name, rows) = match naming.name_in(&f.tensor, scheme) {
            Some(n) => n,
            None if own_scheme(model) == scheme => (f.tensor.clone(), Rows::Same),
            None => {
                return Err(AdapterFit::NoName {
                    tensor: f.tensor.clone(),
                    scheme: match scheme {
                        Scheme::HuggingFace => "Hugging Face",
                        Scheme::Gguf => "llama.cpp",
                    },
                }
                .into())
            }
        };
        named.push((name, rows.apply(&f.u, f.rows)));
    }
    let outs: Vec<ModuleOut<'_>> = factors
        .iter()
        .zip(&named)
        .map(|(f, (name, u))| ModuleOut {
            tensor: name,
            embedding: name.ends_with("embed_tokens.weight") || name.ends_with("token_embd.weight"),
            rows: f.rows,
            cols: f.cols,
            rank: f.rank,
            u,
            v: &f.v,
        })
        .collect();
    let note = base_note(model, &naming);
    let files = match format {
        AdapterFormat::Peft => adapter::write_peft(out, &outs, &note)?,
        AdapterFormat::Gguf => adapter::write_gguf(out, &outs, &note)?,
    };
    let modules = factors
        .iter()
        .zip(&named)
        .map(|(f, (name, _))| ExportedModule {
            tensor: f.tensor.clone(),
            named: name.clone(),
            rank: f.rank as u32,
        })
        .collect();
    Ok((
        modules,
        files.iter().map(|p| p.display().to_string()).collect(),
    ))
}

/// Writes a patch's low-rank entries (and the factors kept beside a quantized tensor's
/// blocks) as an adapter for `model` at `out`: entries of one tensor joined (their ranks add
/// up). Tensors the patch changes byte by byte are listed as skipped.
pub fn export(
    model: &Model,
    patch: &Patch,
    format: AdapterFormat,
    out: &Path,
) -> Result<ExportReport> {
    let mut by: BTreeMap<&str, Vec<&LowRankEntry>> = BTreeMap::new();
    for e in patch.low_rank.iter().chain(&patch.factors) {
        by.entry(e.tensor.as_str()).or_default().push(e);
    }
    let byte_tensors: std::collections::BTreeSet<&str> = patch
        .entries
        .iter()
        .map(|e| e.tensor.as_str())
        .filter(|t| !by.contains_key(t))
        .collect();
    if by.is_empty() {
        return Err(AdapterFit::Empty {
            byte_tensors: byte_tensors.len(),
        }
        .into());
    }
    let mut factors = Vec::new();
    for (tensor, entries) in by {
        let (_, stored) = model.get(tensor)?;
        if stored.shape.len() != 2 {
            return Err(AdapterFit::NotAMatrix {
                tensor: tensor.to_string(),
                shape: stored.shape.clone(),
            }
            .into());
        }
        let (rows, cols) = (stored.shape[0] as usize, stored.shape[1] as usize);
        let rank: usize = entries.iter().map(|e| e.rank as usize).sum();
        let (mut u, mut v) = (
            Vec::with_capacity(rows * rank),
            Vec::with_capacity(cols * rank),
        );
        let parts: Vec<(Vec<f32>, Vec<f32>, usize)> = entries
            .iter()
            .map(|e| {
                low_rank::check_shape(stored, e.rank, e.u.len(), e.v.len())?;
                let (a, b) = e.factors();
                Ok((a, b, e.rank as usize))
            })
            .collect::<Result<_>>()?;
        for i in 0..rows {
            for (a, _, r) in &parts {
                u.extend_from_slice(&a[i * r..(i + 1) * r]);
            }
        }
        for j in 0..cols {
            for (_, b, r) in &parts {
                v.extend_from_slice(&b[j * r..(j + 1) * r]);
            }
        }
        factors.push(Factors {
            tensor: tensor.to_string(),
            rows,
            cols,
            rank,
            u,
            v,
        });
    }
    let (modules, files) = write(model, &factors, format, out)?;
    Ok(ExportReport {
        format: format_name(format).into(),
        modules,
        files,
        skipped: byte_tensors
            .into_iter()
            .map(|t| SkippedTensor {
                tensor: t.to_string(),
                reason: "changed byte by byte, not by a low-rank entry".into(),
            })
            .collect(),
    })
}
