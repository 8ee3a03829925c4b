//! A real kube-apiserver with its own etcd, started for one test on free loopback ports.
//!
//! The binaries come from `scripts/setup.d/20-apiserver.sh` (`KUBE_APISERVER_BIN`, `ETCD_BIN`,
//! also read from `target/test-env` when the variables are unset). Everything lives in a temp
//! dir: a CA and serving certificate, a service-account signing key, a token file with an admin
//! (group `system:masters`) and any named users, etcd's data, logs, and a kubeconfig for kubectl.
//! Dropping [`ApiServer`] kills both processes and removes the dir, also when a test panics.
//!
//! Authorization is RBAC only, so a named user or a ServiceAccount can do nothing until a test
//! binds a role to it. There is no controller-manager: nothing creates pods, default
//! ServiceAccounts or garbage-collects, and namespaces never finish deleting.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

/// Name of the setup step that provides the binaries, quoted in every "missing binary" error.
const SETUP: &str = "scripts/setup.d/20-apiserver.sh";
/// Upper bound for the servers to come up on a busy 2-core machine; only a failure waits this long.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a CRD to become Established or an RBAC change to be seen.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(200);
/// Service CIDR the apiserver allocates ClusterIPs from; never routed anywhere.
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Issuer and audience of ServiceAccount tokens, as in a kubeadm cluster.
const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A user in the apiserver's token file.
#[derive(Debug, Clone)]
pub struct User {
    /// User name as RBAC subjects see it.
    pub name: String,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
    /// Bearer token.
    pub token: String,
}

/// Options for [`ApiServer`]; start with [`ApiServer::builder`].
#[derive(Debug, Default, Clone)]
pub struct Builder {
    users: Vec<(String, Vec<String>)>,
    extra_args: Vec<String>,
}

impl Builder {
    /// Adds a token-authenticated user with no rights until a test binds a role to it.
    pub fn user(mut self, name: &str, groups: &[&str]) -> Self {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        self.users.push((name.to_string(), groups));
        self
    }

    /// Appends a kube-apiserver flag such as `--feature-gates=...`; later flags win.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }

    /// Starts etcd and kube-apiserver and waits until `/readyz` passes; panics with the reason
    /// (and the tail of the server's log) when it cannot.
    pub async fn start(self) -> ApiServer {
        match self.try_start().await {
            Ok(server) => server,
            Err(e) => panic!("test API server did not start: {e:#}"),
        }
    }

    /// Like [`Builder::start`], returning the error instead of panicking.
    pub async fn try_start(self) -> Result<ApiServer> {
        let etcd_bin = binary("ETCD_BIN", "etcd")?;
        let apiserver_bin = binary("KUBE_APISERVER_BIN", "kube-apiserver")?;
        // A port picked free may be taken before the server binds it; that is worth a retry.
        let mut attempt = 1;
        loop {
            match start_once(&self, &etcd_bin, &apiserver_bin).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A running etcd + kube-apiserver pair; dropping it stops both and removes their files.
pub struct ApiServer {
    // Field order is drop order: the apiserver goes before its etcd, the files go last.
    apiserver: Process,
    etcd: Process,
    url: String,
    admin: User,
    users: Vec<User>,
    kubeconfig: PathBuf,
    ca_file: PathBuf,
    dir: tempfile::TempDir,
}

impl ApiServer {
    /// Options: extra users and flags.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts a server with the defaults (admin user only).
    pub async fn start() -> ApiServer {
        Builder::default().start().await
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig with an `admin` context (current) and one context per named user.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Directory holding certificates, keys, logs and etcd's data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process ids of kube-apiserver and etcd, for benchmarks that read their CPU and memory.
    pub fn pids(&self) -> (u32, u32) {
        (self.apiserver.child.id(), self.etcd.child.id())
    }

    /// Log of kube-apiserver so far, for failure messages.
    pub fn apiserver_log(&self) -> String {
        fs::read_to_string(&self.apiserver.log).unwrap_or_default()
    }

    /// A client authenticated as the admin (group `system:masters`, bypasses RBAC).
    pub async fn client(&self) -> Client {
        self.token_client(&self.admin.token).await
    }

    /// A client authenticated as a named user given to [`Builder::user`].
    pub async fn user_client(&self, name: &str) -> Client {
        let user = self
            .users
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no user {name:?}; add it with ApiServer::builder().user"));
        self.token_client(&user.token).await
    }

    /// A client that sends this bearer token.
    pub async fn token_client(&self, token: &str) -> Client {
        let yaml = kubeconfig_yaml(&self.url, &self.ca_file, &[("user", token)]);
        client_from_kubeconfig(&yaml)
            .await
            .expect("client for the test API server")
    }

    /// A token of ServiceAccount `namespace/name` (created when absent) from a TokenRequest,
    /// as a pod's projected token would be.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let admin = self.client().await;
        ensure_namespace(&admin, namespace).await;
        let accounts: Api<ServiceAccount> = Api::namespaced(admin, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating ServiceAccount {namespace}/{name}: {e}"),
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![SA_ISSUER.to_string()],
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"))
            .status
            .map(|s| s.token)
            .unwrap_or_else(|| panic!("TokenRequest for {namespace}/{name} returned no token"))
    }

    /// A client acting as the ServiceAccount `namespace/name` (created when missing).
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        let token = self.service_account_token(namespace, name).await;
        self.token_client(&token).await
    }

    /// Writes a kubeconfig for `token` into the server's dir, for processes under test.
    pub fn write_kubeconfig(&self, file: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(file);
        fs::write(
            &path,
            kubeconfig_yaml(&self.url, &self.ca_file, &[("user", token)]),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

/// Creates a namespace unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// Server-side applies a CRD and waits until it is Established, i.e. served.
pub async fn apply_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
) -> CustomResourceDefinition {
    let name = crd.metadata.name.clone().expect("CRD has a name");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("pulsar-autoscaler-tests").force();
    crds.patch(&name, &params, &Patch::Apply(crd))
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
    let established = await_condition(crds, &name, conditions::is_crd_established());
    match tokio::time::timeout(SETTLE_TIMEOUT, established).await {
        Ok(Ok(Some(crd))) => crd,
        Ok(Ok(None)) => panic!("CRD {name} disappeared while waiting for Established"),
        Ok(Err(e)) => panic!("watching CRD {name}: {e}"),
        Err(_) => panic!("CRD {name} not Established within {SETTLE_TIMEOUT:?}"),
    }
}

/// Retries `check` until it returns `Ok`, or panics with its last error after a generous timeout.
/// For what the server makes true eventually, such as an RBAC binding taking effect.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("{what}: still failing: {e:#}"),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// A child process that is killed and reaped when dropped.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, bin: &Path, args: &[String], log: PathBuf) -> Result<Process> {
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", bin.display()))?;
        Ok(Process { name, child, log })
    }

    /// Fails with the log's tail when the process has exited.
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(anyhow!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                self.log_tail()
            )),
            Err(e) => Err(anyhow!("waiting for {}: {e}", self.name)),
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the kernel kill the server if the test process dies without running destructors
/// (killed by a timeout, or aborted), so no etcd or apiserver outlives its test run.
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// Resolves a binary from the environment, or from `target/test-env` that setup writes.
fn binary(var: &str, what: &str) -> Result<PathBuf> {
    let path = match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => from_test_env(var),
    };
    match path {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => bail!(
            "{var}={} does not exist; run {SETUP} to build or install {what}",
            p.display()
        ),
        None => bail!(
            "{what} not found: {var} is unset and target/test-env does not name it; run {SETUP} \
             (or scripts/test.sh, which runs every setup step) to build or install it"
        ),
    }
}

pub fn from_test_env(var: &str) -> Option<PathBuf> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-env");
    let text = fs::read_to_string(file).ok()?;
    let prefix = format!("{var}=");
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(PathBuf::from)
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// 128 random bits, hex-encoded.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Writes the CA, the serving certificate and the ServiceAccount signing key into `dir`.
fn write_pki(dir: &Path) -> Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pulsar-autoscaler test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    let sa_key = KeyPair::generate()?;
    fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    fs::write(dir.join("apiserver.crt"), serving_cert.pem())?;
    fs::write(dir.join("apiserver.key"), serving_key.serialize_pem())?;
    fs::write(dir.join("sa.key"), sa_key.serialize_pem())?;
    fs::write(dir.join("sa.pub"), sa_key.public_key_pem())?;
    Ok(())
}

/// A kubeconfig for one cluster; the first user's context is current.
fn kubeconfig_yaml(url: &str, ca: &Path, users: &[(&str, &str)]) -> String {
    let mut y = String::new();
    let _ = writeln!(y, "apiVersion: v1\nkind: Config\nclusters:");
    let _ = writeln!(
        y,
        "- name: test\n  cluster:\n    server: {url}\n    certificate-authority: {}",
        ca.display()
    );
    let _ = writeln!(y, "users:");
    for (name, token) in users {
        let _ = writeln!(y, "- name: {name}\n  user:\n    token: {token}");
    }
    let _ = writeln!(y, "contexts:");
    for (name, _) in users {
        let _ = writeln!(
            y,
            "- name: {name}\n  context:\n    cluster: test\n    user: {name}\n    namespace: default"
        );
    }
    if let Some((first, _)) = users.first() {
        let _ = writeln!(y, "current-context: {first}");
    }
    y
}

async fn client_from_kubeconfig(yaml: &str) -> Result<Client> {
    // kube needs a process-wide rustls provider; another test may have installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::from_yaml(yaml)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn start_once(opts: &Builder, etcd_bin: &Path, apiserver_bin: &Path) -> Result<ApiServer> {
    let dir = tempfile::Builder::new()
        .prefix("pulsar-autoscaler-apiserver-")
        .tempdir()
        .context("creating a temp dir")?;
    let path = dir.path().to_path_buf();
    write_pki(&path).context("generating certificates and keys")?;

    let admin = User {
        name: "admin".into(),
        groups: vec!["system:masters".into()],
        token: random_token()?,
    };
    let mut users = Vec::new();
    for (name, groups) in &opts.users {
        users.push(User {
            name: name.clone(),
            groups: groups.clone(),
            token: random_token()?,
        });
    }
    // Format: token,user,uid,"group1,group2".
    let mut tokens = String::new();
    for u in std::iter::once(&admin).chain(&users) {
        let _ = writeln!(
            tokens,
            "{},{},{},\"{}\"",
            u.token,
            u.name,
            u.name,
            u.groups.join(",")
        );
    }
    fs::write(path.join("tokens.csv"), tokens)?;

    let (client_port, peer_port, secure_port) = (free_port()?, free_port()?, free_port()?);
    let etcd_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let etcd_args: Vec<String> = vec![
        "--name=test".into(),
        format!("--data-dir={}", path.join("etcd").display()),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=test={peer_url}"),
        // Test data is thrown away; fsync only slows every write on a shared disk.
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ];
    let mut etcd = Process::spawn("etcd", etcd_bin, &etcd_args, path.join("etcd.log"))?;
    wait_for_port(&mut etcd, client_port).await?;

    let p = |f: &str| path.join(f).display().to_string();
    let mut args: Vec<String> = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={secure_port}"),
        format!("--cert-dir={}", p("certs")),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
        format!("--token-auth-file={}", p("tokens.csv")),
        "--authorization-mode=RBAC".into(),
        format!("--service-account-issuer={SA_ISSUER}"),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        // No controller-manager or kubelets: nobody else maintains the kubernetes Endpoints.
        "--endpoint-reconciler-type=none".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    args.extend(opts.extra_args.iter().cloned());
    let apiserver = Process::spawn(
        "kube-apiserver",
        apiserver_bin,
        &args,
        path.join("apiserver.log"),
    )?;

    let url = format!("https://127.0.0.1:{secure_port}");
    let ca_file = path.join("ca.crt");
    let mut named: Vec<(&str, &str)> = vec![("admin", &admin.token)];
    named.extend(users.iter().map(|u| (u.name.as_str(), u.token.as_str())));
    let kubeconfig = path.join("kubeconfig");
    fs::write(&kubeconfig, kubeconfig_yaml(&url, &ca_file, &named))?;

    let mut server = ApiServer {
        apiserver,
        etcd,
        url,
        admin,
        users,
        kubeconfig,
        ca_file,
        dir,
    };
    server.wait_ready().await?;
    Ok(server)
}

/// Waits until etcd accepts connections on its client port.
async fn wait_for_port(process: &mut Process, port: u16) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        process.check_running()?;
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} not listening on {port} after {START_TIMEOUT:?}; log:\n{}",
                process.name,
                process.log_tail()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

impl ApiServer {
    /// Polls `/readyz` (every check, post-start hooks included), then waits for the `default`
    /// namespace that the server's own bootstrap creates, so tests can use it at once.
    async fn wait_ready(&mut self) -> Result<()> {
        let client = client_from_kubeconfig(&kubeconfig_yaml(
            &self.url,
            &self.ca_file,
            &[("admin", &self.admin.token)],
        ))
        .await?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("no answer yet");
        loop {
            self.etcd.check_running()?;
            self.apiserver.check_running()?;
            if self.probe(&client, &mut last).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "kube-apiserver not ready after {START_TIMEOUT:?}: {last}\nits log ends with:\n{}",
                    self.apiserver.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn probe(&self, client: &Client, last: &mut String) -> bool {
        let request = http::Request::get("/readyz?verbose")
            .body(Vec::new())
            .expect("static request");
        if let Err(e) = client.request_text(request).await {
            *last = format!("/readyz: {e}");
            return false;
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        match namespaces.get_opt("default").await {
            Ok(Some(_)) => true,
            Ok(None) => {
                *last = "namespace default not created yet".into();
                false
            }
            Err(e) => {
                *last = format!("reading namespace default: {e}");
                false
            }
        }
    }
}
