//! HTTP surface: ingest, JSON API, pages, /metrics, /healthz, static files.

mod api;
mod assets;
mod ingest;
mod metrics;
mod pages;
mod range;

use axum::routing::{get, post};
use axum::{middleware, Router};

use crate::auth::require_ui_auth;
use crate::state::AppState;

pub fn app(state: AppState) -> Router {
    let ui = Router::new()
        .route("/", get(pages::overview))
        .route("/flows/{id}", get(pages::flow))
        .route("/pairs/{a}/{b}", get(pages::pair))
        .route("/relays/{host}", get(pages::relay))
        .route("/probes", get(pages::probes))
        .route("/api/v1/overview", get(api::overview))
        .route("/api/v1/overview/series", get(api::overview_series))
        .route("/api/v1/flows", get(api::flows))
        .route("/api/v1/flows/{id}/series", get(api::flow_series))
        .route("/api/v1/flows/{id}/coverage", get(api::coverage))
        .route("/api/v1/flows/{id}/packets", get(api::packets))
        .route("/api/v1/flows/{id}/rollups", get(api::rollups))
        .route("/api/v1/pairs/{a}/{b}/direction", get(api::direction))
        .route("/api/v1/relays/{host}/dwell", get(api::relay_dwell))
        .route("/api/v1/probes", get(api::probes))
        .route("/metrics", get(metrics::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_ui_auth,
        ));
    Router::new()
        .route(demarc_proto::ingest::INGEST_PATH, post(ingest::ingest))
        .route("/healthz", get(healthz))
        .route("/static/{*path}", get(assets::asset))
        .merge(ui)
        .with_state(state)
}

async fn healthz(
    axum::extract::State(st): axum::extract::State<AppState>,
) -> Result<&'static str, crate::error::AppError> {
    sqlx::query("SELECT 1").execute(&st.db).await?;
    Ok("ok\n")
}
