//! Running a program to completion, so that a failure names the exact
//! command and what the program said about it.

use std::ffi::OsStr;
use std::process::Command;

use crate::{Error, Result};

/// Runs `program args…` and returns its standard output; a non-zero exit is
/// [`Error::Command`] with its standard error on one line.
pub fn output(program: impl AsRef<OsStr>, args: &[&str]) -> Result<String> {
    let program = program.as_ref();
    let cmd = format!("{} {}", program.to_string_lossy(), args.join(" "));
    tracing::debug!("{cmd}");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(Error::io(format!("running `{cmd}`")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Command {
            cmd,
            stderr: stderr.trim().replace('\n', "; "),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
