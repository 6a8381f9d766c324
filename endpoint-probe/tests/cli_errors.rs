//! Bad input gets one clear line and a non-zero exit; a stopped probe leaves
//! no program attached (checked with the kernel's own listing).

mod support;

use std::process::Command;

use support::*;

fn probe(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_demarc-probe"))
        .args(args)
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_is_one_clear_line_and_a_failure() {
    require_root();
    let out = "--output=jsonl:/dev/null";
    for (args, expect) in [
        (
            vec!["--iface", "nosuchif0", out],
            "interface \"nosuchif0\" not found",
        ),
        (
            vec!["--iface", "lo", "--netns", "no-such-ns-dmc", out],
            "network namespace \"no-such-ns-dmc\" not found",
        ),
        (
            vec![
                "--iface",
                "lo",
                "--console",
                "127.0.0.1:8080",
                "--token",
                "t",
            ],
            "invalid console URL",
        ),
        (
            vec!["--iface", "lo", "--console", "ftp://x", "--token", "t"],
            "scheme must be http or https",
        ),
        (vec!["--iface", "lo"], "nothing to do"),
        (vec!["--iface", "lo", "--sample-rate", "2", out], "sample"),
        (vec![out], "give --iface"),
    ] {
        let (ok, stderr) = probe(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(
            stderr.contains(expect),
            "{args:?}: expected {expect:?} in {stderr:?}"
        );
        let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
        assert!(lines <= 3, "{args:?}: not one clear line: {stderr}");
    }
}

#[test]
fn without_privileges_it_says_what_is_missing() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    // `nobody` must be able to write the state directory.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_demarc-probe"))
        .args(["--iface", "lo", "--output=jsonl:/dev/null", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no permission: missing CAP_NET_ADMIN"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

fn demarc_programs() -> usize {
    const OURS: [&str; 4] = ["tx_wire", "rx_wire", "app_send_", "app_recv_"];
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            let name = p.name_as_str().unwrap_or_default();
            OURS.iter().any(|o| name.starts_with(o))
        })
        .count()
}

#[test]
fn sigint_detaches_every_program() {
    let pair = NetnsPair::new("dt");
    let before = demarc_programs();
    let probe = Probe::start(&pair.sender, "vs", &[]);
    let during = demarc_programs();
    assert_eq!(during, before + 11, "9 syscall hooks, tc and XDP");
    probe.stop();
    assert_eq!(
        demarc_programs(),
        before,
        "programs left loaded after SIGINT"
    );
}
