//! The investigation toolkit over the Model Context Protocol (the official Rust SDK, rmcp):
//! the same workbench the web app uses, as tools an agent can call and resources it can read.
//! Served over stdio (`tensor-surgeon mcp`) and over streamable HTTP at `/mcp` of the web
//! server, where an agent shares the open session: its proposals show up in the patch panel.
//! Every failure is a tool error carrying the same message the UI shows.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};
use std::sync::Arc;
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::filter::Filter;
use tensor_surgeon_core::view::ViewSpec;
use tensor_surgeon_engine::workbench::Workbench;
use tensor_surgeon_engine::Error;
use tensor_surgeon_wire::{
    ActivationsRequest, EditRequest, FactRequest, LayoutParams, Method, ProjectRequest, RunRequest,
    TraceRequest,
};

/// Most elements `read_values` returns.
const READ_CAP: u64 = 4096;
const MODEL_URI: &str = "tensor-surgeon://model";
const PATCH_URI: &str = "tensor-surgeon://patch";

/// The MCP service over one workbench.
#[derive(Clone)]
pub struct Tools {
    wb: Arc<Workbench>,
    tool_router: ToolRouter<Tools>,
}

use tensor_surgeon_wire::mcp::*;

mod summary;
use summary::summarise;

type ToolResult = Result<String, String>;

fn json_text(v: &impl serde::Serialize) -> ToolResult {
    serde_json::to_string_pretty(v).map_err(|e| e.to_string())
}

/// Runs blocking workbench work off the async runtime; errors become tool errors.
async fn blocking<T: serde::Serialize + Send + 'static>(
    f: impl FnOnce() -> tensor_surgeon_engine::Result<T> + Send + 'static,
) -> ToolResult {
    match tensor_surgeon_engine::blocking(f).await {
        Ok(v) => json_text(&v),
        Err(e) => Err(e.to_string()),
    }
}

impl Tools {
    pub fn new(wb: Arc<Workbench>) -> Tools {
        Tools {
            wb,
            tool_router: Self::tool_router(),
        }
    }

    fn token_row(
        &self,
        tensor: &Option<String>,
        token: &str,
    ) -> tensor_surgeon_engine::Result<(String, u64)> {
        let vocab = self.wb.vocab().ok_or_else(|| {
            tensor_surgeon_engine::Error::Usage(
                "this model has no tokenizer.json: token tools are unavailable".into(),
            )
        })?;
        let tensor = match tensor {
            Some(t) => t.clone(),
            None => self.wb.vocab_tensor().ok_or_else(|| {
                tensor_surgeon_engine::Error::Usage(
                    "no [vocab, hidden] matrix in the model; pass tensor".into(),
                )
            })?,
        };
        let row = vocab.resolve_token(token)?;
        Ok((tensor, row))
    }
}

#[tool_router]
impl Tools {
    #[tool(
        description = "List the model's tensors (name, dtype, shape, bytes), filtered by a name substring or /regex/, with paging. Start here to see what the model holds."
    )]
    async fn list_tensors(&self, Parameters(p): Parameters<ListTensors>) -> ToolResult {
        let filter = match p.filter.strip_prefix('/').and_then(|f| f.strip_suffix('/')) {
            Some(re) => Filter::new(re, true),
            None => Filter::new(&p.filter, false),
        }
        .map_err(|e| format!("bad filter: {e}"))?;
        let summary = self.wb.summary();
        let all: Vec<_> = summary
            .tensors
            .iter()
            .filter(|t| filter.matches(&t.name))
            .collect();
        let limit = p.limit.unwrap_or(100).clamp(1, 10_000);
        let page: Vec<Value> = all
            .iter()
            .skip(p.offset)
            .take(limit)
            .map(|t| json!({"name": t.name, "dtype": t.dtype, "shape": t.shape, "bytes": t.bytes}))
            .collect();
        json_text(&json!({"total": all.len(), "offset": p.offset, "tensors": page}))
    }

    #[tool(
        description = "One tensor's dtype, shape, size, file and byte offsets, and whether its rows are labelled with tokens."
    )]
    async fn tensor_info(&self, Parameters(p): Parameters<TensorArg>) -> ToolResult {
        let (shard, info) = self.wb.model().get(&p.tensor).map_err(|e| e.to_string())?;
        let token_dims: Vec<usize> = info
            .shape
            .iter()
            .enumerate()
            .filter(|(_, &s)| self.wb.token_label(s, 0).is_some())
            .map(|(d, _)| d)
            .collect();
        json_text(&json!({
            "name": info.name, "dtype": self.wb.model().type_name(shard, info), "shape": info.shape,
            "elements": info.elements(), "bytes": info.byte_len(), "file": shard.file_name,
            "data_offsets": [info.data_offsets.0, info.data_offsets.1], "token_dims": token_dims,
        }))
    }

    #[tool(
        description = "Statistics of a tensor with the session's edits applied: count, min, max, mean, std, mean |x|, max |x|, quantiles p0.1..p99.9, NaN/Inf/zero/subnormal counts, sparsity, and a 256-bin histogram. NaN and Inf are counted; the numbers are over finite values."
    )]
    async fn tensor_stats(&self, Parameters(p): Parameters<TensorArg>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || wb.stats(&p.tensor)).await
    }

    #[tool(
        description = "Exact values of a slice of a tensor (edits applied): shape, values in C order (NaN/Inf as strings) and each element's stored bytes as little-endian hex. Keep slices small (default 256 elements, at most 4096)."
    )]
    async fn read_values(&self, Parameters(p): Parameters<ReadValues>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let (shard, info) = wb.model().get(&p.tensor)?;
            let sel = tensor_surgeon_store::model::select(&p.tensor, &p.spec, &info.shape)?;
            let cap = p.max_elements.unwrap_or(256).clamp(1, READ_CAP);
            if sel.elements() > cap {
                return Err(tensor_surgeon_engine::Error::Usage(format!(
                    "the slice {:?} of {} has {} elements; read_values returns at most {cap}: narrow the spec",
                    p.spec, p.tensor, sel.elements()
                )));
            }
            let bytes = wb.read(&p.tensor, &sel)?;
            let width = dtype::element_bytes(info.dtype);
            let values: Vec<Value> = bytes
                .chunks(width)
                .map(|b| dtype::to_json(dtype::decode(info.dtype, b)))
                .collect();
            let mut out = json!({"tensor": p.tensor, "dtype": wb.model().type_name(shard, info), "shape": sel.out_shape(), "values": values});
            // A quantized tensor's values are decoded from blocks: no element has bytes of its own.
            if shard.quantized(info).is_none() {
                out["hex"] = bytes.chunks(width).map(hex::encode).collect();
            }
            Ok(out)
        })
        .await
    }

    #[tool(
        description = "Scan every tensor (edits applied) and return those flagged: NaN/Inf present, all zero, constant, or an outlier among its siblings (same name except the layer number; std compared to the siblings' median), plus the sibling groups with outliers. The first call reads the whole model."
    )]
    async fn find_outliers(&self, Parameters(p): Parameters<FindOutliers>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let status = wb.scan_now()?;
            let limit = p.limit.unwrap_or(50).clamp(1, 10_000);
            let flagged: Vec<Value> = status
                .rows
                .iter()
                .filter(|r| !r.flags.is_empty())
                .take(limit)
                .map(|r| json!({"tensor": r.tensor, "dtype": r.dtype, "shape": r.shape, "std": r.summary.std,
                    "max_abs": r.summary.max_abs, "flags": r.flags}))
                .collect();
            let groups: Vec<_> = status.groups.iter().filter(|g| !g.outliers.is_empty()).collect();
            Ok(json!({"tensors_scanned": status.rows.len(), "flagged": flagged, "sibling_outliers": groups}))
        })
        .await
    }

    #[tool(
        description = "The k tokens whose rows are most cosine-similar to a token's row in a [vocab, hidden] matrix (the embedding by default), edits applied. Needs a tokenizer.json beside the model."
    )]
    async fn nearest_tokens(&self, Parameters(p): Parameters<NearestTokens>) -> ToolResult {
        let wb = self.wb.clone();
        let found = self.token_row(&p.tensor, &p.token);
        blocking(move || {
            let (tensor, row) = found?;
            wb.nearest(&tensor, row, p.k.unwrap_or(10))
        })
        .await
    }

    #[tool(
        description = "Lay out the rows of a 2-D tensor (the embedding by default) by PCA, t-SNE or UMAP, edits applied, every row (no sampling), and summarise the layout's clusters (k-means on the layout): their sizes and first members with their tokens. Use it to find groups of tokens or neurons that the weights treat alike, then inspect or edit those rows. t-SNE and UMAP take seconds to a minute on a 50k-row vocabulary; the result is cached until the tensor is edited."
    )]
    async fn project_rows(&self, Parameters(p): Parameters<ProjectRows>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let tensor = match p.tensor {
                Some(t) => t,
                None => wb.vocab_tensor().ok_or_else(|| {
                    Error::Usage("name a tensor: this model has no vocabulary matrix".into())
                })?,
            };
            let method = match p.method.as_deref().unwrap_or("umap") {
                "pca" => Method::Pca,
                "tsne" | "t-sne" => Method::Tsne,
                "umap" => Method::Umap,
                other => {
                    return Err(Error::Usage(format!(
                        "method {other:?}: use pca, tsne or umap"
                    )))
                }
            };
            let (_, info) = wb.model().get(&tensor)?;
            let defaults = LayoutParams::default();
            let req = ProjectRequest {
                tensor: info.name.clone(),
                spec: ViewSpec::default_for(&info.shape),
                columns: p.columns.unwrap_or(false),
                dims: p.dims.unwrap_or(2),
                normalize: p.normalize.unwrap_or(false),
                method,
                params: LayoutParams {
                    perplexity: p.perplexity.unwrap_or(defaults.perplexity),
                    n_neighbors: p.n_neighbors.unwrap_or(defaults.n_neighbors),
                    min_dist: p.min_dist.unwrap_or(defaults.min_dist),
                    iterations: p.iterations,
                    seed: p.seed.unwrap_or(0),
                    ..defaults
                },
            };
            let layout = wb.project(&req)?;
            Ok(summarise(
                &layout,
                &info.name,
                p.clusters.unwrap_or(8),
                p.points.unwrap_or(0),
            ))
        })
        .await
    }

    #[tool(
        description = "Compare two tokens' rows of a [vocab, hidden] matrix (the embedding by default): cosine similarity and L2 distance, edits applied."
    )]
    async fn compare_tokens(&self, Parameters(p): Parameters<CompareTokens>) -> ToolResult {
        let wb = self.wb.clone();
        let a = self.token_row(&p.tensor, &p.a);
        let b = self.token_row(&p.tensor, &p.b);
        blocking(move || {
            let ((tensor, a), (_, b)) = (a?, b?);
            let mut c = wb.compare_rows(&tensor, a, b)?;
            c.delta.clear();
            Ok(c)
        })
        .await
    }

    #[tool(
        description = "Run the model on a prompt, on the base weights and on the session's edited weights (edits applied, no bake): the top-k next tokens with probabilities on both sides, a target token's probability and log-odds, the KL divergence between the two next-token distributions, and optional greedy continuations. Test a hypothesis before proposing an edit, and again after. Needs a Llama-family model with config.json and tokenizer.json."
    )]
    async fn run_prompt(&self, Parameters(p): Parameters<RunPrompt>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            wb.run_prompt(&RunRequest {
                prompt: p.prompt,
                top_k: p.top_k.unwrap_or(10),
                target: p.target,
                generate: p.generate.unwrap_or(0),
            })
        })
        .await
    }

    #[tool(
        description = "Causal tracing (ROME): where the edited model keeps its answer about a subject. The subject's token embeddings are corrupted with noise; then each layer's output, and the MLP and attention outputs of a window of layers, are restored from the clean run one (layer, token) at a time, and p(target) is recorded. Returns tokens, the subject's token range [start, end), the target, clean and corrupted p, and per kind a [layer][token] map of p. A high MLP cell at the subject's last token marks the layer a fact edit should change. Takes tens of seconds on a 30-layer model."
    )]
    async fn causal_trace(&self, Parameters(p): Parameters<CausalTraceArgs>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let defaults = TraceRequest::new(&p.prompt, &p.subject);
            let req = TraceRequest {
                target: p.target,
                samples: p.samples.unwrap_or(defaults.samples),
                noise: p.noise,
                window: p.window.unwrap_or(defaults.window),
                seed: p.seed.unwrap_or(0),
                kinds: p.kinds.unwrap_or(defaults.kinds.clone()),
                ..defaults
            };
            wb.trace(
                &req,
                &std::sync::atomic::AtomicBool::new(false),
                &mut |_| {},
            )
        })
        .await
    }

    #[tool(
        description = "The MLP neurons of one decoder layer most active (by |activation|) at the last token of a prompt, on the edited model, with the weights each neuron owns: its column of down_proj and its rows of up_proj and gate_proj (edit those to change the neuron). Also the logit lens: each layer's top next tokens."
    )]
    async fn top_neurons(&self, Parameters(p): Parameters<TopNeurons>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let a = wb.activations(&ActivationsRequest {
                prompt: p.prompt,
                layer: p.layer,
                top: p.k.unwrap_or(10),
            })?;
            let neurons: Vec<_> = a
                .top_neurons
                .iter()
                .map(|n| {
                    json!({"neuron": n.neuron, "activation": n.value,
                        "down_proj_column": format!("{}[:, {}]", a.down_proj, n.neuron),
                        "up_proj_row": format!("{}[{}, :]", a.up_proj, n.neuron),
                        "gate_proj_row": format!("{}[{}, :]", a.gate_proj, n.neuron)})
                })
                .collect();
            let lens: Vec<_> = a
                .logit_lens
                .iter()
                .map(|l| json!({"layer": l.layer, "top": l.top.iter().take(3).map(|t| json!({"token": t.token, "prob": t.prob})).collect::<Vec<_>>()}))
                .collect();
            let tokens: Vec<&str> = a.tokens.iter().map(|t| t.token.as_str()).collect();
            Ok(json!({"layer": a.layer, "tokens": tokens, "neurons": neurons, "logit_lens": lens}))
        })
        .await
    }

    #[tool(
        description = "Propose an edit to the model with the hypothesis it tests. It is recorded as pending: nothing changes until a person accepts it in the web app's patch panel (unless the server runs with --agent-auto-apply). Returns the proposal id and whether it was applied. Values the dtype cannot hold are errors unless saturate/round is set."
    )]
    async fn propose_edit(&self, Parameters(p): Parameters<ProposeEdit>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let req = EditRequest {
                tensor: p.tensor,
                spec: p.spec,
                op: p.op,
                saturate: p.saturate,
                round: p.round,
            };
            let (proposal, applied) = wb.propose(&req, &p.hypothesis)?;
            Ok(
                json!({"id": proposal.id, "label": proposal.label, "bytes": proposal.bytes,
                "status": if applied { "applied" } else { "pending" }}),
            )
        })
        .await
    }

    #[tool(
        description = "Rewrite a fact (ROME): compute the rank-one change of one layer's down_proj that makes the model continue `prompt` (which contains `subject`) with `target`, and record it as a pending proposal with the hypothesis it tests. Takes tens of seconds. Returns the proposal (id, label, bytes, status) and the report: ROME's scores (efficacy on the prompt, paraphrases, neighbours keeping their answer), each probe's log-probabilities base vs edited, the KL on unrelated prompts, a continuation base vs edited, and the optimisation's steps. A person accepts or rejects it like any proposal."
    )]
    async fn edit_fact(&self, Parameters(p): Parameters<EditFactArgs>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let req = FactRequest {
                subject: p.subject,
                prompt: p.prompt,
                target: p.target,
                paraphrases: p.paraphrases,
                neighbors: p.neighbors,
            };
            let knobs = tensor_surgeon_engine::fact::FactKnobs {
                layer: p.layer.map(|l| l as usize),
                clamp: p.clamp,
                kl_weight: p.kl_weight,
            };
            let origin = tensor_surgeon_engine::workbench::agent_origin(&p.hypothesis)?;
            let f = wb.propose_fact(&req, &knobs, origin)?;
            Ok(
                json!({"id": f.proposal.id, "label": f.proposal.label, "bytes": f.proposal.bytes,
                "status": if f.applied { "applied" } else { "pending" }, "report": f.report}),
            )
        })
        .await
    }

    #[tool(
        description = "Rewrite several facts at once (MEMIT): each fact's new answer is set at the last of `layers` by the fact editor's optimisation, then spread over the down_proj of every layer in `layers` (lowest first, each on the weights the ones below already changed). Saved as a patch named `save_as` in the patches folder, one low-rank entry per layer of rank the number of facts; the session does not change until a person loads it as a layer. Takes tens of seconds per fact. Returns the file's name and each fact's report, scored with every layer's update in (efficacy, paraphrases, neighbours, unrelated KL, continuations)."
    )]
    async fn edit_facts(&self, Parameters(p): Parameters<EditFactsArgs>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let origin = tensor_surgeon_engine::workbench::agent_origin(&p.hypothesis)?;
            let layers: Vec<usize> = p.layers.iter().map(|&l| l as usize).collect();
            let (reports, saved) = wb.edit_facts_to_patch(&p.facts, &layers, &p.save_as, origin)?;
            Ok(json!({"saved": saved, "reports": reports}))
        })
        .await
    }

    #[tool(
        description = "Directional ablation: the direction from the mean residual stream (after `layer`, default the middle, at each prompt's last token) of the `to` prompts to that of the `from` prompts' even-numbered ones, projected out of every layer's o_proj and down_proj (and the embedding with `embedding`), with `strength`. Saved as a patch of rank-one low-rank entries named `save_as` in the patches folder; the session does not change until a person loads it as a layer. Returns the report: the behaviour on the held-out `from` prompts (marker rate in continuations, tokens' probability) base and ablated, the KL on the `to` prompts, the continuations; with `search`, every (layer, strength) tried."
    )]
    async fn ablate(&self, Parameters(p): Parameters<AblateArgs>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let origin = tensor_surgeon_engine::workbench::agent_origin(&p.hypothesis)?;
            let (report, saved) = wb.ablate_to_patch(&p.request, p.search, &p.save_as, origin)?;
            Ok(json!({"saved": saved, "report": report}))
        })
        .await
    }

    #[tool(
        description = "An adapter (a PEFT folder or a llama.cpp GGUF adapter; a name in the patches folder or a path the server may read) read against the model without loading it: per module the model's tensor, its name in the adapter, layer, rank, scale, the norm of its change and that norm relative to the weight's (where it acts)."
    )]
    async fn read_adapter(&self, Parameters(p): Parameters<AdapterArg>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || wb.adapter_modules(&p.path)).await
    }

    #[tool(
        description = "Write low-rank entries as a LoRA adapter in the patches folder: those of a saved patch (fact edits, MEMIT, ablations, a loaded adapter; a quantized tensor's factors kept beside its blocks) or, with an empty source, the session's low-rank steps. `peft` writes a folder PEFT and vLLM load; `gguf` a file llama.cpp loads beside the base GGUF. Names follow the format (Hugging Face's or llama.cpp's, with llama.cpp's query/key row order), each module at scale 1. Returns the modules and files written; tensors changed byte by byte are listed as skipped."
    )]
    async fn export_adapter(&self, Parameters(p): Parameters<ExportAdapterArgs>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || wb.export_adapter(&p.source, &p.format, &p.save_as)).await
    }

    #[tool(
        description = "Turn a difference into a LoRA adapter in the patches folder: per changed matrix, a truncated SVD of (other - model), keeping `rank` singular values or the fewest whose dropped energy is at most `tolerance`. `other` is a model, a patch or an adapter (empty: the session's edits). Returns per module the rank kept, the relative error ||dW - BA|| / ||dW|| measured on the written factors, and the dropped energy (Eckart-Young: the error is its square root)."
    )]
    async fn extract_adapter(&self, Parameters(p): Parameters<ExtractAdapterArgs>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let rule = match (p.rank, p.tolerance) {
                (Some(r), _) => tensor_surgeon_engine::adapter::RankRule::Rank(r as usize),
                (None, Some(t)) => tensor_surgeon_engine::adapter::RankRule::Tolerance(t),
                (None, None) => {
                    return Err(Error::Usage("give rank or tolerance".into()));
                }
            };
            wb.extract_adapter(&p.other, rule, Some(&p.include), &p.format, &p.save_as)
        })
        .await
    }

    #[tool(
        description = "Read a control vector from paired prompts (positive[i] against negative[i]): per layer, the first principal component of the differences of their last tokens' hidden states after that layer (sign: the positive side projects higher), or their mean. Saved as llama.cpp's control-vector GGUF in the patches folder. Returns per layer the vector's norm and the share of pairs it orders rightly."
    )]
    async fn control_vector(
        &self,
        Parameters(p): Parameters<tensor_surgeon_wire::ControlVectorRequest>,
    ) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || wb.compute_control_vector(&p)).await
    }

    #[tool(
        description = "Set the control vectors the edited side runs with (each added, times its strength, to the output of its layers, as llama.cpp does): every run, probe, continuation and trace after this sees them, in the web app too. An empty list removes them. The weights do not change."
    )]
    async fn steer(&self, Parameters(p): Parameters<SteerArgs>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let req = tensor_surgeon_wire::SteeringRequest {
                vectors: p
                    .vectors
                    .into_iter()
                    .map(|v| tensor_surgeon_wire::ControlVectorUse {
                        path: v.path,
                        strength: v.strength,
                    })
                    .collect(),
            };
            wb.set_steering(&req)?;
            Ok(json!({"layers": wb.steering_layers()}))
        })
        .await
    }

    #[tool(
        description = "The session's patch: changed elements (old -> new values and hex, with who made each change), the edit history, and the pending proposals."
    )]
    async fn list_patch(&self, Parameters(_): Parameters<Nothing>) -> ToolResult {
        json_text(&self.wb.session_view().map_err(|e| e.to_string())?)
    }

    #[tool(
        description = "Undo the last applied edit of the session, when an agent made it (a person's edits are theirs to undo, unless the server applies agent edits without review)."
    )]
    async fn undo(&self, Parameters(_): Parameters<Nothing>) -> ToolResult {
        let wb = self.wb.clone();
        blocking(move || {
            let v = wb.undo_for_agent()?;
            Ok(json!({"steps": v.steps, "can_undo": v.can_undo, "can_redo": v.can_redo, "total_elements": v.total_elements}))
        })
        .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(rmcp::model::Implementation::new(
            "tensor-surgeon",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Tensor Surgeon: look inside a .safetensors model and propose edits. Start with \
                 list_tensors / find_outliers, read numbers with tensor_stats and read_values, \
                 then propose_edit with the hypothesis it tests; a person accepts or rejects it.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(MODEL_URI, "model")
                .with_description("The model: files, parameters per dtype, metadata, tensors")
                .with_mime_type("application/json"),
            Resource::new(PATCH_URI, "patch")
                .with_description(
                    "The session's current patch (tensor-surgeon-patch JSON, with origins)",
                )
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let text = match request.uri.as_str() {
            MODEL_URI => serde_json::to_string_pretty(&self.wb.summary()).unwrap_or_default(),
            PATCH_URI => self
                .wb
                .patch("current session")
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
                .to_json(),
            other => {
                return Err(ErrorData::resource_not_found(
                    format!("no resource {other:?}; there are {MODEL_URI} and {PATCH_URI}"),
                    None,
                ))
            }
        };
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri)]).into())
    }
}

/// Serves the tools over stdio until the client closes it.
pub fn serve_stdio(wb: Arc<Workbench>) -> tensor_surgeon_engine::Result<()> {
    use rmcp::ServiceExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(tensor_surgeon_engine::Error::io("tokio runtime"))?;
    rt.block_on(async move {
        let service = Tools::new(wb)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| {
                tensor_surgeon_engine::Error::Usage(format!("MCP start-up failed: {e}"))
            })?;
        service
            .waiting()
            .await
            .map_err(|e| tensor_surgeon_engine::Error::Usage(format!("MCP session ended: {e}")))?;
        Ok(())
    })
}

/// The streamable HTTP service for `/mcp` (Host/Origin checks are the router's).
pub fn http_service(
    wb: Arc<Workbench>,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    Tools,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let mut config = StreamableHttpServerConfig::default();
    // The web server's guard already checks Host and Origin against its own allow list.
    config.allowed_hosts = Vec::new();
    StreamableHttpService::new(
        move || Ok(Tools::new(wb.clone())),
        Default::default(),
        config,
    )
}
