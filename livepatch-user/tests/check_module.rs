//! The livepatch .ko parser against relocatable objects built here with the
//! host gcc from tests/fixtures/check/fake_livepatch.c, which copies the
//! leading fields of the kernel's klp structs and pads the rest. Built, not
//! checked in: the compiler decides the relocations, as kbuild's does.
//!
//! Hostile input: the crafted objects of tests/fixtures/crafted-ko (gcc
//! builds with edited relocations, made by `craft` below), files that are
//! not regular or too large, and a file that makes the klp_patch search
//! expensive. Each must give one error line, promptly, never a panic.
mod common;

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::cli::{check_json, kernel_check, klpscope};
use livepatch_user::{
    kernel::livepatch_module::{
        Callback, Failure, Hook, LivepatchModule, ModuleError, ModuleObject, Producer, Reference,
        Replace, parse_livepatch_module, read_livepatch_module,
    },
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

fn callback(hook: Hook, function: &str) -> Callback {
    Callback {
        hook,
        function: function.into(),
    }
}

fn expected() -> LivepatchModule {
    LivepatchModule {
        name: "fake_livepatch".into(),
        producer: Producer::Samples,
        replace: Replace::InFile(true),
        signed: false,
        vermagic: Some("6.12.0-fixture SMP preempt mod_unload modversions".into()),
        objects: vec![
            ModuleObject {
                name: None,
                functions: vec![func("cmdline_proc_show", 2), func("meminfo_proc_show", 0)],
                callbacks: vec![],
            },
            ModuleObject {
                name: Some("klp_test_target".into()),
                functions: vec![func("klp_test_park_wait", 0)],
                callbacks: vec![callback(Hook::PostPatch, "post_patch")],
            },
        ],
        references: vec![],
    }
}

#[test]
fn objects_functions_sympos_and_replace_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let ko = build(&dir, "a", 0x98, &[]);
    assert_eq!(read_livepatch_module(&ko).unwrap(), expected());
}

/// A klp_object with callbacks and no functions (its `funcs` an all-zero
/// array in .bss), as the kernel's own selftest modules have: the kernel
/// loads it, so it must decode.
#[test]
fn a_callbacks_only_object_decodes_with_no_functions() {
    let dir = tempfile::tempdir().unwrap();
    let ko = build(&dir, "callbacks", 0x98, &["-DCALLBACKS_ONLY_OBJECT"]);
    let mut want = expected();
    want.objects.push(ModuleObject {
        name: Some("klp_callbacks_only".into()),
        functions: vec![],
        callbacks: vec![callback(Hook::PrePatch, "post_patch")],
    });
    assert_eq!(read_livepatch_module(&ko).unwrap(), want);
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

#[test]
fn the_cause_of_a_read_error_is_printed_once() {
    let error = read_livepatch_module(Path::new("/nonexistent/x.ko")).unwrap_err();
    // As main prints it: the message, then its chain of causes.
    let line = format!("{:#}", anyhow::Error::new(error));
    assert!(
        line.starts_with("cannot read /nonexistent/x.ko: "),
        "{line}"
    );
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "{line}"
    );
}

// ---- Files that are no module file ----

/// The error of reading `path`, which must come within 5 s: a reader that
/// blocks (a FIFO) or reads forever (/dev/zero) fails the test.
fn refused_promptly(path: &Path) -> ModuleError {
    let (send, receive) = mpsc::channel();
    let owned = path.to_owned();
    std::thread::spawn(move || {
        let _ = send.send(read_livepatch_module(&owned));
    });
    let result = receive
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("reading {} took more than 5 s", path.display()));
    let error = result.expect_err("refused");
    let line = error.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    error
}

fn fifo(dir: &Path) -> PathBuf {
    let path = dir.join("pipe.ko");
    let name = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
    path
}

#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let error = refused_promptly(&fifo(dir.path()));
    assert!(
        matches!(error, ModuleError::NotRegularFile { .. }),
        "{error}"
    );
    assert!(
        error.to_string().ends_with(
            "pipe.ko is a named pipe (FIFO), not a regular file (a livepatch module is a .ko file)"
        ),
        "{error}"
    );
}

#[test]
fn a_device_is_refused_without_reading_it() {
    let error = refused_promptly(Path::new("/dev/zero"));
    assert_eq!(
        error.to_string(),
        "/dev/zero is a character device, not a regular file (a livepatch module is a .ko file)"
    );
}

#[test]
fn a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = refused_promptly(dir.path());
    assert!(
        matches!(error, ModuleError::NotRegularFile { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("is a directory, not a regular file"),
        "{error}"
    );
}

#[test]
fn a_file_over_64_mib_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.ko");
    // Sparse: no disk used, and nothing worth reading.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    let error = refused_promptly(&path);
    assert!(matches!(error, ModuleError::TooLarge { .. }), "{error}");
    assert!(
        error
            .to_string()
            .ends_with("huge.ko is 68157440 bytes, more than the 64 MiB a livepatch module can be"),
        "{error}"
    );
    // At the cap exactly, it is read (and judged on its content).
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    assert!(matches!(
        refused_promptly(&path),
        ModuleError::NotElf { .. }
    ));
}

/// `klpscope check --module FILE` as a user runs it: the module is read
/// before the kernel, so an empty root will do.
fn check_module_cli(root: &Path, module: &Path) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(root)
        .args(["check", "--no-ebpf", "--duration", "0", "--module"])
        .arg(module)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("klpscope runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("klpscope check --module {} hangs", module.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn check_refuses_a_fifo_and_a_missing_file_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = check_module_cli(dir.path(), &fifo(dir.path()));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");

    let missing = dir.path().join("missing.ko");
    let (code, stderr) = check_module_cli(dir.path(), &missing);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the cause once: {stderr}"
    );

    let crafted = crafted_dir().join("craft_this_offset.o");
    let (code, stderr) = check_module_cli(dir.path(), &crafted);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("truncated or corrupt"), "{stderr}");
}

// ---- Crafted objects ----

/// Reads and rewrites the 64-bit RELA entries of every `.rela.data*`
/// section: how the crafted objects were made from a gcc build.
mod craft {
    use object::{Object, ObjectSection, ObjectSymbol, SymbolIndex};

    /// One Elf64_Rela entry: where it sits in the file and what it says.
    pub struct Rela {
        /// Its file offset.
        pub at: usize,
        pub r_offset: u64,
        pub symbol: String,
        /// The symbol's value: its offset in its section.
        pub value: u64,
        pub addend: i64,
    }

    pub fn relas(bytes: &[u8]) -> Vec<Rela> {
        let file = object::File::parse(bytes).expect("an ELF object");
        let mut relas = Vec::new();
        for section in file.sections() {
            if !section.name().is_ok_and(|n| n.starts_with(".rela.data")) {
                continue;
            }
            let (start, size) = section.file_range().expect("in the file");
            for at in (start..start + size).step_by(24) {
                let at = at as usize;
                let word =
                    |i: usize| u64::from_le_bytes(bytes[at + 8 * i..][..8].try_into().unwrap());
                let symbol = file
                    .symbol_by_index(SymbolIndex((word(1) >> 32) as usize))
                    .expect("a symbol");
                relas.push(Rela {
                    at,
                    r_offset: word(0),
                    symbol: symbol.name().unwrap_or_default().to_owned(),
                    value: symbol.address(),
                    addend: word(2) as i64,
                });
            }
        }
        assert!(!relas.is_empty(), "no .rela.data* entries");
        relas
    }

    pub fn set_offset(bytes: &mut [u8], rela: &Rela, r_offset: u64) {
        bytes[rela.at..][..8].copy_from_slice(&r_offset.to_le_bytes());
    }

    pub fn set_addend(bytes: &mut [u8], rela: &Rela, addend: i64) {
        bytes[rela.at + 16..][..8].copy_from_slice(&addend.to_le_bytes());
    }
}

/// Each crafted object and the error it must give. The first three made a
/// debug build panic with "attempt to add with overflow" (a release build
/// wrapped); the last two were refused already.
const CRAFTED: [(&str, Expect); 5] = [
    ("craft_this_offset", Expect::Corrupt),
    ("craft_all_offsets_max", Expect::Corrupt),
    ("craft_objs", Expect::Corrupt),
    ("craft_addend_neg", Expect::Layout),
    ("craft_addend_max", Expect::Layout),
];

#[derive(Clone, Copy, Debug)]
enum Expect {
    Corrupt,
    Layout,
}

const NEAR_TOP: u64 = 0xFFFF_FFFF_FFFF_FFF8;

/// The crafted object `name`, made from the gcc build `base`.
fn craft(name: &str, base: &[u8]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    let relas = craft::relas(base);
    let anchor = relas
        .iter()
        .find(|r| r.symbol == "__this_module")
        .expect("klp_patch.mod points at __this_module");
    match name {
        "craft_this_offset" => craft::set_offset(&mut bytes, anchor, 0xFFFF_FFFF_FFFF_FFFC),
        "craft_all_offsets_max" => {
            for (i, rela) in relas.iter().enumerate() {
                craft::set_offset(&mut bytes, rela, u64::MAX - i as u64);
            }
        }
        "craft_objs" => {
            // klp_patch.objs, the pointer after the anchor, made to lead
            // to the last 8 bytes of the address space (symbol + addend
            // wraps there)...
            let objs = relas
                .iter()
                .find(|r| r.r_offset == anchor.r_offset + 8)
                .expect("klp_patch.objs");
            craft::set_addend(&mut bytes, objs, NEAR_TOP.wrapping_sub(objs.value) as i64);
            // ...where another pointer of the section now sits.
            let other = relas.last().unwrap();
            assert!(other.at != objs.at && other.at != anchor.at);
            craft::set_offset(&mut bytes, other, NEAR_TOP);
        }
        "craft_addend_neg" => {
            for rela in &relas {
                craft::set_addend(&mut bytes, rela, -(1 << 62));
            }
        }
        "craft_addend_max" => {
            for rela in &relas {
                craft::set_addend(&mut bytes, rela, i64::MAX);
            }
        }
        _ => panic!("no crafted object {name}"),
    }
    bytes
}

fn crafted_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crafted-ko")
}

/// Parses in this (debug) build, where an unchecked overflow panics.
fn assert_refused(name: &str, bytes: &[u8], expect: Expect) {
    let result = parse_livepatch_module(bytes, name);
    match (&result, expect) {
        (Err(Failure::Corrupt(_)), Expect::Corrupt) | (Err(Failure::Layout(_)), Expect::Layout) => {
        }
        _ => panic!("{name}: expected {expect:?}, got {result:?}"),
    }
}

#[test]
fn the_crafted_objects_are_refused_not_a_panic() {
    for (name, expect) in CRAFTED {
        let path = crafted_dir().join(format!("{name}.o"));
        let bytes = std::fs::read(&path).unwrap();
        assert_refused(name, &bytes, expect);
        let error = read_livepatch_module(&path).unwrap_err();
        let line = error.to_string();
        assert!(!line.contains('\n'), "{line}");
        match expect {
            Expect::Corrupt => assert!(line.contains("is truncated or corrupt"), "{line}"),
            Expect::Layout => assert!(line.contains("--function"), "{line}"),
        }
    }
}

#[test]
fn the_crafted_objects_hold_the_edits_their_readme_describes() {
    let read = |name: &str| craft::relas(&std::fs::read(crafted_dir().join(name)).unwrap());
    let relas = read("craft_this_offset.o");
    let anchor = relas.iter().find(|r| r.symbol == "__this_module").unwrap();
    assert_eq!(anchor.r_offset, 0xFFFF_FFFF_FFFF_FFFC);
    assert!(
        read("craft_all_offsets_max.o")
            .iter()
            .all(|r| r.r_offset >= u64::MAX - 64)
    );
    let relas = read("craft_objs.o");
    assert!(
        relas
            .iter()
            .any(|r| r.value.wrapping_add_signed(r.addend) == NEAR_TOP)
    );
    assert!(relas.iter().any(|r| r.r_offset == NEAR_TOP));
    assert!(
        read("craft_addend_neg.o")
            .iter()
            .all(|r| r.addend == -(1 << 62))
    );
    assert!(
        read("craft_addend_max.o")
            .iter()
            .all(|r| r.addend == i64::MAX)
    );
}

#[test]
fn objects_crafted_from_a_fresh_build_are_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read(build(&dir, "base", 0x98, &[])).unwrap();
    for (name, expect) in CRAFTED {
        assert_refused(name, &craft(name, &base), expect);
    }
}

/// Writes the crafted objects and the ko_reader fuzz seeds (the gcc builds
/// of every fixture variant, and the crafted objects). By hand, after
/// changing `craft` or the fixture source:
/// `cargo test -p livepatch-user --test check_module -- --ignored regenerate`
#[test]
#[ignore = "rewrites the checked-in crafted objects and fuzz seeds"]
fn regenerate_crafted_objects_and_fuzz_seeds() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = manifest.join("fuzz/seeds/ko_reader");
    std::fs::create_dir_all(&seeds).unwrap();
    std::fs::create_dir_all(crafted_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read(build(&dir, "base", 0x98, &[])).unwrap();
    for (name, _) in CRAFTED {
        let bytes = craft(name, &base);
        std::fs::write(crafted_dir().join(format!("{name}.o")), &bytes).unwrap();
        std::fs::write(seeds.join(format!("{name}.o")), &bytes).unwrap();
    }
    let variants: [(&str, u32, &[&str]); 5] = [
        ("fake_livepatch", 0x98, &[]),
        ("linked", 0x98, &["-DDEFINE_THIS_MODULE"]),
        ("small_structs", 0x40, &[]),
        ("not_livepatch", 0x98, &["-DNOT_LIVEPATCH"]),
        ("no_patch_struct", 0x98, &["-DNO_PATCH_STRUCT"]),
    ];
    for (name, internal, extra) in variants {
        let built = build(&dir, name, internal, extra);
        std::fs::copy(&built, seeds.join(format!("{name}.o"))).unwrap();
    }
    let status = Command::new("objcopy")
        .args(["--strip-unneeded", "--keep-symbol=__this_module"])
        .arg(build(&dir, "plain", 0x98, &[]))
        .arg(seeds.join("stripped.o"))
        .status()
        .expect("objcopy runs");
    assert!(status.success());
}

/// Compiles `source` (with a `livepatch=Y` .modinfo appended) and parses
/// it. The search's cost is bounded by its step budget, asserted through
/// the error it gives up with, never through a timing.
fn parse_source(source: &str) -> Result<LivepatchModule, Failure> {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("hostile.c");
    std::fs::write(
        &c,
        format!(
            "struct module;\nextern struct module __this_module;\n{source}\n\
             static const char modinfo[] __attribute__((section(\".modinfo\"), used, aligned(1))) \
             = \"livepatch=Y\\0name=hostile\";\n"
        ),
    )
    .unwrap();
    let ko = dir.path().join("hostile.ko");
    let status = Command::new("gcc")
        .args(["-c", "-O2", "-fno-pic", "-mcmodel=kernel", "-o"])
        .arg(&ko)
        .arg(&c)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc failed");
    let bytes = std::fs::read(&ko).unwrap();
    parse_livepatch_module(&bytes, "hostile")
}

#[test]
fn many_candidate_patches_leading_to_one_array_are_searched_quickly() {
    // 3000 structs that each look like the start of a klp_patch and lead
    // to one array that cannot be sized: each one used to rescan the whole
    // section.
    let mut source = String::from("void *anchors[] = {\n");
    for _ in 0..3000 {
        source.push_str("\t&__this_module, &anchors[0],\n");
    }
    source.push_str("};\n");
    let result = parse_source(&source);
    assert!(
        matches!(&result, Err(Failure::Layout(why)) if why.contains("cannot size")),
        "{result:?}"
    );
}

#[test]
fn many_candidate_patches_into_one_long_array_hit_the_step_budget() {
    // 2000 structs that look like the start of a klp_patch, each leading
    // one klp_object further into an array of 2000 whose last fails: the
    // walks add up to millions of entries, and the search gives up.
    let n = 2000;
    let mut source = String::from(
        "int fn(void) { return 0; }\n\
         struct func { const char *old_name; void *new_func; unsigned long sympos; char pad[24]; };\n\
         struct obj { const char *name; struct func *funcs; void *cb[4]; char pad[16]; };\n\
         struct func good[] = { { \"f\", fn }, {} };\n\
         struct func bad[] = { { \"g\", fn, (unsigned long)&fn }, {} };\n\
         struct obj objs[] = {\n",
    );
    for _ in 0..n {
        source.push_str("\t{ \"m\", good },\n");
    }
    source.push_str("\t{ \"m\", bad },\n\t{}\n};\n");
    source.push_str(
        "__attribute__((section(\".data.anchors\"))) \
         struct { struct module *mod; struct obj *objs; } anchors[] = {\n",
    );
    for k in 0..n {
        source.push_str(&format!("\t{{ &__this_module, &objs[{k}] }},\n"));
    }
    source.push_str("};\n");
    let result = parse_source(&source);
    assert!(
        matches!(&result, Err(Failure::Layout(why)) if why.contains("gave up")),
        "{result:?}"
    );
}

// ---- Modules in the real producers' layouts ----
//
// tests/fixtures/producers: klp_test_kpatch and klp_test_klpbuild, built
// from kpatch-build's and klp-build's own init code (not by those tools)
// by `cargo xtask fixtures`; see the README there.

fn producers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/producers")
}

/// The release the fixtures of kernel `series` were built for.
fn fixture_release(series: &str) -> String {
    let kernels = std::fs::read_to_string(producers_dir().join("kernels.txt")).unwrap();
    kernels
        .lines()
        .find_map(|line| {
            let (name, release) = line.split_once(' ')?;
            (name == series).then(|| release.to_owned())
        })
        .unwrap_or_else(|| panic!("no {series} in kernels.txt"))
}

fn target_functions() -> Vec<PatchFunction> {
    vec![func("klp_test_park_wait", 0), func("klp_test_busy_loop", 0)]
}

/// The module each fixture must decode to, but for its vermagic.
fn producer_module(name: &str, producer: Producer) -> LivepatchModule {
    let target = ModuleObject {
        name: Some("klp_test_target".into()),
        functions: target_functions(),
        callbacks: vec![callback(Hook::PostPatch, &format!("{name}_post_patch"))],
    };
    let vmlinux = ModuleObject {
        name: None,
        functions: vec![func("cmdline_proc_show", 0)],
        callbacks: vec![],
    };
    let (objects, default) = match producer {
        // In the order of .init.klp_objects.
        Producer::KlpBuild => (vec![vmlinux, target], "on unless built with --no-replace"),
        // Grouped by objname in order of first appearance, as kpatch's hook
        // does: klp_test_park_wait (klp_test_target) comes first.
        Producer::KpatchBuild => (vec![target, vmlinux], "on unless built with -R"),
        Producer::Samples => unreachable!("no samples-layout fixture here"),
    };
    LivepatchModule {
        name: name.into(),
        producer,
        replace: Replace::SetAtLoad { default },
        signed: false,
        vermagic: None,
        objects,
        references: vec![],
    }
}

const PRODUCER_FIXTURES: [(&str, &str, &str, Producer); 4] = [
    (
        "klp_test_kpatch-6.12.ko",
        "klp_test_kpatch",
        "6.12",
        Producer::KpatchBuild,
    ),
    (
        "klp_test_kpatch-7.ko",
        "klp_test_kpatch",
        "7",
        Producer::KpatchBuild,
    ),
    (
        "klp_test_klpbuild-7.ko",
        "klp_test_klpbuild",
        "7",
        Producer::KlpBuild,
    ),
    // 6.19's section names: __klp_objects and __klp_funcs.
    (
        "klp_test_klpbuild-6.19-names.ko",
        "klp_test_klpbuild",
        "7",
        Producer::KlpBuild,
    ),
];

#[test]
fn each_producer_layout_decodes_exactly() {
    for (file, name, series, producer) in PRODUCER_FIXTURES {
        let mut module = read_livepatch_module(&producers_dir().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let vermagic = module.vermagic.take().unwrap_or_default();
        assert_eq!(
            vermagic.split_whitespace().next(),
            Some(fixture_release(series).as_str()),
            "{file}"
        );
        assert_eq!(module, producer_module(name, producer), "{file}");
    }
}

#[test]
fn the_6_19_names_are_those_the_layout_is_found_by() {
    let file = producers_dir().join("klp_test_klpbuild-6.19-names.ko");
    let bytes = std::fs::read(&file).unwrap();
    let elf = object::File::parse(&*bytes).unwrap();
    use object::{Object, ObjectSection};
    let names: Vec<&str> = elf.sections().filter_map(|s| s.name().ok()).collect();
    assert!(names.contains(&"__klp_objects"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with(".init.klp")),
        "{names:?}"
    );
}

/// Cut short inside their tables, the producers' modules are refused in
/// one line, never decoded from bytes past a section's end.
#[test]
fn a_producer_table_cut_short_is_refused() {
    use object::{Object, ObjectSection};
    for (file, table) in [
        ("klp_test_kpatch-6.12.ko", ".kpatch.funcs"),
        ("klp_test_klpbuild-7.ko", ".init.klp_objects"),
        ("klp_test_klpbuild-7.ko", ".init.klp_funcs"),
    ] {
        let mut bytes = std::fs::read(producers_dir().join(file)).unwrap();
        let (header, size) = {
            let elf = object::File::parse(&*bytes).unwrap();
            let section = elf.section_by_name(table).unwrap();
            let object::SectionIndex(index) = section.index();
            let object::File::Elf64(elf64) = &elf else {
                panic!("64-bit")
            };
            use object::read::elf::FileHeader;
            let e_shoff = elf64.elf_header().e_shoff(elf64.endian());
            (e_shoff as usize + index * 64, section.size())
        };
        // sh_size is at byte 32 of the section header: one byte short.
        bytes[header + 32..header + 40].copy_from_slice(&(size - 1).to_le_bytes());
        let result = parse_livepatch_module(&bytes, "cut");
        assert!(
            matches!(result, Err(Failure::Layout(_) | Failure::Corrupt(_))),
            "{file} {table}: {result:?}"
        );
    }
}

/// The kpatch fixture with two `.klp.sym` symbols added the way klp-build's
/// post-link and kpatch's create-klp-module leave them: objcopy adds them
/// as absolute symbols, then their st_shndx becomes SHN_LIVEPATCH.
fn with_references(dir: &Path, names: &[&str]) -> PathBuf {
    let out = dir.join("klp_test_kpatch.ko");
    let mut objcopy = Command::new("objcopy");
    for name in names {
        objcopy.arg("--add-symbol").arg(format!("{name}=0,global"));
    }
    let status = objcopy
        .arg(producers_dir().join("klp_test_kpatch-6.12.ko"))
        .arg(&out)
        .status()
        .expect("objcopy runs");
    assert!(status.success());
    let mut bytes = std::fs::read(&out).unwrap();
    let places: Vec<usize> = {
        use object::{Object, ObjectSection, ObjectSymbol};
        let elf = object::File::parse(&*bytes).unwrap();
        let (symtab, _) = elf
            .section_by_name(".symtab")
            .unwrap()
            .file_range()
            .unwrap();
        elf.symbols()
            .filter(|s| s.name().is_ok_and(|n| names.contains(&n)))
            .map(|s| symtab as usize + s.index().0 * 24 + 6)
            .collect()
    };
    assert_eq!(places.len(), names.len());
    for at in places {
        bytes[at..at + 2].copy_from_slice(&0xff20u16.to_le_bytes());
    }
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn klp_sym_references_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let ko = with_references(
        dir.path(),
        &[
            ".klp.sym.vmlinux.saved_command_line,0",
            ".klp.sym.klp_test_target.park.constprop.0,2",
        ],
    );
    let module = read_livepatch_module(&ko).unwrap();
    assert_eq!(
        module.references,
        [
            Reference {
                object: None,
                name: "saved_command_line".into(),
                sympos: 0
            },
            Reference {
                object: Some("klp_test_target".into()),
                name: "park.constprop.0".into(),
                sympos: 2
            },
        ]
    );
}

#[test]
fn a_malformed_klp_sym_name_is_one_layout_error() {
    let dir = tempfile::tempdir().unwrap();
    let ko = with_references(dir.path(), &[".klp.sym.vmlinux-no-position"]);
    let error = read_livepatch_module(&ko).unwrap_err();
    assert!(matches!(error, ModuleError::Layout { .. }), "{error}");
    assert!(
        error.to_string().contains(".klp.sym.OBJECT.NAME,POSITION"),
        "{error}"
    );
}

// ---- check --module and apply --dry-run of the producers' modules ----

/// A livepatch kernel of `release` with klp_test_target loaded, where the
/// fixtures' functions resolve; `saved_command_line` is in kallsyms.
fn producer_kernel(release: &str) -> common::fixture::Fixture {
    let fixture = common::fixture::Fixture::livepatch_kernel();
    fixture
        .rewrite("proc/sys/kernel/osrelease", &format!("{release}\n"))
        .file(
            "proc/kallsyms",
            "ffffffff817876b0 t cmdline_proc_show\n\
             ffffffff82a00000 D saved_command_line\n\
             ffffffffc0200000 t klp_test_park_wait\t[klp_test_target]\n\
             ffffffffc0200100 t klp_test_busy_loop\t[klp_test_target]\n",
        )
        .file(
            "proc/modules",
            "klp_test_target 16384 0 - Live 0xffffffffc0200000 (OE)\n",
        )
        .file(
            "sys/kernel/tracing/available_filter_functions",
            "cmdline_proc_show\nklp_test_park_wait [klp_test_target]\nklp_test_busy_loop [klp_test_target]\n",
        )
        .file("sys/kernel/tracing/enabled_functions", "")
        .user_thread(100, 100, "-1");
    fixture
}

#[test]
fn check_names_the_producer_and_what_only_init_code_sets() {
    for (file, name, series, producer) in PRODUCER_FIXTURES {
        let fixture = producer_kernel(&fixture_release(series));
        let ko = producers_dir().join(file);
        let (_, doc) = check_json(fixture.root(), &ko);
        assert_eq!(doc["module"]["producer"], producer.name(), "{file}");
        let default = match producer {
            Producer::KlpBuild => "on unless built with --no-replace",
            _ => "on unless built with -R",
        };
        assert_eq!(
            doc["module"]["replace"],
            serde_json::json!({"default": default}),
            "{file}"
        );
        // Every function of both objects is checked, and found.
        let functions: Vec<(&str, &str, bool)> = doc["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap(),
                    f["object"].as_str().unwrap(),
                    f["present"].as_bool().unwrap(),
                )
            })
            .collect();
        for (name, object) in [
            ("cmdline_proc_show", "vmlinux"),
            ("klp_test_park_wait", "klp_test_target"),
            ("klp_test_busy_loop", "klp_test_target"),
        ] {
            assert!(
                functions.contains(&(name, object, true)),
                "{file}: {name} in {object}: {functions:?}"
            );
        }
        assert_eq!(kernel_check(&doc, "vermagic")["status"], "pass", "{file}");
        assert_eq!(
            kernel_check(&doc, "klp_references")["status"],
            "pass",
            "{file}"
        );

        let output = klpscope(
            fixture.root(),
            &[
                "check",
                "--no-ebpf",
                "--duration",
                "0",
                "--module",
                ko.to_str().unwrap(),
            ],
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.contains(&format!(
                "({} layout, atomic replace set at load: {default})",
                producer.name()
            )),
            "{file}: {first}"
        );
        assert!(
            text.contains(&format!(
                "\n  callback post_patch of klp_test_target: {name}_post_patch\n"
            )),
            "{file}: {text}"
        );
    }
}

#[test]
fn a_reference_missing_from_kallsyms_is_a_load_that_will_fail() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = producer_kernel(&fixture_release("6.12"));
    let present = with_references(dir.path(), &[".klp.sym.vmlinux.saved_command_line,0"]);
    let (_, doc) = check_json(fixture.root(), &present);
    let check = kernel_check(&doc, "klp_references");
    assert_eq!(check["status"], "pass", "{check}");
    assert_eq!(
        check["detail"],
        "all 1 symbols its code needs are in kallsyms"
    );

    let missing_dir = tempfile::tempdir().unwrap();
    let missing = with_references(
        missing_dir.path(),
        &[
            ".klp.sym.vmlinux.saved_command_line,0",
            ".klp.sym.vmlinux.klp_test_no_such_symbol,0",
        ],
    );
    let output = klpscope(
        fixture.root(),
        &[
            "check",
            "--no-ebpf",
            "--duration",
            "0",
            "--module",
            missing.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("\n  needs vmlinux:klp_test_no_such_symbol,0 (resolved at load)\n"),
        "{text}"
    );
    let (code, doc) = check_json(fixture.root(), &missing);
    assert_eq!(code, 4, "not ready: {doc}");
    assert_eq!(doc["verdict"], "not_ready");
    let check = kernel_check(&doc, "klp_references");
    assert_eq!(check["status"], "fail", "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.contains("the load will fail")
            && detail.contains("vmlinux:klp_test_no_such_symbol,0 is not in kallsyms")
            && !detail.contains("saved_command_line"),
        "{detail}"
    );
}

#[test]
fn apply_dry_run_reads_each_producer_layout() {
    for (file, name, series, producer) in PRODUCER_FIXTURES {
        let fixture = producer_kernel(&fixture_release(series));
        let ko = producers_dir().join(file);
        let output = klpscope(
            fixture.root(),
            &[
                "apply",
                ko.to_str().unwrap(),
                "--json",
                "--yes",
                "--dry-run",
                "--no-ebpf",
                "--check-duration",
                "0",
            ],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{file}: {stderr}");
        let steps: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        let events: Vec<&str> = steps.iter().map(|s| s["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["check", "ready", "finished"], "{file}");
        assert_eq!(steps[0]["module"]["name"], name, "{file}");
        assert_eq!(steps[0]["module"]["producer"], producer.name(), "{file}");
        assert_eq!(steps[2]["end"], "dry_run", "{file}");
    }
}

/// A callback may be a kernel function rather than one of the module's:
/// it is named by its symbol, and the rest decodes as before.
#[test]
fn a_callback_outside_the_module_is_named_by_its_symbol() {
    let module = parse_source(
        "int fn(void) { return 0; }\n\
         extern int kernel_pre_patch(void *);\n\
         struct func { const char *old_name; void *new_func; unsigned long sympos; char pad[24]; };\n\
         struct obj { const char *name; struct func *funcs; void *cb[4]; char pad[16]; };\n\
         struct func funcs[] = { { \"f\", fn }, {} };\n\
         struct obj objs[] = { { \"m\", funcs, { kernel_pre_patch } }, {} };\n\
         struct { struct module *mod; struct obj *objs; void *states; _Bool replace; } \
         patch = { &__this_module, objs };\n",
    )
    .unwrap();
    assert_eq!(module.producer, Producer::Samples);
    assert_eq!(
        module.objects,
        [ModuleObject {
            name: Some("m".into()),
            functions: vec![func("f", 0)],
            callbacks: vec![callback(Hook::PrePatch, "kernel_pre_patch")],
        }]
    );
    assert_eq!(module.replace, Replace::InFile(false));
}

/// A producer's module on a kernel of another release is not ready, naming
/// both releases, as a samples-layout module is.
#[test]
fn a_producer_module_for_another_release_is_not_ready() {
    let fixture = producer_kernel("6.12.999+other-amd64");
    let (code, doc) = check_json(
        fixture.root(),
        &producers_dir().join("klp_test_kpatch-6.12.ko"),
    );
    assert_eq!(code, 4, "{doc}");
    let check = kernel_check(&doc, "vermagic");
    assert_eq!(check["status"], "fail", "{check}");
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.contains(&fixture_release("6.12")) && detail.contains("6.12.999+other-amd64"),
        "{detail}"
    );
}
