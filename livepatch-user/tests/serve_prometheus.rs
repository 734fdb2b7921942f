//! `klpscope serve` scraped by a real Prometheus server (Debian's package,
//! started here on 127.0.0.1 with a configuration of its own) while the
//! fixture kernel root goes through a blocked transition; the test asks
//! Prometheus's HTTP API what it stored.
mod common;

use std::{
    fs,
    io::{self, BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use common::{
    exposition::{Running, assert_promtool_accepts, free_port, spawn},
    fixture::{Fixture, Thread},
};
use serde_json::Value;

const READER_STACK: &str = "[<0>] cmdline_proc_show+0x3c/0x80\n[<0>] seq_read_iter+0x11d/0x4a0\n\
                            [<0>] vfs_read+0x1c0/0x360\n";
/// Every wait is bounded by this: a scrape a second needs a few.
const PATIENCE: Duration = Duration::from_secs(60);

/// `klpscope serve` on a free port; returns it with its address.
fn serve(root: &Path) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_klpscope"))
        .arg("--root")
        .arg(root)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("run klpscope serve");
    let mut stderr = BufReader::new(child.stderr.take().expect("serve's stderr"));
    let mut first = String::new();
    stderr.read_line(&mut first).expect("serve's first line");
    // Read on, so that serve's later notes find a reader.
    std::thread::spawn(move || io::copy(&mut stderr, &mut io::sink()));
    let address = first
        .trim()
        .strip_prefix("klpscope: serving metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("serve says where it listens: {first:?}"))
        .to_owned();
    (Running(child), address)
}

/// Prometheus scraping `target` every second, with klpscope's alert rules
/// loaded; returns it with its port once it is ready.
fn prometheus(dir: &Path, target: &str) -> (Running, u16) {
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/prometheus/klpscope.rules.yml");
    let config = dir.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: klpscope\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let log = fs::File::create(dir.join("prometheus.log")).unwrap();
    let prometheus = spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log),
    );
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    wait_until("Prometheus is ready", || ureq::get(&ready).call().is_ok());
    (prometheus, port)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "gave up waiting until {what}");
        sleep(Duration::from_millis(250));
    }
}

/// An instant query's result vector.
fn query(port: u16, promql: &str) -> Vec<Value> {
    let body = ureq::get(format!("http://127.0.0.1:{port}/api/v1/query"))
        .query("query", promql)
        .call()
        .and_then(|mut response| response.body_mut().read_to_string())
        .unwrap_or_else(|error| panic!("query {promql}: {error}"));
    let answer: Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
    assert_eq!(answer["status"], "success", "{answer}");
    answer["data"]["result"]
        .as_array()
        .expect("a vector")
        .clone()
}

/// The value of a query that yields one series; None for no series.
fn single(port: u16, promql: &str) -> Option<f64> {
    let result = query(port, promql);
    assert!(result.len() <= 1, "{promql}: {result:?}");
    let value = result.first()?["value"][1].as_str()?;
    Some(value.parse().expect("a number"))
}

fn wait_for_value(port: u16, promql: &str, expected: f64) {
    wait_until(&format!("{promql} is {expected}"), || {
        single(port, promql) == Some(expected)
    });
}

#[test]
fn prometheus_stores_the_pending_task_and_the_blocker_and_sees_them_go() {
    let fixture = Fixture::livepatch_kernel();
    fixture.user_thread(1, 1, "-1");
    fixture.thread(Thread {
        pid: 42,
        tid: 42,
        comm: "reader",
        state: 'S',
        kthread: false,
        patch_state: Some("-1"),
        stack: Some(READER_STACK),
    });
    let (_serve, address) = serve(fixture.root());
    let scraped = format!("http://{address}/metrics");
    wait_until("serve answers", || ureq::get(&scraped).call().is_ok());
    let text = ureq::get(&scraped)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert_promtool_accepts(&text);

    let dir = tempfile::tempdir().unwrap();
    let (_prometheus, port) = prometheus(dir.path(), &address);
    wait_for_value(port, "up{job=\"klpscope\"}", 1.0);
    wait_for_value(port, "klpscope_transition_in_progress", 0.0);
    assert_eq!(single(port, "klpscope_livepatch_supported"), Some(1.0));
    assert_eq!(
        single(port, "klpscope_ebpf_available"),
        Some(0.0),
        "--root: no eBPF"
    );
    let rules = ureq::get(format!("http://127.0.0.1:{port}/api/v1/rules"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    for alert in [
        "LivepatchTransitionStuck",
        "LivepatchReversed",
        "LivepatchUnsupported",
    ] {
        assert!(rules.contains(alert), "Prometheus loaded {alert}: {rules}");
    }

    // The patch loads; the reader sits in the old cmdline_proc_show.
    fixture.rewrite("proc/1/task/1/patch_state", "1\n");
    fixture.rewrite("proc/42/task/42/patch_state", "0\n");
    fixture.object("klp_demo", "vmlinux", "1", &["cmdline_proc_show,1"]);
    fixture.rewrite("sys/kernel/livepatch/klp_demo/enabled", "1\n");
    fixture.rewrite("sys/kernel/livepatch/klp_demo/transition", "1\n");
    wait_for_value(port, "klpscope_transition_tasks_pending", 1.0);
    assert_eq!(single(port, "klpscope_transition_tasks"), Some(2.0));
    let on_stack = "sum(klpscope_transition_blockers{reason=\"function_on_stack\"})";
    assert_eq!(single(port, on_stack), Some(1.0));
    let named = query(port, "klpscope_transition_blocker_info");
    assert_eq!(named.len(), 1, "{named:?}");
    let blocker = &named[0]["metric"];
    assert_eq!(
        (
            blocker["pid"].as_str(),
            blocker["comm"].as_str(),
            blocker["function"].as_str(),
            blocker["reason"].as_str(),
            blocker["kind"].as_str(),
        ),
        (
            Some("42"),
            Some("reader"),
            Some("cmdline_proc_show"),
            Some("function_on_stack"),
            Some("user_task_asleep_in_patched_function")
        ),
        "{blocker}"
    );
    let info = query(port, "klpscope_transition_info");
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0]["metric"]["patch"], "klp_demo");
    assert_eq!(info[0]["metric"]["direction"], "patching");
    assert_eq!(
        single(port, "klpscope_patch_transition{patch=\"klp_demo\"}"),
        Some(1.0)
    );

    // The reader leaves the function and switches; the transition completes.
    fixture.rewrite("proc/42/task/42/patch_state", "1\n");
    wait_for_value(port, "klpscope_transition_tasks_pending", 0.0);
    fixture.rewrite("sys/kernel/livepatch/klp_demo/transition", "0\n");
    fixture.rewrite("proc/1/task/1/patch_state", "-1\n");
    fixture.rewrite("proc/42/task/42/patch_state", "-1\n");
    wait_for_value(port, "klpscope_transition_in_progress", 0.0);
    wait_for_value(
        port,
        "klpscope_transitions_total{outcome=\"completed\"}",
        1.0,
    );
    assert_eq!(single(port, "sum(klpscope_transition_blockers)"), Some(0.0));
    assert_eq!(single(port, "klpscope_transition_tasks_pending"), Some(0.0));
    assert!(
        query(port, "klpscope_transition_blocker_info").is_empty(),
        "gone with the transition"
    );
    assert!(query(port, "klpscope_transition_info").is_empty());
    let last = "klpscope_last_transition_info{patch=\"klp_demo\",direction=\"patching\"}";
    assert_eq!(single(port, last), Some(1.0));
    assert_eq!(single(port, "klpscope_last_transition_reversed"), Some(0.0));
    assert_eq!(
        single(port, "klpscope_transitions_total{outcome=\"reversed\"}"),
        Some(0.0)
    );
}
