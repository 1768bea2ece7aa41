//! The one polling loop of the client: progress of long work, the session's long poll, the
//! scan's rows, a layout's frames, remote reads under way.

use leptos::prelude::*;
use std::future::Future;
use std::time::Duration;

/// What a polling step decides.
pub enum Poll<S> {
    /// Ask again with this state after the loop's usual pause.
    Next(S),
    /// Ask again with this state after this pause (at once, or later after a failure).
    After(Duration, S),
    /// Stop.
    Done,
}

/// Runs `step` on `state` now, then again on the state it returns, until it says
/// [`Poll::Done`]; `every` apart unless it asks for another pause.
pub fn poll<S, F, Fut>(every: Duration, state: S, step: F)
where
    S: 'static,
    F: Fn(S) -> Fut + Copy + 'static,
    Fut: Future<Output = Poll<S>> + 'static,
{
    leptos::task::spawn_local(async move {
        let (next, pause) = match step(state).await {
            Poll::Done => return,
            Poll::Next(s) => (s, every),
            Poll::After(pause, s) => (s, pause),
        };
        set_timeout(move || poll(every, next, step), pause);
    });
}
