//! Who owns a prefix. A claim file, written before anything is created,
//! lists the namespaces a run makes and the process that makes them; so a
//! second run with the same prefix is refused, a crashed run's leftovers are
//! known to be ours and removed, and a namespace we did not make is never
//! touched.

use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ip::ip, netns};
use crate::{Error, Result};

/// tmpfs, like `/run/netns`: claims vanish with the namespaces on reboot.
const CLAIM_DIR: &str = "/run/demarc-testbed";

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    pid: u32,
    /// From `/proc/PID/stat`, so a recycled pid is not taken for the owner.
    start_time: u64,
    namespaces: Vec<String>,
}

/// A prefix held by this process; [`Claim::clear`] removes what it lists.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    namespaces: Vec<String>,
}

impl Claim {
    /// Takes `prefix` for this process, first clearing a claim whose owner
    /// has died.
    pub fn take(prefix: &str, namespaces: Vec<String>) -> Result<Claim> {
        fs::create_dir_all(CLAIM_DIR).map_err(Error::io(format!("creating {CLAIM_DIR}")))?;
        let path = claim_path(prefix);
        let pid = std::process::id();
        let record = Record {
            pid,
            start_time: start_time(pid).ok_or_else(|| Error::Io {
                what: format!("reading /proc/{pid}/stat"),
                source: ErrorKind::NotFound.into(),
            })?,
            namespaces,
        };
        // Written whole under a private name, then linked into place: the
        // link fails if the claim exists, and no one sees a half-written one.
        let draft = path.with_extension(format!("json.{pid}"));
        let json = serde_json::to_vec(&record).expect("claim serialises");
        fs::write(&draft, json).map_err(Error::io(format!("writing {}", draft.display())))?;
        let linked = loop {
            match fs::hard_link(&draft, &path) {
                // A live owner makes `existing` fail; a dead one's leftovers go.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => match existing(prefix) {
                    Ok(Some(stale)) => match stale.clear() {
                        Ok(removed) => {
                            tracing::info!("removed leftovers of a run that died: {removed:?}")
                        }
                        Err(e) => break Err(e),
                    },
                    Ok(None) => {}
                    Err(e) => break Err(e),
                },
                r => break r.map_err(Error::io(format!("creating {}", path.display()))),
            }
        };
        let _ = fs::remove_file(&draft);
        linked.map(|()| Claim {
            path,
            namespaces: record.namespaces,
        })
    }

    /// Deletes the listed namespaces that exist (with them every veth, TUN,
    /// route and rule inside), then the claim itself. The claim stays when a
    /// namespace could not be deleted, so `down` can retry.
    pub fn clear(self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let mut first_error = None;
        for name in &self.namespaces {
            if !netns::exists(name) {
                continue;
            }
            match ip(None, &format!("netns del {name}")) {
                Ok(()) => removed.push(name.clone()),
                Err(e) => {
                    tracing::error!("{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.release()?;
        Ok(removed)
    }

    /// Gives the prefix up without touching any namespace.
    pub fn release(self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(Error::io(format!("removing {}", self.path.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

/// The claim on `prefix` left by a process that is no longer running, for
/// `down` after a crash. `Ok(None)` when there is none.
pub fn existing(prefix: &str) -> Result<Option<Claim>> {
    let path = claim_path(prefix);
    let text = match fs::read_to_string(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        r => r.map_err(Error::io(format!("reading {}", path.display())))?,
    };
    let record: Record = serde_json::from_str(&text).map_err(|e| Error::Io {
        what: format!(
            "{} is not a testbed claim (remove it by hand)",
            path.display()
        ),
        source: e.into(),
    })?;
    if start_time(record.pid) == Some(record.start_time) {
        return Err(Error::PrefixInUse {
            prefix: prefix.to_owned(),
            pid: record.pid,
        });
    }
    Ok(Some(Claim {
        path,
        namespaces: record.namespaces,
    }))
}

fn claim_path(prefix: &str) -> PathBuf {
    PathBuf::from(CLAIM_DIR).join(format!("{prefix}.json"))
}

/// Field 22 of `/proc/PID/stat` for a process that is running; `None` for
/// none, or a zombie (killed, not yet reaped). Fields are counted after the
/// parenthesised command name, which may itself hold spaces.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}
