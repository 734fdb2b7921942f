//! `klpscope check`: read the targets, the kernel and a few stack samples
//! over the window, count calls if eBPF allows, and report readiness.
//! Read-only: nothing is loaded into or changed in the kernel but klpscope's
//! own counting programs, detached on exit.
use std::{
    path::Path,
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    analysis::function_state::function_state,
    analysis::readiness::{
        CallWindow, CheckInputs, Plan, Readiness, Resolution, Verdict, assess, call_window, resolve,
    },
    cli::{CheckArgs, FunctionSpec},
    commands::output,
    exit_code,
    kernel::{
        Stacks,
        ftrace_users::read_ftrace_users,
        kallsyms_near::closest_symbols,
        livepatch_module::{LivepatchModule, read_livepatch_module},
        loaded_modules::read_loaded_modules,
        read_filter_functions, read_kallsyms_with_extents, read_kernel, read_patch, read_patches,
    },
    model::{CallCount, Known, Patch, Target},
    probes::{self, Capabilities, Facility, ProbeRequest, Probes, TaskSource},
    views::{
        check_report::{CheckView, EbpfView, render_json, render_text},
        style::Color,
    },
};

/// What to check: the targets as given on the command line, a module file
/// already read.
pub struct CheckRequest<'a> {
    pub functions: &'a [FunctionSpec],
    pub object: Option<&'a str>,
    pub module: Option<LivepatchModule>,
    pub patch: Option<&'a str>,
    pub duration: f64,
    pub no_ebpf: bool,
}

impl<'a> CheckRequest<'a> {
    fn of(args: &'a CheckArgs) -> Result<Self> {
        Ok(CheckRequest {
            functions: &args.functions,
            object: args.object.as_deref(),
            module: args
                .module
                .as_deref()
                .map(read_livepatch_module)
                .transpose()?,
            patch: args.patch.as_deref(),
            duration: args.duration,
            no_ebpf: args.no_ebpf,
        })
    }
}

/// Everything a check found, ready for its report.
pub struct Checked {
    plan: Plan,
    pub module: Option<LivepatchModule>,
    patch: Option<String>,
    duration_secs: f64,
    stack_samples: usize,
    ebpf_unavailable: Option<String>,
    capabilities: Capabilities,
    pub readiness: Readiness,
}

impl Checked {
    pub fn view(&self) -> CheckView<'_> {
        CheckView {
            target: match self.plan {
                Plan::Functions => "functions",
                Plan::Module { .. } => "module",
                Plan::Disable { .. } => "patch",
            },
            module: self.module.as_ref(),
            patch: self.patch.as_deref(),
            duration_secs: self.duration_secs,
            stack_samples: self.stack_samples,
            ebpf: EbpfView {
                available: self.ebpf_unavailable.is_none(),
                reason: self.ebpf_unavailable.as_deref(),
                capabilities: &self.capabilities.items,
            },
            readiness: &self.readiness,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        exit_code(&self.readiness)
    }
}

pub fn run(root: &Path, args: &CheckArgs, color: Color) -> Result<ExitCode> {
    let checked = check(root, CheckRequest::of(args)?)?;
    let view = checked.view();
    let text = if args.json {
        render_json(&view)
    } else {
        render_text(&view, color)
    };
    output::print(&text)?;
    Ok(checked.exit_code())
}

/// Reads the targets, the kernel and the stacks over the window, counts
/// calls if eBPF allows, and assesses readiness. Nothing is printed.
pub fn check(root: &Path, request: CheckRequest) -> Result<Checked> {
    let (plan, targets) = targets(root, &request)?;
    let module = request.module;
    let references = module.as_ref().map(references).unwrap_or_default();
    let names: Vec<&str> = targets
        .iter()
        .chain(&references)
        .map(|t| t.name.as_str())
        .collect();
    let kernel = read_kernel(root);
    let patches = read_patches(root).context("reading /sys/kernel/livepatch")?;
    let symbols = read_kallsyms_with_extents(root, &names).context("reading /proc/kallsyms")?;
    let loaded_modules = read_loaded_modules(root).context("reading /proc/modules")?;
    let resolutions: Vec<Resolution> = targets
        .iter()
        .map(|target| resolve(&symbols, loaded_modules.as_ref(), target))
        .collect();
    if matches!(plan, Plan::Functions) {
        refuse_bad_functions(root, &targets, &resolutions, loaded_modules.is_some())?;
    }
    // Before klpscope's own counter attaches: it is an ftrace user too.
    let filter_functions = read_filter_functions(root, &symbols);
    let ftrace_users = read_ftrace_users(root, &symbols.names_and_aliases());

    let mut tasks = TaskSource::open(root, request.no_ebpf)?;
    let counted = countable(&targets, &resolutions);
    let (probes, mut capabilities) = load_counters(root, request.no_ebpf, &counted, &patches);
    let ebpf_unavailable = probes.is_none().then(|| {
        capabilities
            .unavailable_reason()
            .unwrap_or_else(|| "eBPF unavailable".into())
    });
    let counter = probes.as_ref().and_then(|p| p.call_counter.as_ref());

    // The counters start at zero when they attach, just before this: every
    // call they count falls in the window.
    let started = Instant::now();
    let samples = sample_stacks(&mut tasks, request.duration)?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = counter
        .and_then(|c| c.counts_by_function().ok())
        .unwrap_or_default();
    let calls = call_windows(
        &targets,
        &counted,
        ebpf_unavailable.as_deref(),
        &after,
        elapsed,
        &capabilities,
    );
    drop(probes);
    capabilities.items.push(tasks.capability().clone());

    let readiness = assess(&CheckInputs {
        kernel: &kernel,
        patches: &patches,
        plan: &plan,
        targets: &targets,
        references: &references,
        symbols: &symbols,
        loaded_modules: loaded_modules.as_ref(),
        filter_functions: &filter_functions,
        ftrace_users: &ftrace_users,
        calls: &calls,
        ebpf_wanted: !request.no_ebpf,
        ebpf_unavailable: ebpf_unavailable.as_deref(),
        privileged: stacks_readable(&samples),
        samples: &samples,
        resolutions: &resolutions,
    });
    Ok(Checked {
        plan,
        module,
        patch: request.patch.map(str::to_owned),
        duration_secs: request.duration,
        stack_samples: samples.len(),
        ebpf_unavailable,
        capabilities,
        readiness,
    })
}

/// Functions of modules that are not loaded have nothing to count.
fn countable(targets: &[Target], resolutions: &[Resolution]) -> Vec<Target> {
    targets
        .iter()
        .zip(resolutions)
        .filter(|(_, resolution)| **resolution != Resolution::ObjectNotLoaded)
        .map(|(target, _)| target.clone())
        .collect()
}

/// The call counters of the functions that can be counted, with each
/// function's version as sysfs says it now: no call is counted before the
/// version is right.
fn load_counters(
    root: &Path,
    no_ebpf: bool,
    counted: &[Target],
    patches: &[Patch],
) -> (Option<Probes>, Capabilities) {
    if no_ebpf {
        let mut caps = Capabilities::default();
        caps.missing(Facility::Ebpf, "not tried (--no-ebpf)");
        return (None, caps);
    }
    let count_calls = counted
        .iter()
        .map(|function| {
            let state = function_state(patches, function.object_name(), &function.name);
            (function.clone(), state)
        })
        .collect();
    let request = ProbeRequest {
        count_calls,
        ..ProbeRequest::default()
    };
    let loaded = probes::load(root, &request);
    (loaded.probes, loaded.capabilities)
}

/// Each target's calls over the window, or why they are unknown.
fn call_windows(
    targets: &[Target],
    counted: &[Target],
    ebpf_unavailable: Option<&str>,
    after: &[(Target, CallCount)],
    elapsed: f64,
    capabilities: &Capabilities,
) -> Vec<Known<CallWindow>> {
    targets
        .iter()
        .map(|target| {
            if !counted.contains(target) {
                return Known::unknown(format!(
                    "module {} is not loaded: no calls to count",
                    target.object_name()
                ));
            }
            if let Some(reason) = ebpf_unavailable {
                return Known::unknown(format!("eBPF unavailable: {reason}"));
            }
            counted_calls(target, after, elapsed, capabilities)
        })
        .collect()
}

/// A counted function's calls over the window, or why they are unknown.
fn counted_calls(
    function: &Target,
    after: &[(Target, CallCount)],
    elapsed: f64,
    capabilities: &Capabilities,
) -> Known<CallWindow> {
    match after.iter().find(|(counted, _)| counted == function) {
        Some((_, count)) => Known::Value(call_window(count, elapsed)),
        None => Known::unknown(
            capabilities
                .uncounted_reason(function)
                .unwrap_or_else(|| "the call counter did not attach".into()),
        ),
    }
}

fn exit_code(readiness: &Readiness) -> ExitCode {
    match readiness.verdict {
        Verdict::Ready => ExitCode::SUCCESS,
        Verdict::Warnings => exit_code::WARNINGS.into(),
        Verdict::NotReady => exit_code::NOT_READY.into(),
    }
}

fn targets(root: &Path, request: &CheckRequest) -> Result<(Plan, Vec<Target>)> {
    if let Some(module) = &request.module {
        let targets = module
            .objects
            .iter()
            .flat_map(|object| {
                object.functions.iter().map(|f| Target {
                    name: f.name.clone(),
                    object: object.name.clone(),
                    sympos: f.sympos,
                })
            })
            .collect();
        let plan = Plan::Module {
            name: module.name.clone(),
            replace: module.replace,
            signed: module.signed,
            vermagic: module.vermagic.clone(),
        };
        return Ok((plan, targets));
    }
    if let Some(name) = request.patch {
        let patch = read_patch(root, name);
        if patch.gone {
            bail!("no livepatch named '{name}' is loaded (see `klpscope status` for the list)");
        }
        let targets = patch
            .objects
            .iter()
            .flat_map(|object| {
                object
                    .functions
                    .iter()
                    .map(|f| Target::in_object(&object.name, &f.name, f.sympos))
            })
            .collect();
        return Ok((
            Plan::Disable {
                patch: name.to_owned(),
            },
            targets,
        ));
    }
    if request.functions.is_empty() {
        bail!("nothing to check: give --function NAME[,SYMPOS], --module FILE.ko or --patch NAME");
    }
    let targets = request
        .functions
        .iter()
        .map(|spec| spec.target(request.object))
        .collect();
    Ok((Plan::Functions, targets))
}

/// A module's `.klp.sym` references, looked up as functions are.
fn references(module: &LivepatchModule) -> Vec<Target> {
    module
        .references
        .iter()
        .map(|reference| Target {
            name: reference.name.clone(),
            object: reference.object.clone(),
            sympos: reference.sympos,
        })
        .collect()
}

/// `NAME` or `NAME,SYMPOS`.
/// Names typed on the command line that cannot be meant as typed: an error
/// each, rather than a report about a function that does not exist.
fn refuse_bad_functions(
    root: &Path,
    targets: &[Target],
    resolutions: &[Resolution],
    modules_supported: bool,
) -> Result<()> {
    for (target, resolution) in targets.iter().zip(resolutions) {
        let object = target.object_name();
        match resolution {
            Resolution::ObjectNotLoaded if !modules_supported => {
                bail!("--object {object}: this kernel has no module support (no /proc/modules)")
            }
            Resolution::ObjectNotLoaded => {
                bail!("--object {object}: module {object} is not loaded (not in /proc/modules)")
            }
            Resolution::Unknown { elsewhere } if !elsewhere.is_empty() => bail!(
                "function {} is not in {object} but in {}: use --object",
                target.name,
                elsewhere.join(", ")
            ),
            Resolution::Unknown { .. } => {
                let near = closest_symbols(root, &target.name).unwrap_or_default();
                if near.is_empty() {
                    bail!("unknown function {}: not in /proc/kallsyms", target.name);
                }
                bail!(
                    "unknown function {}: not in /proc/kallsyms; closest: {}",
                    target.name,
                    near.join(", ")
                );
            }
            Resolution::SymposOutOfRange { count } => bail!(
                "--function {},{}: sympos out of range, {object} has {count} symbol(s) named {}",
                target.name,
                target.sympos,
                target.name
            ),
            Resolution::Found | Resolution::Ambiguous { .. } => {}
        }
    }
    Ok(())
}

/// Tasks kept over all samples, at most: about 700 bytes each with its
/// stack. On a host with many threads samples come further apart than the
/// source allows, so that check's memory stays bounded (about 35 MB).
const SAMPLED_TASKS_MAX: usize = 50_000;

/// Every thread with its stack, at the start and then as often as the
/// source makes cheap (10 Hz with the task iterator, 2 Hz through procfs)
/// and memory allows, until `duration` has passed: the more samples, the
/// surer a persistent blocker is told from a passer-by.
fn sample_stacks(tasks: &mut TaskSource, duration: f64) -> Result<Vec<Vec<crate::model::Task>>> {
    let window = Duration::from_secs_f64(duration);
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        samples.push(
            tasks
                .tasks(Stacks::Read)
                .context("reading every task's stack")?,
        );
        let elapsed = start.elapsed();
        if elapsed >= window {
            return Ok(samples);
        }
        let share = samples[0].len() as f64 / SAMPLED_TASKS_MAX as f64;
        let every = tasks.sample_interval().max(window.mul_f64(share));
        thread::sleep(every.min(window - elapsed));
    }
}

fn stacks_readable(samples: &[Vec<crate::model::Task>]) -> bool {
    samples
        .iter()
        .flatten()
        .any(|task| task.stack.value().is_some())
}
