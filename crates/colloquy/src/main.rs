//! The colloquy binary: command-line parsing, configuration and the wiring
//! of library pieces. Logic belongs in the crates, not here.

mod bench;
mod bots;
mod chat;
mod check;
mod config;
mod keys;
mod nlu_eval;
mod nlu_test;
mod roles;
mod sealing;
mod telemetry;
mod token;
mod wiring;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use telemetry::LogFormat;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "colloquy", version, about = "A high-availability conversational backend", long_about = None)]
struct Cli {
    /// Log format on stderr. Levels come from RUST_LOG (default: warn). A
    /// JSON line logged inside a traced turn carries its `trace_id`.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "COLLOQUY_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate bot directories and configuration files (*.toml) without
    /// running them (exit 1 on any error).
    Check {
        /// Bot directories and configuration files to check.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Talk to a bot in the terminal, on the embedded store; no server needed.
    ///
    /// With --script FILE (or when stdin is not a terminal) every line is a
    /// user message and every bot reply is printed, for scripts and tests.
    Chat(chat::ChatArgs),
    /// Run every role in one process on the embedded backends: HTTP and
    /// WebSocket gateway, bus, NLU and policy stages, store.
    Serve(config::ConfigArgs),
    /// Run the HTTP/WebSocket gateway alone (on Kafka): accepts messages onto
    /// the bus and pushes the replies workers publish.
    Gateway(config::ConfigArgs),
    /// Run stage workers alone (on Kafka, with Redis for membership): they
    /// share the partitions by a consistent-hash ring over the live workers.
    Worker(roles::worker::WorkerArgs),
    /// Create or upgrade the schema of the configured SQL store (every shard).
    Migrate(config::ConfigArgs),
    /// The key ring that seals personal data: list, rotate, re-encrypt.
    Keys {
        #[command(subcommand)]
        command: sealing::KeysCommand,
    },
    /// Print a development token (HS256) that the server with the same
    /// settings accepts.
    Token(token::TokenArgs),
    /// Load generator: simulated users talk to a running server; prints
    /// turns/s and latency percentiles.
    Bench(bench::BenchArgs),
    /// Bot versions and rollouts on a running server (admin API).
    Bots(bots::BotsArgs),
    /// Intent classifier tools: score it on a data set, or a bot on the
    /// messages its users type.
    Nlu {
        #[command(subcommand)]
        command: NluCommand,
    },
}

#[derive(Subcommand)]
enum NluCommand {
    /// Train on one TSV file and score another (`text<TAB>intent` per line;
    /// intent `oos` in the test file marks an out-of-scope example).
    Eval(nlu_eval::EvalArgs),
    /// Score a bot's NLU, trained as the server trains it, on messages
    /// users might type (`text<TAB>intent[<TAB>entity=value,…]` per line):
    /// accuracy, fallbacks and wrong intents per intent, and the misses.
    /// Exit 1 below --min-accuracy or above --max-wrong, 2 for input that
    /// cannot be tested.
    Test(nlu_test::TestArgs),
}

/// The server roles set their logs up with their traces, once they have
/// read their configuration (`telemetry::Telemetry::start`); every other
/// command logs from the start.
fn init_logs(command: &Command, format: LogFormat) {
    if !matches!(
        command,
        Command::Serve(_) | Command::Gateway(_) | Command::Worker(_)
    ) {
        telemetry::init_logs(format);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = cli.log_format;
    init_logs(&cli.command, logs);
    let result = match cli.command {
        Command::Check { paths } => check::run(&paths),
        Command::Chat(args) => chat::run(args),
        Command::Serve(args) => roles::serve::run(args, logs),
        Command::Gateway(args) => roles::gateway::run(args, logs),
        Command::Worker(args) => roles::worker::run(args, logs),
        Command::Migrate(args) => roles::migrate::run(args),
        Command::Keys { command } => sealing::run(command),
        Command::Token(args) => token::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Bots(args) => bots::run(args),
        Command::Nlu {
            command: NluCommand::Eval(args),
        } => nlu_eval::run(args),
        Command::Nlu {
            command: NluCommand::Test(args),
        } => nlu_test::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
