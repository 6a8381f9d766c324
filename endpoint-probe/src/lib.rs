//! `demarc-probe`, the endpoint probe: command line and run loop, as a library
//! so tests reach them. The shared machinery is in `demarc-agent`.

pub mod cli;
pub mod run;
