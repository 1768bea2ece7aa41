//! The projection form: method, rows or columns, 2-D or 3-D, unit norm; the method's
//! parameters; run and stop; the colouring of the points.

use super::live::LiveLayout;
use super::ColorBy;
use leptos::prelude::*;
use tensor_surgeon_wire::{Init, LayoutParams, Method};

/// What the form sets (all `Copy` handles).
#[derive(Clone, Copy)]
pub(super) struct Controls {
    pub columns: RwSignal<bool>,
    pub dims: RwSignal<u32>,
    pub normalize: RwSignal<bool>,
    pub method: RwSignal<Method>,
    pub fields: Fields,
    pub color_by: RwSignal<ColorBy>,
    pub k: RwSignal<usize>,
    pub error: RwSignal<Option<String>>,
}

impl Controls {
    pub fn new() -> Controls {
        Controls {
            columns: RwSignal::new(false),
            dims: RwSignal::new(2),
            normalize: RwSignal::new(false),
            method: RwSignal::new(Method::Pca),
            fields: Fields::new(),
            color_by: RwSignal::new(ColorBy::Norm),
            k: RwSignal::new(6),
            error: RwSignal::new(None),
        }
    }
}

/// The panel's parameter fields, as text (empty: the default).
#[derive(Clone, Copy)]
pub(super) struct Fields {
    perplexity: RwSignal<String>,
    iterations: RwSignal<String>,
    neighbors: RwSignal<String>,
    min_dist: RwSignal<String>,
    seed: RwSignal<String>,
    parallel: RwSignal<bool>,
}

impl Fields {
    fn new() -> Fields {
        Fields {
            perplexity: RwSignal::new(String::new()),
            iterations: RwSignal::new(String::new()),
            neighbors: RwSignal::new(String::new()),
            min_dist: RwSignal::new(String::new()),
            seed: RwSignal::new(String::new()),
            parallel: RwSignal::new(false),
        }
    }

    pub fn params(self) -> Result<LayoutParams, String> {
        fn field<T: std::str::FromStr>(
            s: RwSignal<String>,
            what: &str,
        ) -> Result<Option<T>, String> {
            let t = s.get_untracked();
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse()
                .map(Some)
                .map_err(|_| format!("{what}: {t:?} is not a number"))
        }
        let d = LayoutParams::default();
        Ok(LayoutParams {
            perplexity: field(self.perplexity, "perplexity")?.unwrap_or(d.perplexity),
            iterations: field(self.iterations, "iterations")?,
            n_neighbors: field(self.neighbors, "neighbours")?.unwrap_or(d.n_neighbors),
            min_dist: field(self.min_dist, "min_dist")?.unwrap_or(d.min_dist),
            seed: field(self.seed, "seed")?.unwrap_or(d.seed),
            init: Init::Auto,
            parallel: self.parallel.get_untracked(),
            ..d
        })
    }
}

/// A labelled number field bound to a text signal.
fn number_field(
    label: &'static str,
    class: &'static str,
    value: RwSignal<String>,
    placeholder: &'static str,
) -> impl IntoView {
    view! {
        <label>{label}" "<input type="text" inputmode="decimal" class=class size="5" placeholder=placeholder
            prop:value=move || value.get() on:change=move |ev| value.set(event_target_value(&ev))/></label>
    }
}

/// The form; `run` starts a projection with what it says.
#[component]
pub(super) fn ProjectForm(
    c: Controls,
    runner: LiveLayout,
    run: Callback<()>,
    can_run: Signal<bool>,
) -> impl IntoView {
    let Controls {
        columns,
        dims,
        normalize,
        method,
        fields,
        color_by,
        k,
        ..
    } = c;
    let nonlinear = move || method.get() != Method::Pca;
    view! {
        <div class="row">
            <h3>"Projection"</h3>
            <select class="project-method" aria-label="method" on:change=move |ev| method.set(match event_target_value(&ev).as_str() {
                "tsne" => Method::Tsne, "umap" => Method::Umap, _ => Method::Pca })>
                <option value="pca" selected=true>"PCA"</option>
                <option value="tsne">"t-SNE"</option>
                <option value="umap">"UMAP"</option>
            </select>
            <select class="project-axis" aria-label="project rows or columns" on:change=move |ev| columns.set(event_target_value(&ev) == "cols")>
                <option value="rows" selected=true>"rows"</option>
                <option value="cols">"columns"</option>
            </select>
            <select class="project-dims" aria-label="dimensions" on:change=move |ev| dims.set(if event_target_value(&ev) == "3" { 3 } else { 2 })>
                <option value="2" selected=true>"2-D"</option>
                <option value="3">"3-D"</option>
            </select>
            <label><input type="checkbox" class="project-normalize" on:change=move |ev| normalize.set(event_target_checked(&ev))/>" unit-norm"</label>
        </div>
        <div class="row" hidden=move || !nonlinear()>
            <span hidden=move || method.get() != Method::Tsne>{number_field("perplexity", "project-perplexity", fields.perplexity, "30")}</span>
            <span hidden=move || method.get() != Method::Umap>{number_field("neighbours", "project-neighbors", fields.neighbors, "15")}</span>
            <span hidden=move || method.get() != Method::Umap>{number_field("min_dist", "project-min-dist", fields.min_dist, "0.1")}</span>
            <label hidden=move || method.get() != Method::Tsne title="3-D t-SNE on every core: sooner, but the same seed may not give the same layout (2-D always uses every core and stays reproducible)">
                <input type="checkbox" class="project-parallel" on:change=move |ev| fields.parallel.set(event_target_checked(&ev))/>" parallel (3-D)"</label>
            {number_field("steps", "project-iterations", fields.iterations, "auto")}
            {number_field("seed", "project-seed", fields.seed, "0")}
        </div>
        <div class="row">
            <button class="project-run" on:click=move |_| run.run(()) disabled=move || runner.busy.get() || !can_run.get()>"project"</button>
            <button class="project-stop" on:click=move |_| runner.stop() hidden=move || !runner.status.with(|s| s.as_ref().is_some_and(|s| s.running))>"stop"</button>
            <label>"colour "<select class="project-color" aria-label="colour points by" on:change=move |ev| color_by.set(match event_target_value(&ev).as_str() {
                "pc1" => ColorBy::Component(0), "pc2" => ColorBy::Component(1), "pc3" => ColorBy::Component(2),
                "cluster" => ColorBy::Cluster, _ => ColorBy::Norm })>
                <option value="norm" selected=true>"row norm"</option>
                <option value="pc1">"axis 1"</option>
                <option value="pc2">"axis 2"</option>
                <option value="pc3">"axis 3"</option>
                <option value="cluster">"k-means cluster"</option>
            </select></label>
            <label>"k "<input type="number" class="project-k" min="1" max="50" prop:value=move || k.get().to_string()
                on:change=move |ev| { if let Ok(n) = event_target_value(&ev).trim().parse::<usize>() { k.set(n.clamp(1, 50)) } }/></label>
        </div>
    }
}
