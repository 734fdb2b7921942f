//! The livepatch .ko parser against relocatable objects built here with the
//! host gcc from tests/fixtures/check/fake_livepatch.c, which copies the
//! leading fields of the kernel's klp structs and pads the rest. Built, not
//! checked in: the compiler decides the relocations, as kbuild's does.
use std::{path::PathBuf, process::Command};

use livepatch_user::{
    kernel::livepatch_module::{LivepatchModule, ModuleError, ModuleObject, read_livepatch_module},
    model::PatchFunction,
};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check/fake_livepatch.c")
}

/// Compiles the fixture like kbuild compiles module code (no PIC, kernel
/// code model). `internal` is the size of the structs' config-dependent
/// tail; `extra` more gcc flags.
fn build(dir: &tempfile::TempDir, name: &str, internal: u32, extra: &[&str]) -> PathBuf {
    let out = dir.path().join(format!("{name}.ko"));
    let status = Command::new("gcc")
        .args(["-c", "-O2", "-fno-pic", "-mcmodel=kernel"])
        .arg(format!("-DKLP_INTERNAL={internal:#x}"))
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(fixture())
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc failed");
    out
}

fn func(name: &str, sympos: u32) -> PatchFunction {
    PatchFunction {
        name: name.into(),
        sympos,
    }
}

fn expected() -> LivepatchModule {
    LivepatchModule {
        name: "fake_livepatch".into(),
        replace: true,
        signed: false,
        objects: vec![
            ModuleObject {
                name: None,
                functions: vec![func("cmdline_proc_show", 2), func("meminfo_proc_show", 0)],
            },
            ModuleObject {
                name: Some("klp_test_target".into()),
                functions: vec![func("klp_test_park_wait", 0)],
            },
        ],
    }
}

#[test]
fn objects_functions_sympos_and_replace_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let ko = build(&dir, "a", 0x98, &[]);
    assert_eq!(read_livepatch_module(&ko).unwrap(), expected());
}

#[test]
fn a_linked_module_with_its_own_this_module_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let ko = build(&dir, "linked", 0x98, &["-DDEFINE_THIS_MODULE"]);
    assert_eq!(read_livepatch_module(&ko).unwrap(), expected());
}

#[test]
fn the_struct_sizes_of_another_kernel_config_are_measured() {
    let dir = tempfile::tempdir().unwrap();
    for internal in [0x40, 0xd8, 0x1f8] {
        let ko = build(&dir, &format!("size{internal}"), internal, &[]);
        assert_eq!(
            read_livepatch_module(&ko).unwrap(),
            expected(),
            "{internal:#x}"
        );
    }
}

#[test]
fn stripped_symbol_sizes_fall_back_to_the_entry_gap() {
    let dir = tempfile::tempdir().unwrap();
    let ko = build(&dir, "stripped", 0x98, &[]);
    // Drop the local symbols' sizes the way a strip of locals would make
    // them unknown: rewrite st_size of every data object to 0.
    let stripped = dir.path().join("stripped_sizes.ko");
    let status = Command::new("objcopy")
        .arg("--strip-unneeded")
        .arg("--keep-symbol=__this_module")
        .arg(&ko)
        .arg(&stripped)
        .status()
        .expect("objcopy runs");
    assert!(status.success());
    let module = read_livepatch_module(&stripped).unwrap();
    assert_eq!(module.objects, expected().objects);
}

#[test]
fn a_signature_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let ko = build(&dir, "signed", 0x98, &[]);
    let mut bytes = std::fs::read(&ko).unwrap();
    bytes.extend_from_slice(b"SIG\0\0\0\0\0\0\0\0\x03~Module signature appended~\n");
    std::fs::write(&ko, bytes).unwrap();
    assert!(read_livepatch_module(&ko).unwrap().signed);
}

#[test]
fn a_file_that_is_not_elf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.ko");
    std::fs::write(&path, "just text\n").unwrap();
    let error = read_livepatch_module(&path).unwrap_err();
    assert!(matches!(error, ModuleError::NotElf { .. }), "{error}");
    assert!(error.to_string().contains("is not an ELF file"), "{error}");
}

#[test]
fn a_truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ko = build(&dir, "whole", 0x98, &[]);
    let bytes = std::fs::read(&ko).unwrap();
    for len in [4, 40, 200, bytes.len() / 2, bytes.len() - 1] {
        let cut = dir.path().join(format!("cut{len}.ko"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let error = read_livepatch_module(&cut).unwrap_err();
        assert!(
            matches!(error, ModuleError::Corrupt { .. }),
            "cut at {len}: {error}"
        );
        assert!(
            error.to_string().contains("truncated or corrupt"),
            "{error}"
        );
    }
}

#[test]
fn a_module_without_the_livepatch_tag_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ko = build(&dir, "plain", 0x98, &["-DNOT_LIVEPATCH"]);
    let error = read_livepatch_module(&ko).unwrap_err();
    assert!(matches!(error, ModuleError::NotLivepatch { .. }), "{error}");
    assert!(error.to_string().contains("livepatch=Y"), "{error}");
}

#[test]
fn an_object_without_modinfo_is_no_module() {
    let dir = tempfile::tempdir().unwrap();
    let ko = build(&dir, "bare", 0x98, &[]);
    let bare = dir.path().join("bare_nomodinfo.o");
    let status = Command::new("objcopy")
        .args(["--remove-section", ".modinfo"])
        .arg(&ko)
        .arg(&bare)
        .status()
        .expect("objcopy runs");
    assert!(status.success());
    let error = read_livepatch_module(&bare).unwrap_err();
    assert!(error.to_string().contains("no kernel module"), "{error}");
}

#[test]
fn an_undecodable_layout_asks_for_function() {
    let dir = tempfile::tempdir().unwrap();
    let ko = build(&dir, "nopatch", 0x98, &["-DNO_PATCH_STRUCT"]);
    let error = read_livepatch_module(&ko).unwrap_err();
    assert!(matches!(error, ModuleError::Layout { .. }), "{error}");
    assert!(error.to_string().contains("--function"), "{error}");
}

#[test]
fn a_missing_file_says_so() {
    let error = read_livepatch_module(std::path::Path::new("/nonexistent/x.ko")).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot read /nonexistent/x.ko"),
        "{error}"
    );
}
