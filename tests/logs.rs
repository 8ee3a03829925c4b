//! The controller's log lines as an operator reads them: written to stderr, plain text without
//! colour codes when stderr is not a terminal (a file, a pipe, `kubectl logs`), one JSON object
//! per line with `--log-format json`, and the CLI's own errors on one line.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::monitoring::free_port;

/// A kubeconfig for an API server that is not there: the controller starts, serves its
/// endpoints and logs, and its watches fail.
fn kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let port = free_port();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \
             \"http://127.0.0.1:{port}\"}}\ncontexts:\n- name: c\n  context: {{cluster: c, \
             user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .expect("writing the kubeconfig");
    path
}

/// Runs `pulsar-autoscaler run` with `extra` flags until it has logged that it serves its
/// endpoints, stops it with SIGTERM, and returns (stdout, stderr).
fn run_controller(extra: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path());
    let addr = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .args(["run", "--kubeconfig"])
        .arg(&config)
        .args(["--metrics-addr", &addr])
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("starting pulsar-autoscaler run");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("serving /metrics") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let a watch fail at least once, then stop the controller the way Kubernetes does.
    std::thread::sleep(Duration::from_secs(2));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    (stdout, stderr)
}

#[test]
fn text_logs_into_a_file_carry_no_colour_codes() {
    let (stdout, stderr) = run_controller(&[]);
    assert!(stderr.contains("serving /metrics"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a file: {stderr:?}"
    );
    assert!(stderr.lines().any(|l| l.contains(" INFO ")), "{stderr}");
    assert!(stdout.is_empty(), "logs belong on stderr: {stdout}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (stdout, stderr) = run_controller(&["--log-format", "json"]);
    assert!(stdout.is_empty(), "logs belong on stderr: {stdout}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    let mut serving = false;
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["message"].is_string(), "{line}");
        if value["message"] == "serving /metrics, /healthz, /readyz" {
            serving = true;
            assert!(
                value["addr"].is_string(),
                "fields are top-level keys: {line}"
            );
        }
    }
    assert!(serving, "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

#[test]
fn cli_errors_name_each_cause_once_on_one_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_pulsar-autoscaler"))
        .args([
            "backtest",
            "--policy",
            "/nonexistent/policy.yaml",
            "--trace",
            "x.csv",
        ])
        .output()
        .expect("running backtest");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains("/nonexistent/policy.yaml"), "{stderr}");
    // The operating system's words appear once, not once per wrapping layer.
    assert_eq!(
        lines[0].matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}
