//! The client subcommands' arguments, flattened into `wasmatic`'s own
//! subcommands (`wasmatic ls`, not `wasmatic client ls`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Environment variable naming the node the client talks to.
pub const NODE_ENV: &str = "WASMATIC_NODE";
/// The node the client talks to when neither `--node` nor `$WASMATIC_NODE`
/// names one: the one `wasmatic up` starts on this machine.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:8080";

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register a component (a handler or any other world) under a name,
    /// replacing the one registered under it.
    Register(On<RegisterArgs>),
    /// Run a handler with INPUT and print its output.
    Run(On<RunArgs>),
    /// Call an export of a registered component with JSON arguments.
    Call(On<CallArgs>),
    /// Run a handler on a cron schedule.
    Sched(On<SchedArgs>),
    /// Remove a schedule.
    Unsched(On<UnschedArgs>),
    /// List the registered components.
    Ls(On<NoArgs>),
    /// Show a registered component: its exports, settings and schedules.
    Show(On<NameArg>),
    /// List a component's runs, oldest first (the newest at the bottom).
    Runs(On<RunsArgs>),
    /// Unregister a component, with its schedules, triggers and runs.
    Rm(On<NameArg>),
    /// Run a WASI command job (a wasip1 module or a wasip2 command).
    Job(On<JobArgs>),
    /// Store, run and list JSON workflows.
    Workflow(On<WorkflowArgs>),
}

/// A client subcommand's own arguments, with the node it talks to.
#[derive(Args)]
pub struct On<T: Args> {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub args: T,
}

/// Where the node is and how to print its answers.
#[derive(Args)]
pub struct NodeArgs {
    /// The node's URL, `http://HOST[:PORT]` or `https://HOST[:PORT]`. The
    /// token, when the node has one, is taken from `$WASMATIC_TOKEN`.
    #[arg(long = "node", value_name = "URL", env = NODE_ENV, default_value = DEFAULT_NODE, global = true)]
    pub url: String,

    /// Print the node's JSON answer as it is, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Args)]
pub struct NoArgs {}

#[derive(Args)]
pub struct NameArg {
    /// The component's name.
    pub name: String,
}

#[derive(Args)]
pub struct RegisterArgs {
    /// The component's `.wasm` file.
    pub file: PathBuf,

    /// The name to register it under (default: the file's name without
    /// `.wasm`, in lower case).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// A configuration entry, read with `wasmatic:guest/config` and also
    /// the guest's environment (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = key_value)]
    pub envs: Vec<String>,

    /// A host it may call, `HOST[:PORT]` or `*.DOMAIN[:PORT]`, within the
    /// node's `--allow-outbound` (repeatable; without it, what the node
    /// allows).
    #[arg(long = "allow", value_name = "HOST")]
    pub allows: Vec<String>,

    /// Calls one instance may serve (without it, a fresh instance per call).
    #[arg(long, value_name = "N")]
    pub reuse: Option<u32>,

    /// Link an import to a registered component exporting it, as
    /// `INTERFACE=PROVIDER` (repeatable).
    #[arg(long = "link", value_name = "INTERFACE=PROVIDER", value_parser = key_value)]
    pub links: Vec<String>,
}

#[derive(Args)]
pub struct RunArgs {
    /// The handler's name.
    pub name: String,
    /// The input: text, or `-` to read it from stdin (none: empty).
    pub input: Option<String>,
}

#[derive(Args)]
pub struct CallArgs {
    /// The component's name.
    pub name: String,
    /// The export: `FUNC`, or `IFACE.FUNC` for one inside an interface.
    pub function: String,
    /// The arguments, in order: each is taken as JSON when it parses as
    /// JSON (`42`, `true`, `[1,2]`, `'"42"'`), else as a string. Put
    /// `--` before arguments that start with `-` (negative numbers need
    /// not).
    #[arg(allow_negative_numbers = true)]
    pub args: Vec<String>,
}

#[derive(Args)]
pub struct SchedArgs {
    /// The handler's name.
    pub name: String,
    /// The cron line: 6 fields with seconds first, or 5 (quote it).
    pub cron: String,
    /// The input each run gets (none: empty).
    pub input: Option<String>,
}

#[derive(Args)]
pub struct UnschedArgs {
    /// The schedule's id (see `wasmatic show NAME`).
    pub id: String,
}

#[derive(Args)]
pub struct RunsArgs {
    /// The component's name.
    pub name: String,
    /// How many of the latest runs to list (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Keep listing new runs as they come, until interrupted (with
    /// `--json`: one JSON run per line).
    #[arg(long)]
    pub follow: bool,
}

#[derive(Args)]
pub struct JobArgs {
    /// The job's `.wasm` file: a wasip1 module exporting `run` or `_start`,
    /// or a wasip2 command component.
    pub file: PathBuf,
    /// The job's input, JSON; it gets it on stdin as one line.
    #[arg(long, value_name = "JSON")]
    pub input: Option<String>,
    /// Time the job may take, in milliseconds (at most 30000).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub timeout: u32,
    /// The job's id, echoed in the answer (default: the file's name).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
}

#[derive(Args)]
pub struct WorkflowArgs {
    #[command(subcommand)]
    pub action: WorkflowAction,
}

#[derive(Subcommand)]
pub enum WorkflowAction {
    /// Store a workflow from a JSON file (the same name again replaces it).
    Apply {
        /// The workflow's definition, `{"name", "trigger"?, "steps", "result"?}`.
        file: PathBuf,
    },
    /// Run a workflow now and print its steps.
    Run {
        /// The workflow's name.
        name: String,
        /// The run's trigger: JSON, or else a string (none: null).
        trigger: Option<String>,
    },
    /// List a workflow's runs, oldest first.
    Runs {
        /// The workflow's name.
        name: String,
        /// How many of the latest runs to list (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

/// `KEY=VALUE` with a key, as the node takes `env=` and `link=`.
fn key_value(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(s.to_string()),
        _ => Err(format!("`{s}` is not of the form KEY=VALUE")),
    }
}
