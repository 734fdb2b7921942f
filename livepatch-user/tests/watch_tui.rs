//! The watch screens rendered into ratatui's TestBackend and snapshotted,
//! from states built by feeding the state machine hand-made observations.
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use livepatch_user::{
    analysis::observation::{CallSample, KernelPoll, Observation},
    kernel::livepatch_write::TransitionWrite,
    model::{
        BlockReason, CallCount, Direction, FeedCapabilities, Known, LivepatchMessage, Patch,
        PatchFunction, PatchObject, PatchState, StackFrame, Task, TaskVerdict, TraceEvent,
    },
    testing::thread,
    views::{
        tui::{
            app::{App, Confirmation, Screen, SortKey},
            handler::{Request, handle_key},
        },
        watch_lines::describe,
    },
};
use ratatui::{Terminal, backend::TestBackend};

const SEC: u64 = 1_000_000_000;
const THREADS: u32 = 212;

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

/// Two tasks the kernel keeps failing to switch from `failing_since` on: a
/// reader asleep in the patched function, and a kthread running whenever
/// the kernel looks.
fn blockers(failing_since: u64) -> (Vec<Task>, Vec<TaskVerdict>) {
    let task = |tid, comm: &str, kthread, stack| Task {
        pid: tid,
        tid,
        comm: comm.into(),
        kthread,
        state: 'S',
        patch_state: Known::Value(PatchState::Unpatched),
        stack: Known::Value(stack),
    };
    let verdict = |tid, comm: &str, kthread, reason, failed_checks| TaskVerdict {
        tid,
        tgid: tid,
        comm: comm.into(),
        kthread,
        reason: Some(reason),
        function: None,
        failed_checks,
        failed_rounds: failed_checks,
        first_failure_ns: failing_since * SEC,
        last_failure_ns: failing_since * SEC,
    };
    let reader = vec![
        frame("__schedule", 0x2f1),
        frame("schedule", 0x27),
        frame("cmdline_proc_show", 0x3c),
        frame("seq_read_iter", 0x11d),
        frame("vfs_read", 0x1c0),
        frame("do_syscall_64", 0x82),
    ];
    let kthread = vec![frame("khugepaged", 0x1a0), frame("kthread", 0xe4)];
    (
        vec![
            task(4242, "demo-reader", false, reader),
            task(87, "khugepaged", true, kthread),
        ],
        vec![
            verdict(4242, "demo-reader", false, BlockReason::FunctionOnStack, 17),
            verdict(87, "khugepaged", true, BlockReason::Running, 9),
        ],
    )
}

fn poll(at: u64, patches: Vec<Patch>, pending: Option<usize>, blocked: bool) -> Observation {
    poll_towards(Direction::Patching, at, patches, pending, blocked)
}

/// A raw poll of `THREADS` threads, `pending` of them short of the
/// direction's target, the two blockers among them if `blocked`.
fn poll_towards(
    direction: Direction,
    at: u64,
    patches: Vec<Patch>,
    pending: Option<usize>,
    blocked: bool,
) -> Observation {
    let threads = (0..THREADS)
        .map(|i| {
            let state = match pending {
                Some(pending) if (i as usize) < pending => direction.opposite().target(),
                Some(_) => direction.target(),
                None => PatchState::Idle,
            };
            thread(1000 + i, state)
        })
        .collect();
    let (pending, verdicts) = if blocked {
        let (tasks, verdicts) = blockers(101);
        (tasks, Some(verdicts))
    } else {
        (Vec::new(), Some(Vec::new()))
    };
    Observation::Poll(KernelPoll {
        at_ns: at * SEC,
        read_ns: at * SEC,
        patches,
        threads: Some(threads),
        pending,
        verdicts,
        log: Some(Vec::new()),
    })
}

fn calls(at: u64, old: u64, new: u64) -> Observation {
    Observation::Calls(CallSample {
        at_ns: at * SEC,
        old_callers: vec![(4242, 12)],
        counts: vec![CallCount {
            function: "cmdline_proc_show".into(),
            old,
            new,
        }],
        uncounted: Vec::new(),
    })
}

fn ebpf() -> FeedCapabilities {
    FeedCapabilities::default()
}

fn polling() -> FeedCapabilities {
    FeedCapabilities {
        polling: Some("the kernel refused a tracing program on cmdline_proc_show (EPERM)".into()),
        verdicts_inferred: None,
        tasks_from_procfs: None,
    }
}

fn app(feed: FeedCapabilities, observations: Vec<Observation>) -> App {
    let mut app = App::new("6.12.0-demo", feed, None);
    for observation in observations {
        app.apply(vec![observation]);
    }
    app
}

fn idle_state(feed: FeedCapabilities) -> App {
    app(feed, vec![poll(100, vec![patch(true, false)], None, false)])
}

/// Started at 100 s, watched for 18 s, with two blockers and call counts.
fn in_progress(feed: FeedCapabilities) -> App {
    in_progress_counting(
        feed,
        &[(103, 40, 0), (104, 90, 25), (105, 130, 70), (106, 150, 140)],
    )
}

/// As `in_progress`, the call counters reading `counts` (second, old, new).
fn in_progress_counting(feed: FeedCapabilities, counts: &[(u64, u64, u64)]) -> App {
    let traced = feed.ebpf();
    let mut observations = vec![poll(100, vec![], None, false)];
    if traced {
        observations.push(Observation::Trace(TraceEvent::Start {
            timestamp_ns: 100 * SEC + SEC / 2,
        }));
    }
    for round in 1..=if traced { 17 } else { 0 } {
        observations.push(Observation::Trace(TraceEvent::Round {
            timestamp_ns: 0,
            round,
        }));
    }
    observations.push(poll(101, vec![patch(true, true)], Some(212), false));
    observations.push(poll(102, vec![patch(true, true)], Some(2), true));
    for &(second, old, new) in counts {
        observations.push(calls(second, old, new));
    }
    observations.push(Observation::KernelLog(LivepatchMessage::Signaling));
    observations.push(poll(118, vec![patch(true, true)], Some(2), true));
    app(feed, observations)
}

fn render(app: &App, width: u16, height: u16) -> TestBackend {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .unwrap();
    terminal.backend().clone()
}

#[test]
fn idle_shows_the_patches_and_waits() {
    let app = idle_state(ebpf());
    insta::assert_snapshot!(render(&app, 100, 24));
}

#[test]
fn in_progress_with_blockers() {
    let app = in_progress(ebpf());
    insta::assert_snapshot!(render(&app, 110, 30));
}

#[test]
fn usable_at_80x24() {
    let app = in_progress(ebpf());
    insta::assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn ebpf_unavailable_says_so_in_the_header() {
    let app = in_progress(polling());
    let screen = render(&app, 100, 26);
    insta::assert_snapshot!(screen);
}

#[test]
fn enter_opens_the_selected_blockers_stack_with_the_blocking_frame_marked() {
    let mut app = in_progress(ebpf());
    // Equal blocked times sort by tid: the kthread first, the reader second.
    assert_eq!(handle_key(&mut app, KeyEvent::from(KeyCode::Down)), None);
    assert_eq!(app.selected_tid, Some(4242));
    assert_eq!(handle_key(&mut app, KeyEvent::from(KeyCode::Enter)), None);
    assert_eq!(app.screen, Screen::Stack);
    insta::assert_snapshot!(render(&app, 100, 24));
}

#[test]
fn force_asks_first_and_explains_the_risk() {
    let mut app = in_progress(ebpf());
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
    let mut app = in_progress(ebpf());
    handle_key(&mut app, KeyEvent::from(KeyCode::Char('r')));
    insta::assert_snapshot!(render(&app, 80, 24));
}

#[test]
fn complete_shows_the_outcome() {
    let mut app = in_progress(ebpf());
    app.apply(vec![poll(120, vec![patch(true, false)], None, false)]);
    insta::assert_snapshot!(render(&app, 100, 24));
}

#[test]
fn reversed_and_gone() {
    let mut app = in_progress(ebpf());
    app.apply(vec![poll_towards(
        Direction::Unpatching,
        119,
        vec![patch(false, true)],
        Some(2),
        false,
    )]);
    app.apply(vec![poll(121, vec![], None, false)]);
    insta::assert_snapshot!(render(&app, 100, 24));
}

#[test]
fn help_lists_the_keys() {
    let mut app = idle_state(ebpf());
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
    let mut app = in_progress(ebpf());
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
        let mut app = in_progress(ebpf());
        let requests = typed(&mut app, word);
        assert!(
            requests.iter().all(Option::is_none),
            "typing {word:?} asked for {requests:?}"
        );
    }
    let mut app = in_progress(ebpf());
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
    let mut app = in_progress(ebpf());
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
    let mut app = in_progress(ebpf());
    key(&mut app, KeyCode::Char('r'));
    app.apply(vec![poll(120, vec![patch(true, false)], None, false)]);
    assert_eq!(app.screen, Screen::Main);
    assert_eq!(key(&mut app, KeyCode::Char('y')), None);
}

#[test]
fn without_a_transition_reverse_and_force_only_explain() {
    let mut app = idle_state(ebpf());
    assert_eq!(key(&mut app, KeyCode::Char('f')), None);
    assert_eq!(app.screen, Screen::Main);
    assert_eq!(app.message.as_deref(), Some("no transition in progress"));
}

#[test]
fn esc_leaves_the_stack_view_and_ctrl_c_always_interrupts() {
    let mut app = in_progress(ebpf());
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
    let mut app = in_progress(ebpf());
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
    let mut app = in_progress(ebpf());
    let first_line = |app: &App| render(app, 100, 24).to_string();
    assert!(!first_line(&app).contains("blockers inferred"));
    app.feed.verdicts_inferred =
        Some("klp_check_and_switch_task is not in the kernel's BTF".into());
    let screen = first_line(&app);
    assert!(
        screen.lines().next().unwrap().contains("blockers inferred"),
        "{screen}"
    );
}

/// The demo's size. The table shows each blocker's scheduler state and
/// whether it clears by itself, as `diagnose` forecasts: the reader asleep
/// interruptibly clears after the fake signal, a kthread asleep
/// uninterruptibly in the patched function never does by itself.
#[test]
fn blockers_show_their_state_and_forecast() {
    let mut app = in_progress(ebpf());
    let transition = app.live.tracker.transition.as_mut().unwrap();
    let kthread = transition.blockers.iter_mut().find(|b| b.kthread).unwrap();
    kthread.state = 'D';
    kthread.reason = BlockReason::FunctionOnStack;
    kthread.function = Some("cmdline_proc_show".into());
    let screen = render(&app, 110, 32);
    insta::assert_snapshot!(screen);
}

/// Event sentences longer than the panel go on under their time, broken
/// between words: none ends mid-word.
#[test]
fn event_lines_wrap_between_words() {
    let app = in_progress(ebpf());
    let screen = render(&app, 90, 30).to_string();
    for logged in &app.log {
        for word in describe(&logged.event).split(' ') {
            assert!(screen.contains(word), "{word:?} cut in\n{screen}");
        }
    }
    insta::assert_snapshot!(screen);
}

/// A transition of two threads, one of them switched: counts of one are
/// singular.
#[test]
fn one_task_is_one_task() {
    let threads = |pending: u32| {
        (0..2)
            .map(|i| {
                let state = if i < pending {
                    PatchState::Unpatched
                } else {
                    PatchState::Patched
                };
                thread(1000 + i, state)
            })
            .collect()
    };
    let poll = |at: u64, pending| {
        Observation::Poll(KernelPoll {
            at_ns: at * SEC,
            read_ns: at * SEC,
            patches: vec![patch(true, true)],
            threads: Some(threads(pending)),
            pending: Vec::new(),
            verdicts: Some(Vec::new()),
            log: Some(Vec::new()),
        })
    };
    let app = app(ebpf(), vec![poll(100, 2), poll(101, 2), poll(102, 1)]);
    let screen = render(&app, 100, 24).to_string();
    assert!(screen.contains("1 task switched, 1 pending"), "{screen}");
    assert!(!screen.contains("1 tasks"), "{screen}");
    insta::assert_snapshot!(screen);
}

/// Counters that read zero draw no empty charts: the panel says nothing
/// was counted; without eBPF it says why nothing is.
#[test]
fn calls_panel_says_when_nothing_was_counted() {
    let app = in_progress_counting(ebpf(), &[(103, 0, 0), (104, 0, 0), (105, 0, 0)]);
    let screen = render(&app, 110, 32).to_string();
    assert!(!screen.contains("old 0 new 0"), "{screen}");
    insta::assert_snapshot!(screen);

    let polled = in_progress_counting(polling(), &[]);
    let screen = render(&polled, 110, 32).to_string();
    assert!(
        screen.contains("calls are not counted: eBPF unavailable"),
        "{screen}"
    );
}
