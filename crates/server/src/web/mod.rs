//! The web server: axum + Leptos SSR, the server functions, and the request checks that keep
//! other web pages away from the user's model (Host and Origin) and everyone but its user out
//! (the access token, [`crate::auth`]).

use crate::auth::{Auth, Verdict};
use crate::session::SessionArgs;
use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leptos::config::LeptosOptions;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tensor_surgeon_app::{shell, App};
use tensor_surgeon_engine::workbench::Workbench;
use tensor_surgeon_engine::{Error, Result};

/// State shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub workbench: Arc<Workbench>,
    /// `Host` values accepted (`127.0.0.1:3000`, `localhost:3000`, ...).
    pub allowed_hosts: Arc<HashSet<String>>,
    /// Who may use the server.
    pub auth: Arc<Auth>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> LeptosOptions {
        state.leptos_options.clone()
    }
}

/// Host names a local server answers to on `addr`, plus any the user allowed.
pub fn allowed_hosts(addr: SocketAddr, extra: &[String]) -> HashSet<String> {
    let port = addr.port();
    let mut hosts: HashSet<String> = [
        format!("{addr}"),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ]
    .into();
    hosts.extend(extra.iter().map(|h| {
        if h.contains(':') && !h.starts_with('[') {
            h.clone()
        } else {
            format!("{h}:{port}")
        }
    }));
    hosts
}

/// Rejects requests for another Host (DNS rebinding), state-changing requests sent by
/// another site (a page the user visits must not edit their model), and requests without the
/// access token.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(why) = check_request(req.method(), req.headers(), &state.allowed_hosts) {
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    match state.auth.check(req.method(), req.uri(), req.headers()) {
        Verdict::Pass => next.run(req).await,
        verdict => state.auth.respond(verdict, req.headers()),
    }
}

fn check_request(
    method: &Method,
    headers: &HeaderMap,
    allowed: &HashSet<String>,
) -> std::result::Result<(), String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !allowed.contains(&host.to_ascii_lowercase()) {
        return Err(format!("Host {host:?} is not served here"));
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            let origin_host = origin.strip_prefix("http://").unwrap_or("\u{0}");
            if !allowed.contains(&origin_host.to_ascii_lowercase()) {
                return Err(format!("requests from {origin} may not change this model"));
            }
        } else if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site")
        {
            return Err("cross-site requests may not change this model".into());
        }
    }
    Ok(())
}

/// `GET /api/patch/download`: the session patch as a JSON attachment; `?invert=1`: the patch
/// that undoes it (turns the edited model back into the base).
async fn download_patch(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let invert = q.get("invert").is_some_and(|v| v == "1");
    let wb = std::sync::Arc::clone(&state.workbench);
    let mut patch = match tensor_surgeon_engine::blocking(move || wb.patch("")).await {
        Ok(p) => p,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    if invert {
        patch = patch.invert();
    }
    let file = if invert {
        "session.inverse.patch.json"
    } else {
        "session.patch.json"
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        )
        .body(Body::from(patch.to_json()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `GET /api/generate?prompt=TEXT&tokens=N`: greedy continuations of the base and the edited
/// model as server-sent events (`token`: a [`tensor_surgeon_wire::GenerationEvent`]; then
/// `done`, or `failure` with the message). Closing the stream stops the generation.
async fn generate_stream(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let prompt = q.get("prompt").cloned().unwrap_or_default();
    let Ok(tokens) = q.get("tokens").map_or(Ok(16), |t| t.parse::<u32>()) else {
        return (StatusCode::BAD_REQUEST, "tokens must be a whole number").into_response();
    };
    let wb = state.workbench.clone();
    if let Some(reason) = wb.run_info().reason {
        return (StatusCode::BAD_REQUEST, reason).into_response();
    }
    event_stream("token", move |send| {
        // A failed send: the page closed the stream (stop), so the generation ends.
        wb.generate(&prompt, tokens, &mut |event| send(&event))
    })
}

/// Server-sent events from blocking `work`: each value it sends is an event `name` (JSON);
/// `send` answers false once the page has closed the stream, and the work should stop. Then
/// `done`, or `failure` with the error's message.
fn event_stream<T: serde::Serialize>(
    name: &'static str,
    work: impl FnOnce(&dyn Fn(&T) -> bool) -> Result<()> + Send + 'static,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::task::spawn_blocking(move || {
        let send = |value: &T| {
            Event::default()
                .event(name)
                .json_data(value)
                .is_ok_and(|e| tx.blocking_send(e).is_ok())
        };
        let last = match work(&send) {
            Ok(()) => Event::default().event("done").data("done"),
            Err(e) => Event::default().event("failure").data(e.to_string()),
        };
        let _ = tx.blocking_send(last);
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /api/trace?prompt=TEXT&subject=TEXT[&target=T][&samples=N][&noise=X][&window=W]
/// [&seed=K][&kinds=residual,mlp,attention]`: a causal trace of the edited model as
/// server-sent events (`trace`: a [`tensor_surgeon_wire::TraceUpdate`], the start and then each
/// row; then `done`, or `failure` with the message). Closing the stream stops the trace.
async fn trace_stream(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tensor_surgeon_infer::trace::TraceEvent;
    use tensor_surgeon_wire::{TraceKind, TraceRequest, TraceRow, TraceUpdate};
    let text = |k: &str| q.get(k).cloned().unwrap_or_default();
    let mut req = TraceRequest::new(&text("prompt"), &text("subject"));
    req.target = q.get("target").filter(|t| !t.is_empty()).cloned();
    let number = |k: &str, to: &mut dyn FnMut(&str) -> bool| match q.get(k) {
        Some(v) if !v.is_empty() && !to(v) => Err(format!("{k} must be a number (got {v:?})")),
        _ => Ok(()),
    };
    let parsed = number("samples", &mut |v| {
        v.parse().map(|n| req.samples = n).is_ok()
    })
    .and_then(|_| number("window", &mut |v| v.parse().map(|n| req.window = n).is_ok()))
    .and_then(|_| number("seed", &mut |v| v.parse().map(|n| req.seed = n).is_ok()))
    .and_then(|_| {
        number("noise", &mut |v| {
            v.parse().map(|n| req.noise = Some(n)).is_ok()
        })
    });
    if let Err(e) = parsed {
        return (StatusCode::BAD_REQUEST, e).into_response();
    }
    if let Some(kinds) = q.get("kinds").filter(|k| !k.is_empty()) {
        let parsed: Option<Vec<TraceKind>> = kinds
            .split(',')
            .map(|k| TraceKind::ALL.into_iter().find(|t| t.name() == k.trim()))
            .collect();
        match parsed {
            Some(k) => req.kinds = k,
            None => {
                let msg = format!("kinds are residual, mlp and attention (got {kinds:?})");
                return (StatusCode::BAD_REQUEST, msg).into_response();
            }
        }
    }
    let wb = state.workbench.clone();
    if let Some(reason) = wb.run_info().reason {
        return (StatusCode::BAD_REQUEST, reason).into_response();
    }
    event_stream("trace", move |send| {
        let stop = AtomicBool::new(false);
        let update = |u: TraceUpdate| {
            // A failed send: the page closed the stream (stop), so the trace ends.
            if !send(&u) {
                stop.store(true, Ordering::Relaxed);
            }
        };
        wb.trace(&req, &stop, &mut |e| match e {
            TraceEvent::Started(t) => update(TraceUpdate::Started(t.clone())),
            TraceEvent::Row {
                kind,
                layer,
                p,
                done,
                total,
            } => update(TraceUpdate::Row(TraceRow {
                kind,
                layer: layer as u32,
                p: p.to_vec(),
                done,
                total,
            })),
        })
        .map(drop)
    })
}

/// The whole app as a router (tests drive it with `oneshot`).
pub fn router(state: AppState) -> Router {
    let routes = generate_route_list(App);
    let options = state.leptos_options.clone();
    Router::new()
        .route("/api/patch/download", get(download_patch))
        .route("/api/generate", get(generate_stream))
        .route("/api/trace", get(trace_stream))
        .nest_service("/mcp", crate::mcp::http_service(state.workbench.clone()))
        .leptos_routes_with_context(
            &state,
            routes,
            {
                let wb = state.workbench.clone();
                move || leptos::context::provide_context(wb.clone())
            },
            move || shell(options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Who may reach the web server, and where it listens.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AccessArgs {
    /// Address to listen on (default: the site address of the build, 127.0.0.1:3000).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// Another Host name to answer to (for a reverse proxy); repeatable.
    #[arg(long)]
    pub allow_host: Vec<String>,
    /// The access token (default: a random one, printed in the address the server logs).
    #[arg(long, env = "TENSOR_SURGEON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Let anyone who can reach the port use the server, without a token.
    #[arg(long, conflicts_with = "token")]
    pub no_auth: bool,
}

/// `tensor-surgeon serve` (and the binary with no command).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// The model to open (or set MODEL_PATH); the demo model when neither is given.
    #[arg(long, env = "MODEL_PATH")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub access: AccessArgs,
}

/// Builds the state for a model (the demo model when none is given), and the token the
/// server wants (`None`: `--no-auth`).
pub fn build_state(
    args: &ServeArgs,
    leptos_options: LeptosOptions,
) -> Result<(AppState, Option<String>, Vec<String>)> {
    let addr = leptos_options.site_addr;
    let access = &args.access;
    let token = match (&access.token, access.no_auth) {
        (_, true) => None,
        (Some(t), false) => Some(checked_token(t)?),
        (None, false) => {
            Some(Auth::random_token().map_err(Error::io("the system's random source"))?)
        }
    };
    let auth = match &token {
        Some(t) => Auth::token(t, addr.port()),
        None => Auth::Off,
    };
    let (workbench, warnings) = args.session.open(args.model.as_deref())?;
    let state = AppState {
        leptos_options,
        workbench: Arc::new(workbench),
        allowed_hosts: Arc::new(allowed_hosts(addr, &access.allow_host)),
        auth: Arc::new(auth),
    };
    Ok((state, token, warnings))
}

/// A token given by the user: long enough to guess no sooner than a random one would, and
/// made of characters that pass through an address and a cookie unchanged.
fn checked_token(token: &str) -> Result<String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
    if token.len() < 16 || !token.chars().all(safe) {
        return Err(Error::Usage(
            "the access token needs at least 16 characters, each a letter, a digit or one of \
             - . _ ~"
                .into(),
        ));
    }
    Ok(token.to_string())
}

/// Runs the web server until interrupted.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let conf = leptos::config::get_configuration(None)
        .map_err(|e| Error::Usage(format!("leptos configuration: {e}")))?;
    let mut leptos_options = conf.leptos_options;
    if let Some(addr) = args.access.addr {
        leptos_options.site_addr = addr;
    }
    let addr = leptos_options.site_addr;
    let (state, token, warnings) = build_state(args, leptos_options)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let wb = state.workbench.clone();
    let app = router(state);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::io("tokio runtime"))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(Error::io(addr.to_string()))?;
        let open = match &token {
            Some(t) => format!("http://{addr}/?token={t}"),
            None => format!("http://{addr}/  (no access token: --no-auth)"),
        };
        eprintln!(
            "Tensor Surgeon: {} on {open}{}  (journal {})",
            wb.model().location,
            if wb.config().read_only {
                " (read-only)"
            } else {
                ""
            },
            wb.journal_path().display()
        );
        axum::serve(listener, app.into_make_service())
            .await
            .map_err(Error::io(addr.to_string()))
    })
}

#[cfg(test)]
mod tests;
