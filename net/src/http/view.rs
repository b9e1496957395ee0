//! [`LiveView`]: an owner's status page, served beside `/metrics` when the config's
//! `http.status` asks for it. The owner (node or aggregator) gives its page, its script and a
//! function that renders its current status as JSON from a read-only snapshot; the endpoint
//! adds the style sheet and the plotting script that both pages share. Everything is compiled
//! into the binary: the page fetches nothing from anywhere but its own endpoint.

use std::sync::Arc;

/// The shared style sheet, served at `/view.css`.
pub const STYLE: &str = include_str!("../../assets/view.css");
/// The shared plotting script (`plot(svg, series, options)`: lines and points in an inline
/// SVG), served at `/plot.js`.
pub const PLOT: &str = include_str!("../../assets/plot.js");

/// Renders the owner's status as a JSON document.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A status page: `/` (the page), `/status.js` (its script) and `/api/status` (its data).
#[derive(Clone)]
pub struct LiveView {
    pub(crate) page: &'static str,
    pub(crate) script: &'static str,
    pub(crate) status: Render,
}

impl LiveView {
    /// A page, its script, and the function that renders `/api/status`: it must only read a
    /// snapshot (a `tokio::sync::watch` receiver's `borrow`), never wait for a lock held across
    /// an `await`.
    pub fn new(page: &'static str, script: &'static str, status: Render) -> Self {
        Self { page, script, status }
    }
}

impl std::fmt::Debug for LiveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveView").field("page", &self.page.len()).field("script", &self.script.len()).finish()
    }
}
