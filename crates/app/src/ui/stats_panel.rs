//! Statistics of the open tensor (edits included): moments, quantiles, special-value counts,
//! and a histogram with adjustable bins and log counts; hover a bar for its range and count.
//! Tensors over a quarter GiB are computed on request, with progress.

use super::charts::{self, plot_attr, slot_at};
use super::heatmap::Geom;
use super::state::{message, poll_progress, use_ctx};
use crate::api::{get_histogram, get_stats, get_stats_progress};
use leptos::html;
use leptos::prelude::*;
use tensor_surgeon_core::dtype::pretty_f64;
use tensor_surgeon_core::stats::{Histogram, DEFAULT_BINS, MAX_BINS};
use tensor_surgeon_wire::{TaskProgress, TensorStats};

/// Larger tensors wait for a click.
const AUTO_BYTES: u64 = 256 << 20;
/// Progress is shown for tensors over this size.
const PROGRESS_BYTES: u64 = 100 << 20;

fn table(s: &TensorStats) -> impl IntoView {
    view! {
        <table class="kv stats-table">
            <tbody>
                {s.summary.rows().into_iter().map(|(k, v)| { let key = k.clone(); view! { <tr data-stat=key><td>{k}</td><td>{v}</td></tr> } }).collect_view()}
            </tbody>
        </table>
        {s.note.clone().map(|n| view! { <p class="muted">{n}</p> })}
    }
}

#[component]
fn HistogramChart(hist: Signal<Option<Histogram>>, log: ReadSignal<bool>) -> impl IntoView {
    let canvas = NodeRef::<html::Canvas>::new();
    let geom = RwSignal::new(None::<Geom>);
    let hover = RwSignal::new(None::<usize>);
    Effect::new(move |_| {
        let Some(el) = canvas.get() else { return };
        let log = log.get();
        hist.with(|h| {
            if let Some(h) = h {
                geom.set(charts::histogram(&el, h, log));
            }
        });
    });
    let hover_text = move || {
        let i = hover.get()?;
        hist.with(|h| {
            let h = h.as_ref()?;
            let (a, b) = h.bin_range(i);
            let close = if i + 1 == h.counts.len() { "]" } else { ")" };
            Some(format!(
                "bin {i}: [{}, {}{close}: {}",
                pretty_f64(a),
                pretty_f64(b),
                h.counts.get(i)?
            ))
        })
    };
    let specials = move || {
        hist.with(|h| {
            h.as_ref().map(|h| {
                let mut parts = vec![
                    format!("NaN {}", h.nan),
                    format!("+Inf {}", h.pos_inf),
                    format!("-Inf {}", h.neg_inf),
                ];
                if h.below + h.above > 0 {
                    parts.push(format!("below {} · above {}", h.below, h.above));
                }
                parts.join(" · ")
            })
        })
    };
    view! {
        <canvas node_ref=canvas width=432 height=220 class="histogram"
            data-plot=move || plot_attr(geom.get())
            data-bins=move || hist.with(|h| h.as_ref().map(|h| h.counts.len().to_string()))
            on:mousemove=move |ev| {
                let n = hist.with_untracked(|h| h.as_ref().map_or(0, |h| h.counts.len()));
                hover.set(geom.get_untracked().and_then(|g| slot_at(g, n, f64::from(ev.offset_x()))));
            }
            on:mouseleave=move |_| hover.set(None)/>
        <div class="hover histogram-hover">{hover_text}</div>
        <div class="muted histogram-specials">{specials}</div>
    }
}

#[component]
pub fn StatsPanel() -> impl IntoView {
    let ctx = use_ctx();
    let (requested, set_requested) = signal(None::<String>);
    let (bins, set_bins) = signal(DEFAULT_BINS);
    let (log, set_log) = signal(false);
    let (pending, set_pending) = signal(false);
    let (progress, set_progress) = signal(None::<TaskProgress>);
    let wanted = move || {
        let t = ctx.tensor.get()?;
        let auto = t.bytes <= AUTO_BYTES;
        (auto || requested.get().as_deref() == Some(t.name.as_str())).then_some(t)
    };
    let stats = LocalResource::new(move || {
        let t = wanted();
        let _ = ctx.version.get();
        async move {
            let t = t?;
            if t.bytes > PROGRESS_BYTES {
                set_pending.set(true);
                poll_progress(pending, set_progress, get_stats_progress);
            }
            let r = get_stats(t.name).await;
            set_pending.set(false);
            Some(r)
        }
    });
    let current = move || {
        stats.with(|s| {
            s.as_ref()
                .and_then(|s| s.as_ref())
                .and_then(|r| r.as_ref().ok())
                .cloned()
        })
    };
    let custom = LocalResource::new(move || {
        let n = bins.get();
        let s = current();
        async move {
            let s = s?;
            if n == DEFAULT_BINS || s.summary.finite == 0 {
                return None;
            }
            Some(get_histogram(s.tensor, n, None, None).await)
        }
    });
    let hist = Signal::derive(move || {
        let default = current().and_then(|s| s.histogram);
        if bins.get() == DEFAULT_BINS {
            return default;
        }
        custom.with(|c| match c {
            Some(Some(Ok(h))) => Some(h.clone()),
            _ => None,
        })
    });
    let error = move || {
        let a = stats.with(|s| match s {
            Some(Some(Err(e))) => Some(message(e)),
            _ => None,
        });
        a.or_else(|| {
            custom.with(|c| match c {
                Some(Some(Err(e))) => Some(message(e)),
                _ => None,
            })
        })
    };
    let body = move || {
        let t = ctx.tensor.get()?;
        if wanted().is_none() {
            let name = t.name.clone();
            return Some(view! {
                <p>
                    {format!("{} is {}; ", t.name, tensor_surgeon_core::units::human_bytes(t.bytes))}
                    <button class="compute-stats" on:click=move |_| set_requested.set(Some(name.clone()))>"compute statistics"</button>
                </p>
            }.into_any());
        }
        Some(match current() {
            Some(s) => view! {
                <div class="stats-body" data-tensor=s.tensor.clone() data-version=s.version.to_string()>
                    <div>{table(&s)}</div>
                    <div>
                        <div class="row">
                            <label>"bins "<input type="number" class="bins" min="1" max=MAX_BINS.to_string()
                                prop:value=move || bins.get().to_string()
                                on:change=move |ev| {
                                    if let Ok(n) = event_target_value(&ev).trim().parse::<usize>() {
                                        set_bins.set(n.clamp(1, MAX_BINS));
                                    }
                                }/></label>
                            <label><input type="checkbox" class="log-counts" prop:checked=log
                                on:change=move |ev| set_log.set(event_target_checked(&ev))/>" log counts"</label>
                        </div>
                        <HistogramChart hist log/>
                    </div>
                </div>
            }.into_any(),
            None => view! { <p class="muted">"computing…"</p> }.into_any(),
        })
    };
    let progress_view = move || {
        progress.get().filter(|p| p.running && p.total > 0).map(|p| {
            let pct = p.done * 100 / p.total;
            view! { <div class="stats-progress"><progress max="100" value=pct.to_string()></progress>{format!(" reading {} … {pct}%", p.what)}</div> }
        })
    };
    view! {
        <section class="stats-panel">
            <h3>"Statistics"<span class="muted">" (edits included; numbers over finite values)"</span></h3>
            {progress_view}
            {move || error().map(|e| view! { <p class="error">{e}</p> })}
            {body}
        </section>
    }
}
