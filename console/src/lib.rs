//! demarc-console: the data path reads in module order:
//! ingest (`routes::ingest`) → join (`join`) → store (`store`) → pages
//! (`routes::pages`, `templates/`, `static/`).

pub mod auth;
pub mod error;
pub mod fmt;
pub mod join;
mod routes;
pub mod segment;
pub mod state;
pub mod store;
pub mod synth;

pub use routes::app;
pub use state::{AppState, Config};
