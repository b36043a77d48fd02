//! The command line: `serve`, `devices`, `run`, and the hidden `worker`. Every flag can
//! also be set by a `GPULAB_*` environment variable.

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
use crate::store::JobStore;
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
    Serve(ServeArgs),
    /// Print the devices: the original one-line answer, then a table.
    Devices,
    /// Run one job without the server and print its result as JSON.
    Run(RunArgs),
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
    },
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
    /// When set, POST and DELETE need `Authorization: Bearer <token>`.
    #[arg(long, env = "GPULAB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Jobs that may wait per device before submissions get 429.
    #[arg(long, env = "GPULAB_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,
    /// Timeout of a job that names none, in seconds.
    #[arg(long, env = "GPULAB_DEFAULT_TIMEOUT_S", default_value_t = 60.0)]
    pub default_timeout_s: f64,
    /// The longest timeout a job may ask for, in seconds.
    #[arg(long, env = "GPULAB_MAX_TIMEOUT_S", default_value_t = 600.0)]
    pub max_timeout_s: f64,
    /// Accept the hidden `_test_fault` kernel that hangs or crashes a worker. Tests only.
    #[arg(long, hide = true)]
    pub enable_test_faults: bool,
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
    let cli = Cli::parse();
    match cli.command {
        Command::Worker {
            device,
            server_pid,
            enable_test_faults,
        } => {
            init_logging();
            worker::run(&device, server_pid, enable_test_faults)?;
        }
        Command::Serve(args) => {
            init_logging();
            tokio::runtime::Runtime::new()?.block_on(serve(args))?;
        }
        Command::Devices => {
            let inventory = DeviceInventory::detect();
            println!("{}\n", inventory.pycuda_line());
            print!("{}", inventory.table());
        }
        Command::Run(args) => return run(args),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GPULAB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: a worker's stdout carries its protocol.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Starts the server and serves until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let inventory = Arc::new(tokio::task::spawn_blocking(DeviceInventory::detect).await?);
    match &inventory.cuda.reason {
        None => tracing::info!("{}", inventory.pycuda_line()),
        Some(reason) => tracing::warn!("no CUDA devices: {reason}"),
    }
    let store = JobStore::open(&args.data_dir)?;
    let settings = JobSettings {
        worker: WorkerCommand {
            exe: std::env::current_exe().context("cannot find the gpulab binary")?,
            test_faults: args.enable_test_faults,
        },
        queue_capacity: args.queue_capacity.max(1),
        default_timeout_s: args.default_timeout_s,
        max_timeout_s: args.max_timeout_s,
    };
    if args.enable_test_faults {
        tracing::warn!("test faults are enabled: `_test_fault` jobs hang or crash workers");
    }
    let jobs = JobService::start(store, inventory.clone(), settings).await?;
    let telemetry = TelemetryHub::start(
        inventory.clone(),
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(600),
    );
    let sampled = telemetry.clone();
    jobs.watch_free_memory(Box::new(move |device| sampled.free_memory_bytes(device)));
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let state = AppState {
        telemetry,
        shutdown,
        inventory,
        jobs,
        token: args.token.map(Arc::from),
    };
    let app = api::app(state, Some(args.static_dir.clone()));
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to find the port when --addr asks for port 0.
    println!("gpulab listening on http://{addr}");
    tracing::info!(data_dir = %args.data_dir.display(), static_dir = %args.static_dir.display(), "serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Ends the event streams, which would otherwise keep the server waiting for
            // every open browser tab.
            let _ = shutdown_tx.send(true);
        })
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail");
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
