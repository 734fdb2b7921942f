//! The eBPF side on this host: the built object, the kernel's BTF, and the
//! capability report. Needs root, as klpscope itself does for eBPF.
use std::{os::unix::fs::MetadataExt, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::Map,
    programs::{ProbeKind, Program},
};
use livepatch_user::{
    model::{FunctionState, Target},
    probes::{self, Facility, ProbeRequest, TracerHook, TracerProgram},
};

fn require_root() {
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(
        uid, 0,
        "this test needs root (it loads eBPF maps); run it as root"
    );
}

fn object_bytes() -> Vec<u8> {
    // Where build.rs looks: the same object the binary embeds.
    let path = std::env::var("KLPSCOPE_EBPF_OBJECT").unwrap_or_else(|_| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = option_env!("CARGO_TARGET_DIR")
            .map_or(workspace.join("target"), |dir| workspace.join(dir));
        target
            .join("bpfel-unknown-none/release/livepatch-ebpf")
            .display()
            .to_string()
    });
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("eBPF object {path} missing ({e}): run `cargo xtask build`"))
}

fn host_layout() -> probes::TaskLayout {
    let raw = std::fs::read("/sys/kernel/btf/vmlinux")
        .expect("this host must expose its BTF at /sys/kernel/btf/vmlinux");
    probes::task_layout(&raw).expect("task_struct layout from the host's BTF")
}

#[test]
fn the_object_parses_and_lists_its_programs_and_maps() {
    require_root();
    let bytes = object_bytes();
    let layout = host_layout();
    let ebpf: Ebpf = EbpfLoader::new()
        .override_global("TASK_OFFSETS", &layout.offsets, true)
        .load(&bytes)
        .expect("aya loads klpscope's object (maps are created, programs not yet loaded)");

    let programs: Vec<(&str, &Program)> = ebpf.programs().collect();
    let find = |name: &str| programs.iter().find(|(n, _)| *n == name).map(|(_, p)| *p);
    // Each tracer program is of the kind it attaches as; none is an fexit,
    // whose trampoline would stay on the stack of every task that checks
    // itself and make the kernel fail that check.
    for program in TracerProgram::ALL {
        let found = find(program.program());
        let kind_matches = match program.hook() {
            TracerHook::Fentry => matches!(found, Some(Program::FEntry(_))),
            TracerHook::Kprobe => {
                matches!(found, Some(Program::KProbe(p)) if matches!(p.kind(), ProbeKind::Entry))
            }
            TracerHook::Kretprobe => {
                matches!(found, Some(Program::KProbe(p)) if matches!(p.kind(), ProbeKind::Return))
            }
        };
        assert!(
            kind_matches,
            "{program:?}: {:?}",
            found.map(|p| p.prog_type())
        );
    }
    let fexits: Vec<&str> = programs
        .iter()
        .filter(|(_, p)| matches!(p, Program::FExit(_)))
        .map(|(name, _)| *name)
        .collect();
    assert!(fexits.is_empty(), "fexit programs: {fexits:?}");
    for slot in 0..livepatch_ebpf::CALL_SLOTS {
        let name = format!("count_calls_{slot}");
        assert!(
            matches!(find(&name), Some(Program::FEntry(_))),
            "{name} missing"
        );
        let name = format!("count_calls_kprobe_{slot}");
        assert!(
            matches!(find(&name), Some(Program::KProbe(_))),
            "{name} missing"
        );
    }
    assert!(matches!(
        find("count_calls_floor"),
        Some(Program::FEntry(_))
    ));

    let maps: Vec<(&str, &Map)> = ebpf.maps().collect();
    let map = |name: &str| maps.iter().find(|(n, _)| *n == name).map(|(_, m)| *m);
    assert!(matches!(map("EVENTS"), Some(Map::RingBuf(_))));
    assert!(matches!(map("TASK_CHECKS"), Some(Map::LruHashMap(_))));
    assert!(matches!(map("GENERATION"), Some(Map::Array(_))));
    assert!(matches!(map("CALLS"), Some(Map::PerCpuArray(_))));
    assert!(matches!(map("OLD_CALLS_BY_TASK"), Some(Map::LruHashMap(_))));
    assert!(matches!(map(".data.slots"), Some(Map::Array(_))));
}

#[test]
fn task_struct_offsets_come_from_the_hosts_real_btf() {
    let layout = host_layout();
    let o = layout.offsets;
    // `pid_t pid; pid_t tgid;` sit side by side in every kernel since 2.6.
    assert_eq!(o.tgid, o.pid + 4, "{o:?}");
    assert!(o.comm > o.tgid && o.flags < o.pid, "{o:?}");
    let livepatch = Path::new("/sys/kernel/livepatch").exists();
    assert_eq!(
        layout.has_patch_state, livepatch,
        "task_struct.patch_state exists exactly when the kernel has livepatch"
    );
}

#[test]
fn the_capability_report_explains_what_this_kernel_refuses() {
    require_root();
    let request = ProbeRequest {
        tracer: true,
        count_calls: vec![(
            Target::vmlinux("cmdline_proc_show"),
            FunctionState::Unpatched,
        )],
        ..ProbeRequest::default()
    };
    let loaded = probes::load(Path::new("/"), &request);
    let (probes, caps) = (loaded.probes, loaded.capabilities);
    for essential in [Facility::Root, Facility::Btf, Facility::EbpfObject] {
        let cap = caps
            .get(&essential)
            .unwrap_or_else(|| panic!("{essential} not reported"));
        assert!(cap.available, "{essential}: {:?}", cap.reason);
    }
    let fentry = caps.get(&Facility::Fentry).expect("fentry reported");
    if fentry.available {
        // A kernel that accepts fentry: the probes must then be there.
        assert!(probes.is_some());
    } else {
        // This host kind refuses fentry with EPERM (see the field notes).
        assert!(probes.is_none(), "no probes without fentry");
        let reason = caps.unavailable_reason().expect("a reason");
        assert!(reason.contains("EPERM"), "{reason}");
        assert!(!reason.contains('\n'), "one line: {reason}");
    }
}

#[test]
fn a_fixture_root_turns_ebpf_off_with_a_reason() {
    let loaded = probes::load(Path::new("/tmp"), &ProbeRequest::default());
    let (probes, caps) = (loaded.probes, loaded.capabilities);
    assert!(probes.is_none());
    assert!(!caps.ebpf_available());
    assert!(caps.unavailable_reason().unwrap().contains("--root"));
}
