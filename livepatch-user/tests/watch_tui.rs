//! The watch screens rendered into ratatui's TestBackend and snapshotted,
//! from states built by feeding the state machine hand-made observations.
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use livepatch_user::{
    analysis::{
        blockers::{Blocker, VerdictSource},
        transition_progress::{Feed, Observation, Poll, WatchState},
    },
    kernel::{kernel_log::LivepatchMessage, livepatch_write::TransitionWrite},
    model::{
        BlockReason, Direction, Known, Patch, PatchFunction, PatchObject, StackFrame, TraceEvent,
        Transition,
    },
    probes::CallCount,
    views::tui::{
        app::{App, Confirmation, Screen, SortKey},
        handler::{Request, handle_key},
    },
};
use ratatui::{Terminal, backend::TestBackend};

const SEC: u64 = 1_000_000_000;

fn patch(enabled: bool, transition: bool) -> Patch {
    Patch {
        name: "klp_demo".into(),
        enabled: Known::Value(enabled),
        transition: Known::Value(transition),
        force: Known::unknown("write-only"),
        replace: Some(Known::Value(true)),
        stack_order: None,
        objects: vec![PatchObject {
            name: "vmlinux".into(),
            patched: Known::Value(true),
            functions: vec![PatchFunction {
                name: "cmdline_proc_show".into(),
                sympos: 1,
            }],
        }],
        gone: false,
    }
}

fn frame(function: &str, offset: u64) -> StackFrame {
    StackFrame {
        function: function.into(),
        offset,
        size: 0x400,
        module: None,
    }
}

fn blocker(tid: u32, comm: &str, kthread: bool, reason: BlockReason, failed: u32) -> Blocker {
    let on_stack = reason == BlockReason::FunctionOnStack;
    Blocker {
        pid: tid,
        tid,
        comm: comm.into(),
        kthread,
        state: 'S',
        reason,
        function: on_stack.then(|| "cmdline_proc_show".into()),
        version: None,
        unexplained: None,
        stack: if on_stack {
            vec![
                frame("__schedule", 0x2f1),
                frame("schedule", 0x27),
                frame("cmdline_proc_show", 0x3c),
                frame("seq_read_iter", 0x11d),
                frame("vfs_read", 0x1c0),
                frame("do_syscall_64", 0x82),
            ]
        } else {
            vec![frame("khugepaged", 0x1a0), frame("kthread", 0xe4)]
        },
        marked_frame: on_stack.then_some(2),
        blocked_secs: None,
        failed_checks: Some(failed),
        source: VerdictSource::Kernel,
    }
}

fn poll(
    at: u64,
    patches: Vec<Patch>,
    pending: Option<usize>,
    blockers: Vec<Blocker>,
) -> Observation {
    poll_towards(Direction::Patching, at, patches, pending, blockers)
}

fn poll_towards(
    direction: Direction,
    at: u64,
    patches: Vec<Patch>,
    pending: Option<usize>,
    blockers: Vec<Blocker>,
) -> Observation {
    Observation::Poll(Poll {
        at_ns: at * SEC,
        transition: pending.map(|tasks_pending| Transition {
            patch: "klp_demo".into(),
            direction,
            tasks_total: 212,
            tasks_pending,
        }),
        patches,
        blockers,
        threads: Some(212),
    })
}

fn calls(at: u64, old: u64, new: u64) -> Observation {
    Observation::Calls {
        at_ns: at * SEC,
        old_callers: vec![(4242, 12)],
        counts: vec![CallCount {
            function: "cmdline_proc_show".into(),
            old,
            new,
        }],
    }
}

fn idle_state(feed: Feed) -> WatchState {
    let mut state = WatchState::new("6.12.0-demo", feed);
    state.apply(poll(100, vec![patch(true, false)], None, vec![]));
    state
}

/// Started at 100 s, watched for 18 s, with two blockers and call counts.
fn in_progress(feed: Feed) -> WatchState {
    let traced = feed == Feed::Ebpf;
    let mut state = WatchState::new("6.12.0-demo", feed);
    state.apply(poll(100, vec![], None, vec![]));
    if traced {
        state.apply(Observation::Trace(TraceEvent::Start {
            timestamp_ns: 100 * SEC + SEC / 2,
        }));
    }
    for _ in 0..if traced { 17 } else { 0 } {
        state.apply(Observation::Trace(TraceEvent::Round {
            timestamp_ns: 0,
            duration_ns: 0,
            complete: false,
        }));
    }
    state.apply(poll(101, vec![patch(true, true)], Some(212), vec![]));
    let blockers = || {
        vec![
            blocker(4242, "demo-reader", false, BlockReason::FunctionOnStack, 17),
            blocker(87, "khugepaged", true, BlockReason::Running, 9),
        ]
    };
    state.apply(poll(102, vec![patch(true, true)], Some(2), blockers()));
    for (second, old, new) in [(103, 40, 0), (104, 90, 25), (105, 130, 70), (106, 150, 140)] {
        state.apply(calls(second, old, new));
    }
    state.apply(Observation::KernelLog(LivepatchMessage::Signaling));
    state.apply(poll(118, vec![patch(true, true)], Some(2), blockers()));
    state
}

fn render(app: &App, width: u16, height: u16) -> TestBackend {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .unwrap();
    terminal.backend().clone()
}

fn polling() -> Feed {
    Feed::Polling {
        reason: "the kernel refused a tracing program on cmdline_proc_show (EPERM)".into(),
    }
}

#[test]
fn idle_shows_the_patches_and_waits() {
    let app = App::new(idle_state(Feed::Ebpf));
    insta::assert_snapshot!(render(&app, 100, 24));
}

#[test]
fn in_progress_with_blockers() {
    let app = App::new(in_progress(Feed::Ebpf));
    insta::assert_snapshot!(render(&app, 110, 30));
}

#[test]
fn usable_at_80x24() {
    let app = App::new(in_progress(Feed::Ebpf));
    insta::assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn ebpf_unavailable_says_so_in_the_header() {
    let app = App::new(in_progress(polling()));
    let screen = render(&app, 100, 26);
    insta::assert_snapshot!(screen);
}

#[test]
fn enter_opens_the_selected_blockers_stack_with_the_blocking_frame_marked() {
    let mut app = App::new(in_progress(Feed::Ebpf));
    // Equal blocked times sort by tid: the kthread first, the reader second.
    assert_eq!(handle_key(&mut app, KeyEvent::from(KeyCode::Down)), None);
    assert_eq!(app.selected_tid, Some(4242));
    assert_eq!(handle_key(&mut app, KeyEvent::from(KeyCode::Enter)), None);
    assert_eq!(app.screen, Screen::Stack);
    insta::assert_snapshot!(render(&app, 100, 24));
}

#[test]
fn force_asks_first_and_explains_the_risk() {
    let mut app = App::new(in_progress(Feed::Ebpf));
    assert_eq!(
        handle_key(&mut app, KeyEvent::from(KeyCode::Char('f'))),
        None
    );
    assert_eq!(
        app.screen,
        Screen::Confirm(Confirmation::new(TransitionWrite::Force {
            patch: "klp_demo".into(),
            direction: Direction::Patching,
        }))
    );
    insta::assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn reverse_asks_first() {
    let mut app = App::new(in_progress(Feed::Ebpf));
    handle_key(&mut app, KeyEvent::from(KeyCode::Char('r')));
    insta::assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn complete_shows_the_outcome() {
    let mut state = in_progress(Feed::Ebpf);
    state.apply(poll(120, vec![patch(true, false)], None, vec![]));
    insta::assert_snapshot!(render(&App::new(state), 100, 24));
}

#[test]
fn reversed_and_gone() {
    let mut state = in_progress(Feed::Ebpf);
    state.apply(poll_towards(
        Direction::Unpatching,
        119,
        vec![patch(false, true)],
        Some(2),
        vec![],
    ));
    state.apply(poll(121, vec![], None, vec![]));
    insta::assert_snapshot!(render(&App::new(state), 100, 24));
}

#[test]
fn help_lists_the_keys() {
    let mut app = App::new(idle_state(Feed::Ebpf));
    handle_key(&mut app, KeyEvent::from(KeyCode::Char('?')));
    insta::assert_snapshot!(render(&app, 80, 24));
}

fn key(app: &mut App, code: KeyCode) -> Option<Request> {
    handle_key(app, KeyEvent::from(code))
}

fn typed(app: &mut App, text: &str) -> Vec<Option<Request>> {
    text.chars().map(|c| key(app, KeyCode::Char(c))).collect()
}

#[test]
fn keys_in_requests_out_only_after_confirmation() {
    let mut app = App::new(in_progress(Feed::Ebpf));
    assert_eq!(
        key(&mut app, KeyCode::Char('r')),
        None,
        "r alone writes nothing"
    );
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        Some(Request::Write(TransitionWrite::Reverse {
            patch: "klp_demo".into(),
            from: Direction::Patching,
        })),
        "the write names the transition it was confirmed against"
    );
    assert_eq!(app.screen, Screen::Main);
    key(&mut app, KeyCode::Char('f'));
    assert_eq!(
        key(&mut app, KeyCode::Esc),
        None,
        "Esc cancels, it does not quit"
    );
    assert_eq!(app.screen, Screen::Main);
    key(&mut app, KeyCode::Char('r'));
    assert_eq!(key(&mut app, KeyCode::Char('n')), None);
    assert_eq!(app.screen, Screen::Main);
    assert_eq!(key(&mut app, KeyCode::Char('q')), Some(Request::Quit));
}

/// Typing a word that happens to contain r then y (or f then y) must not
/// write: in the dialog, any key other than the answer cancels it.
#[test]
fn stray_typing_never_confirms() {
    for word in ["ready", "rxy", "r y", "fly", "fy", "force"] {
        let mut app = App::new(in_progress(Feed::Ebpf));
        let requests = typed(&mut app, word);
        assert!(
            requests.iter().all(Option::is_none),
            "typing {word:?} asked for {requests:?}"
        );
    }
    let mut app = App::new(in_progress(Feed::Ebpf));
    typed(&mut app, "r");
    assert_eq!(key(&mut app, KeyCode::Char('x')), None);
    assert_eq!(app.screen, Screen::Main, "x cancelled the dialog");
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        None,
        "y alone is no answer"
    );
}

/// Force cannot be undone: it takes the patch's name typed out, then Enter.
#[test]
fn force_takes_the_patch_name_typed_out() {
    let mut app = App::new(in_progress(Feed::Ebpf));
    key(&mut app, KeyCode::Char('f'));
    assert_eq!(key(&mut app, KeyCode::Char('y')), None);
    assert_eq!(key(&mut app, KeyCode::Enter), None, "'y' is not the name");
    assert_eq!(app.screen, Screen::Main);

    key(&mut app, KeyCode::Char('f'));
    assert!(typed(&mut app, "klp_demx").iter().all(Option::is_none));
    key(&mut app, KeyCode::Backspace);
    typed(&mut app, "o");
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        Some(Request::Write(TransitionWrite::Force {
            patch: "klp_demo".into(),
            direction: Direction::Patching,
        }))
    );
    key(&mut app, KeyCode::Char('f'));
    typed(&mut app, "klp_demo");
    assert_eq!(key(&mut app, KeyCode::Down), None, "an arrow cancels too");
    assert_eq!(app.screen, Screen::Main);
}

/// A dialog opened for one transition is withdrawn when that transition
/// completes: a late `y` then writes nothing.
#[test]
fn a_stale_question_is_withdrawn_when_the_transition_ends() {
    let mut app = App::new(in_progress(Feed::Ebpf));
    key(&mut app, KeyCode::Char('r'));
    app.state
        .apply(poll(120, vec![patch(true, false)], None, vec![]));
    app.dismiss_stale_confirmation();
    assert_eq!(app.screen, Screen::Main);
    assert_eq!(key(&mut app, KeyCode::Char('y')), None);
}

#[test]
fn without_a_transition_reverse_and_force_only_explain() {
    let mut app = App::new(idle_state(Feed::Ebpf));
    assert_eq!(key(&mut app, KeyCode::Char('f')), None);
    assert_eq!(app.screen, Screen::Main);
    assert_eq!(app.message.as_deref(), Some("no transition in progress"));
}

#[test]
fn esc_leaves_the_stack_view_and_ctrl_c_always_interrupts() {
    let mut app = App::new(in_progress(Feed::Ebpf));
    key(&mut app, KeyCode::Enter);
    assert_eq!(key(&mut app, KeyCode::Esc), None);
    assert_eq!(app.screen, Screen::Main);
    key(&mut app, KeyCode::Char('?'));
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    // Raw mode delivers Ctrl-C as a key: it interrupts, as SIGINT would.
    assert_eq!(handle_key(&mut app, ctrl_c), Some(Request::Interrupt));
}

#[test]
fn sorting_and_selection_follow_the_task() {
    let mut app = App::new(in_progress(Feed::Ebpf));
    let order = |app: &App| app.blockers().iter().map(|b| b.tid).collect::<Vec<_>>();
    assert_eq!(order(&app), [87, 4242]);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    assert_eq!(
        app.selected_tid,
        Some(4242),
        "the selection stops at the last row"
    );
    key(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, SortKey::Pid);
    key(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, SortKey::Comm);
    assert_eq!(order(&app), [4242, 87], "demo-reader before khugepaged");
    assert_eq!(
        app.selected_row(),
        Some(0),
        "the selection moved with its task"
    );
}

/// On kernels where the per-task verdict hook is missing (5.10) or off
/// (6.1), the header says the blockers are inferred.
#[test]
fn inferred_verdicts_are_said_in_the_header() {
    let mut state = in_progress(Feed::Ebpf);
    let first_line = |state: WatchState| render(&App::new(state), 100, 24).to_string();
    assert!(!first_line(state.clone()).contains("blockers inferred"));
    state.verdicts_inferred = Some("klp_check_and_switch_task is not in the kernel's BTF".into());
    let screen = first_line(state);
    assert!(
        screen.lines().next().unwrap().contains("blockers inferred"),
        "{screen}"
    );
}
