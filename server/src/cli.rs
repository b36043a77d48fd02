//! The command line: `serve`, `devices`, `run`, and the hidden `worker`. Every flag can
//! also be set by a `GPULAB_*` environment variable.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gpulab_shared::Params;

use crate::api::{self, AppState};
use crate::devices::DeviceInventory;
use crate::jobs::{JobService, JobSettings, WorkerCommand};
use crate::kernels::{self, ResolvedParams};
use crate::store::{JobStore, Retention, StoreOptions};
use crate::telemetry::TelemetryHub;
use crate::worker;

#[derive(Debug, Parser)]
#[command(
    name = "gpulab",
    version,
    about = "See and exercise the GPUs of a machine from a browser."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the REST API and the browser UI.
    Serve(Box<ServeArgs>),
    /// Print the devices: the original one-line answer, then a table.
    Devices,
    /// Run one job without the server and print its result as JSON.
    Run(RunArgs),
    /// Diagnose devices without the server: exit code 0 all pass, 1 a warning, 2 a failure,
    /// 3 it could not run.
    Diag(crate::diag::command::DiagArgs),
    /// Ask the server on `--addr` whether it is healthy: exit code 0 when it is (the
    /// container's HEALTHCHECK).
    Health {
        /// The address the server listens on; a wildcard address is asked on loopback.
        #[arg(long, env = "GPULAB_ADDR", default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// How long to wait for the answer, in seconds.
        #[arg(long, default_value_t = 3)]
        timeout_s: u64,
    },
    /// The worker process that owns one device (started by the server).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        device: String,
        /// The server that started this worker: the worker exits when it dies.
        #[arg(long)]
        server_pid: u32,
        #[arg(long)]
        enable_test_faults: bool,
        /// A directory (or file) the worker must not touch: the server's data directory,
        /// its token file. Repeatable.
        #[arg(long)]
        deny_dir: Vec<PathBuf>,
    },
    /// Accounts of lab mode, in `--data-dir` (also while the server runs): add, list,
    /// disable, enable, rotate a key.
    Users(crate::lab::command::UsersArgs),
    /// Print NVRTC's and cuBLAS's status as JSON (the server asks a child process).
    #[command(hide = true)]
    CudaLibraries,
    /// Measure the CPU's memory bandwidth (STREAM-style) and print the peak as JSON (the
    /// server asks a child process, so that its arrays never count in the server's memory).
    #[command(hide = true)]
    MeasureBandwidth,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (the container uses 0.0.0.0:8080).
    #[arg(long, env = "GPULAB_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Where the job history (SQLite) lives.
    #[arg(long, env = "GPULAB_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The built UI (trunk's dist/ folder).
    #[arg(long, env = "GPULAB_STATIC_DIR", default_value = "./dist")]
    pub static_dir: PathBuf,
    /// When set, changes (POST, DELETE) need `Authorization: Bearer <token>`. Prefer
    /// GPULAB_TOKEN or --token-file: a token on the command line shows in `ps`.
    #[arg(long, env = "GPULAB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file whose content (blanks trimmed) is the token.
    #[arg(long, env = "GPULAB_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Serve without a token even when listening beyond loopback, where a token is
    /// otherwise made up at start and printed to the log.
    #[arg(long, env = "GPULAB_NO_TOKEN", conflicts_with_all = ["token", "token_file"])]
    pub no_token: bool,
    /// Reads need the token too (`--protect-reads=false` to leave them open). Default: on
    /// when there is a token and the server listens beyond loopback.
    #[arg(long, env = "GPULAB_PROTECT_READS", num_args = 0..=1, default_missing_value = "true",
          require_equals = true)]
    pub protect_reads: Option<bool>,
    /// A host name the server answers to besides IP addresses and localhost (a guard
    /// against DNS rebinding); repeat, or separate with commas; `*` allows any.
    #[arg(
        long = "allowed-host",
        env = "GPULAB_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "GPULAB_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds after which a connection that sent and received nothing is closed (20 or
    /// more: an open event stream sends something every 15 s).
    #[arg(long, env = "GPULAB_IDLE_TIMEOUT_S", default_value_t = 60)]
    pub idle_timeout_s: u64,
    /// Jobs that may wait per device before submissions get 429.
    #[arg(long, env = "GPULAB_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,
    /// Timeout of a job that names none, in seconds.
    #[arg(long, env = "GPULAB_DEFAULT_TIMEOUT_S", default_value_t = 60.0)]
    pub default_timeout_s: f64,
    /// The longest timeout a job may ask for, in seconds.
    #[arg(long, env = "GPULAB_MAX_TIMEOUT_S", default_value_t = 600.0)]
    pub max_timeout_s: f64,
    /// Lab mode: the most jobs one user may have queued over all devices (not admins).
    #[arg(long, env = "GPULAB_USER_MAX_QUEUED", default_value_t = 100)]
    pub user_max_queued: usize,
    /// Lab mode: the most jobs one user may run at once over all devices (not admins);
    /// default: the number of devices.
    #[arg(long, env = "GPULAB_USER_MAX_RUNNING")]
    pub user_max_running: Option<usize>,
    /// Lab mode: the longest timeout one user's job may ask for, in seconds (not admins);
    /// default: --max-timeout-s.
    #[arg(long, env = "GPULAB_USER_MAX_TIMEOUT_S")]
    pub user_max_timeout_s: Option<f64>,
    /// Accept the hidden `_test_fault` kernel that hangs or crashes a worker. Tests only.
    #[arg(long, hide = true)]
    pub enable_test_faults: bool,
    /// Finished jobs (and their images) are deleted this many days after they ended, at
    /// start and every minute; 0 keeps them however old. Queued and running jobs are never
    /// deleted.
    #[arg(
        long,
        env = "GPULAB_RETENTION_DAYS",
        default_value_t = 30,
        allow_negative_numbers = true
    )]
    pub retention_days: u32,
    /// The oldest finished jobs are deleted while the job history holds more than this many
    /// MiB (checked after every write and every minute); 0 sets no bound. The file keeps its
    /// largest size and reuses the freed space.
    #[arg(
        long,
        env = "GPULAB_RETENTION_MAX_MB",
        default_value_t = 1024,
        allow_negative_numbers = true
    )]
    pub retention_max_mb: u64,
    /// A Prometheus that scrapes the gpulab nodes (`http://prometheus:9090`): the Fleet page
    /// (`GET /api/fleet`) lists them from it.
    #[arg(long, env = "GPULAB_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// The URL of a node's own gpulab on the Fleet page, from its scrape target:
    /// `{instance}`, `{host}`, `{port}` and `{job}` are replaced by the node's. A target
    /// label `gpulab_url` set by relabelling wins.
    #[arg(long, env = "GPULAB_FLEET_NODE_URL", default_value = crate::fleet::DEFAULT_NODE_URL)]
    pub fleet_node_url: String,
    /// The job history may not grow past this many SQLite pages, as if the disk were full.
    /// Tests only.
    #[arg(long, hide = true)]
    pub test_max_db_pages: Option<u64>,
    /// Every diagnostic part may run at most this many seconds, whatever its level. Tests
    /// only.
    #[arg(long, hide = true)]
    pub test_diagnostic_timeout_s: Option<f64>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A kernel of the catalog (`gpulab run --list` shows them).
    #[arg(required_unless_present = "list")]
    pub kernel: Option<String>,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// A parameter as NAME=VALUE; repeat for more.
    #[arg(long = "param", short = 'p', value_parser = parse_param)]
    pub params: Vec<(String, serde_json::Value)>,
    /// Timed repetitions after the warm-up.
    #[arg(long, default_value_t = 10)]
    pub repetitions: u32,
    /// List the kernels and their parameters.
    #[arg(long)]
    pub list: bool,
}

fn parse_param(s: &str) -> Result<(String, serde_json::Value), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    // Numbers and booleans as JSON; anything else as a string.
    let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::from(value));
    Ok((name.to_string(), value))
}

/// Runs the command line; returns the process exit code.
pub fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        // clap exits 2 on a bad argument, which `gpulab diag` uses for a failure.
        if e.use_stderr() && std::env::args().nth(1).as_deref() == Some("diag") {
            let _ = e.print();
            std::process::exit(crate::diag::command::COULD_NOT_RUN.into());
        }
        e.exit()
    });
    match cli.command {
        Command::Worker {
            device,
            server_pid,
            enable_test_faults,
            deny_dir,
        } => {
            init_logging();
            worker::run(&device, server_pid, enable_test_faults, &deny_dir)?;
        }
        Command::Serve(args) => {
            init_logging();
            let runtime = tokio::runtime::Runtime::new()?;
            let served = runtime.block_on(serve(*args));
            // Blocking tasks still running (a store write, a telemetry read) get a moment,
            // not a wait without end: the process is about to exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            served?;
        }
        Command::Devices => {
            let inventory = DeviceInventory::detect();
            println!("{}\n", inventory.pycuda_line());
            print!("{}", inventory.table());
        }
        Command::Run(args) => return run(args),
        Command::Diag(args) => {
            // Exit codes 1 and 2 mean a warning and a failure: an error is "could not run".
            let code = crate::diag::command::run(args).unwrap_or_else(|e| {
                eprintln!("gpulab diag: {e:#}");
                crate::diag::command::COULD_NOT_RUN
            });
            return Ok(code.into());
        }
        Command::Health { addr, timeout_s } => {
            let timeout = std::time::Duration::from_secs(timeout_s.max(1));
            match crate::probe::check_health(addr, timeout) {
                Ok(health) => println!("{health}"),
                Err(error) => {
                    eprintln!("gpulab: unhealthy: {error:#}");
                    return Ok(std::process::ExitCode::FAILURE);
                }
            }
        }
        Command::Users(args) => return crate::lab::command::run(args),
        Command::CudaLibraries => {
            println!("{}", serde_json::to_string(&crate::cuda::libraries())?);
        }
        Command::MeasureBandwidth => {
            // The server may be gone by the time the measurement ends (a test stops it at
            // once): nobody is left to read the answer, which is no error of ours.
            let peak = serde_json::to_string(crate::peaks::stream::measure_now())?;
            let _ = writeln!(std::io::stdout(), "{peak}");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GPULAB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: a worker's stdout is its kernels' printf.
    // Colours only on a terminal: `docker logs`, files and the server (which passes its
    // workers' lines on) get plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The longest `--retention-days`: a hundred years.
const MAX_RETENTION_DAYS: u32 = 36_500;
/// The largest `--retention-max-mb`: 1 TiB.
const MAX_RETENTION_MB: u64 = 1 << 20;

/// How long the server waits, after SIGTERM, for open requests to end before it stops
/// anyway: well inside the 10 s that `docker stop` gives before it kills.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The token the server runs with, and whether it made it up.
enum TokenSource {
    None,
    Given(String),
    Generated(String),
}

impl ServeArgs {
    /// The token: given (flag, environment or file), made up (listening beyond loopback
    /// with none given, unless `--no-token`), or none.
    fn resolve_token(&self) -> anyhow::Result<TokenSource> {
        let given = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read the token file {}", file.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        match given {
            Some(token) if token.is_empty() => {
                anyhow::bail!(
                    "the token is empty: give a token, or --no-token to serve without one"
                )
            }
            Some(token) if token.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                anyhow::bail!("the token may not contain blanks or control characters")
            }
            Some(token) => Ok(TokenSource::Given(token)),
            None if self.no_token || self.addr.ip().is_loopback() => Ok(TokenSource::None),
            None => Ok(TokenSource::Generated(api::security::Token::generate())),
        }
    }

    fn store_options(&self) -> anyhow::Result<StoreOptions> {
        anyhow::ensure!(
            self.retention_days <= MAX_RETENTION_DAYS,
            "--retention-days must be from 0 (keep every job) to {MAX_RETENTION_DAYS}, got {}",
            self.retention_days
        );
        anyhow::ensure!(
            self.retention_max_mb <= MAX_RETENTION_MB,
            "--retention-max-mb must be from 0 (no bound) to {MAX_RETENTION_MB} (1 TiB), got {}",
            self.retention_max_mb
        );
        Ok(StoreOptions {
            retention: Retention {
                max_age: (self.retention_days > 0)
                    .then(|| chrono::TimeDelta::days(self.retention_days.into())),
                max_bytes: (self.retention_max_mb > 0).then_some(self.retention_max_mb << 20),
            },
            max_page_count: self.test_max_db_pages,
        })
    }

    fn job_settings(&self) -> anyhow::Result<JobSettings> {
        let settings = JobSettings {
            worker: WorkerCommand {
                exe: std::env::current_exe().context("cannot find the gpulab binary")?,
                test_faults: self.enable_test_faults,
                // Absolute: workers run in `/`.
                deny: std::iter::once(&self.data_dir)
                    .chain(&self.token_file)
                    .map(std::path::absolute)
                    .collect::<Result<_, _>>()
                    .context("cannot find --data-dir or --token-file")?,
            },
            queue_capacity: self.queue_capacity,
            default_timeout_s: self.default_timeout_s,
            max_timeout_s: self.max_timeout_s,
            diagnostic_timeout_s: self.test_diagnostic_timeout_s,
            user_limits: crate::jobs::UserLimits {
                max_queued: self.user_max_queued,
                max_running: self.user_max_running,
                max_timeout_s: self.user_max_timeout_s,
            },
        };
        settings.validate()?;
        anyhow::ensure!(
            (1..=65_536).contains(&self.max_connections),
            "--max-connections must be from 1 to 65536, got {}",
            self.max_connections
        );
        anyhow::ensure!(
            (20..=86_400).contains(&self.idle_timeout_s),
            "--idle-timeout-s must be from 20 to 86400 seconds, got {}",
            self.idle_timeout_s
        );
        Ok(settings)
    }
}

/// Starts the server and serves until Ctrl-C or SIGTERM; then every job still queued or
/// running ends `interrupted`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // First of all, so that a stop asked for while the server starts (`docker stop` right
    // after `docker run`) is not lost: as PID 1 an unhandled SIGTERM is ignored.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let settings = args.job_settings()?;
    let store_options = args.store_options()?;
    let token = args.resolve_token()?;
    anyhow::ensure!(
        !matches!(token, TokenSource::None) || args.protect_reads != Some(true),
        "--protect-reads needs a token to protect the reads with: give one (GPULAB_TOKEN or \
         --token-file), or leave --protect-reads out"
    );
    let allowed_hosts =
        api::security::AllowedHosts::new(&args.allowed_hosts).map_err(anyhow::Error::msg)?;
    let fleet = args
        .prometheus_url
        .as_deref()
        .map(|url| crate::fleet::FleetReader::new(url, &args.fleet_node_url))
        .transpose()
        .map_err(anyhow::Error::msg)?
        .map(Arc::new);
    if let Some(fleet) = &fleet {
        tracing::info!(
            "the Fleet page reads the nodes from Prometheus at {}",
            fleet.prometheus_url()
        );
    }
    if args.token.is_some() && std::env::var_os("GPULAB_TOKEN").is_none() {
        tracing::warn!(
            "the token was given on the command line, where `ps` shows it to every user of \
             this machine: prefer GPULAB_TOKEN or --token-file"
        );
    }
    let inventory = Arc::new(tokio::task::spawn_blocking(DeviceInventory::detect).await?);
    crate::peaks::stream::start();
    match &inventory.cuda.reason {
        None => tracing::info!("{}", inventory.pycuda_line()),
        Some(reason) => tracing::warn!("no CUDA devices: {reason}"),
    }
    let store = JobStore::open_with(&args.data_dir, store_options)?;
    if args.enable_test_faults {
        tracing::warn!("test faults are enabled: `_test_fault` jobs hang or crash workers");
    }
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let jobs = JobService::start(store.clone(), inventory.clone(), settings).await?;
    let telemetry = TelemetryHub::start(
        inventory.clone(),
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(600),
    );
    let sampled = telemetry.clone();
    jobs.watch_free_memory(Box::new(move |device| sampled.free_memory_bytes(device)));
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let secret = match &token {
        TokenSource::None => None,
        TokenSource::Given(t) | TokenSource::Generated(t) => Some(t.as_str()),
    };
    let beyond_loopback = !addr.ip().is_loopback();
    let access = api::security::Access {
        token: secret.map(api::security::Token::new),
        protect_reads: secret.is_some() && args.protect_reads.unwrap_or(beyond_loopback),
        allowed_hosts,
    };
    let reads = if access.protect_reads {
        "changes and reads"
    } else {
        "changes"
    };
    match &token {
        TokenSource::Generated(t) => tracing::warn!(
            "no token was given and the server listens on {addr}, beyond this machine: {reads} \
             need this token, made up for this run (set GPULAB_TOKEN or --token-file to keep \
             one, or --no-token to serve without). Open http://127.0.0.1:{}/?token={t} \
             (or this machine's address instead of 127.0.0.1), or send \
             `Authorization: Bearer {t}`",
            addr.port()
        ),
        TokenSource::Given(_) => tracing::info!("{reads} need the token"),
        TokenSource::None if beyond_loopback => tracing::warn!(
            "--no-token: anyone who can reach {addr} can run jobs on this machine's devices"
        ),
        TokenSource::None => {}
    }
    let access = Arc::new(access);
    let state = AppState {
        lab: crate::lab::Lab::new(store.clone(), access.clone()),
        telemetry,
        shutdown,
        inventory,
        jobs: jobs.clone(),
        access,
        event_clients: Default::default(),
        fleet,
    };
    let app = api::app(state, Some(args.static_dir.clone()));
    // Scripts and tests read this line to find the port when --addr asks for port 0.
    println!("gpulab listening on http://{addr}");
    tracing::info!(data_dir = %args.data_dir.display(), static_dir = %args.static_dir.display(), "serving");
    let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        api::listener::LimitedListener::new(
            listener,
            args.max_connections,
            std::time::Duration::from_secs(args.idle_timeout_s),
        ),
        app,
    )
    .with_graceful_shutdown(async move {
        shutdown_signal(term).await;
        let _ = stop_tx.send(());
        // Ends the event streams, which would otherwise keep the server waiting for
        // every open browser tab.
        let _ = shutdown_tx.send(true);
    });
    let stopped_in_time = async move {
        let _ = stop.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served?,
        () = stopped_in_time => tracing::warn!(
            "requests were still open {SHUTDOWN_GRACE:?} after the signal to stop: stopping anyway"
        ),
    }
    match jobs.interrupt_unfinished().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("{n} queued or running job(s) ended `interrupted` by the stop"),
        Err(e) => tracing::error!("cannot mark the unfinished jobs interrupted: {e:#}"),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal(mut term: tokio::signal::unix::Signal) {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// `gpulab run`: one job in this process, its result as JSON on stdout.
fn run(args: RunArgs) -> anyhow::Result<std::process::ExitCode> {
    if args.list {
        for spec in kernels::specs() {
            println!("{}: {}", spec.name, spec.description);
            for p in &spec.params {
                println!("    {} (default {}): {}", p.name, p.default, p.help);
            }
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let name = args.kernel.unwrap_or_default();
    let kernel = kernels::find(&name).with_context(|| {
        let names = kernels::names();
        format!(
            "unknown kernel `{name}`; the catalog has: {}",
            names.join(", ")
        )
    })?;
    let kind = worker::device_kind(&args.device)
        .with_context(|| format!("unknown device `{}`: use cpu or cuda:N", args.device))?;
    let spec = kernel.spec();
    anyhow::ensure!(
        spec.devices.contains(&kind),
        "`{name}` does not run on {} devices",
        kind.as_str()
    );
    let given: Params = args.params.into_iter().collect();
    let params =
        ResolvedParams::resolve(&spec.params, Some(&given)).map_err(|e| anyhow::anyhow!(e))?;
    let echoed = params.as_map().clone();
    let mut device = worker::Device::open(&args.device)?;
    let outcome = worker::execute(
        &mut device,
        &name,
        params.into_map(),
        args.repetitions,
        |_, _| {},
    )
    .map_err(|e| e.message);
    let outcome = outcome.map(|mut o| {
        crate::peaks::judge_cli_result(&mut o.result, &name, &echoed, &args.device);
        o
    });
    let (ok, body) = match outcome {
        Ok(o) => (
            o.result.verification.passed,
            serde_json::json!({"kernel": name, "device": args.device, "params": echoed, "status":
                if o.result.verification.passed { "succeeded" } else { "failed" }, "result": o.result}),
        ),
        Err(e) => (
            false,
            serde_json::json!({"kernel": name, "device": args.device, "params": echoed, "status": "failed", "error": e}),
        ),
    };
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_as_json_or_string() {
        assert_eq!(
            parse_param("n=1000000").unwrap(),
            ("n".into(), serde_json::json!(1000000))
        );
        assert_eq!(
            parse_param("a=2.5").unwrap(),
            ("a".into(), serde_json::json!(2.5))
        );
        assert_eq!(
            parse_param("variant=tiled").unwrap(),
            ("variant".into(), serde_json::json!("tiled"))
        );
        assert!(parse_param("n").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
