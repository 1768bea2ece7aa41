use super::*;
use serde_json::json;
use std::collections::BTreeMap;
use tensor_surgeon_core::dtype::Dtype;
use tensor_surgeon_core::header::{self, TensorInfo};

/// Values `0.01·(seed + i)` (distinct, exact enough to compare).
fn ramp(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| 0.01 * (seed + i) as f32 - 0.2).collect()
}

/// A safetensors file of F32 tensors.
fn safetensors(tensors: &[(&str, Vec<u64>, Vec<f32>)]) -> Vec<u8> {
    let mut infos = Vec::new();
    let mut at = 0;
    for (name, shape, values) in tensors {
        let len = 4 * values.len() as u64;
        infos.push(TensorInfo {
            name: name.to_string(),
            dtype: Dtype::F32,
            shape: shape.clone(),
            data_offsets: (at, at + len),
            blocks: None,
        });
        at += len;
    }
    let mut out = header::serialize(None, &infos);
    for (_, _, v) in tensors {
        out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    out
}

fn peft_folder(
    config: serde_json::Value,
    tensors: &[(&str, Vec<u64>, Vec<f32>)],
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(PEFT_CONFIG), config.to_string()).unwrap();
    std::fs::write(dir.path().join(PEFT_WEIGHTS), safetensors(tensors)).unwrap();
    dir
}

#[test]
fn peft_scales_follow_rslora_and_the_patterns_as_peft_matches_them() {
    let (a_q, b_q) = (ramp(2 * 6, 1), ramp(4 * 2, 30));
    let (a_v, b_v) = (ramp(6, 50), ramp(4, 70));
    let (a_e, b_e) = (ramp(2 * 10, 90), ramp(6 * 2, 5));
    let dir = peft_folder(
        json!({
            "peft_type": "LORA", "r": 2, "lora_alpha": 8, "use_rslora": true,
            "rank_pattern": {"v_proj": 1}, "alpha_pattern": {"layers\\.0\\.self_attn\\.v_proj": 3},
            "target_modules": ["q_proj", "v_proj", "embed_tokens"],
            "base_model_name_or_path": "tiny"
        }),
        &[
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                vec![2, 6],
                a_q.clone(),
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                vec![4, 2],
                b_q.clone(),
            ),
            (
                "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
                vec![1, 6],
                a_v.clone(),
            ),
            (
                "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight",
                vec![4, 1],
                b_v.clone(),
            ),
            (
                "base_model.model.model.embed_tokens.lora_embedding_A",
                vec![2, 10],
                a_e.clone(),
            ),
            (
                "base_model.model.model.embed_tokens.lora_embedding_B",
                vec![6, 2],
                b_e.clone(),
            ),
        ],
    );
    assert_eq!(detect(dir.path()), Some(AdapterFormat::Peft));
    assert_eq!(
        detect(&dir.path().join(PEFT_CONFIG)),
        Some(AdapterFormat::Peft)
    );
    let a = read(&dir.path().join(PEFT_WEIGHTS)).unwrap();
    assert_eq!(a.base_model.as_deref(), Some("tiny"));
    let by: BTreeMap<&str, &AdapterModule> =
        a.modules.iter().map(|m| (m.tensor.as_str(), m)).collect();
    let q = by["model.layers.0.self_attn.q_proj.weight"];
    // rsLoRA: alpha / sqrt(r).
    assert_eq!(q.scale, (8.0 / 2f64.sqrt()) as f32);
    assert_eq!((q.rows, q.cols, q.rank), (4, 6, 2));
    // ΔW[i, j] = Σ_r u[i, r] v[j, r] = s Σ_r B[i, r] A[r, j].
    for (i, j) in [(0, 0), (3, 5), (2, 1)] {
        let want: f32 = (0..2).map(|r| b_q[i * 2 + r] * a_q[r * 6 + j]).sum::<f32>() * q.scale;
        let got: f32 = (0..2).map(|r| q.u[i * 2 + r] * q.v[j * 2 + r]).sum();
        assert!((want - got).abs() < 1e-6, "{want} {got}");
    }
    // The alpha pattern names v_proj with its path; the rank pattern by its last part.
    let v = by["model.layers.0.self_attn.v_proj.weight"];
    assert_eq!((v.rank, v.scale), (1, 3.0));
    // An embedding: ΔE = s (B A)ᵀ, [vocab, hidden].
    let e = by["model.embed_tokens.weight"];
    assert_eq!((e.rows, e.cols), (10, 6));
    let (t, h) = (7, 4);
    let want: f32 = (0..2)
        .map(|r| b_e[h * 2 + r] * a_e[r * 10 + t])
        .sum::<f32>()
        * e.scale;
    let got: f32 = (0..2).map(|r| e.u[t * 2 + r] * e.v[h * 2 + r]).sum();
    assert!((want - got).abs() < 1e-6);
}

#[test]
fn peft_refuses_what_it_cannot_apply_exactly_by_name() {
    let pair = |m: &str| {
        vec![
            (
                format!("base_model.model.{m}.lora_A.weight"),
                vec![1u64, 2],
                vec![1f32, 2.0],
            ),
            (
                format!("base_model.model.{m}.lora_B.weight"),
                vec![2, 1],
                vec![1., 1.],
            ),
        ]
    };
    let tensors: Vec<(String, Vec<u64>, Vec<f32>)> = pair("w");
    let refs =
        |t: &[(String, Vec<u64>, Vec<f32>)]| -> Vec<(String, Vec<u64>, Vec<f32>)> { t.to_vec() };
    let make = |config: serde_json::Value, extra: Vec<(String, Vec<u64>, Vec<f32>)>| {
        let mut all = refs(&tensors);
        all.extend(extra);
        let borrowed: Vec<(&str, Vec<u64>, Vec<f32>)> = all
            .iter()
            .map(|(n, s, v)| (n.as_str(), s.clone(), v.clone()))
            .collect();
        let dir = peft_folder(config, &borrowed);
        read(dir.path()).unwrap_err().to_string()
    };
    let dora = make(json!({"r": 1, "use_dora": true}), vec![]);
    assert!(dora.contains("DoRA"), "{dora}");
    let dora = make(
        json!({"r": 1}),
        vec![(
            "base_model.model.w.lora_magnitude_vector".into(),
            vec![2],
            vec![1., 1.],
        )],
    );
    assert!(dora.contains("DoRA"), "{dora}");
    let ia3 = make(json!({"peft_type": "IA3"}), vec![]);
    assert!(ia3.contains("IA3"), "{ia3}");
    let rank = make(json!({"r": 4}), vec![]);
    assert!(rank.contains("rank 1 but the config says 4"), "{rank}");
    let stray = make(
        json!({"r": 1}),
        vec![(
            "base_model.model.lm_head.weight".into(),
            vec![2],
            vec![1., 1.],
        )],
    );
    assert!(stray.contains("modules_to_save"), "{stray}");
    // A module to save is a whole tensor.
    let dir = peft_folder(
        json!({"r": 1, "modules_to_save": ["lm_head"]}),
        &[
            ("base_model.model.w.lora_A.weight", vec![1, 2], vec![1., 2.]),
            ("base_model.model.w.lora_B.weight", vec![2, 1], vec![1., 1.]),
            ("base_model.model.lm_head.weight", vec![2], vec![5., 6.]),
        ],
    );
    let a = read(dir.path()).unwrap();
    assert_eq!(a.replaced.len(), 1);
    assert_eq!(a.replaced[0].tensor, "lm_head.weight");
    assert_eq!(a.modules[0].scale, 8.0, "PEFT's default alpha over r = 1");
}

/// A module's name, whether an embedding, rows, cols, rank, U and V.
type Module = (String, bool, usize, usize, usize, Vec<f32>, Vec<f32>);

fn modules() -> Vec<Module> {
    vec![
        (
            "model.layers.0.mlp.down_proj.weight".into(),
            false,
            4,
            6,
            1,
            ramp(4, 1),
            ramp(6, 9),
        ),
        (
            "model.layers.1.mlp.down_proj.weight".into(),
            false,
            4,
            6,
            1,
            ramp(4, 3),
            ramp(6, 2),
        ),
        (
            "model.embed_tokens.weight".into(),
            true,
            10,
            6,
            2,
            ramp(20, 4),
            ramp(12, 8),
        ),
    ]
}

fn outs(m: &[Module]) -> Vec<ModuleOut<'_>> {
    m.iter()
        .map(|(t, e, rows, cols, rank, u, v)| ModuleOut {
            tensor: t,
            embedding: *e,
            rows: *rows,
            cols: *cols,
            rank: *rank,
            u,
            v,
        })
        .collect()
}

#[test]
fn a_written_peft_adapter_reads_back_as_the_same_factors_at_scale_one() {
    let m = modules();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adapter");
    let base = BaseNote {
        name: Some("tiny".into()),
        fingerprint: "abc".into(),
        architecture: None,
    };
    let files = write_peft(&out, &outs(&m), &base).unwrap();
    assert_eq!(files.len(), 2);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(PEFT_CONFIG)).unwrap()).unwrap();
    // Most modules have rank 1: the embedding's rank 2 is a pattern of its own.
    assert_eq!(config["r"], 1);
    assert_eq!(config["rank_pattern"]["model\\.embed_tokens"], 2);
    let back = read(&out).unwrap();
    assert_eq!(back.modules.len(), 3);
    for (t, _, rows, cols, rank, u, v) in &m {
        let got = back.modules.iter().find(|x| &x.tensor == t).unwrap();
        assert_eq!(
            (got.rows, got.cols, got.rank, got.scale),
            (*rows, *cols, *rank, 1.0)
        );
        assert_eq!((&got.u, &got.v), (u, v), "{t}");
    }
}

#[test]
fn a_written_gguf_adapter_reads_back_as_the_same_factors_and_llama_cpp_shapes() {
    let m: Vec<_> = modules()
        .into_iter()
        .map(|mut x| {
            x.0 =
                x.0.replace("model.layers.0.mlp.down_proj", "blk.0.ffn_down")
                    .replace("model.layers.1.mlp.down_proj", "blk.1.ffn_down")
                    .replace("model.embed_tokens", "token_embd");
            x
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.gguf");
    let base = BaseNote {
        name: None,
        fingerprint: "abc".into(),
        architecture: Some("llama".into()),
    };
    write_gguf(&path, &outs(&m), &base).unwrap();
    assert_eq!(detect(&path), Some(AdapterFormat::Gguf));
    let bytes = std::fs::read(&path).unwrap();
    let h = tensor_surgeon_core::gguf::parse(&bytes, bytes.len() as u64).unwrap();
    // Ranks differ: alpha 0, which llama.cpp reads as scale 1.
    assert_eq!(
        h.get("adapter.lora.alpha"),
        Some(&tensor_surgeon_core::gguf::Value::F32(0.0))
    );
    // llama.cpp's checks: a linear's lora_a ne = [in, r], lora_b ne = [r, out] (row-major
    // [r, in] and [out, r]); the embedding's lora_a has the vocabulary's rows.
    let shape = |n: &str| h.tensor(n).unwrap().shape.clone();
    assert_eq!(shape("blk.0.ffn_down.weight.lora_a"), vec![1, 6]);
    assert_eq!(shape("blk.0.ffn_down.weight.lora_b"), vec![4, 1]);
    assert_eq!(shape("token_embd.weight.lora_a"), vec![10, 2]);
    assert_eq!(shape("token_embd.weight.lora_b"), vec![6, 2]);
    let back = read(&path).unwrap();
    assert_eq!(back.architecture.as_deref(), Some("llama"));
    for (t, _, rows, cols, rank, u, v) in &m {
        let got = back.modules.iter().find(|x| &x.tensor == t).unwrap();
        assert_eq!(
            (got.rows, got.cols, got.rank, got.scale),
            (*rows, *cols, *rank, 1.0)
        );
        assert_eq!((&got.u, &got.v), (u, v), "{t}");
    }
    // A patch file is not an adapter.
    let patch = dir.path().join("p.json");
    std::fs::write(&patch, "{}").unwrap();
    assert_eq!(detect(&patch), None);
    assert!(read(&patch)
        .unwrap_err()
        .to_string()
        .contains("not an adapter"));
}
