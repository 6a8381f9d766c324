//! The network namespace a probe monitors, and running code inside it.
//!
//! setns() changes only the calling thread, so work that must happen inside
//! the namespace (resolving and attaching to interfaces) runs on a scoped
//! thread that enters it, while the rest of the agent (shipping to the
//! console) stays where it was started.

use std::{fs::File, os::fd::AsRawFd, os::unix::fs::MetadataExt, path::PathBuf};

use crate::{Error, Result};

/// Where `ip netns add` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, Clone)]
pub struct Netns {
    /// `None` for the namespace the probe runs in.
    pub name: Option<String>,
    pub path: PathBuf,
    pub inode: u64,
}

impl Netns {
    /// The namespace of the calling thread.
    pub fn current() -> Result<Self> {
        let path = PathBuf::from("/proc/thread-self/ns/net");
        let inode = std::fs::metadata(&path)?.ino();
        Ok(Self {
            name: None,
            path,
            inode,
        })
    }

    /// A namespace made by `ip netns add NAME`.
    pub fn named(name: &str) -> Result<Self> {
        let path = PathBuf::from(NETNS_DIR).join(name);
        if name.is_empty() || name.contains('/') || !path.exists() {
            return Err(Error::NetnsNotFound {
                name: name.into(),
                path: path.display().to_string(),
            });
        }
        let inode = std::fs::metadata(&path)?.ino();
        Ok(Self {
            name: Some(name.into()),
            path,
            inode,
        })
    }

    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("netns {n} (inode {})", self.inode),
            None => format!("the current netns (inode {})", self.inode),
        }
    }

    /// Runs `f` on a thread inside this namespace (on the caller's thread when
    /// it is the current one).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let Some(name) = &self.name else {
            return Ok(f());
        };
        let file = File::open(&self.path)?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: plain syscall on a valid fd; affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(Error::NetnsEnter {
                        name: name.clone(),
                        source: std::io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .join()
            .expect("netns worker panicked")
        })
    }

    /// Index of `iface` inside this namespace.
    pub fn ifindex(&self, iface: &str) -> Result<u32> {
        let c = std::ffi::CString::new(iface).map_err(|_| self.unknown(iface))?;
        // SAFETY: c is a valid NUL-terminated string.
        let index = self.run(|| unsafe { libc::if_nametoindex(c.as_ptr()) })?;
        if index == 0 {
            return Err(self.unknown(iface));
        }
        Ok(index)
    }

    fn unknown(&self, iface: &str) -> Error {
        Error::UnknownInterface {
            iface: iface.into(),
            netns: self.describe(),
        }
    }
}
