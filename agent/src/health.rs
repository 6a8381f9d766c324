//! The probe's health: which hooks are attached and how, fallbacks taken, the
//! kernel-side counters per point, and BPF program statistics.

use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use aya::maps::{Map, MapData, PerCpuArray};
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
use demarc_ebpf::abi::{self, counter_index};
use demarc_proto::{
    ingest::{Health, HookStatus, PointCounters, ProgramStats},
    Point,
};

use crate::Result;

/// What stays fixed after start-up, plus readers for what changes.
pub struct HealthSource {
    pub hooks: Vec<HookStatus>,
    pub fallbacks: Vec<String>,
    points: Vec<Point>,
    counters: PerCpuArray<MapData, u64>,
    programs: Vec<(String, OwnedFd)>,
    /// Keeps kernel.bpf_stats_enabled on while the probe runs.
    _stats: Option<OwnedFd>,
}

impl HealthSource {
    /// `points` are the points this probe's programs report.
    pub fn new(
        counters: Map,
        points: Vec<Point>,
        programs: Vec<(String, OwnedFd)>,
        hooks: Vec<HookStatus>,
        mut fallbacks: Vec<String>,
    ) -> Result<Self> {
        let stats = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => Some(fd),
            Err(e) => {
                fallbacks.push(format!(
                    "BPF run-time statistics unavailable ({e}): run_time_ns stays 0"
                ));
                None
            }
        };
        Ok(Self {
            hooks,
            fallbacks,
            points,
            counters: PerCpuArray::try_from(counters)?,
            programs,
            _stats: stats,
        })
    }

    /// Counters of one point, summed over CPUs.
    pub fn point(&self, point: Point) -> PointCounters {
        let get = |kind| {
            self.counters
                .get(&counter_index(u32::from(point.code()), kind), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        PointCounters {
            seen: get(abi::CNT_SEEN),
            media: get(abi::CNT_MEDIA),
            recorded: get(abi::CNT_RECORDED),
            parse_fail: get(abi::CNT_PARSE_FAIL),
            ringbuf_full: get(abi::CNT_RINGBUF_FULL),
            map_full: get(abi::CNT_MAP_FULL),
            read_fail: get(abi::CNT_READ_FAIL),
        }
    }

    /// A full snapshot; the spool part is filled in by whoever owns the spool.
    pub fn snapshot(&self) -> Health {
        Health {
            hooks: self.hooks.clone(),
            fallbacks: self.fallbacks.clone(),
            points: self
                .points
                .iter()
                .map(|&p| (p, self.point(p)))
                .collect::<BTreeMap<_, _>>(),
            programs: self
                .programs
                .iter()
                .map(|(name, fd)| {
                    program_stats(name, fd).unwrap_or_else(|_| ProgramStats {
                        name: name.clone(),
                        run_count: 0,
                        run_time_ns: 0,
                        recursion_misses: 0,
                    })
                })
                .collect(),
            spool: Default::default(),
        }
    }
}

/// run count, run time and recursion misses from BPF_OBJ_GET_INFO_BY_FD
/// (aya 0.14's ProgramInfo does not expose recursion_misses).
pub fn program_stats(name: &str, fd: &impl AsFd) -> io::Result<ProgramStats> {
    // SAFETY: both are plain C structs for which all-zero is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_fd().as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = &mut info as *mut bpf_prog_info as u64;
    // SAFETY: attr points at a valid info buffer of the stated length.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &mut attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ProgramStats {
        name: name.into(),
        run_count: info.run_cnt,
        run_time_ns: info.run_time_ns,
        recursion_misses: info.recursion_misses,
    })
}
