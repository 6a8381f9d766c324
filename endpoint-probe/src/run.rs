//! Which programs the endpoint loads and where they attach; the rest of
//! start-up and the run are demarc_agent::probe's.

use demarc_agent::{
    attach,
    pipeline::Summary,
    probe::{Attached, Prepared},
};
use demarc_proto::{ingest::ProbeKind, Point};

use crate::cli::Cli;

/// (program, syscall tracepoint, point): every syscall hook of the endpoint.
const SYSCALL_HOOKS: &[(&str, &str, Point)] = &[
    ("app_send_sendto", "sys_enter_sendto", Point::AppSend),
    ("app_send_sendmsg", "sys_enter_sendmsg", Point::AppSend),
    ("app_send_sendmmsg", "sys_enter_sendmmsg", Point::AppSend),
    (
        "app_recv_enter_recvfrom",
        "sys_enter_recvfrom",
        Point::AppRecv,
    ),
    (
        "app_recv_exit_recvfrom",
        "sys_exit_recvfrom",
        Point::AppRecv,
    ),
    (
        "app_recv_enter_recvmsg",
        "sys_enter_recvmsg",
        Point::AppRecv,
    ),
    ("app_recv_exit_recvmsg", "sys_exit_recvmsg", Point::AppRecv),
    (
        "app_recv_enter_recvmmsg",
        "sys_enter_recvmmsg",
        Point::AppRecv,
    ),
    (
        "app_recv_exit_recvmmsg",
        "sys_exit_recvmmsg",
        Point::AppRecv,
    ),
];

const POINTS: [Point; 4] = [Point::AppSend, Point::TxWire, Point::RxWire, Point::AppRecv];

pub fn run(cli: Cli) -> anyhow::Result<Summary> {
    let prepared = Prepared::new(cli.probe, "demarc-probe")?;
    let (lo, hi) = cli.ports.unwrap_or((0, u16::MAX));
    let mut ebpf = prepared
        .loader()
        .override_global("cfg_port_lo", &lo, true)
        .override_global("cfg_port_hi", &hi, true)
        .load(demarc_ebpf::ENDPOINT_OBJ)
        .map_err(demarc_agent::Error::Load)?;
    let mut hooks = Vec::new();
    let mut fallbacks = Vec::new();
    for (prog, tp, point) in SYSCALL_HOOKS {
        hooks.push(attach::tracepoint(&mut ebpf, prog, tp, *point)?);
    }
    let netns = &prepared.netns;
    for iface in &prepared.opts.ifaces {
        hooks.push(attach::tc_egress(
            &mut ebpf,
            "tx_wire",
            netns,
            iface,
            Point::TxWire,
        )?);
        hooks.push(attach::ingress(
            &mut ebpf,
            ("rx_wire", "rx_wire_tc"),
            netns,
            iface,
            Point::RxWire,
            &mut fallbacks,
        )?);
    }
    let ports = cli
        .ports
        .map_or("all".into(), |(lo, hi)| format!("{lo}-{hi}"));
    let notes = vec![
        format!("UDP ports: {ports}"),
        "not seen: sockets driven by io_uring; write()/read() on UDP sockets; datagrams after \
         the first of a UDP GSO (UDP_SEGMENT) send"
            .to_string(),
    ];
    Ok(prepared.run(Attached {
        ebpf,
        kind: ProbeKind::Endpoint,
        points: POINTS.to_vec(),
        hooks,
        fallbacks,
        notes,
    })?)
}
