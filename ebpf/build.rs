//! Compiles the C programs in `bpf/` with clang into OUT_DIR, and runs a host
//! program compiled from `layout.c` to emit the ABI header's layout as Rust
//! constants that `src/abi.rs` asserts against.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let include = dir.join("include");
    let clang = env::var("DEMARC_CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=DEMARC_CLANG");
    for entry in ["include", "bpf", "layout.c"] {
        println!("cargo:rerun-if-changed={}", dir.join(entry).display());
    }
    for entry in std::fs::read_dir(&include).unwrap() {
        println!("cargo:rerun-if-changed={}", entry.unwrap().path().display());
    }

    let multiarch = multiarch_include(&clang);
    for entry in std::fs::read_dir(dir.join("bpf")).unwrap() {
        let src = entry.unwrap().path();
        let Some(name) = src.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".bpf.c") else {
            continue;
        };
        println!("cargo:rerun-if-changed={}", src.display());
        let obj = out.join(format!("{stem}.bpf.o"));
        let mut cmd = Command::new(&clang);
        cmd.args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-mcpu=v3",
            "-D__TARGET_ARCH_x86",
        ])
        .args(["-Wall", "-Werror"])
        .arg("-I")
        .arg(&include);
        if let Some(m) = &multiarch {
            cmd.arg("-idirafter").arg(m);
        }
        cmd.arg("-c").arg(&src).arg("-o").arg(&obj);
        run(
            &mut cmd,
            "compile the BPF programs (install clang and libbpf-dev: scripts/setup.sh)",
        );
    }

    let layout_bin = out.join("layout");
    run(
        Command::new(env::var("CC").unwrap_or_else(|_| "cc".into()))
            .arg("-I")
            .arg(&include)
            .arg(dir.join("layout.c"))
            .arg("-o")
            .arg(&layout_bin),
        "compile layout.c with the host C compiler",
    );
    let printed = Command::new(&layout_bin).output().expect("run layout");
    assert!(printed.status.success(), "layout program failed");
    std::fs::write(out.join("layout.rs"), printed.stdout).unwrap();
}

/// Debian keeps `asm/types.h` under the multiarch directory, which
/// `-target bpf` does not search on its own.
fn multiarch_include(clang: &str) -> Option<PathBuf> {
    let out = Command::new(clang).arg("-print-multiarch").output().ok()?;
    let triple = String::from_utf8(out.stdout).ok()?;
    let path = Path::new("/usr/include").join(triple.trim());
    (!triple.trim().is_empty() && path.is_dir()).then_some(path)
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot {what}: {:?}: {e}", cmd.get_program()));
    assert!(status.success(), "failed to {what}: {cmd:?}");
}
