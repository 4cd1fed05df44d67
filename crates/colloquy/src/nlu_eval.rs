//! `colloquy nlu eval`: score the intent classifier on any TSV data set.

use anyhow::Context;
use colloquy_nlu::eval::{evaluate, parse_tsv, EvalConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Training examples, `text<TAB>intent` per line.
    #[arg(long)]
    train: PathBuf,
    /// Test examples; the intent `oos` marks an out-of-scope example.
    #[arg(long)]
    test: PathBuf,
    /// Optional validation set (may contain `oos`) to choose the threshold on.
    #[arg(long)]
    val: Option<PathBuf>,
    /// Confidence below which a prediction counts as out-of-scope.
    #[arg(long)]
    threshold: Option<f32>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
}

fn read(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_tsv(&text).map_err(|e| anyhow::anyhow!("{}:{}: {}", path.display(), e.line, e.problem))
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let train = read(&args.train)?;
    let test = read(&args.test)?;
    let val = args
        .val
        .as_deref()
        .map(read)
        .transpose()?
        .unwrap_or_default();
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!(
        "training on {} examples, testing on {}",
        train.len(),
        test.len()
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let cfg = EvalConfig {
        threshold: args.threshold,
        val,
        ..EvalConfig::default()
    };
    let report = evaluate(&train, &test, &cfg);
    spinner.finish_and_clear();
    let report = report.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("train examples        {}", report.train_examples);
    println!("test examples         {}", report.test_examples);
    println!("intents               {}", report.intents);
    println!(
        "in-scope accuracy     {:.2}%",
        report.in_scope_accuracy * 100.0
    );
    if let Some(r) = report.oos_recall {
        println!("out-of-scope recall   {:.2}%", r * 100.0);
    }
    println!(
        "threshold             {:.3} ({})",
        report.threshold, report.threshold_source
    );
    println!("training time         {:.2} s", report.train_seconds);
    println!(
        "classifications/s     {:.0}",
        report.classifications_per_second
    );
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
