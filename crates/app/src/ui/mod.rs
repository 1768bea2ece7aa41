//! The web UI: components hold UI state only; everything computable lives in the core.

mod ablation_panel;
mod activations_panel;
mod adapter_panel;
mod charts;
mod controls;
mod edit_panel;
mod embed_run;
mod event_stream;
mod fact_panel;
mod heatmap;
mod inspector;
mod layers_panel;
mod overview;
mod patch_panel;
mod poll;
mod probes_panel;
mod profiles;
mod region_panel;
mod run_panel;
mod scan_panel;
mod scatter;
mod state;
mod stats_panel;
mod steer_panel;
mod summary;
mod switcher;
mod tensor_list;
mod tokens_panel;
mod trace_panel;

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
        <Transition fallback=|| view! { <p class="muted">"loading model…"</p> }>
            {move || Suspend::new(async move {
                match model.await {
                    Ok(summary) => view! { <Workspace summary/> }.into_any(),
                    Err(e) => view! { <p class="error">{state::message(&e)}</p> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// The dock's tabs: (URL key, label). Digits 1–7 pick them.
pub const TABS: [(&str, &str); 7] = [
    ("cell", "Cell"),
    ("region", "Region"),
    ("tokens", "Tokens"),
    ("stats", "Stats"),
    ("project", "Project"),
    ("patch", "Patch"),
    ("run", "Run"),
];

/// Dock width bounds (px) for the resize handle.
const DOCK_MIN: i32 = 320;
const DOCK_MAX: i32 = 960;

/// The workspace: the tensor list on the left; the overview, scan or heatmap in the middle,
/// always in view; the tools in a resizable dock of tabs on the right. The page itself never
/// scrolls: each column scrolls on its own.
#[component]
fn Workspace(summary: tensor_surgeon_wire::ModelSummary) -> impl IntoView {
    let ctx = Ctx::provide(summary);
    let dock_w = RwSignal::new(460i32);
    let resizing = RwSignal::new(false);
    let tab = move || {
        ctx.url
            .with(|u| u.tab.clone())
            .unwrap_or_else(|| "cell".into())
    };
    let tab_href = move |key: &'static str| {
        let mut u = ctx.url.get();
        u.tab = Some(key.to_string());
        state::href(&u)
    };
    let on_move = move |ev: leptos::ev::MouseEvent| {
        if !resizing.get_untracked() {
            return;
        }
        use leptos::wasm_bindgen::JsCast;
        let width = ev
            .current_target()
            .and_then(|t| t.dyn_into::<leptos::web_sys::Element>().ok())
            .map_or(0, |el| el.client_width());
        dock_w.set((width - ev.client_x()).clamp(DOCK_MIN, DOCK_MAX));
    };
    let on_handle_key = move |ev: leptos::ev::KeyboardEvent| {
        let by = match ev.key().as_str() {
            "ArrowLeft" => 20,
            "ArrowRight" => -20,
            _ => return,
        };
        ev.prevent_default();
        dock_w.update(|w| *w = (*w + by).clamp(DOCK_MIN, DOCK_MAX));
    };
    let panel = move |key: &'static str, body: AnyView| {
        view! {
            <div role="tabpanel" id=format!("tab-{key}") class=format!("tab-panel tab-{key}")
                aria-labelledby=format!("tab-button-{key}") hidden=move || tab() != key>{body}</div>
        }
    };
    let has_vocab = ctx.model.with_value(|m| m.vocab_size.is_some());
    view! {
        <div class="app" class:resizing=move || resizing.get()
            style=move || format!("--dock-w: {}px", dock_w.get())
            data-hydrated=move || ctx.hydrated.get().then_some("true")
            on:mousemove=on_move on:mouseup=move |_| resizing.set(false)>
            <header class="top">
                <h1><a href="/" title="the model overview (o)">"Tensor Surgeon"</a></h1>
                <summary::ModelLine/>
                <patch_panel::HistoryButtons/>
                <switcher::Switcher/>
                <a class="scan-link" href=move || {
                    let mut u = ctx.url.get();
                    u.scan = !u.scan;
                    state::href(&u)
                }>{move || if ctx.url.with(|u| u.scan) { "close scan" } else { "scan model" }}</a>
            </header>
            <nav class="side" aria-label="tensors">
                {view! { <tensor_list::TensorList/> }.into_any()}
                {view! { <summary::ModelSummaryPanel/> }.into_any()}
            </nav>
            <main class="main">
                {move || ctx.url.with(|u| u.scan).then(|| view! { <scan_panel::ScanPanel/> }.into_any())}
                {move || (ctx.tensor.with(Option::is_none) && !ctx.url.with(|u| u.scan)).then(|| view! { <overview::Overview/> }.into_any())}
                <div class="view-area" hidden=move || ctx.tensor.with(Option::is_none)>
                    {view! { <controls::ViewControls/> }.into_any()}
                    {view! { <heatmap::Heatmap/> }.into_any()}
                </div>
            </main>
            <aside class="dock" aria-label="tools">
                <div class="dock-handle" role="separator" aria-orientation="vertical" aria-label="resize the tools (arrow keys)"
                    aria-valuenow=move || dock_w.get().to_string() aria-valuemin=DOCK_MIN.to_string() aria-valuemax=DOCK_MAX.to_string()
                    tabindex="0" on:mousedown=move |ev| { ev.prevent_default(); resizing.set(true); } on:keydown=on_handle_key></div>
                <div class="tabs" role="tablist" aria-label="tools">
                    {TABS.iter().enumerate().map(|(i, &(key, label))| view! {
                        <a role="tab" id=format!("tab-button-{key}") href=move || tab_href(key)
                            aria-selected=move || (tab() == key).to_string() aria-controls=format!("tab-{key}")
                            title=format!("{label} ({})", i + 1)>{label}</a>
                    }).collect_view()}
                </div>
                {panel("cell", view! { <inspector::Inspector/> <edit_panel::EditPanel/> }.into_any())}
                {panel("region", view! { <region_panel::RegionPanel/> }.into_any())}
                {panel("tokens", if has_vocab { view! { <tokens_panel::TokensPanel/> }.into_any() } else { view! { <p class="muted">"No tokenizer.json beside the model: rows are not labelled with tokens."</p> }.into_any() })}
                {panel("stats", view! { <stats_panel::StatsPanel/> <profiles::Profiles/> }.into_any())}
                {panel("project", view! { <scatter::ScatterPanel/> }.into_any())}
                {panel("patch", view! { <patch_panel::PatchPanel/> <layers_panel::LayersPanel/> <adapter_panel::AdapterPanel/> }.into_any())}
                {panel("run", view! { <run_panel::RunPanel/> }.into_any())}
            </aside>
        </div>
    }
}
