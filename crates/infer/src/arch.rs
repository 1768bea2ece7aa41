//! One description per architecture: what a decoder-only model is made of, resolved once when
//! it opens (from `config.json`, or a GGUF's metadata and tensor table) and read by every
//! executor (the candle pass, the decode step, the fact editor's differentiable pass) and every
//! study. No executor tests a family or probes a tensor name: adding a family is adding a
//! [`Kind`] and its lines in [`Architecture::resolve`] and [`stored_part`].
//!
//! Tensor names are the forward pass's (Hugging Face's, `model.layers.3.mlp.down_proj.weight`);
//! a GGUF's own names (`blk.3.ffn_down.weight`) come from [`stored_part`], the one table that
//! pairs them.
//!
//! **Architecture Invariant:** the families' differences live here and nowhere else in infer.

/// A decoder family this build runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Phi3,
    Gemma3,
}

impl Kind {
    /// `config.json`'s `model_type` of the family.
    pub fn model_type(self) -> &'static str {
        match self {
            Kind::Llama => "llama",
            Kind::Mistral => "mistral",
            Kind::Qwen2 => "qwen2",
            Kind::Qwen3 => "qwen3",
            Kind::Phi3 => "phi3",
            Kind::Gemma3 => "gemma3_text",
        }
    }

    /// The family of a `config.json`'s `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Kind> {
        Some(match model_type {
            "llama" => Kind::Llama,
            "mistral" => Kind::Mistral,
            "qwen2" => Kind::Qwen2,
            "qwen3" => Kind::Qwen3,
            "phi3" => Kind::Phi3,
            "gemma3_text" => Kind::Gemma3,
            _ => return None,
        })
    }

    /// The family of a GGUF's `general.architecture` (llama.cpp writes Mistral as `llama`).
    pub fn from_gguf(architecture: &str) -> Option<Kind> {
        Some(match architecture {
            "llama" => Kind::Llama,
            "qwen2" => Kind::Qwen2,
            "qwen3" => Kind::Qwen3,
            "phi3" => Kind::Phi3,
            "gemma3" => Kind::Gemma3,
            _ => return None,
        })
    }

    /// llama.cpp's `general.architecture` for the family (it writes Mistral as `llama`).
    pub fn gguf_architecture(self) -> &'static str {
        match self {
            Kind::Llama | Kind::Mistral => "llama",
            Kind::Qwen2 => "qwen2",
            Kind::Qwen3 => "qwen3",
            Kind::Phi3 => "phi3",
            Kind::Gemma3 => "gemma3",
        }
    }

    /// Whether llama.cpp's converter interleaves the rotary halves of each query and key
    /// head's rows (its Llama-architecture files).
    pub fn interleaves_rotary_rows(self) -> bool {
        matches!(self, Kind::Llama | Kind::Mistral)
    }

    /// Gemma's layers: a norm after each block besides the one before it.
    fn sandwich_norms(self) -> bool {
        self == Kind::Gemma3
    }

    /// Per-head RMS norms of the query and key before rotation.
    fn head_norms(self) -> bool {
        matches!(self, Kind::Qwen3 | Kind::Gemma3)
    }

    /// q, k and v in one matrix; gate and up in one.
    fn fused(self) -> bool {
        self == Kind::Phi3
    }
}

/// The gate's non-linearity of a gated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x·σ(x)` (SwiGLU).
    Silu,
    /// GELU with the tanh approximation (GeGLU).
    GeluTanh,
}

impl Activation {
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Silu => v / (1.0 + (-v).exp()),
            Activation::GeluTanh => {
                const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
                0.5 * v * (1.0 + (SQRT_TWO_OVER_PI * v * (1.0 + 0.044715 * v * v)).tanh())
            }
        }
    }
}

/// A linear map `x Wᵀ (+ b)`: its weight (`[out, in]`) and bias, by name.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: String,
    pub bias: Option<String>,
    pub out: usize,
    pub input: usize,
}

/// A layer's query, key and value projections.
#[derive(Clone, Debug)]
pub enum Qkv {
    Split {
        q: Linear,
        k: Linear,
        v: Linear,
    },
    /// One matrix: the query rows, then the key rows, then the value rows.
    Fused(Linear),
}

/// A gated MLP's gate and up projections.
#[derive(Clone, Debug)]
pub enum GateUp {
    Split {
        gate: Linear,
        up: Linear,
    },
    /// One matrix: the gate rows, then the up rows.
    Fused(Linear),
}

/// What one decoder layer is made of.
#[derive(Clone, Debug)]
pub struct Layer {
    pub index: usize,
    /// The RMS norm before attention.
    pub input_norm: String,
    pub qkv: Qkv,
    /// RMS norms of each head's query and key (`[head_width]`), before rotation.
    pub q_norm: Option<String>,
    pub k_norm: Option<String>,
    pub o: Linear,
    /// A norm of the attention's output before it joins the residual stream (Gemma).
    pub post_attention_norm: Option<String>,
    /// The RMS norm before the MLP.
    pub pre_mlp_norm: String,
    pub gate_up: GateUp,
    pub activation: Activation,
    pub down: Linear,
    /// A norm of the MLP's output before it joins the residual stream (Gemma).
    pub post_mlp_norm: Option<String>,
    /// The rotary base of this layer's positions.
    pub rope_theta: f64,
    /// Keys this layer sees: the last this many positions (`None`: all).
    pub window: Option<usize>,
}

/// A decoder-only causal language model: its constants and its layers.
#[derive(Clone, Debug)]
pub struct Architecture {
    pub kind: Kind,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_width: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub rms_eps: f64,
    pub max_positions: usize,
    pub eos: Vec<u32>,
    pub embedding: String,
    /// The embeddings are multiplied by this (Gemma: √hidden, in f32).
    pub embedding_scale: Option<f32>,
    /// Added to every RMS norm weight before use (Hugging Face's Gemma stores `w` for `1 + w`;
    /// llama.cpp's converter stores `1 + w`).
    pub norm_offset: f32,
    /// Attention scores are multiplied by this (`1/√head_width`; Gemma 3:
    /// `query_pre_attn_scalar^-1/2`).
    pub attention_scale: f64,
    pub final_norm: String,
    /// The matrix of the logits (the embedding when tied).
    pub unembedding: String,
    /// `cap · tanh(logits / cap)` on the final logits.
    pub final_softcap: Option<f32>,
    pub layers: Vec<Layer>,
}

/// The parts of a layer, each with its Hugging Face name (after `model.layers.N.`, before
/// `.weight`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    InputNorm,
    Q,
    K,
    V,
    Qkv,
    QNorm,
    KNorm,
    O,
    PostAttentionNorm,
    PreMlpNorm,
    Gate,
    Up,
    GateUp,
    Down,
    PostMlpNorm,
}

impl Part {
    const ALL: [Part; 15] = [
        Part::InputNorm,
        Part::Q,
        Part::K,
        Part::V,
        Part::Qkv,
        Part::QNorm,
        Part::KNorm,
        Part::O,
        Part::PostAttentionNorm,
        Part::PreMlpNorm,
        Part::Gate,
        Part::Up,
        Part::GateUp,
        Part::Down,
        Part::PostMlpNorm,
    ];

    /// The Hugging Face name of the part in a `kind` model.
    fn hf(self, kind: Kind) -> &'static str {
        match self {
            Part::InputNorm => "input_layernorm",
            Part::Q => "self_attn.q_proj",
            Part::K => "self_attn.k_proj",
            Part::V => "self_attn.v_proj",
            Part::Qkv => "self_attn.qkv_proj",
            Part::QNorm => "self_attn.q_norm",
            Part::KNorm => "self_attn.k_norm",
            Part::O => "self_attn.o_proj",
            // Llama names its pre-MLP norm after where it sits; Gemma has a norm of that name
            // on the attention's output and names its pre-MLP norm for what it precedes.
            Part::PostAttentionNorm => "post_attention_layernorm",
            Part::PreMlpNorm if kind.sandwich_norms() => "pre_feedforward_layernorm",
            Part::PreMlpNorm => "post_attention_layernorm",
            Part::Gate => "mlp.gate_proj",
            Part::Up => "mlp.up_proj",
            Part::GateUp => "mlp.gate_up_proj",
            Part::Down => "mlp.down_proj",
            Part::PostMlpNorm => "post_feedforward_layernorm",
        }
    }

    /// llama.cpp's name of the part.
    fn gguf(self) -> &'static str {
        match self {
            Part::InputNorm => "attn_norm",
            Part::Q => "attn_q",
            Part::K => "attn_k",
            Part::V => "attn_v",
            Part::Qkv => "attn_qkv",
            Part::QNorm => "attn_q_norm",
            Part::KNorm => "attn_k_norm",
            Part::O => "attn_output",
            Part::PostAttentionNorm => "post_attention_norm",
            Part::PreMlpNorm => "ffn_norm",
            Part::Gate => "ffn_gate",
            // Phi-3's fused gate and up matrix is llama.cpp's `ffn_up`.
            Part::Up | Part::GateUp => "ffn_up",
            Part::Down => "ffn_down",
            Part::PostMlpNorm => "post_ffw_norm",
        }
    }

    /// The parts a `kind` layer has.
    fn of(kind: Kind) -> impl Iterator<Item = Part> {
        Part::ALL.into_iter().filter(move |p| match p {
            Part::Q | Part::K | Part::V | Part::Gate | Part::Up => !kind.fused(),
            Part::Qkv | Part::GateUp => kind.fused(),
            Part::QNorm | Part::KNorm => kind.head_norms(),
            Part::PostAttentionNorm | Part::PostMlpNorm => kind.sandwich_norms(),
            _ => true,
        })
    }
}

/// The forward pass's name of layer `layer`'s part.
fn layer_tensor(layer: usize, part: &str, suffix: &str) -> String {
    format!("model.layers.{layer}.{part}.{suffix}")
}

/// The Hugging Face names of the tensors outside the layers, with llama.cpp's.
const GLOBAL: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// llama.cpp's name of a `kind` model's tensor `hf` (a weight or a bias), if it has one.
pub fn stored_part(kind: Kind, hf: &str) -> Option<String> {
    if let Some((_, g)) = GLOBAL.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, suffix) = rest.rsplit_once('.')?;
    let part = Part::of(kind).find(|p| p.hf(kind) == part)?;
    Some(format!("blk.{layer}.{}.{suffix}", part.gguf()))
}

/// The numbers a description is made from, whatever file they come from.
#[derive(Clone, Debug)]
pub struct Constants {
    pub kind: Kind,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_width: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub vocab: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub max_positions: usize,
    pub tied: bool,
    pub eos: Vec<u32>,
    /// Mistral's window on every layer.
    pub window: Option<usize>,
    /// Biases on the query, key and value projections (Qwen2).
    pub qkv_bias: bool,
    /// Biases on the output and MLP projections too.
    pub mlp_bias: bool,
    pub final_softcap: Option<f32>,
    /// Gemma 3's sliding-window layers.
    pub gemma: Option<GemmaLayers>,
}

/// Gemma 3's local and global layers, and its other constants.
#[derive(Clone, Debug)]
pub struct GemmaLayers {
    pub sliding_window: usize,
    /// Every this-many-th layer is global (1-based: layers 6, 12, … of 6).
    pub global_every: usize,
    pub local_rope_theta: f64,
    pub query_pre_attn_scalar: f64,
    /// 1 for Hugging Face checkpoints, 0 for llama.cpp's GGUFs.
    pub norm_offset: f32,
}

impl Architecture {
    /// The description of a model with these constants.
    pub fn resolve(c: &Constants) -> Architecture {
        let kind = c.kind;
        let (q_out, kv_out) = (c.heads * c.head_width, c.kv_heads * c.head_width);
        let linear = |l: usize, part: Part, out: usize, input: usize, bias: bool| Linear {
            weight: layer_tensor(l, part.hf(kind), "weight"),
            bias: bias.then(|| layer_tensor(l, part.hf(kind), "bias")),
            out,
            input,
        };
        let norm = |l: usize, part: Part| layer_tensor(l, part.hf(kind), "weight");
        let layers = (0..c.layers)
            .map(|l| {
                let qkv = if kind.fused() {
                    Qkv::Fused(linear(
                        l,
                        Part::Qkv,
                        q_out + 2 * kv_out,
                        c.hidden,
                        c.qkv_bias,
                    ))
                } else {
                    Qkv::Split {
                        q: linear(l, Part::Q, q_out, c.hidden, c.qkv_bias),
                        k: linear(l, Part::K, kv_out, c.hidden, c.qkv_bias),
                        v: linear(l, Part::V, kv_out, c.hidden, c.qkv_bias),
                    }
                };
                let gate_up = if kind.fused() {
                    GateUp::Fused(linear(
                        l,
                        Part::GateUp,
                        2 * c.intermediate,
                        c.hidden,
                        c.mlp_bias,
                    ))
                } else {
                    GateUp::Split {
                        gate: linear(l, Part::Gate, c.intermediate, c.hidden, c.mlp_bias),
                        up: linear(l, Part::Up, c.intermediate, c.hidden, c.mlp_bias),
                    }
                };
                let sandwich = kind.sandwich_norms();
                let local = c
                    .gemma
                    .as_ref()
                    .filter(|g| !(l + 1).is_multiple_of(g.global_every));
                Layer {
                    index: l,
                    input_norm: norm(l, Part::InputNorm),
                    qkv,
                    q_norm: kind.head_norms().then(|| norm(l, Part::QNorm)),
                    k_norm: kind.head_norms().then(|| norm(l, Part::KNorm)),
                    o: linear(l, Part::O, c.hidden, q_out, c.mlp_bias),
                    post_attention_norm: sandwich.then(|| norm(l, Part::PostAttentionNorm)),
                    pre_mlp_norm: norm(l, Part::PreMlpNorm),
                    gate_up,
                    activation: match kind {
                        Kind::Gemma3 => Activation::GeluTanh,
                        _ => Activation::Silu,
                    },
                    down: linear(l, Part::Down, c.hidden, c.intermediate, c.mlp_bias),
                    post_mlp_norm: sandwich.then(|| norm(l, Part::PostMlpNorm)),
                    rope_theta: local.map_or(c.rope_theta, |g| g.local_rope_theta),
                    window: match &c.gemma {
                        Some(_) => local.map(|g| g.sliding_window),
                        None => c.window,
                    },
                }
            })
            .collect();
        let embedding = GLOBAL[0].0.to_string();
        Architecture {
            kind,
            hidden: c.hidden,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_width: c.head_width,
            intermediate: c.intermediate,
            vocab: c.vocab,
            rms_eps: c.rms_eps,
            max_positions: c.max_positions,
            eos: c.eos.clone(),
            embedding_scale: c.gemma.as_ref().map(|_| (c.hidden as f32).sqrt()),
            norm_offset: c.gemma.as_ref().map_or(0.0, |g| g.norm_offset),
            attention_scale: match &c.gemma {
                Some(g) => 1.0 / g.query_pre_attn_scalar.sqrt(),
                None => 1.0 / (c.head_width as f64).sqrt(),
            },
            final_norm: GLOBAL[1].0.to_string(),
            unembedding: if c.tied {
                embedding.clone()
            } else {
                GLOBAL[2].0.to_string()
            },
            embedding,
            final_softcap: c.final_softcap,
            layers,
        }
    }

    /// The number of layers.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// llama.cpp's name of a tensor of this model (`None`: it has none).
    pub fn stored_name(&self, hf: &str) -> Option<String> {
        stored_part(self.kind, hf)
    }

    /// Every tensor the forward pass may read, weights and biases.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut out = vec![self.embedding.clone(), self.final_norm.clone()];
        if self.unembedding != self.embedding {
            out.push(self.unembedding.clone());
        }
        for l in &self.layers {
            let mut linears: Vec<&Linear> = match &l.qkv {
                Qkv::Split { q, k, v } => vec![q, k, v],
                Qkv::Fused(m) => vec![m],
            };
            linears.push(&l.o);
            match &l.gate_up {
                GateUp::Split { gate, up } => linears.extend([gate, up]),
                GateUp::Fused(m) => linears.push(m),
            }
            linears.push(&l.down);
            for m in linears {
                out.push(m.weight.clone());
                out.extend(m.bias.clone());
            }
            out.push(l.input_norm.clone());
            out.push(l.pre_mlp_norm.clone());
            out.extend(
                [
                    &l.q_norm,
                    &l.k_norm,
                    &l.post_attention_norm,
                    &l.post_mlp_norm,
                ]
                .into_iter()
                .flatten()
                .cloned(),
            );
        }
        out
    }

    /// Width of the queries of all heads.
    pub fn q_width(&self) -> usize {
        self.heads * self.head_width
    }

    /// Width of the keys (or values) of all key/value heads.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_width
    }

    /// The layer whose tensor `name` is (the forward pass's name or llama.cpp's).
    pub fn layer_of(name: &str) -> Option<usize> {
        ["model.layers.", "blk."].iter().find_map(|prefix| {
            name.strip_prefix(prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constants(kind: Kind) -> Constants {
        Constants {
            kind,
            hidden: 8,
            heads: 2,
            kv_heads: 1,
            head_width: 4,
            intermediate: 12,
            layers: 6,
            vocab: 10,
            rms_eps: 1e-6,
            rope_theta: 1e4,
            max_positions: 64,
            tied: true,
            eos: vec![],
            window: None,
            qkv_bias: kind == Kind::Qwen2,
            mlp_bias: false,
            final_softcap: None,
            gemma: (kind == Kind::Gemma3).then_some(GemmaLayers {
                sliding_window: 4,
                global_every: 3,
                local_rope_theta: 10.0,
                query_pre_attn_scalar: 16.0,
                norm_offset: 1.0,
            }),
        }
    }

    #[test]
    fn every_hugging_face_name_has_one_llama_cpp_name_per_family() {
        for kind in [
            Kind::Llama,
            Kind::Qwen2,
            Kind::Qwen3,
            Kind::Phi3,
            Kind::Gemma3,
        ] {
            let a = Architecture::resolve(&constants(kind));
            let names = a.tensor_names();
            let stored: std::collections::HashSet<String> =
                names.iter().map(|n| a.stored_name(n).unwrap()).collect();
            assert_eq!(
                stored.len(),
                names.len(),
                "{kind:?}: two names share a file name"
            );
        }
        let cases = [
            (
                Kind::Gemma3,
                "model.layers.2.post_attention_layernorm.weight",
                "blk.2.post_attention_norm.weight",
            ),
            (
                Kind::Gemma3,
                "model.layers.2.pre_feedforward_layernorm.weight",
                "blk.2.ffn_norm.weight",
            ),
            (
                Kind::Llama,
                "model.layers.2.post_attention_layernorm.weight",
                "blk.2.ffn_norm.weight",
            ),
            (
                Kind::Phi3,
                "model.layers.0.mlp.gate_up_proj.weight",
                "blk.0.ffn_up.weight",
            ),
            (
                Kind::Qwen2,
                "model.layers.1.self_attn.k_proj.bias",
                "blk.1.attn_k.bias",
            ),
            (Kind::Qwen2, "lm_head.weight", "output.weight"),
        ];
        for (kind, hf, gguf) in cases {
            assert_eq!(
                stored_part(kind, hf).as_deref(),
                Some(gguf),
                "{kind:?} {hf}"
            );
        }
        assert_eq!(
            stored_part(Kind::Llama, "model.layers.0.self_attn.q_norm.weight"),
            None
        );
    }

    #[test]
    fn gemma_layers_alternate_windows_and_rotary_bases() {
        let a = Architecture::resolve(&constants(Kind::Gemma3));
        let windows: Vec<Option<usize>> = a.layers.iter().map(|l| l.window).collect();
        assert_eq!(windows, [Some(4), Some(4), None, Some(4), Some(4), None]);
        assert_eq!(a.layers[2].rope_theta, 1e4, "global layers use rope_theta");
        assert_eq!(a.layers[0].rope_theta, 10.0);
        assert_eq!(a.attention_scale, 0.25);
        assert_eq!(a.embedding_scale, Some(8f32.sqrt()));
        let llama = Architecture::resolve(&constants(Kind::Llama));
        assert!(llama
            .layers
            .iter()
            .all(|l| l.window.is_none() && l.post_mlp_norm.is_none()));
        assert_eq!(llama.attention_scale, 0.5);
    }
}
