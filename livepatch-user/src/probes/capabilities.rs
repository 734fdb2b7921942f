//! What the running kernel lets klpscope do with eBPF, each missing piece
//! with its reason, so that callers can decide how to do without. The
//! questions callers ask ("why no eBPF?", "are these the kernel's own
//! verdicts?", "why is this function not counted?") are answered here, once.
use std::fmt;

use schemars::JsonSchema;
use serde::{Serialize, Serializer};

use super::tracer::TracerProgram;
use crate::model::Target;

/// One piece klpscope's eBPF side needs, or may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Facility {
    /// Running as root, against this kernel (not a fixture root).
    Root,
    /// eBPF at all: missing when the user said --no-ebpf.
    Ebpf,
    Btf,
    /// task_struct.patch_state, which only a livepatch kernel has.
    TaskPatchState,
    EbpfObject,
    /// fentry/fexit programs: the tracer needs them.
    Fentry,
    /// One of the transition tracer's programs on its kernel function.
    Tracer(TracerProgram),
    /// The transition tracer's maps.
    TracerMaps,
    /// The call counter's maps.
    CallCounterMaps,
    /// Counting the calls of one function.
    Calls(Target),
    /// The iter/task program that reads every task in one pass.
    TaskIterator,
}

impl Facility {
    /// Without these no eBPF program runs at all.
    fn essential(&self) -> bool {
        matches!(
            self,
            Self::Root | Self::Ebpf | Self::Btf | Self::EbpfObject | Self::Fentry
        )
    }
}

/// How a facility is named in logs and in check's JSON.
impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => f.write_str("root"),
            Self::Ebpf => f.write_str("ebpf"),
            Self::Btf => f.write_str("btf"),
            Self::TaskPatchState => f.write_str("task_patch_state"),
            Self::EbpfObject => f.write_str("ebpf_object"),
            Self::Fentry => f.write_str("fentry"),
            Self::Tracer(program) => write!(f, "tracer:{}", program.program()),
            Self::TracerMaps => f.write_str("tracer"),
            Self::CallCounterMaps => f.write_str("call_counter"),
            Self::Calls(function) => write!(f, "calls:{function}"),
            Self::TaskIterator => f.write_str("task_iterator"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Capability {
    /// As JSON, the facility's name: `fentry`, `tracer:klp_start_transition`,
    /// `calls:vmlinux:cmdline_proc_show`, ...
    #[serde(rename = "name", serialize_with = "serialize_display")]
    #[schemars(rename = "name", with = "String")]
    pub facility: Facility,
    pub available: bool,
    /// Why not, when not available.
    pub reason: Option<String>,
}

fn serialize_display<S: Serializer>(value: &Facility, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Capabilities {
    pub items: Vec<Capability>,
}

impl Capabilities {
    pub fn available(&mut self, facility: Facility) {
        self.items.push(Capability {
            facility,
            available: true,
            reason: None,
        });
    }

    pub fn missing(&mut self, facility: Facility, reason: impl Into<String>) {
        self.items.push(Capability {
            facility,
            available: false,
            reason: Some(reason.into()),
        });
    }

    pub fn get(&self, facility: &Facility) -> Option<&Capability> {
        self.items.iter().find(|c| &c.facility == facility)
    }

    /// True when the essentials are there: programs can load and attach.
    pub fn ebpf_available(&self) -> bool {
        self.unavailable_reason().is_none()
    }

    /// Why no eBPF program can run, if none can: the first essential piece
    /// missing, in the order they were tried.
    pub fn unavailable_reason(&self) -> Option<String> {
        if let Some(missing) = self
            .items
            .iter()
            .find(|c| c.facility.essential() && !c.available)
        {
            return Some(missing.reason.clone().unwrap_or_default());
        }
        [
            Facility::Root,
            Facility::Btf,
            Facility::EbpfObject,
            Facility::Fentry,
        ]
        .into_iter()
        .find(|facility| self.get(facility).is_none())
        .map(|facility| format!("{facility} was not checked"))
    }

    /// Why the transition tracer is not running, if it is not.
    pub fn tracer_unavailable(&self) -> Option<String> {
        self.unavailable_reason()
            .or_else(|| match self.get(&Facility::TracerMaps) {
                Some(Capability {
                    available: false,
                    reason,
                    ..
                }) => Some(reason.clone().unwrap_or_default()),
                Some(_) => None,
                None => Some("the transition tracer was not loaded".into()),
            })
    }

    /// Why klpscope does not hear the kernel's own per-task verdicts (the
    /// probes on `klp_check_and_switch_task`), if it does not: blockers are
    /// then inferred.
    pub fn verdicts_unavailable(&self) -> Option<String> {
        self.tracer_unavailable().or_else(|| {
            [
                TracerProgram::CheckAndSwitchTaskEntry,
                TracerProgram::CheckAndSwitchTaskExit,
            ]
            .into_iter()
            .find_map(|program| match self.get(&Facility::Tracer(program)) {
                Some(hook) if hook.available => None,
                Some(hook) => Some(hook.reason.clone().unwrap_or_default()),
                None => Some("the per-task verdict hook was not tried".into()),
            })
        })
    }

    /// Why the calls of `function` are not counted, if they are not.
    pub fn uncounted_reason(&self, function: &Target) -> Option<String> {
        self.unavailable_reason()
            .or_else(|| match self.get(&Facility::CallCounterMaps) {
                Some(maps) if !maps.available => maps.reason.clone(),
                _ => None,
            })
            .or_else(|| match self.get(&Facility::Calls(function.clone())) {
                Some(calls) if calls.available => None,
                Some(calls) => calls.reason.clone(),
                None => Some("klpscope was not asked to count it".into()),
            })
    }

    /// Every function whose calls could not be counted, with the reason.
    pub fn uncounted(&self) -> impl Iterator<Item = (&Target, &str)> {
        self.items
            .iter()
            .filter_map(|c| match (&c.facility, &c.reason) {
                (Facility::Calls(function), Some(reason)) if !c.available => {
                    Some((function, reason.as_str()))
                }
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_missing_essential_explains_why() {
        let mut caps = Capabilities::default();
        caps.available(Facility::Root);
        caps.available(Facility::Btf);
        caps.available(Facility::EbpfObject);
        caps.missing(Facility::Fentry, "fentry refused by the kernel");
        caps.missing(
            Facility::Tracer(TracerProgram::CancelTransition),
            "not in BTF",
        );
        assert!(!caps.ebpf_available());
        assert_eq!(
            caps.unavailable_reason().as_deref(),
            Some("fentry refused by the kernel")
        );
        assert_eq!(
            caps.verdicts_unavailable().as_deref(),
            Some("fentry refused by the kernel")
        );
    }

    #[test]
    fn unchecked_essentials_count_as_missing() {
        let mut caps = Capabilities::default();
        caps.available(Facility::Root);
        assert!(!caps.ebpf_available());
        assert_eq!(
            caps.unavailable_reason().as_deref(),
            Some("btf was not checked")
        );
    }

    #[test]
    fn no_ebpf_asked_for_is_the_reason() {
        let mut caps = Capabilities::default();
        caps.missing(Facility::Ebpf, "not tried (--no-ebpf)");
        assert_eq!(
            caps.unavailable_reason().as_deref(),
            Some("not tried (--no-ebpf)")
        );
    }

    fn working() -> Capabilities {
        let mut caps = Capabilities::default();
        for facility in [
            Facility::Root,
            Facility::Btf,
            Facility::EbpfObject,
            Facility::Fentry,
        ] {
            caps.available(facility);
        }
        caps
    }

    #[test]
    fn verdicts_come_from_the_check_hook() {
        let mut caps = working();
        caps.available(Facility::TracerMaps);
        caps.available(Facility::Tracer(TracerProgram::CheckAndSwitchTaskEntry));
        caps.missing(
            Facility::Tracer(TracerProgram::CheckAndSwitchTaskExit),
            "klp_check_and_switch_task is not in the kernel's BTF",
        );
        assert_eq!(caps.tracer_unavailable(), None);
        assert_eq!(
            caps.verdicts_unavailable().as_deref(),
            Some("klp_check_and_switch_task is not in the kernel's BTF")
        );
        let mut caps = working();
        caps.available(Facility::TracerMaps);
        caps.available(Facility::Tracer(TracerProgram::CheckAndSwitchTaskEntry));
        caps.available(Facility::Tracer(TracerProgram::CheckAndSwitchTaskExit));
        assert_eq!(caps.verdicts_unavailable(), None);
    }

    #[test]
    fn each_uncounted_function_has_its_own_reason() {
        let counted = Target::vmlinux("cmdline_proc_show");
        let refused = Target {
            object: Some("klp_test_target".into()),
            name: "klp_test_park_wait".into(),
            sympos: 0,
        };
        let mut caps = working();
        caps.available(Facility::CallCounterMaps);
        caps.available(Facility::Calls(counted.clone()));
        caps.missing(Facility::Calls(refused.clone()), "EBUSY");
        assert_eq!(caps.uncounted_reason(&counted), None);
        assert_eq!(caps.uncounted_reason(&refused).as_deref(), Some("EBUSY"));
        let uncounted: Vec<_> = caps.uncounted().collect();
        assert_eq!(uncounted, [(&refused, "EBUSY")]);
        assert_eq!(
            Facility::Calls(refused).to_string(),
            "calls:klp_test_target:klp_test_park_wait"
        );
        assert_eq!(
            Facility::Calls(counted).to_string(),
            "calls:cmdline_proc_show"
        );
    }
}
