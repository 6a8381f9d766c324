//! Static files, embedded so the binary serves them from any directory and
//! the pages work offline.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &str)] = &[
    (
        "uplot/uPlot.iife.min.js",
        "text/javascript",
        include_str!("../../static/uplot/uPlot.iife.min.js"),
    ),
    (
        "uplot/uPlot.min.css",
        "text/css",
        include_str!("../../static/uplot/uPlot.min.css"),
    ),
    (
        "uplot/LICENSE",
        "text/plain",
        include_str!("../../static/uplot/LICENSE"),
    ),
    (
        "app.js",
        "text/javascript",
        include_str!("../../static/app.js"),
    ),
    ("app.css", "text/css", include_str!("../../static/app.css")),
];

pub async fn asset(Path(path): Path<String>) -> Response {
    match FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
