//! Where a definition came from, and how a problem with it is reported:
//! every error names the file, the line and the YAML path of the field.

use crate::bot::lines::LineIndex;
use std::fmt;

/// One file of a bot directory, read by the caller (the core does no I/O).
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// A problem in a bot definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotError {
    pub file: String,
    pub line: Option<usize>,
    /// YAML path of the offending field, e.g. `flows.order.steps[1].ask`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for BotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Where a definition came from: which file, under which YAML path.
#[derive(Clone)]
pub(super) struct At {
    pub(super) file: usize,
    pub(super) path: String,
}

impl At {
    /// The place of a definition's child, e.g. `[2]` or `.steps[2]`.
    pub(super) fn child(&self, suffix: &str) -> At {
        At {
            file: self.file,
            path: format!("{}{suffix}", self.path),
        }
    }
}

/// The files being compiled, their line indexes, and the errors so far.
pub(super) struct Ctx<'a> {
    files: &'a [SourceFile],
    lines: Vec<LineIndex>,
    errors: Vec<BotError>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(files: &'a [SourceFile]) -> Self {
        Ctx {
            files,
            lines: files.iter().map(|f| LineIndex::new(&f.text)).collect(),
            errors: Vec::new(),
        }
    }

    /// Report a problem with `field` of the definition at `at` (an empty
    /// field means the definition itself).
    pub(super) fn err(&mut self, at: &At, field: &str, message: impl Into<String>) {
        let path = match field.chars().next() {
            None => at.path.clone(),
            Some('[') => format!("{}{field}", at.path),
            Some(_) => format!("{}.{field}", at.path),
        };
        self.errors.push(BotError {
            file: self.files[at.file].path.clone(),
            line: self.lines[at.file].line(&path),
            field: path,
            message: message.into(),
        });
    }

    /// Report a file that is not valid YAML or does not fit the spec.
    pub(super) fn yaml_err(&mut self, file: usize, e: &serde_yaml::Error) {
        let msg = e.to_string();
        // serde_yaml appends " at line L column C"; the line goes in its own field.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        let (field, message) = match msg.split_once(": ") {
            Some((f, m)) if !f.contains(' ') => (f.to_string(), m.to_string()),
            _ => (String::new(), msg),
        };
        self.errors.push(BotError {
            file: self.files[file].path.clone(),
            line: e.location().map(|l| l.line()),
            field,
            message,
        });
    }

    /// The file a definition is in.
    pub(super) fn file(&self, at: &At) -> &'a str {
        &self.files[at.file].path
    }

    /// `file:line` of a definition, for messages that point at another one.
    pub(super) fn place(&self, at: &At) -> String {
        let line = self.lines[at.file]
            .line(&at.path)
            .map(|l| format!(":{l}"))
            .unwrap_or_default();
        format!("{}{line}", self.file(at))
    }

    /// Fails with the errors found so far, in the order they were found.
    pub(super) fn check(&mut self) -> Result<(), Vec<BotError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(&mut self.errors))
        }
    }

    /// Fails with every error found, by file and line; errors on one line
    /// keep the order they were found in (the sort is stable).
    pub(super) fn finish(mut self) -> Result<(), Vec<BotError>> {
        self.errors
            .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        self.check()
    }
}
