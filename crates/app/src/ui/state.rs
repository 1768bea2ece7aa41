//! State shared by the components: the URL-backed view state, the selection, and the edit
//! version that makes data refetch.

use super::poll::{poll, Poll};
use crate::api::get_session;
use crate::urlstate::UrlState;
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};
use leptos_router::params::ParamsMap;
use leptos_router::NavigateOptions;
use std::rc::Rc;
use std::time::Duration;
use tensor_surgeon_core::view::ViewSpec;
use tensor_surgeon_wire::{ModelSummary, SessionView, TensorRow};

/// The router's navigate function, kept for event handlers.
type Navigate = Rc<dyn Fn(&str, NavigateOptions)>;

/// A rectangle of view cells (half-open), remembered with the view it was made in.
#[derive(Clone, Debug, PartialEq)]
pub struct CellRect {
    pub view: ViewSpec,
    pub tensor: String,
    pub rows: (u64, u64),
    pub cols: (u64, u64),
}

impl CellRect {
    /// Whether it is a single cell.
    pub fn is_cell(&self) -> bool {
        self.rows.1 == self.rows.0 + 1 && self.cols.1 == self.cols.0 + 1
    }
}

/// Rows (or columns) picked anywhere (a selection in the projection), for the region panel to
/// operate on as one set.
#[derive(Clone, Debug, PartialEq)]
pub struct RowSet {
    pub tensor: String,
    pub columns: bool,
    pub lines: Vec<u64>,
    /// Token text of each line, when the lines index the vocabulary.
    pub labels: Vec<String>,
}

/// Shared UI state (all `Copy` handles).
#[derive(Clone, Copy)]
pub struct Ctx {
    pub url: Memo<UrlState>,
    /// Bumped after every change to the session; data keyed on it refetches.
    pub version: RwSignal<u64>,
    /// Bumped when the session must be fetched again (not when a request answered with it).
    session_stale: RwSignal<u64>,
    /// The open model (loaded before anything that needs it renders).
    pub model: StoredValue<ModelSummary>,
    pub session: Resource<Result<SessionView, ServerFnError>>,
    /// The current tensor's row of the list.
    pub tensor: Memo<Option<TensorRow>>,
    /// The repaired view of the current tensor.
    pub view: Memo<Option<ViewSpec>>,
    pub selection: RwSignal<Option<CellRect>>,
    /// A row set handed to the region panel.
    pub row_set: RwSignal<Option<RowSet>>,
    /// Asks the edit panel to take focus (Enter on the heatmap).
    pub focus_edit: RwSignal<u64>,
    /// True once the client has hydrated (tests wait for it).
    pub hydrated: RwSignal<bool>,
    nav: StoredValue<Navigate, LocalStorage>,
}

impl Ctx {
    /// Creates the state for a loaded model and provides it as context.
    pub fn provide(summary: ModelSummary) -> Ctx {
        let query = use_query_map();
        let url = Memo::new(move |_| {
            query.with(|q| UrlState::from_pairs(q.latest_values().map(|(k, v)| (k.as_ref(), v))))
        });
        let version = RwSignal::new(0u64);
        let model = StoredValue::new(summary);
        let session_stale = RwSignal::new(0u64);
        let session = Resource::new(move || session_stale.get(), |_| get_session());
        let tensor = Memo::new(move |_| {
            let name = url.with(|u| u.tensor.clone())?;
            model.with_value(|m| m.tensors.iter().find(|t| t.name == name).cloned())
        });
        let view =
            Memo::new(move |_| tensor.with(|t| t.as_ref().map(|t| url.with(|u| u.view(&t.shape)))));
        let hydrated = RwSignal::new(false);
        Effect::new(move |_| hydrated.set(true));
        let navigate = use_navigate();
        let nav: Navigate = Rc::new(move |href: &str, opts: NavigateOptions| navigate(href, opts));
        let ctx = Ctx {
            url,
            version,
            session_stale,
            model,
            session,
            tensor,
            view,
            selection: RwSignal::new(None),
            row_set: RwSignal::new(None),
            focus_edit: RwSignal::new(0),
            hydrated,
            nav: StoredValue::new_local(nav),
        };
        provide_context(ctx);
        ctx
    }

    /// Opens a tab of the dock.
    pub fn open_tab(&self, key: &str) {
        let mut u = self.url.get_untracked();
        u.tab = Some(key.to_string());
        self.go(&u, false);
    }

    /// Shows `state` (a new history entry unless `replace`).
    pub fn go(&self, state: &UrlState, replace: bool) {
        let href = href(state);
        self.nav.with_value(|f| {
            f(
                &href,
                NavigateOptions {
                    replace,
                    scroll: false,
                    ..Default::default()
                },
            )
        });
    }

    /// The selection, when it belongs to the view on screen.
    pub fn selection_in_view(&self) -> Option<CellRect> {
        self.selection
            .get()
            .filter(|s| Some(&s.view) == self.view.get().as_ref())
    }

    /// Marks the session changed: the session and every view of the data are fetched again.
    pub fn changed(&self) {
        self.session_stale.update(|v| *v += 1);
        self.version.update(|v| *v += 1);
    }

    /// Shows `session`, the answer of a request that changed it; views of the data refetch.
    pub fn show_session(&self, session: SessionView) {
        self.session.set(Some(Ok(session)));
        self.version.update(|v| *v += 1);
    }
}

/// The link for a state.
pub fn href(state: &UrlState) -> String {
    let mut map = ParamsMap::new();
    for (k, v) in state.to_pairs() {
        map.insert(k, v);
    }
    let q = map.to_query_string();
    if q.is_empty() {
        "/".into()
    } else {
        format!("/{q}")
    }
}

/// Rows (or columns) shown around a line opened from a panel.
const WINDOW: u64 = 32;

/// Opens line `index` of a 2-D `tensor` in the heatmap: a row (`columns` false; its first cell
/// selected) or a column (the whole column in view selected), ready for an edit.
pub fn open_line(ctx: Ctx, tensor: &str, index: u64, columns: bool) {
    let shape = ctx.model.with_value(|m| {
        m.tensors
            .iter()
            .find(|t| t.name == tensor)
            .map(|t| t.shape.clone())
    });
    let Some(shape) = shape else { return };
    let url = ctx.url.get_untracked();
    let mut state = if url.tensor.as_deref() == Some(tensor) {
        url
    } else {
        url.open(tensor)
    };
    let current = state.view(&shape);
    let base = ViewSpec {
        y_dim: Some(0),
        x_dim: Some(1),
        ..current
    };
    let (v, pos) = tensor_surgeon_core::view::jump_to(
        &base.make_valid(&shape),
        &shape,
        !columns,
        index,
        WINDOW,
    );
    state = state.with_view(&v);
    ctx.go(&state, false);
    let (rows, cols) = if columns {
        ((0, v.y.count()), (pos, pos + 1))
    } else {
        ((pos, pos + 1), (0, 1))
    };
    ctx.selection.set(Some(CellRect {
        view: v,
        tensor: tensor.to_string(),
        rows,
        cols,
    }));
}

/// A request the user asked for (`None` until then), fetched again after every change to the
/// session: the run, embedding and activation panels follow edits, undos and layer toggles.
pub fn asked_resource<Req, Resp, F, Fut>(
    ctx: Ctx,
    asked: RwSignal<Option<Req>>,
    fetch: F,
) -> LocalResource<Option<Result<Resp, ServerFnError>>>
where
    Req: Clone + Send + Sync + 'static,
    Resp: 'static,
    F: Fn(Req) -> Fut + Copy + 'static,
    Fut: std::future::Future<Output = Result<Resp, ServerFnError>> + 'static,
{
    LocalResource::new(move || {
        let req = asked.get();
        let _ = ctx.version.get();
        async move {
            match req {
                Some(r) => Some(fetch(r).await),
                None => None,
            }
        }
    })
}

/// The shared state.
pub fn use_ctx() -> Ctx {
    expect_context::<Ctx>()
}

/// Polls `fetch` every 250 ms while `running` holds, publishing the progress it reports.
pub fn poll_progress<F, Fut>(
    running: ReadSignal<bool>,
    set: WriteSignal<Option<tensor_surgeon_wire::TaskProgress>>,
    fetch: F,
) where
    F: Fn() -> Fut + Copy + 'static,
    Fut: std::future::Future<Output = Result<tensor_surgeon_wire::TaskProgress, ServerFnError>>
        + 'static,
{
    poll(Duration::from_millis(250), (), move |()| async move {
        if !running.get_untracked() {
            set.set(None);
            return Poll::Done;
        }
        if let Ok(p) = fetch().await {
            set.set(Some(p));
        }
        Poll::Next(())
    });
}

/// Runs a request that changes the session (edits, region operations, undo, redo, layers,
/// drops, loads): `busy` (when the caller shows it) while it runs, then its error (or none) in
/// `error`. `done` takes the answer and gives back the session when the answer is one: it is
/// shown as it is, without fetching it again; any other answer has the session fetched again.
/// Either way every view of the data refetches.
pub fn mutate<T: 'static>(
    ctx: Ctx,
    busy: Option<WriteSignal<bool>>,
    error: WriteSignal<Option<String>>,
    request: impl std::future::Future<Output = Result<T, ServerFnError>> + 'static,
    done: impl FnOnce(T) -> Option<SessionView> + 'static,
) {
    let set_busy = move |b: bool| {
        if let Some(busy) = busy {
            busy.set(b);
        }
    };
    set_busy(true);
    leptos::task::spawn_local(async move {
        let result = request.await;
        set_busy(false);
        match result {
            Ok(answer) => {
                error.set(None);
                match done(answer) {
                    Some(session) => ctx.show_session(session),
                    None => ctx.changed(),
                }
            }
            Err(e) => error.set(Some(message(&e))),
        }
    });
}

/// [`mutate`] for the requests that answer with the session itself.
pub fn submit(
    ctx: Ctx,
    busy: Option<WriteSignal<bool>>,
    error: WriteSignal<Option<String>>,
    request: impl std::future::Future<Output = Result<SessionView, ServerFnError>> + 'static,
) {
    mutate(ctx, busy, error, request, Some);
}

/// A server function error as the text a user should read.
pub fn message(e: &ServerFnError) -> String {
    match e {
        ServerFnError::ServerError(m) => m.clone(),
        other => other.to_string(),
    }
}
