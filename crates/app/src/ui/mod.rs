//! The web UI: components hold UI state only; everything computable lives in the core.

mod activations_panel;
mod charts;
mod controls;
mod edit_panel;
mod embed_run;
mod heatmap;
mod inspector;
mod layers_panel;
mod patch_panel;
mod probes_panel;
mod profiles;
mod region_panel;
mod run_panel;
mod scan_panel;
mod scatter;
mod state;
mod stats_panel;
mod summary;
mod tensor_list;
mod tokens_panel;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::StaticSegment;
pub use state::Ctx;

/// The HTML document around the app.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href="data:,"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The application root.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/tensor-surgeon.css"/>
        <Title text="Tensor Surgeon"/>
        <Router>
            <Routes fallback=|| "Page not found.".into_view()>
                <Route path=StaticSegment("") view=WorkbenchPage/>
            </Routes>
        </Router>
    }
}

/// The one page: loads the model summary, then lays out the workbench.
#[component]
fn WorkbenchPage() -> impl IntoView {
    let model = Resource::new(|| (), |_| crate::api::get_model());
    view! {
        <Suspense fallback=|| view! { <p class="muted">"loading model…"</p> }>
            {move || Suspend::new(async move {
                match model.await {
                    Ok(summary) => view! { <Workspace summary/> }.into_any(),
                    Err(e) => view! { <p class="error">{state::message(&e)}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// Tensor list on the left, the view and its panels on the right.
#[component]
fn Workspace(summary: tensor_surgeon_wire::ModelSummary) -> impl IntoView {
    let ctx = Ctx::provide(summary);
    view! {
        <div class="app" data-hydrated=move || ctx.hydrated.get().then_some("true")>
            <header class="top">
                <h1>"Tensor Surgeon"</h1>
                <summary::ModelLine/>
                <a class="scan-link" href=move || {
                    let mut u = ctx.url.get();
                    u.scan = !u.scan;
                    state::href(&u)
                }>{move || if ctx.url.with(|u| u.scan) { "close scan" } else { "scan model" }}</a>
            </header>
            <aside class="side">
                {view! { <tensor_list::TensorList/> }.into_any()}
                {view! { <summary::ModelSummaryPanel/> }.into_any()}
            </aside>
            <main class="main">
                {move || ctx.url.with(|u| u.scan).then(|| view! { <scan_panel::ScanPanel/> }.into_any())}
                {view! { <controls::ViewControls/> }.into_any()}
                <div class="view-row">
                    {view! { <heatmap::Heatmap/> }.into_any()}
                    <div class="panels">
                        {view! { <inspector::Inspector/> }.into_any()}
                        {view! { <edit_panel::EditPanel/> }.into_any()}
                        {view! { <region_panel::RegionPanel/> }.into_any()}
                        {ctx.model.with_value(|m| m.vocab_size.is_some()).then(|| view! { <tokens_panel::TokensPanel/> }.into_any())}
                    </div>
                </div>
                {view! { <run_panel::RunPanel/> }.into_any()}
                {view! { <profiles::Profiles/> }.into_any()}
                {view! { <stats_panel::StatsPanel/> }.into_any()}
                {view! { <scatter::ScatterPanel/> }.into_any()}
                {view! { <patch_panel::PatchPanel/> }.into_any()}
                {view! { <layers_panel::LayersPanel/> }.into_any()}
            </main>
        </div>
    }
}
