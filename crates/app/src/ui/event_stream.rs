//! A stream of server-sent events (the browser's `EventSource`): events of one name carrying
//! JSON, then `done`, or `failure` with the message. Nothing on the server.

use leptos::prelude::*;
use serde::de::DeserializeOwned;

/// Closes the stream kept in `slot`, if any (the server stops its work), and empties it.
pub fn close(slot: StoredValue<Option<Stream>, LocalStorage>) {
    slot.update_value(|s| {
        if let Some(s) = s.take() {
            s.close();
        }
    });
}

#[cfg(feature = "hydrate")]
pub struct Stream {
    source: web_sys::EventSource,
    _closures: Vec<wasm_bindgen::closure::Closure<dyn FnMut(web_sys::MessageEvent)>>,
}

#[cfg(feature = "hydrate")]
impl Stream {
    /// Opens `url`: `on_event` gets each `name` event's JSON, `on_end(None)` the end,
    /// `on_end(Some(error))` a failure or a lost connection.
    pub fn open<T: DeserializeOwned + 'static>(
        url: &str,
        name: &'static str,
        on_event: impl Fn(T) + 'static,
        on_end: impl Fn(Option<String>) + Clone + 'static,
    ) -> Option<Stream> {
        use wasm_bindgen::closure::Closure;
        use wasm_bindgen::JsCast;
        let source = web_sys::EventSource::new(url).ok()?;
        let data = |e: &web_sys::MessageEvent| e.data().as_string().unwrap_or_default();
        let event =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                if let Ok(ev) = serde_json::from_str::<T>(&data(&e)) {
                    on_event(ev);
                }
            });
        let (end1, end2, end3) = (on_end.clone(), on_end.clone(), on_end);
        let s1 = source.clone();
        let done =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |_: web_sys::MessageEvent| {
                s1.close();
                end1(None);
            });
        let s2 = source.clone();
        let failure =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                s2.close();
                end2(Some(data(&e)));
            });
        let s3 = source.clone();
        // A dropped connection (not a `failure` event): EventSource would reconnect and start
        // the work again; close it instead.
        let error =
            Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |_: web_sys::MessageEvent| {
                if s3.ready_state() != web_sys::EventSource::CLOSED {
                    s3.close();
                    end3(Some("the connection to the server was lost".into()));
                }
            });
        for (n, c) in [(name, &event), ("done", &done), ("failure", &failure)] {
            source
                .add_event_listener_with_callback(n, c.as_ref().unchecked_ref())
                .ok()?;
        }
        source.set_onerror(Some(error.as_ref().unchecked_ref()));
        Some(Stream {
            source,
            _closures: vec![event, done, failure, error],
        })
    }

    /// Closes the stream: the server stops the work.
    pub fn close(&self) {
        self.source.close();
    }
}

#[cfg(not(feature = "hydrate"))]
pub struct Stream;

#[cfg(not(feature = "hydrate"))]
impl Stream {
    pub fn open<T: DeserializeOwned + 'static>(
        _: &str,
        _: &'static str,
        _: impl Fn(T) + 'static,
        _: impl Fn(Option<String>) + Clone + 'static,
    ) -> Option<Stream> {
        None
    }

    pub fn close(&self) {}
}
