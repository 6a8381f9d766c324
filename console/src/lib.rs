//! demarc-console: ingest → join → store → pages.
pub mod join;
pub mod segment;
pub mod store;
