//! The node's HTTP port: `/metrics` (Prometheus) and graphite-web's API
//! ([`crate::web`], which also serves the UI at `/`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use graunt_storage::store::Store;
use tokio::net::TcpListener;

use super::shutdown::Shutdown;
use super::telemetry::Telemetry;

#[derive(Clone)]
struct App {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
}

async fn metrics(State(app): State<App>) -> String {
    app.telemetry.render(&app.store)
}

/// Serves HTTP until shutdown.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    limits: crate::web::Limits,
    cluster: Option<Arc<crate::cluster::ClusterNode>>,
    mut shutdown: Shutdown,
) {
    let api = crate::web::Api {
        store: store.clone(),
        limits,
        cluster: cluster.clone(),
    };
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(App {
            store: store.clone(),
            telemetry,
        })
        .merge(crate::web::routes(api));
    if let Some(node) = cluster {
        app = app.merge(crate::cluster::routes(node, store));
    }
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
