//! Embeds the eBPF object that `cargo xtask build` produced.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=KLPSCOPE_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let object = env::var_os("KLPSCOPE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/bpfel-unknown-none/release/livepatch-ebpf"));
    println!("cargo:rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("livepatch.bpf.o");
    if let Err(error) = fs::copy(&object, &out) {
        panic!(
            "the eBPF object {} is missing ({error}): build with `cargo xtask build`, \
             which compiles it first",
            object.display()
        );
    }
}
