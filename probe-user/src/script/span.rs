//! Byte-offset spans into a script and their line and column numbers.

use std::fmt;

/// A half-open range `start..end` of byte offsets into a [`Source`]'s text.
///
/// Spans are cheap to copy and carry no reference to the text, so every AST
/// node and diagnostic can hold one. A zero-width span marks a position, for
/// example where a missing `;` should go.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// Creates the span `start..end`; a reversed range is swapped.
    pub fn new(start: usize, end: usize) -> Self {
        if start <= end {
            Self { start, end }
        } else {
            Self {
                start: end,
                end: start,
            }
        }
    }

    /// Creates a zero-width span at `offset`.
    pub fn at(offset: usize) -> Self {
        Self {
            start: offset,
            end: offset,
        }
    }

    /// Returns the smallest span that covers both `self` and `other`.
    pub fn to(self, other: Span) -> Self {
        Self {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub fn len(self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A 1-based line and column. The column counts Unicode scalar values
/// (`char`s), not bytes, as rustc and most editors do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineColumn {
    pub line: usize,
    pub column: usize,
}

/// A script's text with the name it is shown under in diagnostics.
///
/// The name is the script's file path, or `-e` for a program given on the
/// command line.
#[derive(Clone, Debug)]
pub struct Source {
    name: String,
    text: String,
    /// Byte offset of the first character of each line; the first entry is 0.
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(offset, _)| offset + 1));
        Self {
            name: name.into(),
            text,
            line_starts,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Returns the text under `span`, clamped to the text and to character
    /// boundaries so that no span can make it panic.
    pub fn slice(&self, span: Span) -> &str {
        let start = self.floor_char_boundary(span.start);
        let end = self.floor_char_boundary(span.end).max(start);
        &self.text[start..end]
    }

    /// Returns the number of lines. Text without a newline has one line, and
    /// a trailing newline starts an empty last line.
    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// Returns the line and column of byte `offset`. Offsets past the end
    /// map to the end of the text, and offsets inside a multi-byte character
    /// map to that character.
    pub fn line_column(&self, offset: usize) -> LineColumn {
        let offset = self.floor_char_boundary(offset);
        let line_index = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let line_start = self.line_starts[line_index];
        let column = self.text[line_start..offset].chars().count() + 1;
        LineColumn {
            line: line_index + 1,
            column,
        }
    }

    /// Returns the byte range of 1-based `line` without its line ending
    /// (`\n` or `\r\n`), or `None` past the last line.
    pub fn line_span(&self, line: usize) -> Option<Span> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let mut end = match self.line_starts.get(line) {
            Some(&next_start) => next_start - 1,
            None => self.text.len(),
        };
        if self.text[start..end].ends_with('\r') {
            end -= 1;
        }
        Some(Span::new(start, end))
    }

    /// Returns the text of 1-based `line` without its line ending, or `""`
    /// past the last line.
    pub fn line_text(&self, line: usize) -> &str {
        self.line_span(line).map_or("", |span| self.slice(span))
    }

    fn floor_char_boundary(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }
}

#[cfg(test)]
mod tests {
    use super::{LineColumn, Source, Span};

    fn position(line: usize, column: usize) -> LineColumn {
        LineColumn { line, column }
    }

    #[test]
    fn line_column_of_offsets() {
        let source = Source::new("-e", "ab\ncd\n\nef");
        assert_eq!(source.line_column(0), position(1, 1));
        assert_eq!(
            source.line_column(2),
            position(1, 3),
            "the newline ends line 1"
        );
        assert_eq!(source.line_column(3), position(2, 1));
        assert_eq!(source.line_column(6), position(3, 1), "an empty line");
        assert_eq!(source.line_column(8), position(4, 2));
        assert_eq!(source.line_column(9), position(4, 3), "the end of the text");
        assert_eq!(
            source.line_column(1000),
            position(4, 3),
            "past the end clamps"
        );
    }

    #[test]
    fn columns_count_characters() {
        let source = Source::new("-e", "é→x");
        assert_eq!(
            source.line_column(5),
            position(1, 3),
            "x follows two characters"
        );
        assert_eq!(
            source.line_column(1),
            position(1, 1),
            "inside `é` maps to `é`"
        );
        assert_eq!(
            source.slice(Span::new(1, 4)),
            "é",
            "ends inside characters move back"
        );
    }

    #[test]
    fn line_text_strips_line_endings() {
        let source = Source::new("x.bt", "one\r\ntwo\n");
        assert_eq!(source.line_count(), 3);
        assert_eq!(source.line_text(1), "one");
        assert_eq!(source.line_text(2), "two");
        assert_eq!(source.line_text(3), "");
        assert_eq!(source.line_text(4), "");
        assert_eq!(source.line_text(0), "");
    }

    #[test]
    fn empty_text_has_one_line() {
        let source = Source::new("-e", "");
        assert_eq!(source.line_count(), 1);
        assert_eq!(source.line_column(0), position(1, 1));
        assert_eq!(source.line_text(1), "");
    }

    #[test]
    fn span_join_and_order() {
        assert_eq!(Span::new(5, 2), Span::new(2, 5));
        assert_eq!(Span::new(2, 3).to(Span::new(7, 9)), Span::new(2, 9));
        assert!(Span::at(4).is_empty());
        assert_eq!(Span::new(2, 9).len(), 7);
    }
}
