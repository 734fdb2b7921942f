//! The two writes a user can confirm in `watch`, against a fixture sysfs:
//! made only while the patch is still in the transition that was confirmed.
mod common;

use std::fs;

use common::fixture::Fixture;
use livepatch_user::{
    kernel::livepatch_write::{TransitionWrite, WriteRefused, write_confirmed},
    model::Direction,
};

fn reverse(from: Direction) -> TransitionWrite {
    TransitionWrite::Reverse {
        patch: "klp_demo".into(),
        from,
    }
}

/// Trimmed: the writer writes the bare value over the fixture's "N\n", as
/// sysfs takes it.
fn read(fixture: &Fixture, file: &str) -> String {
    let path = fixture.path(&format!("sys/kernel/livepatch/klp_demo/{file}"));
    fs::read_to_string(path).unwrap().trim().to_owned()
}

#[test]
fn reverse_writes_the_opposite_goal_while_the_transition_runs() {
    let fixture = Fixture::livepatch_kernel();
    fixture.patch("klp_demo", "1", "1", None);
    let written = write_confirmed(fixture.root(), &reverse(Direction::Patching)).unwrap();
    assert_eq!(read(&fixture, "enabled"), "0");
    assert!(written.to_string().starts_with("wrote 0 to "), "{written}");

    fixture.patch("klp_demo", "0", "1", None);
    write_confirmed(fixture.root(), &reverse(Direction::Unpatching)).unwrap();
    assert_eq!(read(&fixture, "enabled"), "1");
}

/// The question was asked during patching; by the answer the patch is fully
/// applied. Writing 0 now would start disabling it.
#[test]
fn a_yes_after_the_transition_completed_writes_nothing() {
    let fixture = Fixture::livepatch_kernel();
    fixture.patch("klp_demo", "1", "0", None);
    let refused = write_confirmed(fixture.root(), &reverse(Direction::Patching)).unwrap_err();
    assert!(
        matches!(refused, WriteRefused::TransitionEnded { .. }),
        "{refused:?}"
    );
    assert_eq!(read(&fixture, "enabled"), "1", "enabled untouched");
    assert!(
        refused.to_string().contains("the patch is applied"),
        "{refused}"
    );
}

#[test]
fn a_transition_that_turned_around_or_went_away_is_not_written() {
    let fixture = Fixture::livepatch_kernel();
    fixture.patch("klp_demo", "0", "1", None);
    let force = TransitionWrite::Force {
        patch: "klp_demo".into(),
        direction: Direction::Patching,
    };
    let refused = write_confirmed(fixture.root(), &force).unwrap_err();
    assert!(
        matches!(refused, WriteRefused::DirectionChanged { .. }),
        "{refused:?}"
    );
    assert_eq!(read(&fixture, "force"), "0", "force untouched");

    fixture.remove("sys/kernel/livepatch/klp_demo");
    let refused = write_confirmed(fixture.root(), &reverse(Direction::Unpatching)).unwrap_err();
    assert!(
        matches!(refused, WriteRefused::PatchGone { .. }),
        "{refused:?}"
    );
    assert!(
        !fixture.path("sys/kernel/livepatch/klp_demo").exists(),
        "no file created for a patch that is gone"
    );
}

#[test]
fn force_writes_one_only_in_the_confirmed_transition() {
    let fixture = Fixture::livepatch_kernel();
    fixture.patch("klp_demo", "1", "1", None);
    let force = TransitionWrite::Force {
        patch: "klp_demo".into(),
        direction: Direction::Patching,
    };
    write_confirmed(fixture.root(), &force).unwrap();
    assert_eq!(read(&fixture, "force"), "1");
}

/// Issue 28: a write goes to the patch's own attribute, never through a
/// symlink (in the folder, or the folder itself) to a file elsewhere.
#[test]
fn a_symlinked_attribute_or_patch_folder_is_never_written_through() {
    let fixture = Fixture::livepatch_kernel();
    fixture.patch("klp_demo", "1", "1", None);
    let victim = fixture.path("victim");
    fs::write(&victim, "untouched\n").unwrap();
    let force = fixture.path("sys/kernel/livepatch/klp_demo/force");
    fs::remove_file(&force).unwrap();
    std::os::unix::fs::symlink(&victim, &force).unwrap();
    let write = TransitionWrite::Force {
        patch: "klp_demo".into(),
        direction: Direction::Patching,
    };
    let refused = write_confirmed(fixture.root(), &write).unwrap_err();
    assert!(matches!(refused, WriteRefused::Io { .. }), "{refused:?}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched\n");

    // The whole folder a symlink to one elsewhere: no patch of the kernel's.
    let elsewhere = fixture.path("elsewhere");
    fs::rename(fixture.path("sys/kernel/livepatch/klp_demo"), &elsewhere).unwrap();
    fs::remove_file(elsewhere.join("force")).unwrap();
    fs::write(elsewhere.join("force"), "0\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, fixture.path("sys/kernel/livepatch/klp_demo")).unwrap();
    for write in [write, reverse(Direction::Patching)] {
        let refused = write_confirmed(fixture.root(), &write).unwrap_err();
        assert!(
            matches!(refused, WriteRefused::PatchGone { .. }),
            "{refused:?}"
        );
    }
    assert_eq!(fs::read_to_string(elsewhere.join("force")).unwrap(), "0\n");
    assert_eq!(
        fs::read_to_string(elsewhere.join("enabled")).unwrap(),
        "1\n"
    );
}

/// A FIFO as `force` (which the reader takes as write-only, as sysfs has
/// it): opening it to write would wait for a reader that never comes.
#[test]
fn a_fifo_as_an_attribute_is_refused_without_waiting() {
    let fixture = Fixture::livepatch_kernel();
    fixture.patch("klp_demo", "1", "1", None);
    let force = fixture.path("sys/kernel/livepatch/klp_demo/force");
    fs::remove_file(&force).unwrap();
    let c_path = std::ffi::CString::new(force.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let root = fixture.root().to_owned();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let write = TransitionWrite::Force {
            patch: "klp_demo".into(),
            direction: Direction::Patching,
        };
        let _ = done.send(write_confirmed(&root, &write));
    });
    let refused = result
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the write returns instead of waiting for a reader")
        .unwrap_err();
    assert!(matches!(refused, WriteRefused::Io { .. }), "{refused:?}");
}
