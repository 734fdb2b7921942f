//! Will a patch apply here, how risky is it, and who will block it: kernel
//! checks, function checks and predicted blockers, and the verdict.
//!
//! Pure: the command gathers what the readers and probes saw into
//! `CheckInputs`; this turns it into a `Readiness`.
use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::Serialize;

use super::blockers::{CodeVersion, PatchedCode};
use crate::model::{
    CallCount, Direction, FilterFunctions, FtraceUse, Kernel, KernelSeries, Known, Patch,
    PatchFunction, PatchObject, Replace, StackFrame, SymbolTable, Target, Task, VMLINUX,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ready,
    Warnings,
    NotReady,
}

/// What is being checked.
#[derive(Clone, Debug)]
pub enum Plan {
    /// Functions named on the command line, no module yet.
    Functions,
    /// A livepatch module file about to be loaded.
    Module {
        name: String,
        replace: Replace,
        signed: bool,
        /// From its .modinfo; None when it has none.
        vermagic: Option<String>,
    },
    /// Disabling a loaded patch.
    Disable { patch: String },
}

/// Everything the command gathered, untouched.
pub struct CheckInputs<'a> {
    pub kernel: &'a Kernel,
    pub patches: &'a [Patch],
    pub plan: &'a Plan,
    pub targets: &'a [Target],
    /// How each target resolves in kallsyms (`resolve`), one per target.
    pub resolutions: &'a [Resolution],
    /// The symbols a module's code needs resolved at load (its
    /// `.klp.sym` references), as targets to look up.
    pub references: &'a [Target],
    pub symbols: &'a SymbolTable,
    /// None: this kernel has no module support.
    pub loaded_modules: Option<&'a BTreeSet<String>>,
    pub filter_functions: &'a Known<FilterFunctions>,
    pub ftrace_users: &'a Known<Vec<FtraceUse>>,
    /// Calls over the window per target, in `targets` order, or why not
    /// measured.
    pub calls: &'a [Known<CallWindow>],
    /// False with --no-ebpf: not measuring calls is then a choice.
    pub ebpf_wanted: bool,
    /// None when eBPF works; otherwise why not.
    pub ebpf_unavailable: Option<&'a str>,
    pub privileged: bool,
    /// Every thread, one list per sample over the window, oldest first.
    pub samples: &'a [Vec<Task>],
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct KernelCheck {
    pub id: &'static str,
    pub status: Status,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct FunctionReport {
    pub name: String,
    pub sympos: u32,
    pub object: String,
    pub status: Status,
    pub problems: Vec<String>,
    pub present: bool,
    /// With no sympos and several symbols: each candidate's position and
    /// address (0 when hidden).
    pub candidates: Vec<String>,
    /// None when it could not be checked.
    pub traceable: Option<bool>,
    pub patched_by: Vec<String>,
    pub ftrace_users: Option<u32>,
    pub calls_per_sec: Option<f64>,
    /// Calls during the window on the old version and on the new one.
    pub calls_old: Option<u64>,
    pub calls_new: Option<u64>,
    /// Why calls_per_sec is null.
    pub calls_unmeasured: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct PredictedBlocker {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub kthread: bool,
    pub function: String,
    /// Which version of it the task runs: the original, or an earlier
    /// patch's replacement (what the kernel will look for).
    pub version: CodeVersion,
    /// On the stack in every sample: it will hold the transition up.
    pub persistent: bool,
    pub seen_in: usize,
    /// Samples that caught the kthread on a CPU, where its stack cannot be
    /// read: they do not count against it, since a kthread never switches
    /// on its way to user space. A user task's do (it may be in user space).
    pub on_cpu_in: usize,
    pub samples: usize,
    /// The scheduler state at the last sighting.
    pub state: char,
    /// Why it will or will not clear by itself.
    pub why: String,
    pub stack: Vec<StackFrame>,
    pub marked_frame: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Readiness {
    pub verdict: Verdict,
    pub kernel_checks: Vec<KernelCheck>,
    pub functions: Vec<FunctionReport>,
    pub predicted_blockers: Vec<PredictedBlocker>,
}

impl Readiness {
    /// Whether anything about the change itself asks for a second thought:
    /// a warning, or a task that will hold the transition up. What klpscope
    /// cannot measure here (calls not counted, no BTF, no tracefs) is said
    /// in the report but puts no change at risk.
    pub fn asks_to_confirm(&self) -> bool {
        let about_klpscope = |check: &KernelCheck| matches!(check.id, "fentry" | "btf" | "tracefs");
        self.kernel_checks
            .iter()
            .any(|check| check.status == Status::Warn && !about_klpscope(check))
            || self.functions.iter().any(|f| f.status == Status::Warn)
            || self.predicted_blockers.iter().any(|b| b.persistent)
    }
}

/// How a target's name resolves in kallsyms, the way the kernel resolves
/// `old_name`/`old_sympos` in its object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Found,
    ObjectNotLoaded,
    /// No symbol of that name in the object; `elsewhere` names the objects
    /// that have one.
    Unknown {
        elsewhere: Vec<String>,
    },
    /// Several symbols and no sympos.
    Ambiguous {
        count: usize,
    },
    SymposOutOfRange {
        count: usize,
    },
}

pub fn resolve(
    symbols: &SymbolTable,
    loaded_modules: Option<&BTreeSet<String>>,
    target: &Target,
) -> Resolution {
    if let Some(module) = &target.object {
        if !loaded_modules.is_some_and(|loaded| loaded.contains(module)) {
            return Resolution::ObjectNotLoaded;
        }
    }
    let all = symbols.lookup(&target.name);
    let count = all.iter().filter(|s| s.module == target.object).count();
    let found = symbols
        .resolve(&target.name, target.object.as_deref(), target.sympos)
        .is_some();
    match (count, target.sympos) {
        (0, _) => Resolution::Unknown {
            elsewhere: all
                .iter()
                .map(|s| s.module.as_deref().unwrap_or(VMLINUX).to_owned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        },
        _ if found => Resolution::Found,
        (count, 0) => Resolution::Ambiguous { count },
        (count, _) => Resolution::SymposOutOfRange { count },
    }
}

/// Calls of one function during the sampling window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, JsonSchema)]
pub struct CallWindow {
    pub per_sec: f64,
    /// Calls that ran the old version, and the new one.
    pub old: u64,
    pub new: u64,
}

/// A counter's totals over a window `secs` long: it started at zero when
/// the window began.
pub fn call_window(calls: &CallCount, secs: f64) -> CallWindow {
    let total = calls.old + calls.new;
    CallWindow {
        per_sec: if secs > 0.0 { total as f64 / secs } else { 0.0 },
        old: calls.old,
        new: calls.new,
    }
}

pub fn assess(seen: &CheckInputs) -> Readiness {
    let kernel_checks = kernel_checks(seen);
    let functions: Vec<FunctionReport> = seen
        .targets
        .iter()
        .zip(seen.calls.iter().chain(std::iter::repeat(&Known::Unknown {
            unknown: "not measured".into(),
        })))
        .zip(seen.resolutions)
        .map(|((target, calls), resolution)| function_report(seen, target, resolution, calls))
        .collect();
    let predicted_blockers = predict_blockers(seen);
    let worst = kernel_checks
        .iter()
        .map(|c| c.status)
        .chain(functions.iter().map(|f| f.status))
        .max()
        .unwrap_or(Status::Pass);
    let verdict = match worst {
        Status::Fail => Verdict::NotReady,
        _ if worst == Status::Warn || predicted_blockers.iter().any(|b| b.persistent) => {
            Verdict::Warnings
        }
        _ => Verdict::Ready,
    };
    Readiness {
        verdict,
        kernel_checks,
        functions,
        predicted_blockers,
    }
}

fn check(id: &'static str, status: Status, detail: impl Into<String>) -> KernelCheck {
    KernelCheck {
        id,
        status,
        detail: detail.into(),
    }
}

fn kernel_checks(seen: &CheckInputs) -> Vec<KernelCheck> {
    let kernel = seen.kernel;
    let mut checks = vec![
        livepatch_check(kernel),
        match kernel.reliable_stacktrace {
            Some(true) => check("reliable_stacktrace", Status::Pass, "available"),
            Some(false) => check(
                "reliable_stacktrace",
                Status::Warn,
                "no reliable stack traces: tasks switch only on their own, a transition may never complete",
            ),
            None => check(
                "reliable_stacktrace",
                Status::Warn,
                "unknown: the kernel config is unreadable",
            ),
        },
        match kernel.ftrace_enabled {
            Some(true) => check("ftrace_enabled", Status::Pass, "kernel.ftrace_enabled=1"),
            Some(false) => check(
                "ftrace_enabled",
                Status::Fail,
                "kernel.ftrace_enabled=0: livepatches cannot be enabled (sysctl kernel.ftrace_enabled=1)",
            ),
            None => check(
                "ftrace_enabled",
                Status::Warn,
                "unknown: /proc/sys/kernel/ftrace_enabled unreadable",
            ),
        },
        match kernel.lockdown.as_deref() {
            None => check(
                "lockdown",
                Status::Pass,
                "not reported: no lockdown LSM, or securityfs not mounted",
            ),
            Some("none") => check("lockdown", Status::Pass, "none"),
            Some(mode) => check(
                "lockdown",
                Status::Warn,
                format!("{mode}: only signed modules load, and some tracing is refused"),
            ),
        },
        signature_check(seen),
        vermagic_check(seen),
        taint_check(kernel),
        transition_check(seen.patches),
        loaded_patches_check(seen),
    ];
    checks.extend(references_check(seen));
    checks.push(if seen.privileged {
        check("root", Status::Pass, "root: kernel stacks are readable")
    } else {
        check(
            "root",
            Status::Warn,
            "not root: kernel stacks are unreadable, so predicted blockers are incomplete",
        )
    });
    checks.push(if kernel.btf {
        check("btf", Status::Pass, "/sys/kernel/btf/vmlinux present")
    } else {
        check(
            "btf",
            Status::Warn,
            "no /sys/kernel/btf/vmlinux: klpscope cannot load its eBPF programs",
        )
    });
    // Functions present here that the counter could not attach to, though
    // eBPF works.
    let refused: Vec<String> = seen
        .targets
        .iter()
        .zip(seen.calls)
        .zip(seen.resolutions)
        .filter(|(_, resolution)| **resolution != Resolution::ObjectNotLoaded)
        .filter_map(|((target, calls), _)| match calls {
            Known::Unknown { unknown } => Some(format!("{}: {unknown}", target.name)),
            Known::Value(_) => None,
        })
        .collect();
    checks.push(match seen.ebpf_unavailable {
        _ if !seen.ebpf_wanted => check("fentry", Status::Pass, "not used (--no-ebpf)"),
        None if !refused.is_empty() => check(
            "fentry",
            Status::Warn,
            format!(
                "eBPF programs attach, but calls are not counted for every target: {}",
                refused.join("; ")
            ),
        ),
        None => check(
            "fentry",
            Status::Pass,
            "eBPF programs attach: calls are counted (fentry, or a kprobe where fentry cannot go)",
        ),
        Some(reason) => check(
            "fentry",
            Status::Warn,
            format!("eBPF unavailable, calls per second not measured: {reason}"),
        ),
    });
    checks.push(match &kernel.tracefs {
        Some(mount) => check("tracefs", Status::Pass, format!("mounted at {mount}")),
        None => check(
            "tracefs",
            Status::Warn,
            "tracefs not mounted: traceability and ftrace users unknown (mount -t tracefs nodev /sys/kernel/tracing)",
        ),
    });
    checks
}

fn livepatch_check(kernel: &Kernel) -> KernelCheck {
    match kernel.livepatch.unsupported() {
        None => check("livepatch", Status::Pass, "supported"),
        Some(why) => check("livepatch", Status::Fail, why),
    }
}

fn signature_check(seen: &CheckInputs) -> KernelCheck {
    let kernel = seen.kernel;
    let lockdown = kernel.lockdown.as_deref().filter(|mode| *mode != "none");
    let required = match (kernel.module_sig_enforce, lockdown) {
        (Some(true), _) => Some("module.sig_enforce".to_owned()),
        (_, Some(mode)) => Some(format!("lockdown {mode}")),
        _ => None,
    };
    match (required, seen.plan) {
        (None, _) => check("module_signature", Status::Pass, "signatures not enforced"),
        (
            Some(by),
            Plan::Module {
                name,
                signed: false,
                ..
            },
        ) => check(
            "module_signature",
            Status::Fail,
            format!("signatures are required ({by}) and {name} is unsigned: loading it fails"),
        ),
        (Some(by), Plan::Module { signed: true, .. }) => check(
            "module_signature",
            Status::Pass,
            format!("required ({by}); the module is signed (its key must be trusted)"),
        ),
        (Some(by), _) => check(
            "module_signature",
            Status::Warn,
            format!("required ({by}): the livepatch module must be signed with a trusted key"),
        ),
    }
}

/// The symbols a module's code needs from vmlinux and loaded modules: the
/// kernel resolves them as it loads the patch (or as a patched module
/// loads later), and one it cannot find, or cannot tell from another of
/// its name, fails that load.
fn references_check(seen: &CheckInputs) -> Option<KernelCheck> {
    let Plan::Module { name, .. } = seen.plan else {
        return None;
    };
    if seen.references.is_empty() {
        return Some(check(
            "klp_references",
            Status::Pass,
            format!("none: {name} needs no symbol resolved at load"),
        ));
    }
    let mut unresolved = Vec::new();
    let mut later = BTreeSet::new();
    for reference in seen.references {
        let shown = format!(
            "{}:{},{}",
            reference.object_name(),
            reference.name,
            reference.sympos
        );
        match resolve(seen.symbols, seen.loaded_modules, reference) {
            Resolution::Found => {}
            Resolution::ObjectNotLoaded => {
                later.insert(reference.object_name());
            }
            Resolution::Unknown { .. } => unresolved.push(format!("{shown} is not in kallsyms")),
            Resolution::Ambiguous { count } => unresolved.push(format!(
                "{shown} is ambiguous ({count} symbols of that name)"
            )),
            Resolution::SymposOutOfRange { count } => unresolved.push(format!(
                "{shown}: position out of range ({count} symbols of that name)"
            )),
        }
    }
    let total = seen.references.len();
    if !unresolved.is_empty() {
        return Some(check(
            "klp_references",
            Status::Fail,
            format!(
                "{} of {total} symbols its code needs cannot be resolved, the load will fail: {}",
                unresolved.len(),
                unresolved.join("; ")
            ),
        ));
    }
    let later: Vec<&str> = later.into_iter().collect();
    Some(check(
        "klp_references",
        Status::Pass,
        if later.is_empty() {
            format!("all {total} symbols its code needs are in kallsyms")
        } else {
            format!(
                "the symbols its code needs are in kallsyms, but those of {} (not loaded), resolved when it loads",
                later.join(", ")
            )
        },
    ))
}

/// A module built for another kernel release: the kernel refuses it
/// ("Invalid module format"), the most common way a rollout fails. The
/// release is vermagic's first word; the running kernel's is osrelease.
fn vermagic_check(seen: &CheckInputs) -> KernelCheck {
    let Plan::Module { name, vermagic, .. } = seen.plan else {
        return check("vermagic", Status::Pass, "no module file to compare");
    };
    let running = seen.kernel.release.trim();
    let Some(vermagic) = vermagic else {
        return check(
            "vermagic",
            Status::Warn,
            format!(
                "{name} has no vermagic in its .modinfo: the kernel refuses it unless built \
                 with CONFIG_MODULE_FORCE_LOAD"
            ),
        );
    };
    let built_for = vermagic.split_whitespace().next().unwrap_or_default();
    match running {
        "" => check(
            "vermagic",
            Status::Warn,
            format!("built for {built_for}; this kernel's release is unknown"),
        ),
        _ if built_for == running => check(
            "vermagic",
            Status::Pass,
            format!("built for this kernel ({running})"),
        ),
        _ => check(
            "vermagic",
            Status::Fail,
            format!(
                "{name} was built for another kernel: vermagic \"{vermagic}\", this kernel is \
                 \"{running}\"; loading it fails (Invalid module format)"
            ),
        ),
    }
}

/// Loading a livepatch sets K, and out-of-tree (O) or unsigned (E) modules
/// are what livepatch modules usually are: none of these say anything is
/// wrong.
fn taint_check(kernel: &Kernel) -> KernelCheck {
    let unusual: Vec<String> = kernel
        .taint
        .iter()
        .filter(|flag| !matches!(flag.letter, 'K' | 'O' | 'E'))
        .map(|flag| format!("{} ({})", flag.letter, flag.meaning))
        .collect();
    if unusual.is_empty() {
        let letters: String = kernel.taint.iter().map(|flag| flag.letter).collect();
        let detail = if letters.is_empty() {
            "not tainted".to_owned()
        } else {
            format!("{letters}: expected with livepatches")
        };
        check("taint", Status::Pass, detail)
    } else {
        check(
            "taint",
            Status::Warn,
            format!(
                "tainted: {} (vendor support may be refused)",
                unusual.join(", ")
            ),
        )
    }
}

fn transition_check(patches: &[Patch]) -> KernelCheck {
    match patches
        .iter()
        .find(|p| !p.gone && p.transition == Known::Value(true))
    {
        Some(patch) => check(
            "transition",
            Status::Fail,
            format!(
                "{} is in transition: no other patch can be enabled or disabled until it ends (EBUSY)",
                patch.name
            ),
        ),
        None => check("transition", Status::Pass, "none in progress"),
    }
}

fn loaded_patches_check(seen: &CheckInputs) -> KernelCheck {
    let names: Vec<&str> = seen
        .patches
        .iter()
        .filter(|p| !p.gone)
        .map(|p| p.name.as_str())
        .collect();
    let list = names.join(", ");
    match seen.plan {
        Plan::Disable { patch } => {
            let enabled = seen
                .patches
                .iter()
                .find(|p| &p.name == patch)
                .map(|p| p.enabled.clone());
            match enabled {
                Some(Known::Value(false)) => check(
                    "loaded_patches",
                    Status::Fail,
                    format!("{patch} is already disabled"),
                ),
                _ => check(
                    "loaded_patches",
                    Status::Pass,
                    format!(
                        "loaded: {list}; disabling {patch} restores the previous version of its functions"
                    ),
                ),
            }
        }
        Plan::Module { name, .. } if names.contains(&name.as_str()) => check(
            "loaded_patches",
            Status::Fail,
            format!("a patch named {name} is already loaded: the module cannot load twice"),
        ),
        _ if names.is_empty() => check("loaded_patches", Status::Pass, "none loaded"),
        Plan::Module {
            replace: Replace::InFile(true),
            ..
        } => check(
            "loaded_patches",
            Status::Warn,
            format!(
                "atomic replace: it will replace {list}; their changes that it lacks are reverted"
            ),
        ),
        Plan::Module {
            replace: Replace::SetAtLoad { default },
            ..
        } => check(
            "loaded_patches",
            Status::Warn,
            format!(
                "atomic replace is set at load ({default}): if on, it will replace {list} and their changes that it lacks are reverted"
            ),
        ),
        Plan::Module { .. } => check(
            "loaded_patches",
            Status::Pass,
            format!("stacks on {list} (no replace)"),
        ),
        Plan::Functions => check("loaded_patches", Status::Pass, format!("loaded: {list}")),
    }
}

fn function_report(
    seen: &CheckInputs,
    target: &Target,
    resolution: &Resolution,
    calls: &Known<CallWindow>,
) -> FunctionReport {
    let object = target.object_name().to_owned();
    let mut report = FunctionReport {
        name: target.name.clone(),
        sympos: target.sympos,
        object: object.clone(),
        status: Status::Pass,
        problems: Vec::new(),
        present: false,
        candidates: Vec::new(),
        traceable: None,
        patched_by: Vec::new(),
        ftrace_users: None,
        calls_per_sec: calls.value().map(|c| c.per_sec),
        calls_old: calls.value().map(|c| c.old),
        calls_new: calls.value().map(|c| c.new),
        calls_unmeasured: match calls {
            Known::Value(_) => None,
            Known::Unknown { unknown } => Some(unknown.to_string()),
        },
    };
    match resolution {
        Resolution::Found => report.present = true,
        Resolution::ObjectNotLoaded => {
            problem(
                &mut report,
                Status::Warn,
                format!(
                    "module {object} is not loaded: the patch applies to it when it loads; nothing can be checked now"
                ),
            );
            return report;
        }
        Resolution::Unknown { elsewhere } => {
            let hint = if elsewhere.is_empty() {
                String::new()
            } else {
                format!(" (found in {})", elsewhere.join(", "))
            };
            problem(
                &mut report,
                Status::Fail,
                format!("not in kallsyms for {object}{hint}: the patch fails to load"),
            );
            return report;
        }
        Resolution::Ambiguous { count } => {
            report.present = true;
            report.candidates = candidates(seen.symbols, target);
            problem(
                &mut report,
                Status::Fail,
                format!(
                    "{count} symbols named {} in {object} and no sympos: the kernel refuses it; pick one with NAME,SYMPOS",
                    target.name
                ),
            );
        }
        Resolution::SymposOutOfRange { count } => {
            report.present = true;
            report.candidates = candidates(seen.symbols, target);
            problem(
                &mut report,
                Status::Fail,
                format!(
                    "sympos {} out of range: {object} has {count} symbol(s) named {}",
                    target.sympos, target.name
                ),
            );
        }
    }

    // One symbol when the target names exactly one: then by its address.
    let symbol = seen
        .symbols
        .resolve(&target.name, target.object.as_deref(), target.sympos);
    match seen.filter_functions {
        Known::Value(filter) => {
            let traceable = filter.traceable(&target.name, target.object.as_deref(), symbol);
            report.traceable = Some(traceable);
            if !traceable {
                problem(
                    &mut report,
                    Status::Fail,
                    "no ftrace site in it (available_filter_functions lists it under none of its names): ftrace cannot attach (notrace or inlined), the patch fails".into(),
                );
            }
        }
        Known::Unknown { unknown } => problem(
            &mut report,
            Status::Warn,
            format!("traceability unknown: {unknown}"),
        ),
    }

    report.patched_by = seen
        .patches
        .iter()
        .filter(|p| !p.gone && !matches!(seen.plan, Plan::Disable { patch } if *patch == p.name))
        .filter(|p| {
            p.objects
                .iter()
                .any(|o| o.name == object && o.functions.iter().any(|f| f.name == target.name))
        })
        .map(|p| p.name.clone())
        .collect();
    if !report.patched_by.is_empty() {
        let text = format!(
            "already patched by {}: the newest patch's version runs",
            report.patched_by.join(", ")
        );
        problem(&mut report, Status::Warn, text);
    }

    // ftrace names a site once, under one of the function's names.
    let names: Vec<&str> = match symbol {
        Some(symbol) => symbol.names(&target.name).collect(),
        None => vec![target.name.as_str()],
    };
    if let Known::Value(uses) = seen.ftrace_users {
        if let Some(using) = uses
            .iter()
            .find(|u| names.contains(&u.function.as_str()) && u.module == target.object)
        {
            report.ftrace_users = Some(using.users);
            if using.ipmodify
                && report.patched_by.is_empty()
                && !matches!(seen.plan, Plan::Disable { .. })
            {
                problem(
                    &mut report,
                    Status::Fail,
                    "another IPMODIFY ftrace user (a kprobe or another patching tool) holds it: enabling the patch fails with EBUSY".into(),
                );
            }
            if using.direct && kernel_before_6_0(&seen.kernel.release) {
                problem(
                    &mut report,
                    Status::Fail,
                    "a BPF trampoline (fentry/fexit) is attached: kernels before 6.0 refuse a livepatch here".into(),
                );
            }
        } else {
            report.ftrace_users = Some(0);
        }
    }
    report
}

fn problem(report: &mut FunctionReport, status: Status, text: String) {
    report.status = report.status.max(status);
    report.problems.push(text);
}

fn candidates(symbols: &SymbolTable, target: &Target) -> Vec<String> {
    symbols
        .lookup(&target.name)
        .iter()
        .filter(|s| s.module == target.object)
        .enumerate()
        .map(|(i, s)| format!("{},{} at {:#x}", target.name, i + 1, s.address))
        .collect()
}

/// Before 6.0 a BPF trampoline and an IPMODIFY ftrace user (livepatch)
/// cannot share a function.
fn kernel_before_6_0(release: &str) -> bool {
    KernelSeries::of(release).is_some_and(|series| series < KernelSeries::new(6, 0))
}

/// The code whose presence on a stack would block: the targets' old
/// functions while patching, the loaded patch's new ones while disabling.
fn patched_code(seen: &CheckInputs) -> (Patch, Direction) {
    if let Plan::Disable { patch } = seen.plan {
        if let Some(loaded) = seen.patches.iter().find(|p| &p.name == patch) {
            return (loaded.clone(), Direction::Unpatching);
        }
    }
    let mut objects: BTreeMap<&str, Vec<PatchFunction>> = BTreeMap::new();
    for target in seen.targets {
        objects
            .entry(target.object_name())
            .or_default()
            .push(PatchFunction {
                name: target.name.clone(),
                sympos: target.sympos,
            });
    }
    let patch = Patch {
        name: match seen.plan {
            Plan::Module { name, .. } => name.clone(),
            _ => "(planned)".into(),
        },
        enabled: Known::Value(false),
        transition: Known::Value(false),
        force: Known::Value(false),
        replace: match seen.plan {
            Plan::Module {
                replace: Replace::InFile(on),
                ..
            } => Some(Known::Value(*on)),
            Plan::Module {
                replace: Replace::SetAtLoad { default },
                ..
            } => Some(Known::unknown(format!("set at load: {default}"))),
            _ => None,
        },
        stack_order: None,
        objects: objects
            .into_iter()
            .map(|(name, functions)| PatchObject {
                name: name.to_owned(),
                patched: Known::Value(false),
                functions,
            })
            .collect(),
        gone: false,
    };
    (patch, Direction::Patching)
}

/// Tasks with a target on their kernel stack in any sample. Persistent:
/// there in every sample, so it will be there when the transition tries it;
/// for a kthread, in every sample its stack could be read.
fn predict_blockers(seen: &CheckInputs) -> Vec<PredictedBlocker> {
    let (patch, direction) = patched_code(seen);
    let code = PatchedCode {
        patch: &patch,
        direction,
        loaded: seen.patches,
    };
    let samples = seen.samples.len();
    let mut found: BTreeMap<(u32, u32), PredictedBlocker> = BTreeMap::new();
    let mut kthreads_on_cpu: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for sample in seen.samples {
        for task in sample {
            let Some(stack) = task.stack.value() else {
                continue;
            };
            if task.kthread && task.caught_on_a_cpu() {
                *kthreads_on_cpu.entry((task.pid, task.tid)).or_default() += 1;
                continue;
            }
            let Some(marked) = code.blocking_frame(stack) else {
                continue;
            };
            let entry = found
                .entry((task.pid, task.tid))
                .or_insert_with(|| PredictedBlocker {
                    pid: task.pid,
                    tid: task.tid,
                    comm: task.comm.clone(),
                    kthread: task.kthread,
                    function: String::new(),
                    version: marked.version.clone(),
                    persistent: false,
                    seen_in: 0,
                    on_cpu_in: 0,
                    samples,
                    state: task.state,
                    why: String::new(),
                    stack: Vec::new(),
                    marked_frame: 0,
                });
            entry.seen_in += 1;
            entry.state = task.state;
            entry.function = stack[marked.index].function.clone();
            entry.version = marked.version;
            entry.stack = stack.clone();
            entry.marked_frame = marked.index;
        }
    }
    let mut blockers: Vec<PredictedBlocker> = found
        .into_values()
        .map(|mut blocker| {
            blocker.on_cpu_in = kthreads_on_cpu
                .get(&(blocker.pid, blocker.tid))
                .copied()
                .unwrap_or(0);
            blocker.persistent = samples > 0 && blocker.seen_in + blocker.on_cpu_in == samples;
            blocker.why = why(&blocker);
            blocker
        })
        .collect();
    blockers.sort_by_key(|b| (!b.persistent, b.pid, b.tid));
    blockers
}

fn why(blocker: &PredictedBlocker) -> String {
    let function = &blocker.function;
    if !blocker.persistent {
        return format!(
            "in {function} in {} of {} samples: passing through, it switches by itself",
            blocker.seen_in, blocker.samples
        );
    }
    if blocker.kthread {
        return if is_main_loop(blocker) {
            format!(
                "kthread whose main loop is {function}: it never returns from it, so it will not switch by itself; stop the kthread or the transition stalls"
            )
        } else {
            format!(
                "kthread inside {function} in every sample: it switches only once it leaves; the kernel wakes it after about 15 s of failed rounds"
            )
        };
    }
    match blocker.state {
        'D' => format!(
            "sleeps uninterruptibly (or killably) in {function}: the kernel's fake signal does not wake it, it blocks until what it waits for happens"
        ),
        'S' => format!(
            "sleeps in {function}: after about 15 s of failed rounds the kernel's fake signal wakes it and it switches on its way to user space"
        ),
        _ => format!(
            "runs in {function} in every sample: it switches once it leaves the function and returns to user space"
        ),
    }
}

/// The marked frame is the kthread's function (or called only by frames of
/// its own object down to `kthread`): it runs for the kthread's life.
fn is_main_loop(blocker: &PredictedBlocker) -> bool {
    let marked = &blocker.stack[blocker.marked_frame];
    let below = &blocker.stack[blocker.marked_frame + 1..];
    match below.iter().position(|f| f.function == "kthread") {
        Some(at) => below[..at].iter().all(|f| f.module == marked.module),
        None => false,
    }
}
