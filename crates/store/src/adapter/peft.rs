//! PEFT's LoRA adapters: `adapter_config.json` (rank, alpha, rsLoRA, per-module rank and alpha
//! patterns matched as PEFT matches them) and `adapter_model.safetensors` (`lora_A` `[r, in]`
//! and `lora_B` `[out, r]` per linear module, `lora_embedding_A` `[r, vocab]` and
//! `lora_embedding_B` `[hidden, r]` per embedding, whole tensors of `modules_to_save`).

use super::{
    floats, scaled, transpose, Adapter, AdapterError, AdapterFormat, AdapterModule, BaseNote,
    ModuleOut, Replaced, PEFT_CONFIG, PEFT_WEIGHTS,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tensor_surgeon_core::dtype::Dtype;
use tensor_surgeon_core::header::{self, TensorInfo};

/// PEFT's prefix of every saved tensor name.
const PREFIX: &str = "base_model.model.";

/// PEFT's default `lora_alpha`.
const DEFAULT_ALPHA: f64 = 8.0;

/// The fields of `adapter_config.json` that decide what the adapter changes.
#[derive(serde::Deserialize)]
struct Config {
    peft_type: Option<String>,
    r: Option<usize>,
    lora_alpha: Option<f64>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    rank_pattern: Option<Map<String, Value>>,
    #[serde(default)]
    alpha_pattern: Option<Map<String, Value>>,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
    base_model_name_or_path: Option<String>,
    #[serde(default)]
    lora_bias: bool,
    #[serde(default)]
    layer_replication: Option<Value>,
}

/// PEFT's `get_pattern_key`: the first key of `patterns` (in file order) that names `module`
/// or a suffix of it after a dot (`re.match(rf"(.*\.)?({key})$", module)`), and its value.
fn pattern<'p>(
    patterns: Option<&'p Map<String, Value>>,
    module: &str,
    path: &Path,
) -> Result<Option<&'p Value>, AdapterError> {
    let Some(patterns) = patterns else {
        return Ok(None);
    };
    for (key, value) in patterns {
        let re = regex_lite::Regex::new(&format!("^(?:.*\\.)?(?:{key})$")).map_err(|e| {
            AdapterError::Malformed {
                path: path.join(PEFT_CONFIG),
                reason: format!("the pattern {key:?} is not a regular expression: {e}"),
            }
        })?;
        if re.is_match(module) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// The two tensors of one module, as found.
#[derive(Default)]
struct Pair {
    a: Option<TensorInfo>,
    b: Option<TensorInfo>,
    embedding: bool,
}

pub(super) fn read(dir: &Path) -> Result<Adapter, AdapterError> {
    let config_path = dir.join(PEFT_CONFIG);
    let malformed = |path: &Path, reason: String| AdapterError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(&config_path).map_err(|source| AdapterError::Io {
        path: config_path.clone(),
        source,
    })?;
    let config: Config = serde_json::from_str(&text)
        .map_err(|e| malformed(&config_path, format!("not a PEFT adapter config: {e}")))?;
    let unsupported = |what: String| AdapterError::Unsupported {
        path: dir.to_path_buf(),
        what,
    };
    match config.peft_type.as_deref() {
        None | Some("LORA") => {}
        Some(other) => return Err(unsupported(format!("a {other} adapter (peft_type)"))),
    }
    if config.use_dora {
        return Err(unsupported(
            "DoRA (use_dora: a magnitude vector per module)".into(),
        ));
    }
    if config.lora_bias {
        return Err(unsupported("a LoRA bias (lora_bias)".into()));
    }
    if config
        .layer_replication
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(unsupported("layer replication (layer_replication)".into()));
    }
    let weights_path = dir.join(PEFT_WEIGHTS);
    let bytes = std::fs::read(&weights_path).map_err(|source| AdapterError::Io {
        path: weights_path.clone(),
        source,
    })?;
    let head = header::parse(&bytes, bytes.len() as u64)
        .map_err(|e| malformed(&weights_path, e.to_string()))?;
    let data = |t: &TensorInfo| -> Result<Vec<f32>, AdapterError> {
        let start = (head.data_start() + t.data_offsets.0) as usize;
        let end = (head.data_start() + t.data_offsets.1) as usize;
        floats(t.dtype, &bytes[start..end]).ok_or_else(|| {
            malformed(
                &weights_path,
                format!(
                    "{} is {}; adapter factors are F32, F16 or BF16",
                    t.name,
                    tensor_surgeon_core::dtype::name(t.dtype)
                ),
            )
        })
    };
    let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
    let mut replaced = Vec::new();
    let to_save = config.modules_to_save.clone().unwrap_or_default();
    for t in &head.tensors {
        let key = t.name.strip_prefix(PREFIX).unwrap_or(&t.name);
        let slot = |suffix: &str| key.strip_suffix(suffix).map(str::to_string);
        if let Some(m) = slot(".lora_A.weight") {
            pairs.entry(m).or_default().a = Some(t.clone());
        } else if let Some(m) = slot(".lora_B.weight") {
            pairs.entry(m).or_default().b = Some(t.clone());
        } else if let Some(m) = slot(".lora_embedding_A") {
            let p = pairs.entry(m).or_default();
            p.a = Some(t.clone());
            p.embedding = true;
        } else if let Some(m) = slot(".lora_embedding_B") {
            let p = pairs.entry(m).or_default();
            p.b = Some(t.clone());
            p.embedding = true;
        } else if key.contains("lora_magnitude_vector") {
            return Err(unsupported(format!("DoRA ({})", t.name)));
        } else if key.contains(".lora_") {
            return Err(unsupported(format!("the tensor {}", t.name)));
        } else if to_save
            .iter()
            .any(|m| key.starts_with(&format!("{m}.")) || key.contains(&format!(".{m}.")))
        {
            let start = (head.data_start() + t.data_offsets.0) as usize;
            let end = (head.data_start() + t.data_offsets.1) as usize;
            replaced.push(Replaced {
                tensor: key.to_string(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                bytes: bytes[start..end].to_vec(),
            });
        } else {
            return Err(unsupported(format!(
                "the tensor {} (neither a LoRA pair nor in modules_to_save)",
                t.name
            )));
        }
    }
    let mut modules = Vec::new();
    for (module, pair) in pairs {
        let fail = |reason: String| AdapterError::Module {
            path: dir.to_path_buf(),
            module: module.clone(),
            reason,
        };
        let (Some(a), Some(b)) = (&pair.a, &pair.b) else {
            return Err(fail("has only one of its two tensors (A and B)".into()));
        };
        let [ra, a_cols] = a.shape[..] else {
            return Err(fail(format!("A has shape {:?}, not 2-D", a.shape)));
        };
        let [b_rows, rb] = b.shape[..] else {
            return Err(fail(format!("B has shape {:?}, not 2-D", b.shape)));
        };
        if ra != rb || ra == 0 {
            return Err(fail(format!(
                "A is {:?} and B is {:?}: their ranks differ",
                a.shape, b.shape
            )));
        }
        let rank = ra as usize;
        let want = match pattern(config.rank_pattern.as_ref(), &module, dir)? {
            Some(v) => v.as_u64().map(|r| r as usize),
            None => config.r,
        };
        if want.is_some_and(|r| r != rank) {
            return Err(fail(format!(
                "its tensors have rank {rank} but the config says {}",
                want.unwrap_or_default()
            )));
        }
        let alpha = match pattern(config.alpha_pattern.as_ref(), &module, dir)? {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| fail(format!("alpha_pattern gives {v}")))?,
            None => config.lora_alpha.unwrap_or(DEFAULT_ALPHA),
        };
        let scale = if config.use_rslora {
            alpha / (rank as f64).sqrt()
        } else {
            alpha / rank as f64
        } as f32;
        let (a_values, b_values) = (data(a)?, data(b)?);
        let (a_cols, b_rows) = (a_cols as usize, b_rows as usize);
        // ΔW = s·B·A ([out, in]); PEFT stores an embedding's (and a fan-in-fan-out layer's)
        // weight transposed against its pair, so there ΔW = s·(B·A)ᵀ.
        let (rows, cols, u, v) = if pair.embedding || config.fan_in_fan_out {
            let u = scaled(&transpose(&a_values, rank, a_cols), scale);
            (a_cols, b_rows, u, b_values)
        } else {
            let v = transpose(&a_values, rank, a_cols);
            (b_rows, a_cols, scaled(&b_values, scale), v)
        };
        modules.push(AdapterModule {
            tensor: format!("{module}.weight"),
            rows,
            cols,
            rank,
            scale,
            u,
            v,
        });
    }
    Ok(Adapter {
        format: AdapterFormat::Peft,
        path: dir.to_path_buf(),
        base_model: config.base_model_name_or_path,
        architecture: None,
        modules,
        replaced,
        skipped: Vec::new(),
    })
}

/// A regular expression that matches `text` and nothing else.
fn escaped(text: &str) -> String {
    regex_lite::escape(text)
}

/// Writes `modules` as a PEFT adapter in the folder `dir` (made if missing): each module at
/// scale 1 (`lora_alpha` = its rank). Returns the files written.
pub fn write(
    dir: &Path,
    modules: &[ModuleOut<'_>],
    base: &BaseNote,
) -> crate::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(crate::StoreError::io(dir))?;
    // The rank most modules have is the config's; the others get patterns of their own.
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for m in modules {
        *counts.entry(m.rank).or_default() += 1;
    }
    let r = counts
        .iter()
        .max_by_key(|(rank, n)| (**n, std::cmp::Reverse(**rank)))
        .map_or(1, |(rank, _)| *rank);
    let (mut ranks, mut alphas, mut targets) = (Map::new(), Map::new(), Vec::new());
    let mut tensors: Vec<(String, Vec<u64>, Vec<f32>)> = Vec::new();
    for m in modules {
        let module = m
            .tensor
            .strip_suffix(".weight")
            .ok_or_else(|| AdapterError::Module {
                path: dir.to_path_buf(),
                module: m.tensor.to_string(),
                reason: "a LoRA module changes a weight (a tensor named …weight)".into(),
            })?;
        if m.rank != r {
            ranks.insert(escaped(module), json!(m.rank));
            alphas.insert(escaped(module), json!(m.rank));
        }
        targets.push(module.to_string());
        let (rank, rows, cols) = (m.rank as u64, m.rows as u64, m.cols as u64);
        if m.embedding {
            let a = transpose(m.u, m.rows, m.rank);
            tensors.push((
                format!("{PREFIX}{module}.lora_embedding_A"),
                vec![rank, rows],
                a,
            ));
            tensors.push((
                format!("{PREFIX}{module}.lora_embedding_B"),
                vec![cols, rank],
                m.v.to_vec(),
            ));
        } else {
            let a = transpose(m.v, m.cols, m.rank);
            tensors.push((
                format!("{PREFIX}{module}.lora_A.weight"),
                vec![rank, cols],
                a,
            ));
            tensors.push((
                format!("{PREFIX}{module}.lora_B.weight"),
                vec![rows, rank],
                m.u.to_vec(),
            ));
        }
    }
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base.name,
        "r": r,
        "lora_alpha": r,
        "use_rslora": false,
        "use_dora": false,
        "rank_pattern": ranks,
        "alpha_pattern": alphas,
        "target_modules": targets,
        "fan_in_fan_out": false,
        "bias": "none",
        "lora_dropout": 0.0,
        "modules_to_save": null,
        "inference_mode": true,
        "init_lora_weights": true,
    });
    let mut infos = Vec::new();
    let mut at = 0u64;
    for (name, shape, values) in &tensors {
        let len = 4 * values.len() as u64;
        infos.push(TensorInfo {
            name: name.clone(),
            dtype: Dtype::F32,
            shape: shape.clone(),
            data_offsets: (at, at + len),
            blocks: None,
        });
        at += len;
    }
    let metadata = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("base_fingerprint".to_string(), base.fingerprint.clone()),
    ]);
    let mut file = header::serialize(Some(&metadata), &infos);
    for (_, _, values) in &tensors {
        file.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    let weights = dir.join(PEFT_WEIGHTS);
    let config_path = dir.join(PEFT_CONFIG);
    crate::atomic::write_atomic(&weights, &file)?;
    // A JSON value always serialises.
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    crate::atomic::write_atomic(&config_path, text.as_bytes())?;
    Ok(vec![config_path, weights])
}
