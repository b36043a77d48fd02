//! The gpulab browser UI. `trunk build` compiles it to WebAssembly into `dist/`, which the
//! server serves next to the REST API it talks to.

mod api;
mod app;
mod components;
mod custom_kernel;
mod diag;
mod format;
mod hooks;
mod kernel_form;
mod lab;
mod live;
mod pages;
mod roofline;
mod session;
mod token;
mod validate;
mod watched_jobs;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
