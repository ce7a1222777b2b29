//! The node's HTTP port: `/metrics` (Prometheus), graphite-web's API
//! ([`crate::web`], which also serves the UI at `/`) over the node's
//! sources, and, for a cluster member, graunt-cluster's `/cluster/` routes;
//! over TLS when the node has `[tls]` for `http`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use graunt_cluster::member::ClusterNode;
use graunt_cluster::rebalance::Rebalancer;
use graunt_cluster::source::ClusterSources;
use graunt_query::source::Sources;
use graunt_relay::shutdown::Shutdown;
use graunt_relay::tls::{TlsListener, TlsServer};
use graunt_storage::store::Store;
use tokio::net::TcpListener;

use super::telemetry::Telemetry;
use crate::web::events::EventBook;

#[derive(Clone)]
struct App {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    member: Option<(Arc<ClusterNode>, Arc<Rebalancer>)>,
}

/// The node's metrics, then the cluster's for a member.
async fn metrics(State(app): State<App>) -> String {
    let mut text = app.telemetry.render(&app.store);
    if let Some((node, rebalancer)) = &app.member {
        text.push_str(&node.metrics.render(node).await);
        text.push_str(&rebalancer.status().prometheus());
    }
    text
}

/// The bound HTTP port and its TLS, if it speaks TLS.
pub struct Port {
    /// The bound socket.
    pub listener: TcpListener,
    /// Its TLS.
    pub tls: Option<Arc<TlsServer>>,
}

/// What graphite-web's API is served with besides the data.
pub struct Web {
    /// Request bounds.
    pub limits: crate::web::Limits,
    /// Logins and CORS.
    pub auth: Arc<crate::web::auth::Auth>,
    /// This node's or the cluster's events.
    pub events: Arc<dyn EventBook>,
}

/// Serves HTTP until shutdown.
pub async fn serve(
    port: Port,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    web: Web,
    member: Option<(Arc<ClusterNode>, Arc<Rebalancer>)>,
    mut shutdown: Shutdown,
) {
    // The one place that chooses between this node alone and the cluster.
    let sources: Arc<dyn Sources> = match &member {
        None => Arc::new(store.clone()),
        Some((node, _)) => Arc::new(ClusterSources {
            node: node.clone(),
            store: store.clone(),
            handle: tokio::runtime::Handle::current(),
        }),
    };
    let renders = Arc::new(crate::web::RenderSlots::new(
        web.limits.max_concurrent_renders,
        telemetry.renders_running.clone(),
        telemetry.renders_waited.clone(),
    ));
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(App {
            store: store.clone(),
            telemetry,
            member: member.clone(),
        })
        .merge(crate::web::routes(crate::web::Api {
            sources,
            limits: web.limits,
            auth: web.auth,
            events: web.events,
            renders,
        }));
    if let Some((node, rebalancer)) = member {
        app = app.merge(graunt_cluster::api::routes(node, store, rebalancer));
    }
    let stop = async move { shutdown.recv().await };
    let result = match port.tls {
        None => {
            axum::serve(port.listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(tls) => match TlsListener::new(port.listener, tls) {
            Ok(listener) => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
