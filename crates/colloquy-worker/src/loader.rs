//! Reading a bot: the one place that turns files (from a directory or
//! from the registry) into a `Bot` with its trained NLU.

use colloquy_core::bot::{compile, BotError, SourceFile};
use colloquy_core::Bot;
use colloquy_nlu::pipeline::training_set;
use colloquy_nlu::{BotNlu, TrainConfig};
use colloquy_store::registry::BotFiles;
use std::fmt;
use std::path::{Path, PathBuf};

/// A compiled bot with its trained NLU, ready to serve.
pub struct LoadedBot {
    pub bot: Bot,
    pub nlu: BotNlu,
}

impl LoadedBot {
    /// The `(text, intent)` pairs its NLU was trained on: the examples and
    /// the variants generated from them (`pipeline::training_set`).
    pub fn training_set(&self) -> Vec<(String, String)> {
        training_set(&intent_examples(&self.bot), &self.bot.entities)
    }

    /// Its NLU trained again with another seed (`BotNlu::train_seeded`).
    pub fn retrain(&self, seed: u64) -> Result<BotNlu, LoadError> {
        train(&self.bot, seed)
    }
}

fn train(bot: &Bot, seed: u64) -> Result<BotNlu, LoadError> {
    BotNlu::train_seeded(
        &intent_examples(bot),
        &bot.entities,
        &bot.thesaurus,
        bot.threshold,
        seed,
    )
    .map_err(|e| LoadError::Nlu(e.to_string()))
}

/// Per intent, its examples, as the NLU trains on them.
fn intent_examples(bot: &Bot) -> Vec<(String, Vec<String>)> {
    bot.intents
        .iter()
        .map(|(name, i)| (name.clone(), i.examples.clone()))
        .collect()
}

#[derive(Debug)]
pub enum LoadError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    Invalid(Vec<BotError>),
    Nlu(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            LoadError::Invalid(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
            LoadError::Nlu(e) => write!(f, "training the intent classifier: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Directory names inside a bot that hold something other than the bot
/// definition: conversation tests.
const NOT_BOT: &[&str] = &["scenarios"];

/// Read every `*.yaml` / `*.yml` file under `dir` (sorted, so that error
/// order and duplicate reports are stable), skipping `scenarios/`.
pub fn read_sources(dir: &Path) -> Result<Vec<SourceFile>, LoadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| LoadError::Io { path, error }
    };
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).map_err(io(&d))? {
            let path = entry.map_err(io(&d))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if !NOT_BOT.contains(&name) && !name.starts_with('.') {
                    todo.push(path);
                }
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                let text = std::fs::read_to_string(&path).map_err(io(&path))?;
                files.push(SourceFile {
                    path: path.display().to_string(),
                    text,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        return Err(LoadError::Io {
            path: dir.to_path_buf(),
            error: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no *.yaml files: not a bot directory",
            ),
        });
    }
    Ok(files)
}

/// A bot directory's files by their path inside it (`/`-separated), as
/// the registry keeps them.
pub fn read_files(dir: &Path) -> Result<BotFiles, LoadError> {
    Ok(read_sources(dir)?
        .into_iter()
        .map(|f| {
            let path = Path::new(&f.path);
            let inside = path.strip_prefix(dir).unwrap_or(path);
            let parts: Vec<String> = inside
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            (parts.join("/"), f.text)
        })
        .collect())
}

/// Compile the bot in `dir` and train its NLU.
pub fn load_bot(dir: &Path) -> Result<LoadedBot, LoadError> {
    compile_and_train(&read_sources(dir)?)
}

/// Compile a bot from the registry's files and train its NLU. Errors name
/// the files as the bot's author wrote them (`flows/lottery.yaml:12`).
pub fn load_files(files: &BotFiles) -> Result<LoadedBot, LoadError> {
    let sources: Vec<SourceFile> = files
        .iter()
        .map(|(path, text)| SourceFile {
            path: path.clone(),
            text: text.clone(),
        })
        .collect();
    compile_and_train(&sources)
}

fn compile_and_train(files: &[SourceFile]) -> Result<LoadedBot, LoadError> {
    let bot = compile(files).map_err(LoadError::Invalid)?;
    let nlu = train(&bot, TrainConfig::few_shot().seed)?;
    Ok(LoadedBot { bot, nlu })
}
