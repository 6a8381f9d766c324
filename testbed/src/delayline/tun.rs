//! Attaching to the persistent TUN devices the topology made.
//!
//! One TUNSETIFF ioctl with `libc`: the `tun` crate is built to create and
//! address devices, which the topology already did with `ip tuntap`.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::topology::{netns, TUN_DEVICE};
use crate::{Error, Result};

/// Opens TUN `name` in namespace `ns` for raw IP packets (no packet-info
/// header), non-blocking so the reader can also watch its stop signal.
/// The device is looked up in the namespace of the opening thread; the
/// returned file works from any thread.
pub fn attach(ns: &str, name: &str) -> Result<File> {
    netns::run(ns, || {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(TUN_DEVICE)
            .map_err(|source| Error::NoTun {
                path: TUN_DEVICE,
                source,
            })?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        // The topology's TUN names are short constants; the last byte stays NUL.
        debug_assert!(name.len() < req.ifr_name.len());
        for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: a valid fd and a valid, NUL-terminated ifreq for TUNSETIFF.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &req) } != 0 {
            // EBUSY here means another delay line holds the device.
            let what = format!("attaching to TUN {name} in {ns}");
            return Err(Error::io(what)(std::io::Error::last_os_error()));
        }
        Ok(file)
    })
}
