//! graphite-web's HTTP API on the node's HTTP port: `/render` (json, csv,
//! raw, pickle), `/metrics/find`, `/metrics/expand`, `/metrics/index.json`,
//! `/functions`, `/version`, graphite-web's dashboard, events and tags
//! endpoints and the browser UI at `/`. Requests are evaluated by graunt-query over the
//! source [`Api::sources`] opens for each request: this node's store, or the
//! whole cluster; this layer does not know which.

pub mod auth;
mod dashboard;
pub mod events;
mod find;
mod form;
mod functions;
mod graph;
mod params;
mod pyjson;
mod render;
mod tags;
mod ui;

use std::sync::Arc;

use axum::routing::{any, get, post};
use axum::Router;
use events::EventBook;
use graunt_query::eval::Source;
use graunt_query::source::{Fenced, Sources};

/// Limits on what one request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Series one request may fetch.
    pub max_series: usize,
    /// Datapoints one request may fetch.
    pub max_points: usize,
    /// Calls a target may nest.
    pub max_depth: usize,
    /// Renders that evaluate at once; the others wait their turn.
    pub max_concurrent_renders: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series: 100_000,
            max_points: 50_000_000,
            max_depth: 64,
            max_concurrent_renders: 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// At most [`Limits::max_concurrent_renders`] renders evaluate at once and
/// the others wait their turn, as graphite-web's requests wait for a free
/// worker: a burst of large renders cannot take every blocking thread and
/// the memory of all their series at once.
pub struct RenderSlots {
    permits: Arc<tokio::sync::Semaphore>,
    running: prometheus::IntGauge,
    waited: prometheus::IntCounter,
}

impl RenderSlots {
    /// `n` slots (at least one), counted in `running` and `waited`.
    pub fn new(n: usize, running: prometheus::IntGauge, waited: prometheus::IntCounter) -> Self {
        RenderSlots {
            permits: Arc::new(tokio::sync::Semaphore::new(n.max(1))),
            running,
            waited,
        }
    }

    /// Waits for a slot; it is held until the [`RenderSlot`] is dropped
    /// (by the render's blocking task, so a client that goes away does not
    /// free it while the render still runs).
    pub async fn enter(&self) -> Option<RenderSlot> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.waited.inc();
                self.permits.clone().acquire_owned().await.ok()?
            }
        };
        self.running.inc();
        Some(RenderSlot {
            _permit: permit,
            running: self.running.clone(),
        })
    }
}

/// A render's slot (see [`RenderSlots`]).
pub struct RenderSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    running: prometheus::IntGauge,
}

impl Drop for RenderSlot {
    fn drop(&mut self) {
        self.running.dec();
    }
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct Api {
    /// Where each request's series come from.
    pub sources: Arc<dyn Sources>,
    /// Request bounds.
    pub limits: Limits,
    /// Who may read, and CORS.
    pub auth: Arc<auth::Auth>,
    /// graphite-web's events: this node's or the cluster's.
    pub events: Arc<dyn EventBook>,
    /// Renders at once.
    pub renders: Arc<RenderSlots>,
}

impl Api {
    /// The source of one request by `who`: a tenant sees only its
    /// namespaces. Called on a blocking thread.
    pub fn open(&self, local: bool, who: &auth::Identity) -> Box<dyn Source + Send> {
        let source = self.sources.open(local);
        match &who.namespaces {
            Some(ns) => Box::new(Fenced::new(source, ns.clone())),
            None => source,
        }
    }
}

/// The API routes, to merge into the node's router.
pub fn routes(api: Api) -> Router {
    Router::new()
        .route("/render", get(render::render).post(render::render_post))
        .route("/render/", get(render::render).post(render::render_post))
        .route("/metrics/find", get(find::find).post(find::find_post))
        .route("/metrics/find/", get(find::find).post(find::find_post))
        .route("/metrics/expand", get(find::expand).post(find::expand_post))
        .route(
            "/metrics/expand/",
            get(find::expand).post(find::expand_post),
        )
        .route("/metrics/index.json", get(find::index))
        .route("/functions", get(functions::list))
        .route("/functions/", get(functions::list))
        .route("/functions/{name}", get(functions::details))
        .route("/dashboard/save/{name}", post(dashboard::save))
        .route("/dashboard/load/{name}", get(dashboard::load))
        .route("/dashboard/delete/{name}", post(dashboard::delete))
        .route("/dashboard/find", get(dashboard::find))
        .route("/dashboard/find/", get(dashboard::find))
        .route("/tags", any(tags::list))
        .route("/tags/", any(tags::list))
        .route("/tags/tagSeries", post(tags::tag_series))
        .route("/tags/tagMultiSeries", post(tags::tag_multi_series))
        .route("/tags/delSeries", post(tags::del_series))
        .route(
            "/tags/findSeries",
            get(tags::find_series).post(tags::find_series),
        )
        .route(
            "/tags/autoComplete/tags",
            get(tags::autocomplete_tags).post(tags::autocomplete_tags),
        )
        .route(
            "/tags/autoComplete/values",
            get(tags::autocomplete_values).post(tags::autocomplete_values),
        )
        .route("/tags/{*tag}", any(tags::details))
        .route("/events", get(events::view).post(events::post))
        .route("/events/", get(events::view).post(events::post))
        // graphite-web's pattern is `get_data?`: the last letter is optional.
        .route("/events/get_data", get(events::get_data))
        .route("/events/get_dat", get(events::get_data))
        .route("/events/{id}", get(events::detail).delete(events::delete))
        .route("/events/{id}/", get(events::detail).delete(events::delete))
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        // Every route above needs a login when users are configured.
        .layer(axum::middleware::from_fn_with_state(
            api.auth.clone(),
            auth::guard,
        ))
        .route("/version", get(version))
        .route("/version/", get(version))
        .with_state(api)
}

/// graphite-web's version, which Grafana reads to pick its feature set.
async fn version() -> &'static str {
    "1.1.10"
}
