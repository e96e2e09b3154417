//! Compiler diagnostics: errors and warnings with a source span, hints and
//! notes, rendered with the source line and an underline as rustc does.
//!
//! Every stage pushes diagnostics onto a list and carries on where it can,
//! so one run reports several problems. A diagnostic is data, not a Rust
//! error value.

use std::fmt;

use super::span::{Source, Span};

/// Display width of a tab in rendered source lines.
const TAB_WIDTH: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    /// Information about what the compiler chose, such as the functions
    /// a name matched.
    Note,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        })
    }
}

/// Extra information attached to a diagnostic. A note with a span is
/// rendered as its own snippet (for example "`(` opened here"); one without
/// a span is rendered as a `= note:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub span: Option<Span>,
    pub message: String,
}

/// One problem found in a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Span,
    /// The problem, as a lower-case phrase without a final period.
    pub message: String,
    /// Actions the user can take, one `= hint:` line each.
    pub hints: Vec<String>,
    pub notes: Vec<Note>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, span, message)
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, span, message)
    }

    pub fn note(span: Span, message: impl Into<String>) -> Self {
        Self::new(Severity::Note, span, message)
    }

    fn new(severity: Severity, span: Span, message: impl Into<String>) -> Self {
        Self {
            severity,
            span,
            message: message.into(),
            hints: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a hint line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Adds a note without a source location.
    pub fn with_note(mut self, message: impl Into<String>) -> Self {
        self.notes.push(Note {
            span: None,
            message: message.into(),
        });
        self
    }

    /// Adds a note that points at `span`.
    pub fn with_note_at(mut self, span: Span, message: impl Into<String>) -> Self {
        self.notes.push(Note {
            span: Some(span),
            message: message.into(),
        });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic against the source its span points into:
    ///
    /// ```text
    /// error: expected `;` or `}` after statement, found identifier `exit`
    ///   --> -e:1:21
    ///   |
    /// 1 | BEGIN { printf("x") exit() }
    ///   |                     ^^^^
    ///   = hint: separate statements with `;`
    /// ```
    ///
    /// A span over several lines is underlined on its first line only. The
    /// result ends with a newline.
    pub fn render(&self, source: &Source) -> String {
        let mut out = String::new();
        let header = format!("{}: {}", self.severity, self.message);
        let gutter_width = self.gutter_width(source);
        render_snippet(&mut out, source, &header, self.span, gutter_width);

        let indent = " ".repeat(gutter_width + 1);
        for hint in &self.hints {
            out.push_str(&format!("{indent}= hint: {hint}\n"));
        }
        for note in self.notes.iter().filter(|note| note.span.is_none()) {
            out.push_str(&format!("{indent}= note: {}\n", note.message));
        }
        for note in &self.notes {
            if let Some(span) = note.span {
                let header = format!("note: {}", note.message);
                render_snippet(&mut out, source, &header, span, gutter_width);
            }
        }
        out
    }

    /// Returns the width of the widest line number this diagnostic shows,
    /// so that the `|` of every snippet lines up.
    fn gutter_width(&self, source: &Source) -> usize {
        let spans =
            std::iter::once(self.span).chain(self.notes.iter().filter_map(|note| note.span));
        spans
            .map(|span| source.line_column(span.start).line.to_string().len())
            .max()
            .unwrap_or(1)
    }
}

/// Renders a list of diagnostics separated by blank lines.
pub fn render_all(diagnostics: &[Diagnostic], source: &Source) -> String {
    let rendered: Vec<String> = diagnostics.iter().map(|d| d.render(source)).collect();
    rendered.join("\n")
}

/// Returns true if any diagnostic in the list is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

/// Writes `header`, the `--> NAME:LINE:COLUMN` location, and the first line
/// of `span` with a `^` underline.
fn render_snippet(
    out: &mut String,
    source: &Source,
    header: &str,
    span: Span,
    gutter_width: usize,
) {
    let start = source.line_column(span.start);
    let indent = " ".repeat(gutter_width + 1);
    out.push_str(&format!("{header}\n"));
    out.push_str(&format!(
        "{indent}--> {}:{}:{}\n",
        source.name(),
        start.line,
        start.column
    ));
    out.push_str(&format!("{indent}|\n"));

    let line_span = source.line_span(start.line).unwrap_or_default();
    let line = source.slice(line_span);
    let before = source.slice(Span::new(line_span.start, span.start.max(line_span.start)));
    let under_end = span.end.clamp(span.start, line_span.end.max(span.start));
    let under = source.slice(Span::new(span.start, under_end));

    let shown_line = expand_tabs(line);
    let line_number = start.line;
    if shown_line.is_empty() {
        out.push_str(&format!("{line_number:>gutter_width$} |\n"));
    } else {
        out.push_str(&format!("{line_number:>gutter_width$} | {shown_line}\n"));
    }
    let padding = " ".repeat(display_width(before));
    let carets = "^".repeat(display_width(under).max(1));
    out.push_str(&format!("{indent}| {padding}{carets}\n"));
}

fn expand_tabs(text: &str) -> String {
    text.replace('\t', &" ".repeat(TAB_WIDTH))
}

/// Columns `text` takes in a terminal: one per character and four per tab.
// NOTE: wide characters (CJK, most emoji) take two terminal columns but
// count as one here, so an underline after them on the same line is shifted.
fn display_width(text: &str) -> usize {
    text.chars()
        .map(|c| if c == '\t' { TAB_WIDTH } else { 1 })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::{Diagnostic, Severity, has_errors, render_all};
    use crate::script::span::{Source, Span};

    #[test]
    fn render_error_with_hint() {
        let source = Source::new("-e", "BEGIN { printf(\"x\") exit() }");
        let diagnostic = Diagnostic::error(
            Span::new(20, 24),
            "expected `;` or `}` after statement, found identifier `exit`",
        )
        .with_hint("separate statements with `;`");
        let expected = "\
error: expected `;` or `}` after statement, found identifier `exit`
  --> -e:1:21
  |
1 | BEGIN { printf(\"x\") exit() }
  |                     ^^^^
  = hint: separate statements with `;`
";
        assert_eq!(diagnostic.render(&source), expected);
    }

    #[test]
    fn render_warning_on_later_line() {
        let text = "BEGIN\n{\n  @x = 1;\n}\n";
        let source = Source::new("count.bt", text);
        let start = text.find('@').unwrap();
        let diagnostic = Diagnostic::warning(Span::new(start, start + 2), "map `@x` is never read");
        let expected = "\
warning: map `@x` is never read
  --> count.bt:3:3
  |
3 |   @x = 1;
  |   ^^
";
        assert_eq!(diagnostic.render(&source), expected);
        assert_eq!(diagnostic.severity, Severity::Warning);
    }

    #[test]
    fn render_multi_line_span_underlines_first_line() {
        let source = Source::new("-e", "BEGIN { if (1) {\n  exit();\n} }");
        let diagnostic = Diagnostic::error(Span::new(8, 28), "statement spans lines");
        let expected = "\
error: statement spans lines
  --> -e:1:9
  |
1 | BEGIN { if (1) {
  |         ^^^^^^^^
";
        assert_eq!(diagnostic.render(&source), expected);
    }

    #[test]
    fn render_empty_span_at_end_of_text() {
        let source = Source::new("-e", "BEGIN {");
        let diagnostic = Diagnostic::error(Span::at(7), "unclosed `{`");
        let expected = "\
error: unclosed `{`
  --> -e:1:8
  |
1 | BEGIN {
  |        ^
";
        assert_eq!(diagnostic.render(&source), expected);
    }

    #[test]
    fn render_aligns_after_tabs_and_unicode() {
        let source = Source::new("-e", "\tprintf(\"é\", x)");
        let start = source.text().find('x').unwrap();
        let diagnostic = Diagnostic::error(Span::new(start, start + 1), "unknown name `x`");
        let expected = "\
error: unknown name `x`
  --> -e:1:14
  |
1 |     printf(\"é\", x)
  |                 ^
";
        assert_eq!(diagnostic.render(&source), expected);
    }

    #[test]
    fn render_notes_with_and_without_span() {
        let text = "BEGIN {\n  printf(\"%d\",\n  1;\n}";
        let source = Source::new("t.bt", text);
        let open = text.find('(').unwrap();
        let semicolon = text.find(';').unwrap();
        let diagnostic = Diagnostic::error(
            Span::new(semicolon, semicolon + 1),
            "expected `)`, found `;`",
        )
        .with_hint("close the argument list with `)`")
        .with_note("arguments are separated by `,`")
        .with_note_at(Span::new(open, open + 1), "`(` opened here");
        let expected = "\
error: expected `)`, found `;`
  --> t.bt:3:4
  |
3 |   1;
  |    ^
  = hint: close the argument list with `)`
  = note: arguments are separated by `,`
note: `(` opened here
  --> t.bt:2:9
  |
2 |   printf(\"%d\",
  |         ^
";
        assert_eq!(diagnostic.render(&source), expected);
    }

    #[test]
    fn render_widens_gutter_for_long_line_numbers() {
        let text = format!("{}BEGIN {{ x }}", "\n".repeat(11));
        let source = Source::new("-e", text.as_str());
        let start = text.find('x').unwrap();
        let diagnostic = Diagnostic::error(Span::new(start, start + 1), "bad");
        let expected = "\
error: bad
   --> -e:12:9
   |
12 | BEGIN { x }
   |         ^
";
        assert_eq!(diagnostic.render(&source), expected);
    }

    #[test]
    fn render_all_separates_with_blank_line() {
        let source = Source::new("-e", "a b");
        let diagnostics = [
            Diagnostic::error(Span::new(0, 1), "first"),
            Diagnostic::warning(Span::new(2, 3), "second"),
        ];
        let expected = "\
error: first
  --> -e:1:1
  |
1 | a b
  | ^

warning: second
  --> -e:1:3
  |
1 | a b
  |   ^
";
        assert_eq!(render_all(&diagnostics, &source), expected);
        assert!(has_errors(&diagnostics));
        assert!(!has_errors(&diagnostics[1..]));
    }

    #[test]
    fn render_survives_out_of_range_span() {
        let source = Source::new("-e", "ab\n");
        let rendered = Diagnostic::error(Span::new(50, 99), "far away").render(&source);
        assert!(rendered.contains("-e:2:1"), "{rendered}");
        let rendered = Diagnostic::error(Span::new(0, 0), "empty").render(&Source::new("-e", ""));
        assert!(rendered.contains("-e:1:1"), "{rendered}");
    }
}
