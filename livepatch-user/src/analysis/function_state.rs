//! Which version of a function runs now, from the patches in sysfs.
use crate::model::{Direction, FunctionState, Known, Patch};

/// The newest patch (the last in the list the kernel stacks them in) that
/// replaces `function` in `object` decides. In its transition every task runs
/// what its patch_state says; otherwise the new version runs exactly when the
/// patch is enabled and the object patched.
pub fn function_state(patches: &[Patch], object: &str, function: &str) -> FunctionState {
    let newest = patches.iter().rev().find_map(|patch| {
        let object = patch
            .objects
            .iter()
            .find(|o| o.name == object && o.functions.iter().any(|f| f.name == function))?;
        Some((patch, object))
    });
    let Some((patch, object)) = newest.filter(|(patch, _)| !patch.gone) else {
        return FunctionState::Unpatched;
    };
    let enabled = patch.enabled == Known::Value(true);
    if patch.transition == Known::Value(true) {
        return FunctionState::InTransition(if enabled {
            Direction::Patching
        } else {
            Direction::Unpatching
        });
    }
    // Older kernels (5.10) have no `patched` file: an enabled patch has
    // patched every object that is loaded, and a function whose calls are
    // asked about is in a loaded one.
    if enabled && object.patched != Known::Value(false) {
        FunctionState::Patched
    } else {
        FunctionState::Unpatched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::patch_of;

    fn patch(name: &str, enabled: bool, transition: bool) -> Patch {
        let mut patch = patch_of(name, enabled, transition, "vmlinux", &["cmdline_proc_show"]);
        patch.objects[0].patched = Known::Value(true);
        patch
    }

    #[test]
    fn the_newest_patch_of_the_function_decides() {
        let state = |patches: &[Patch]| function_state(patches, "vmlinux", "cmdline_proc_show");
        assert_eq!(state(&[]), FunctionState::Unpatched);
        assert_eq!(state(&[patch("a", true, false)]), FunctionState::Patched);
        assert_eq!(
            state(&[patch("a", true, false), patch("b", true, true)]),
            FunctionState::InTransition(Direction::Patching)
        );
        assert_eq!(
            state(&[patch("a", false, true)]),
            FunctionState::InTransition(Direction::Unpatching)
        );
        assert_eq!(
            function_state(&[patch("a", true, false)], "vmlinux", "other"),
            FunctionState::Unpatched
        );
    }

    #[test]
    fn without_a_patched_file_an_enabled_patch_runs_its_version() {
        let mut old_kernel = patch("a", true, false);
        old_kernel.objects[0].patched = Known::unknown("no patched file on 5.10");
        let state = |patches: &[Patch]| function_state(patches, "vmlinux", "cmdline_proc_show");
        assert_eq!(
            state(std::slice::from_ref(&old_kernel)),
            FunctionState::Patched
        );
        old_kernel.objects[0].patched = Known::Value(false);
        assert_eq!(state(&[old_kernel]), FunctionState::Unpatched);
    }
}
