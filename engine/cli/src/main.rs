//! `dossier`: the command line of the Dossier workflow engine.

mod bench;
mod bench_webhook;
mod commands;
mod serve;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dossier",
    version,
    about = "Dossier — durable workflows for business processes"
)]
struct Cli {
    /// The project directory (holding workflows/, rules/, templates/); default: found from the
    /// current directory upwards.
    #[arg(long, global = true)]
    project: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check workflows, rules and templates; exit 1 on any error.
    Validate {
        /// Files or folders to report on (default: the whole project).
        paths: Vec<PathBuf>,
    },
    /// Run rule test tables (rules/*.test.yaml) and workflow tests (workflows/*.test.yaml).
    Test {
        /// Test files or folders (default: every test of the project).
        paths: Vec<PathBuf>,
    },
    /// Run one case to its end in virtual time and print its timeline.
    Run {
        /// Workflow id.
        workflow: String,
        /// JSON file with the case input.
        #[arg(long)]
        input: PathBuf,
        /// Virtual start instant (RFC 3339); default: now.
        #[arg(long)]
        start: Option<String>,
        /// How far virtual time may run (ISO 8601 duration).
        #[arg(long, default_value = "P400D")]
        horizon: String,
    },
    /// Print a Mermaid flowchart of a workflow.
    Graph { workflow: String },
    /// Print the JSON Schema of the workflow format.
    Schema,
    /// Verify a case's hash chain and re-run it with its pinned workflow and rules.
    Replay {
        /// Case id (with --db) — or use --file.
        case: Option<String>,
        /// An exported case file (`dossier export`).
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, env = "DOSSIER_DB")]
        db: Option<String>,
    },
    /// Export a case file (history, decisions, pinned sources) as JSON.
    Export {
        case: String,
        #[arg(long, env = "DOSSIER_DB")]
        db: Option<String>,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Start cases of a workflow in the database (the engine performs them: `dossier work`).
    Start {
        workflow: String,
        #[arg(long)]
        input: PathBuf,
        /// How many cases (their input gets `numero` = 1..N when the workflow declares it).
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long, env = "DOSSIER_DB")]
        db: Option<String>,
        /// Add the `record` connector, a recording double with this journal file.
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// List cases in the database.
    Cases {
        #[arg(long, env = "DOSSIER_DB")]
        db: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        workflow: Option<String>,
    },
    /// Run the engine on the database: effects, timers, waiting cases.
    Work {
        #[arg(long, env = "DOSSIER_DB")]
        db: Option<String>,
        /// Stop once no case can move without time passing or outside input.
        #[arg(long)]
        until_idle: bool,
        /// Add the `record` connector, a recording double with this journal file.
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// A short demo: dunning cases of the bundled workflow on SQLite, in accelerated time.
    Demo {
        #[arg(long, env = "DOSSIER_DB")]
        db: Option<String>,
    },
    /// Measure throughput, latency and memory (see the README).
    Bench(bench::BenchArgs),
    /// Load the webhook path of `dossier serve`: signed deliveries over loopback to a server
    /// process, requests/s and latency, then redeliveries (dedup); checks one case per delivery.
    BenchWebhook(bench_webhook::BenchWebhookArgs),
    /// Run the engine with the HTTP API, webhooks and the task inbox.
    Serve {
        #[arg(long, env = "DOSSIER_DB")]
        db: Option<String>,
        /// Address to listen on (default: server.listen of dossier.yaml, else 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// The server configuration (default: dossier.yaml in the project).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Add the `record` connector, a recording double with this journal file.
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// Manage API keys.
    #[command(subcommand)]
    Keys(serve::KeysCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOSSIER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
