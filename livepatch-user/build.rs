//! Embeds the eBPF object that `cargo xtask build` produced. Without it (a
//! plain `cargo check` or `cargo build` on a fresh clone, rust-analyzer) an
//! empty placeholder is embedded instead, as aya's template does: the build
//! works, and the binary says it has no eBPF programs.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=KLPSCOPE_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    // Where `cargo xtask build` puts it: the workspace's target directory,
    // or CARGO_TARGET_DIR (a relative one read from the workspace root).
    let workspace = manifest.join("..");
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace.join(dir))
        .unwrap_or_else(|| workspace.join("target"));
    let object = env::var_os("KLPSCOPE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("bpfel-unknown-none/release/livepatch-ebpf"));
    println!("cargo:rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("livepatch.bpf.o");
    if let Err(error) = fs::copy(&object, &out) {
        println!(
            "cargo:warning=no eBPF object at {} ({error}): klpscope is built without its eBPF \
             programs; `cargo xtask build` builds them first",
            object.display()
        );
        fs::write(&out, []).expect("write the placeholder eBPF object");
    }
}
