//! Livepatch modules made by the real tools: kpatch-build 0.9.10 (Debian
//! trixie) and klp-build (Linux 7.3's scripts/livepatch, Debian
//! trixie-backports' linux-source-7.3), each from a source patch of
//! tests/real-patches/ for a lab kernel built from Debian's own kernel
//! source by `cargo xtask real-fixtures` (tests/fixtures/real/, with each
//! module's kernel in MODULE.txt and its config in KERNEL.config).
//!
//! Decoded exactly: producer, objects, functions with sympos, callbacks and
//! `.klp.sym` references; then `check --module` and `apply --dry-run` on a
//! fixture of the kernel they belong to, and `check --module` on Debian's
//! packaged kernel of the same series, which must refuse them by vermagic.
mod common;

use std::path::PathBuf;

use common::cli::{check_json, kernel_check, klpscope};

use livepatch_user::{
    kernel::livepatch_module::{
        Callback, Hook, LivepatchModule, ModuleObject, Producer, Reference, Replace,
        read_livepatch_module,
    },
    model::PatchFunction,
};

fn real_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real")
}

/// A field of MODULE.txt (`key value...` lines).
fn about(module: &str, key: &str) -> String {
    let text = std::fs::read_to_string(real_dir().join(format!("{module}.txt"))).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} in {module}.txt"))
        .to_owned()
}

fn func(name: &str, sympos: u32) -> PatchFunction {
    PatchFunction {
        name: name.into(),
        sympos,
    }
}

fn reference(name: &str, sympos: u32) -> Reference {
    Reference {
        object: None,
        name: name.into(),
        sympos,
    }
}

const KPATCH: &str = "livepatch-pipe-read-kpatch";
const KLP: &str = "livepatch-pipe-read-klp";

/// What each real module must decode to.
fn expected(module: &str) -> LivepatchModule {
    match module {
        KPATCH => LivepatchModule {
            name: "livepatch_pipe_read_kpatch".into(),
            producer: Producer::KpatchBuild,
            replace: Replace::SetAtLoad {
                default: "on unless built with -R",
            },
            signed: false,
            vermagic: Some(about(KPATCH, "vermagic").trim_end().to_owned()),
            objects: vec![ModuleObject {
                name: None,
                functions: KPATCH_FUNCTIONS.iter().map(|(n, p)| func(n, *p)).collect(),
                callbacks: vec![Callback {
                    hook: Hook::PostPatch,
                    function: "klpscope_pipe_post_patch".into(),
                }],
            }],
            references: KPATCH_REFERENCES
                .iter()
                .map(|(n, p)| reference(n, *p))
                .collect(),
        },
        KLP => LivepatchModule {
            name: "livepatch_pipe_read_klp".into(),
            producer: Producer::KlpBuild,
            replace: Replace::SetAtLoad {
                default: "on unless built with --no-replace",
            },
            signed: false,
            vermagic: Some(about(KLP, "vermagic").trim_end().to_owned()),
            objects: vec![ModuleObject {
                name: None,
                functions: KLP_FUNCTIONS.iter().map(|(n, p)| func(n, *p)).collect(),
                callbacks: vec![Callback {
                    hook: Hook::PostPatch,
                    function: "klpscope_pipe_post_patch".into(),
                }],
            }],
            references: KLP_REFERENCES
                .iter()
                .map(|(n, p)| reference(n, *p))
                .collect(),
        },
        _ => unreachable!(),
    }
}

// What the tools wrote (readelf agrees). kpatch-build writes sympos 1 for
// a function its kernel has once; the kernel takes 0 and 1 alike there.
// pipe_read's might_sleep() goes through the might_resched static call
// (PREEMPT_DYNAMIC): its key is resolved at load.
const KPATCH_FUNCTIONS: &[(&str, u32)] = &[("pipe_read", 1)];
const KPATCH_REFERENCES: &[(&str, u32)] = &[("__SCK__might_resched", 0)];
// klp-build writes sympos 0 (unique); its copy of anon_pipe_read calls
// anon_pipe_trim_and_unlock (static in fs/pipe.c) through a reference, and
// keeps the relocations it replaced aimed at `.klp.tombstone.*` symbols,
// which are no references.
const KLP_FUNCTIONS: &[(&str, u32)] = &[("anon_pipe_read", 0)];
const KLP_REFERENCES: &[(&str, u32)] = &[
    ("__SCK__might_resched", 0),
    ("anon_pipe_trim_and_unlock", 0),
];

fn modules() -> [&'static str; 2] {
    [KPATCH, KLP]
}

#[test]
fn both_real_modules_are_committed() {
    for module in modules() {
        let file = real_dir().join(format!("{module}.ko"));
        assert!(
            file.is_file(),
            "no {}: `cargo xtask real-fixtures --kernel {}` makes it",
            file.display(),
            about(module, "kernel")
        );
    }
}

#[test]
fn each_real_module_decodes_exactly() {
    for module in modules() {
        let mut decoded = read_livepatch_module(&real_dir().join(format!("{module}.ko")))
            .unwrap_or_else(|e| panic!("{module}: {e}"));
        // The kernel's VERMAGIC_STRING ends with a space (MODULE.txt keeps
        // it; compared without, so that an editor may trim the line).
        let vermagic = decoded.vermagic.take().unwrap_or_default();
        assert!(vermagic.ends_with(' '), "{module}: {vermagic:?}");
        decoded.vermagic = Some(vermagic.trim_end().to_owned());
        assert_eq!(decoded, expected(module), "{module}");
    }
}

#[test]
fn the_vermagic_is_the_lab_kernel_s_release() {
    for module in modules() {
        let vermagic = about(module, "vermagic");
        let release = about(module, "release");
        assert_eq!(
            vermagic.split_whitespace().next(),
            Some(release.as_str()),
            "{module}"
        );
        assert!(release.ends_with("-klplab"), "{module}: {release}");
    }
}

/// The lab kernel of `module` with its patched functions and references in
/// kallsyms and traceable.
fn lab_kernel(module: &str, release: &str) -> common::fixture::Fixture {
    let want = expected(module);
    let functions = &want.objects[0].functions;
    let mut kallsyms = String::new();
    let mut traceable = String::new();
    for (i, f) in functions.iter().enumerate() {
        kallsyms.push_str(&format!("ffffffff8130{i:04x} t {}\n", f.name));
        traceable.push_str(&format!("{}\n", f.name));
    }
    for (i, r) in want.references.iter().enumerate() {
        kallsyms.push_str(&format!("ffffffff8240{i:04x} d {}\n", r.name));
    }
    let fixture = common::fixture::Fixture::livepatch_kernel();
    fixture
        .rewrite("proc/sys/kernel/osrelease", &format!("{release}\n"))
        .file("proc/kallsyms", &kallsyms)
        .file("proc/modules", "")
        .file("sys/kernel/tracing/available_filter_functions", &traceable)
        .file("sys/kernel/tracing/enabled_functions", "")
        .user_thread(100, 100, "-1");
    fixture
}

#[test]
fn check_on_the_lab_kernel_reads_the_real_module() {
    for module in modules() {
        let fixture = lab_kernel(module, &about(module, "release"));
        let ko = real_dir().join(format!("{module}.ko"));
        let want = expected(module);
        let (_, doc) = check_json(fixture.root(), &ko);
        assert_eq!(doc["module"]["name"], want.name, "{module}");
        assert_eq!(doc["module"]["producer"], want.producer.name(), "{module}");
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
        let names: Vec<(&str, &str, bool)> = want.objects[0]
            .functions
            .iter()
            .map(|f| (f.name.as_str(), "vmlinux", true))
            .collect();
        assert_eq!(functions, names, "{module}");
        assert_eq!(kernel_check(&doc, "vermagic")["status"], "pass", "{module}");
        assert_eq!(
            kernel_check(&doc, "klp_references")["status"],
            "pass",
            "{module}: {doc}"
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
                "livepatch module {} ({} layout",
                want.name,
                want.producer.name()
            )),
            "{module}: {first}"
        );
        assert!(
            text.contains("\n  callback post_patch of vmlinux: klpscope_pipe_post_patch\n"),
            "{module}: {text}"
        );
        for r in &want.references {
            assert!(
                text.contains(&format!(
                    "\n  needs vmlinux:{},{} (resolved at load)\n",
                    r.name, r.sympos
                )),
                "{module}: {text}"
            );
        }
    }
}

#[test]
fn apply_dry_run_on_the_lab_kernel_is_ready() {
    for module in modules() {
        let fixture = lab_kernel(module, &about(module, "release"));
        let ko = real_dir().join(format!("{module}.ko"));
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
        assert_eq!(output.status.code(), Some(0), "{module}: {stderr}");
        let steps: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        let events: Vec<&str> = steps.iter().map(|s| s["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["check", "ready", "finished"], "{module}");
        assert_eq!(
            steps[0]["module"]["name"],
            expected(module).name,
            "{module}"
        );
        assert_eq!(steps[2]["end"], "dry_run", "{module}");
    }
}

/// On Debian's packaged kernel of the same series (the release the
/// producer-layout fixtures were built for), the real module is not ready,
/// and the vermagic check names both releases.
#[test]
fn check_on_debian_s_kernel_of_the_series_refuses_the_vermagic() {
    let kernels = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/producers/kernels.txt"),
    )
    .unwrap();
    let debian = |series: &str| {
        kernels
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .unwrap()
            .to_owned()
    };
    for (module, series) in [(KPATCH, "6.12"), (KLP, "7")] {
        let stock = debian(series);
        let fixture = lab_kernel(module, &stock);
        let (code, doc) = check_json(fixture.root(), &real_dir().join(format!("{module}.ko")));
        assert_eq!(code, 4, "{module} on {stock}: {doc}");
        assert_eq!(doc["verdict"], "not_ready", "{module}");
        let check = kernel_check(&doc, "vermagic");
        assert_eq!(check["status"], "fail", "{check}");
        let detail = check["detail"].as_str().unwrap();
        assert!(
            detail.contains(&about(module, "release")) && detail.contains(&stock),
            "{module}: {detail}"
        );
    }
}
