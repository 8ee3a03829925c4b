//! The controller image, built from the Dockerfile without a Docker daemon (`scripts/image.sh`:
//! Debian's buildah with vfs storage and chroot isolation) and started here: the binary runs
//! inside it as the nonroot user, prints the committed CRD, and `run` inside the image serves
//! its health and metrics endpoints against a real kube-apiserver.
//!
//! buildah comes from `scripts/setup.d/70-buildah.sh` (Debian package) and needs root, as its
//! chroot isolation does; what does not work here is listed in docs/install.md.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::apiserver::{ApiServer, die_with_parent, from_test_env};
use support::monitoring::free_port;

const SETUP: &str = "scripts/setup.d/70-buildah.sh";

fn buildah() -> PathBuf {
    let found = std::env::var_os("BUILDAH_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| from_test_env("BUILDAH_BIN"));
    match found {
        Some(p) if p.is_file() => p,
        other => panic!(
            "buildah not found ({other:?}); run {SETUP} (or scripts/test.sh, which runs every \
             setup step), or set BUILDAH_BIN"
        ),
    }
}

fn storage(cmd: &mut Command) -> &mut Command {
    cmd.args(["--storage-driver", "vfs"])
}

/// Builds the image once per test binary (debug profile: the binary is already built).
fn image() -> &'static str {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    const TAG: &str = "pulsar-autoscaler:image-test";
    BUILT.get_or_init(|| {
        let bin = buildah();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        if let Some(dir) = bin.parent() {
            dirs.insert(0, dir.to_path_buf());
        }
        let out = Command::new("bash")
            .args(["scripts/image.sh", TAG])
            .env("PROFILE", "dev")
            .env("PATH", std::env::join_paths(dirs).expect("PATH"))
            .output()
            .expect("running scripts/image.sh");
        assert!(
            out.status.success(),
            "scripts/image.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    TAG
}

/// A working container of the image; removed when dropped.
struct Container(String);

impl Container {
    fn new(image: &str) -> Container {
        let out = storage(&mut Command::new(buildah()))
            .args(["from", image])
            .output()
            .expect("buildah from");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `buildah run` of `args` inside the container, as the image's user.
    fn command(&self, mounts: &[String], args: &[&str]) -> Command {
        let mut cmd = Command::new(buildah());
        storage(&mut cmd).args(["run", "--isolation", "chroot"]);
        for m in mounts {
            cmd.args(["--volume", m]);
        }
        cmd.arg(&self.0).arg("--").args(args);
        cmd
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = storage(&mut Command::new(buildah()))
            .args(["rm", &self.0])
            .output();
    }
}

#[test]
fn the_image_runs_the_binary_as_nonroot_from_scratch() {
    let tag = image();
    let out = storage(&mut Command::new(buildah()))
        .args(["inspect", "--type", "image", tag])
        .output()
        .expect("buildah inspect");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    let config = &info["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"][0], "/usr/local/bin/pulsar-autoscaler");
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["run", "--leader-election"])
    );
    assert!(
        std::path::Path::new("target/image/pulsar-autoscaler.oci.tar").is_file(),
        "the OCI archive to publish"
    );

    let c = Container::new(tag);
    let version = c
        .command(&[], &["/usr/local/bin/pulsar-autoscaler", "--version"])
        .output()
        .expect("buildah run");
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("pulsar-autoscaler {}", env!("CARGO_PKG_VERSION"))
    );
    let crd = c
        .command(&[], &["/usr/local/bin/pulsar-autoscaler", "crd"])
        .output()
        .expect("buildah run");
    assert_eq!(
        String::from_utf8_lossy(&crd.stdout),
        std::fs::read_to_string("crds/scalingpolicy.yaml").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_inside_the_image_serves_against_a_real_api_server() {
    let tag = image();
    let server = ApiServer::start().await;
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_yaml_ng::from_str(&std::fs::read_to_string("crds/scalingpolicy.yaml").unwrap())
            .unwrap();
    support::apiserver::apply_crd(&server.client().await, &crd).await;
    let c = Container::new(tag);
    // The kubeconfig names files in the server's directory: mount it at the same path.
    let dir = server.dir().display().to_string();
    let port = free_port();
    let mut cmd = c.command(
        &[format!("{dir}:{dir}:ro")],
        &[
            "/usr/local/bin/pulsar-autoscaler",
            "run",
            "--kubeconfig",
            &server.kubeconfig().display().to_string(),
            &format!("--metrics-addr=127.0.0.1:{port}"),
            "--log-format=json",
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("buildah run");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut metrics = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            && r.status().is_success()
        {
            metrics = r.text().await.unwrap_or_default();
            if metrics.contains("pulsar_autoscaler_leader 1") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ready = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    // Stop the controller: SIGTERM to buildah, which forwards it, then make sure.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("waiting for buildah run");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        metrics.contains("pulsar_autoscaler_leader 1"),
        "no metrics from the controller in the image: {metrics}\n{log}"
    );
    assert_eq!(ready.ok(), Some(200), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("\"message\":\"serving /metrics")),
        "{log}"
    );
}
