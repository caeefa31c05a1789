//! Where a value stands: the file being validated and its text, so every
//! error can name the file, the line, the field and the value as written.

use std::path::Path;

use toml::Spanned;

use super::ConfigError;

/// How much of a line a syntax error quotes.
const QUOTED_LINE_CHARS: usize = 120;

/// The file being validated; every error is made here.
pub(super) struct Cx<'a> {
    /// The file, as given (messages; the base of relative paths).
    pub(super) path: &'a Path,
    /// Its text (spans are byte offsets into it).
    pub(super) text: &'a str,
}

impl<'a> Cx<'a> {
    /// A context for `text` read from `path`.
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Cx { path, text }
    }

    /// The 1-based line a byte offset falls on.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// `file:line: field = value: message` for one value of the file.
    pub(super) fn invalid<T: std::fmt::Debug>(
        &self,
        field: &str,
        value: &Spanned<T>,
        message: impl ToString,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            line: self.line_of(value.span().start),
            field: field.to_string(),
            value: format!("{:?}", value.get_ref()),
            message: message.to_string(),
        }
    }

    /// `file: message` for what no single value carries (a missing key, two
    /// settings at odds where neither was written).
    pub(super) fn whole(&self, message: impl ToString) -> ConfigError {
        ConfigError::Whole { path: self.path.display().to_string(), message: message.to_string() }
    }

    /// An error about `v` where the file wrote it, else about the file as a
    /// whole (`field message`): for a rule that holds between settings, one
    /// of which may have been left at its default.
    pub(super) fn at<T: std::fmt::Debug>(&self, field: &str, v: Option<&Spanned<T>>, message: &str) -> ConfigError {
        match v {
            Some(v) => self.invalid(field, v, message),
            None => self.whole(format!("{field} {message}")),
        }
    }

    /// A `TOML syntax` error at byte `offset` (1 when unknown).
    pub(super) fn syntax(&self, offset: Option<usize>, message: &str) -> ConfigError {
        let line = offset.map(|o| self.line_of(o)).unwrap_or(1);
        // toml's type errors do not name the key: quote the line instead.
        let message = match self.text.lines().nth(line - 1).map(str::trim).filter(|l| !l.is_empty()) {
            Some(l) => format!("{} (in `{}`)", message.trim(), l.chars().take(QUOTED_LINE_CHARS).collect::<String>()),
            None => message.trim().to_string(),
        };
        ConfigError::Syntax { path: self.path.display().to_string(), line, message }
    }
}
