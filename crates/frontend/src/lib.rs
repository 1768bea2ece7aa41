//! The WASM entry point of Tensor Surgeon's web app: hydrates the page the server rendered.
//! Everything else lives in `tensor-surgeon-app`.

/// Called by the generated JS once the WASM module is loaded.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(tensor_surgeon_app::App);
}
