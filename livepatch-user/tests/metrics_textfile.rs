//! `klpscope metrics --output` into the folder of node_exporter's textfile
//! collector (Debian's prometheus-node-exporter, started here on
//! 127.0.0.1): node_exporter serves klpscope's series as its own, with no
//! scrape error.
mod common;

use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use common::{
    exposition::{assert_promtool_accepts, free_port, spawn, value},
    fixture::{Fixture, Thread},
};

const READER_STACK: &str = "[<0>] cmdline_proc_show+0x3c/0x80\n[<0>] vfs_read+0x1c0/0x360\n";

#[test]
fn node_exporter_serves_the_file_metrics_writes() {
    let fixture = Fixture::livepatch_kernel();
    fixture.user_thread(1, 1, "1");
    fixture.thread(Thread {
        pid: 42,
        tid: 42,
        comm: "reader",
        state: 'S',
        kthread: false,
        patch_state: Some("0"),
        stack: Some(READER_STACK),
    });
    fixture.patch("klp_demo", "1", "1", None).object(
        "klp_demo",
        "vmlinux",
        "1",
        &["cmdline_proc_show,1"],
    );
    let textfiles = tempfile::tempdir().unwrap();
    let file = textfiles.path().join("klpscope.prom");
    let status = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(fixture.root())
        .args(["metrics", "--output"])
        .arg(&file)
        .status()
        .expect("run klpscope");
    assert!(status.success());

    let port = free_port();
    let node_exporter = spawn(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!(
                "--collector.textfile.directory={}",
                textfiles.path().display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let started = Instant::now();
    let text = loop {
        if let Ok(mut response) = ureq::get(&url).call() {
            break response.body_mut().read_to_string().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node_exporter never answered on {url}"
        );
        sleep(Duration::from_millis(200));
    };
    drop(node_exporter);

    assert_eq!(
        value(&text, "node_textfile_scrape_error"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "klpscope_transition_tasks_pending"),
        Some(1.0),
        "{text}"
    );
    let asleep = "klpscope_transition_blockers{kind=\"user_task_asleep_in_patched_function\",reason=\"function_on_stack\"}";
    assert_eq!(value(&text, asleep), Some(1.0), "{text}");
    assert!(
        text.contains("# TYPE klpscope_transition_blocker_info gauge"),
        "the types survive: {text}"
    );
    let mtime = format!("node_textfile_mtime_seconds{{file=\"{}\"}}", file.display());
    assert!(value(&text, &mtime).is_some(), "the file was read: {text}");
    assert_promtool_accepts(&text);
}
