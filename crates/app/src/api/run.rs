//! Running the model on the session's weights: prompts side by side, sentence embeddings,
//! probes (saved beside the patches) and activations. Continuations stream from
//! `GET /api/generate` (server-sent events, served by the host).

use super::*;
use tensor_surgeon_wire::{
    AblationRequest, AblationSaved, Activations, ActivationsRequest, EmbedOutcome, FactProposal,
    FactRequest, ProbeSet, ProbeTable, RunInfo, RunOutcome, RunRequest, TaskProgress,
};

/// Whether the model can run (family, sizes) or why not. `GET /api/run/info`.
#[server(endpoint = "run/info", input = GetUrl)]
pub async fn get_run_info() -> Result<RunInfo, ServerFnError> {
    let wb = workbench()?;
    blocking(move || Ok(wb.run_info())).await
}

/// A prompt on the base and the edited model: top-k, target, continuation. `POST /api/run`.
#[server(endpoint = "run", input = Json)]
pub async fn run_prompt(request: RunRequest) -> Result<RunOutcome, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.run_prompt(&request)).await
}

/// Sentence embeddings and their cosine matrix, base and edited. `POST /api/run/embed`.
#[server(endpoint = "run/embed", input = Json)]
pub async fn run_embed(sentences: Vec<String>) -> Result<EmbedOutcome, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.run_embed(&sentences)).await
}

/// The probe table on the current session. `POST /api/run/probes`.
#[server(endpoint = "run/probes", input = Json)]
pub async fn run_probes(probes: ProbeSet) -> Result<ProbeTable, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.run_probes(&probes)).await
}

/// Progress of the running probe table. `GET /api/run/probes_progress`.
#[server(endpoint = "run/probes_progress", input = GetUrl)]
pub async fn get_probe_progress() -> Result<TaskProgress, ServerFnError> {
    Ok(workbench()?.probe_progress())
}

/// One layer's activations, top neurons and the logit lens. `POST /api/run/activations`.
#[server(endpoint = "run/activations", input = Json)]
pub async fn get_activations(request: ActivationsRequest) -> Result<Activations, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.activations(&request)).await
}

/// Saves probes as `NAME.probes.json` in the patches folder. `POST /api/probes/save`.
#[server(endpoint = "probes/save", input = Json)]
pub async fn save_probes(name: String, probes: ProbeSet) -> Result<String, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.save_probes(&name, &probes)).await
}

/// A saved probe file. `GET /api/probes/load?name=NAME`.
#[server(endpoint = "probes/load", input = GetUrl)]
pub async fn load_probes(name: String) -> Result<ProbeSet, ServerFnError> {
    let wb = workbench()?;
    blocking(move || wb.load_probes(&name)).await
}

/// The probe files of the patches folder. `GET /api/probes`.
#[server(endpoint = "probes", input = GetUrl)]
pub async fn list_probes() -> Result<Vec<String>, ServerFnError> {
    let wb = workbench()?;
    blocking(move || Ok(wb.saved_probes())).await
}

/// Computes a fact edit (ROME) on the edited model and records it as a pending proposal, with
/// its evaluation. `POST /api/fact` with `{"request", "layer", "clamp", "kl_weight"}` (all but
/// the request optional: the defaults of `edit-fact`).
#[server(endpoint = "fact", input = Json)]
pub async fn propose_fact(
    request: FactRequest,
    layer: Option<u32>,
    clamp: Option<f64>,
    kl_weight: Option<f64>,
) -> Result<FactProposal, ServerFnError> {
    let wb = workbench()?;
    blocking(move || {
        let origin = tensor_surgeon_core::origin::Origin {
            source: "web".into(),
            hypothesis: Some(format!("{} ->{}", request.prompt, request.target)),
        };
        let knobs = tensor_surgeon_engine::fact::FactKnobs {
            layer: layer.map(|l| l as usize),
            clamp,
            kl_weight,
        };
        wb.propose_fact(&request, &knobs, origin)
    })
    .await
}

/// Directional ablation on the edited model, saved as a patch of low-rank entries named
/// `save_as` in the patches folder (loaded as a layer to try it). `POST /api/ablate`.
#[server(endpoint = "ablate", input = Json)]
pub async fn ablate_to_patch(
    request: AblationRequest,
    search: bool,
    save_as: String,
) -> Result<AblationSaved, ServerFnError> {
    let wb = workbench()?;
    blocking(move || {
        let origin = tensor_surgeon_core::origin::Origin {
            source: "web".into(),
            hypothesis: Some(format!(
                "ablation: {} prompt(s) with the behaviour, {} without",
                request.from.len(),
                request.to.len()
            )),
        };
        let (report, saved) = wb.ablate_to_patch(&request, search, &save_as, origin)?;
        Ok(AblationSaved { report, saved })
    })
    .await
}
