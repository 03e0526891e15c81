//! What a topology compile reports: every error with its file, line, column, the offending
//! source line and a hint, rendered like rustc.

use std::fmt;
use std::ops::Range;

/// A byte range into the topology text.
pub(crate) type Span = Range<usize>;

/// One error found in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given to the compiler.
    pub file: String,
    /// 1-based line; 0 when the error concerns the whole file (e.g. it cannot be read).
    pub line: usize,
    /// 1-based column, counted in characters; 0 when `line` is 0.
    pub column: usize,
    /// What is wrong, in one line.
    pub message: String,
    /// How to fix it: the closest valid name, or what is expected.
    pub hint: Option<String>,
    /// Byte range of the offending text in the file.
    pub span: Range<usize>,
    /// The source line holding the error, without its line break.
    pub snippet: String,
    /// How many characters of `snippet` to underline from `column` (at least 1).
    pub width: usize,
}

/// Every error found in a topology file, in file order.
///
/// `Display` renders them like rustc, one block per error, then a final `N errors` line (ending
/// with a line break, so `eprint!("{diagnostics}")` prints a complete report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    pub errors: Vec<Diagnostic>,
}

/// An error found while compiling, before it is located in lines and columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
    pub class: Class,
}

/// What kind of error a problem is, to decide what to report when the TOML itself is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The TOML does not parse.
    Syntax,
    /// A value or key that is there is wrong.
    Invalid,
    /// Something is missing or a name does not resolve: after a syntax error, possibly only
    /// because the parser lost the text that declared it.
    Absence,
}

impl Problem {
    /// Attaches a hint to the error.
    pub fn hint(&mut self, hint: impl Into<String>) -> &mut Problem {
        self.hint = Some(hint.into());
        self
    }
}

impl Diagnostics {
    /// Locates `problems` in `source` and sorts them by position (stable, so errors at the same
    /// place keep the order they were found in).
    pub(crate) fn locate(file: &str, source: &str, mut problems: Vec<Problem>) -> Diagnostics {
        problems.sort_by_key(|p| p.span.start);
        problems.dedup();
        let lines = LineIndex::new(source);
        let errors = problems
            .into_iter()
            .map(|p| lines.diagnostic(file, source, p))
            .collect();
        Diagnostics { errors }
    }

    /// The file could not be read at all.
    pub(crate) fn unreadable(file: &str, error: &std::io::Error) -> Diagnostics {
        Diagnostics {
            errors: vec![Diagnostic {
                file: file.to_owned(),
                line: 0,
                column: 0,
                message: format!("cannot read `{file}`: {error}"),
                hint: None,
                span: 0..0,
                snippet: String::new(),
                width: 0,
            }],
        }
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if self.line == 0 {
            writeln!(f, " --> {}", self.file)?;
        } else {
            let number = self.line.to_string();
            let pad = " ".repeat(number.len());
            writeln!(f, "{pad}--> {}:{}:{}", self.file, self.line, self.column)?;
            writeln!(f, "{pad} |")?;
            writeln!(f, "{number} | {}", self.snippet)?;
            writeln!(
                f,
                "{pad} | {}{}",
                " ".repeat(self.column.saturating_sub(1)),
                "^".repeat(self.width.max(1))
            )?;
            if let Some(hint) = &self.hint {
                writeln!(f, "{pad} = hint: {hint}")?;
            }
            return Ok(());
        }
        if let Some(hint) = &self.hint {
            writeln!(f, " = hint: {hint}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in &self.errors {
            writeln!(f, "{error}")?;
        }
        match self.errors.len() {
            1 => writeln!(f, "1 error"),
            n => writeln!(f, "{n} errors"),
        }
    }
}

impl std::error::Error for Diagnostics {}

/// Byte offsets of line starts, to turn spans into lines and columns.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(source: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    fn diagnostic(&self, file: &str, source: &str, problem: Problem) -> Diagnostic {
        let start = floor_char_boundary(source, problem.span.start);
        let end = floor_char_boundary(source, problem.span.end.max(start));
        let line = self.starts.partition_point(|&s| s <= start); // 1-based
        let line_start = self.starts[line - 1];
        let line_end = source[line_start..]
            .find('\n')
            .map_or(source.len(), |i| line_start + i);
        let snippet = source[line_start..line_end].trim_end_matches('\r');
        let column = source[line_start..start].chars().count() + 1;
        let width = source[start..end.min(line_start + snippet.len()).max(start)]
            .chars()
            .count()
            .max(1);
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            message: problem.message,
            hint: problem.hint,
            span: problem.span,
            snippet: snippet.to_owned(),
            width,
        }
    }
}

fn floor_char_boundary(source: &str, mut index: usize) -> usize {
    index = index.min(source.len());
    while !source.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(span: Span, message: &str) -> Problem {
        Problem {
            span,
            message: message.into(),
            hint: None,
            class: Class::Invalid,
        }
    }

    #[test]
    fn renders_like_rustc() {
        let source = "[job]\nname = 7\n";
        let mut p = problem(13..14, "expected a string for `name`, found an integer");
        p.hint("write `name = \"my-job\"`");
        let diagnostics = Diagnostics::locate("t.toml", source, vec![p]);
        assert_eq!(
            diagnostics.to_string(),
            "error: expected a string for `name`, found an integer\n \
             --> t.toml:2:8\n  |\n2 | name = 7\n  |        ^\n  = hint: write `name = \"my-job\"`\n\n1 error\n"
        );
    }

    #[test]
    fn columns_count_characters_and_errors_sort_by_position() {
        let source = "a = \"é\" # x\nb = 1";
        let d = Diagnostics::locate(
            "f",
            source,
            vec![problem(15..18, "second"), problem(4..8, "first")],
        );
        assert_eq!(
            (d.errors[0].line, d.errors[0].column, d.errors[0].width),
            (1, 5, 3)
        );
        assert_eq!(
            (d.errors[1].line, d.errors[1].column, d.errors[1].width),
            (2, 3, 3)
        );
        assert!(d.to_string().ends_with("\n2 errors\n"));
    }

    #[test]
    fn an_empty_span_at_the_end_still_points_somewhere() {
        let d = Diagnostics::locate("f", "x = 1\n", vec![problem(6..6, "eof")]);
        assert_eq!(
            (d.errors[0].line, d.errors[0].column, d.errors[0].width),
            (2, 1, 1)
        );
    }
}
