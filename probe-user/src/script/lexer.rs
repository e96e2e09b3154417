//! The lexer: turns script text into tokens, with diagnostics for bad
//! literals and characters.
//!
//! Lexing is context-sensitive in two places, and the lexer tracks the
//! context itself from the braces it has seen, so the parser never has to
//! switch modes:
//!
//! * A probe header may start at the start of the text, after a probe's
//!   closing `}`, and after a `,` that follows an attach point. There a word
//!   is an attach point, lexed as one raw run of text: `kprobe:vfs_*`,
//!   `uprobe:/usr/lib/libc.so.6:malloc`, `tracepoint:syscalls:sys_enter_*`.
//!   The run ends at whitespace, `,`, `{`, `}` or `;`, and at `/` unless the
//!   provider takes a file path (`uprobe`, `uretprobe`, `usdt`, `iter`), so that
//!   `kprobe:f/pid == 1/` still starts a predicate. A `"..."` part may
//!   contain any of these. At the same position, `#...` lines and
//!   `struct`/`union`/`enum`/`typedef` definitions are lexed as raw C text.
//! * Outside probe bodies, a `/` followed by `{` (with only whitespace and
//!   comments between) closes a predicate and is lexed as
//!   [`TokenKind::PredicateEnd`], so `/pid / 2 == 1/ {` is not ambiguous.

use super::ast::{IntegerLiteral, IntegerSuffix};
use super::diagnostic::Diagnostic;
use super::span::Span;
use super::token::{Token, TokenKind};

/// Providers whose attach points contain a file path (a binary, or the pin
/// path of an iterator), in which `/` does not end the attach point.
const PATH_PROVIDERS: &[&str] = &["uprobe", "uretprobe", "usdt", "iter", "u", "ur", "U", "it"];

/// Words that start a C definition at probe-header position.
const C_DEFINITION_KEYWORDS: &[&str] = &["struct", "union", "enum", "typedef"];

/// Splits `text` into tokens. The last token is always
/// [`TokenKind::EndOfInput`]. Characters that form no token are reported and
/// skipped, and so is a `#!` line at the start, so that a script can be an
/// executable file.
pub fn tokenize(text: &str) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut lexer = Lexer {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        mode: Mode::Header,
        brace_depth: 0,
        tokens: Vec::new(),
        diagnostics: Vec::new(),
    };
    lexer.run();
    (lexer.tokens, lexer.diagnostics)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A probe header or a C definition may start here.
    Header,
    /// Right after an attach point: a `,` leads to another attach point.
    AfterAttachPoint,
    /// Predicates and probe bodies.
    Code,
}

struct Lexer<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// Byte offset of the next unread character; always a char boundary.
    pos: usize,
    mode: Mode,
    brace_depth: usize,
    tokens: Vec<Token>,
    diagnostics: Vec<Diagnostic>,
}

impl Lexer<'_> {
    fn run(&mut self) {
        if self.text.starts_with("#!") {
            self.pos = self.text.find('\n').unwrap_or(self.text.len());
        }
        loop {
            self.skip_trivia();
            let Some(&byte) = self.bytes.get(self.pos) else {
                break;
            };
            match self.mode {
                Mode::Header if byte == b'#' => self.lex_preprocessor_line(),
                Mode::Header if starts_attach_point(self.peek_char()) => {
                    let word = self.peek_word();
                    if C_DEFINITION_KEYWORDS.contains(&word) {
                        self.lex_c_definition();
                    } else {
                        self.lex_attach_point();
                    }
                }
                Mode::AfterAttachPoint if byte == b',' => {
                    self.push(TokenKind::Comma, self.pos, self.pos + 1);
                    self.mode = Mode::Header;
                }
                Mode::AfterAttachPoint => {
                    self.mode = Mode::Code;
                    self.lex_code_token();
                }
                Mode::Header | Mode::Code => self.lex_code_token(),
            }
        }
        let end = self.text.len();
        self.tokens.push(Token {
            kind: TokenKind::EndOfInput,
            span: Span::at(end),
        });
    }

    fn push(&mut self, kind: TokenKind, start: usize, end: usize) {
        self.tokens.push(Token {
            kind,
            span: Span::new(start, end),
        });
        self.pos = end;
    }

    fn error(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn peek_char(&self) -> char {
        self.text[self.pos..].chars().next().unwrap_or('\0')
    }

    fn byte_at(&self, offset: usize) -> u8 {
        self.bytes.get(offset).copied().unwrap_or(0)
    }

    /// Returns the run of identifier characters at the current position.
    fn peek_word(&self) -> &str {
        let end = self.ident_end(self.pos);
        &self.text[self.pos..end]
    }

    fn ident_end(&self, from: usize) -> usize {
        let mut end = from;
        while end < self.bytes.len() && is_ident_byte(self.bytes[end]) {
            end += 1;
        }
        end
    }

    fn skip_trivia(&mut self) {
        let (end, unterminated_comment) = scan_trivia(self.bytes, self.pos);
        if let Some(start) = unterminated_comment {
            self.error(
                Diagnostic::error(Span::new(start, start + 2), "unterminated block comment")
                    .with_hint("close the comment with `*/`"),
            );
        }
        self.pos = end;
    }

    /// Lexes a `#include`-style line, with `\` line continuations.
    fn lex_preprocessor_line(&mut self) {
        let start = self.pos;
        let mut end = start;
        while end < self.bytes.len() && self.bytes[end] != b'\n' {
            if self.bytes[end] == b'\\' && self.byte_at(end + 1) == b'\n' {
                end += 1;
            }
            end += 1;
        }
        let text = self.text[start..end].trim_end().to_owned();
        self.push(TokenKind::CPreprocessor(text), start, end);
    }

    /// Lexes a C type definition up to its closing `}` (and a `;` after it)
    /// or up to a `;` outside braces.
    fn lex_c_definition(&mut self) {
        let start = self.pos;
        let mut pos = start;
        let mut depth = 0usize;
        let end = loop {
            let Some(&byte) = self.bytes.get(pos) else {
                self.error(
                    Diagnostic::error(
                        Span::new(start, self.ident_end(start)),
                        "unterminated C definition",
                    )
                    .with_hint("end the definition with `}` or `;`"),
                );
                break pos;
            };
            match byte {
                b'/' if matches!(self.byte_at(pos + 1), b'/' | b'*') => {
                    let (after, _) = scan_trivia(self.bytes, pos);
                    pos = after;
                }
                b'{' => {
                    depth += 1;
                    pos += 1;
                }
                b'}' => {
                    depth = depth.saturating_sub(1);
                    pos += 1;
                    if depth == 0 {
                        let (after, _) = scan_trivia(self.bytes, pos);
                        if self.byte_at(after) == b';' {
                            pos = after + 1;
                        }
                        break pos;
                    }
                }
                b';' if depth == 0 => break pos + 1,
                _ => pos += 1,
            }
        };
        let text = self.text[start..end].to_owned();
        self.push(TokenKind::CDefinition(text), start, end);
    }

    fn lex_attach_point(&mut self) {
        let start = self.pos;
        let mut pos = start;
        let mut first_colon = None;
        while let Some(&byte) = self.bytes.get(pos) {
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | b',' | b'{' | b'}' | b';' => break,
                b'"' => pos = self.skip_attach_point_quote(pos),
                b'/' => {
                    let takes_path = first_colon
                        .is_some_and(|colon| PATH_PROVIDERS.contains(&&self.text[start..colon]));
                    if !takes_path {
                        break;
                    }
                    pos += 1;
                }
                b':' => {
                    first_colon.get_or_insert(pos);
                    pos += 1;
                }
                _ => pos += 1,
            }
        }
        let text = self.text[start..pos].to_owned();
        self.push(TokenKind::AttachPoint(text), start, pos);
        self.mode = Mode::AfterAttachPoint;
    }

    /// Skips a `"..."` part of an attach point that starts at `quote`, and
    /// returns the offset after it.
    fn skip_attach_point_quote(&mut self, quote: usize) -> usize {
        let mut pos = quote + 1;
        while let Some(&byte) = self.bytes.get(pos) {
            match byte {
                b'"' => return pos + 1,
                b'\n' => break,
                b'\\' if self.byte_at(pos + 1).is_ascii_graphic() => pos += 2,
                _ => pos += 1,
            }
        }
        self.error(
            Diagnostic::error(Span::new(quote, pos), "unterminated quote in attach point")
                .with_hint("add a closing `\"`"),
        );
        pos
    }

    fn lex_code_token(&mut self) {
        let start = self.pos;
        let byte = self.bytes[start];
        let next = self.byte_at(start + 1);
        let after_next = self.byte_at(start + 2);
        let (kind, len) = match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => return self.lex_word(),
            b'0'..=b'9' => return self.lex_number(),
            b'"' => return self.lex_string(),
            b'\'' => return self.lex_char(),
            b'$' => return self.lex_dollar(),
            b'@' => {
                let end = if is_ident_start(next) {
                    self.ident_end(start + 1)
                } else {
                    start + 1
                };
                let name = self.text[start + 1..end].to_owned();
                return self.push(TokenKind::Map(name), start, end);
            }
            b'{' => {
                self.brace_depth += 1;
                self.mode = Mode::Code;
                (TokenKind::LeftBrace, 1)
            }
            b'}' => {
                self.brace_depth = self.brace_depth.saturating_sub(1);
                if self.brace_depth == 0 {
                    self.mode = Mode::Header;
                }
                (TokenKind::RightBrace, 1)
            }
            b'(' => (TokenKind::LeftParen, 1),
            b')' => (TokenKind::RightParen, 1),
            b'[' => (TokenKind::LeftBracket, 1),
            b']' => (TokenKind::RightBracket, 1),
            b',' => (TokenKind::Comma, 1),
            b';' => (TokenKind::Semicolon, 1),
            b':' => (TokenKind::Colon, 1),
            b'?' => (TokenKind::Question, 1),
            b'~' => (TokenKind::Tilde, 1),
            b'.' if next == b'.' => (TokenKind::DotDot, 2),
            b'.' => (TokenKind::Dot, 1),
            b'-' => match next {
                b'>' => (TokenKind::Arrow, 2),
                b'-' => (TokenKind::MinusMinus, 2),
                b'=' => (TokenKind::MinusAssign, 2),
                _ => (TokenKind::Minus, 1),
            },
            b'+' => match next {
                b'+' => (TokenKind::PlusPlus, 2),
                b'=' => (TokenKind::PlusAssign, 2),
                _ => (TokenKind::Plus, 1),
            },
            b'*' if next == b'=' => (TokenKind::StarAssign, 2),
            b'*' => (TokenKind::Star, 1),
            b'/' if self.brace_depth == 0
                && self.byte_at(scan_trivia(self.bytes, start + 1).0) == b'{' =>
            {
                (TokenKind::PredicateEnd, 1)
            }
            b'/' if next == b'=' => (TokenKind::SlashAssign, 2),
            b'/' => (TokenKind::Slash, 1),
            b'%' if next == b'=' => (TokenKind::PercentAssign, 2),
            b'%' => (TokenKind::Percent, 1),
            b'&' => match next {
                b'&' => (TokenKind::AndAnd, 2),
                b'=' => (TokenKind::AmpersandAssign, 2),
                _ => (TokenKind::Ampersand, 1),
            },
            b'|' => match next {
                b'|' => (TokenKind::OrOr, 2),
                b'=' => (TokenKind::PipeAssign, 2),
                _ => (TokenKind::Pipe, 1),
            },
            b'^' if next == b'=' => (TokenKind::CaretAssign, 2),
            b'^' => (TokenKind::Caret, 1),
            b'!' if next == b'=' => (TokenKind::NotEqual, 2),
            b'!' => (TokenKind::Bang, 1),
            b'=' if next == b'=' => (TokenKind::EqualEqual, 2),
            b'=' => (TokenKind::Assign, 1),
            b'<' => match (next, after_next) {
                (b'<', b'=') => (TokenKind::ShiftLeftAssign, 3),
                (b'<', _) => (TokenKind::ShiftLeft, 2),
                (b'=', _) => (TokenKind::LessEqual, 2),
                _ => (TokenKind::Less, 1),
            },
            b'>' => match (next, after_next) {
                (b'>', b'=') => (TokenKind::ShiftRightAssign, 3),
                (b'>', _) => (TokenKind::ShiftRight, 2),
                (b'=', _) => (TokenKind::GreaterEqual, 2),
                _ => (TokenKind::Greater, 1),
            },
            _ => return self.lex_invalid_characters(),
        };
        self.push(kind, start, start + len);
    }

    fn lex_word(&mut self) {
        let start = self.pos;
        let end = self.ident_end(start);
        let word = &self.text[start..end];
        let kind =
            TokenKind::keyword(word).unwrap_or_else(|| TokenKind::Identifier(word.to_owned()));
        self.push(kind, start, end);
    }

    fn lex_number(&mut self) {
        let start = self.pos;
        let end = self.ident_end(start);
        let text = &self.text[start..end];
        let literal = match parse_integer(text) {
            Ok(literal) => literal,
            Err(error) => {
                self.error(integer_diagnostic(text, Span::new(start, end), &error));
                IntegerLiteral {
                    value: 0,
                    suffix: IntegerSuffix::None,
                }
            }
        };
        self.push(TokenKind::Integer(literal), start, end);
    }

    fn lex_dollar(&mut self) {
        let start = self.pos;
        let next = self.byte_at(start + 1);
        if is_ident_start(next) {
            let end = self.ident_end(start + 1);
            let name = self.text[start + 1..end].to_owned();
            self.push(TokenKind::Variable(name), start, end);
        } else if next.is_ascii_digit() {
            let end = self.ident_end(start + 1);
            let digits = &self.text[start + 1..end];
            let index = match digits.parse::<u32>() {
                Ok(index) => index,
                Err(_) => {
                    self.error(
                        Diagnostic::error(
                            Span::new(start, end),
                            format!("invalid positional parameter `${digits}`"),
                        )
                        .with_hint("positional parameters are `$1`, `$2`, ... up to `$4294967295`"),
                    );
                    0
                }
            };
            self.push(TokenKind::Positional(index), start, end);
        } else if next == b'#' {
            self.push(TokenKind::PositionalCount, start, start + 2);
        } else {
            self.error(
                Diagnostic::error(
                    Span::new(start, start + 1),
                    "expected a variable name after `$`",
                )
                .with_hint("variables are written `$name`, positional parameters `$1` and `$#`"),
            );
            self.pos = start + 1;
        }
    }

    fn lex_string(&mut self) {
        let start = self.pos;
        let (value, _) = self.lex_quoted(b'"');
        self.push(TokenKind::String(value), start, self.pos);
    }

    /// Lexes `'c'` as an integer token holding the character's byte value.
    fn lex_char(&mut self) {
        let start = self.pos;
        let (value, terminated) = self.lex_quoted(b'\'');
        let span = Span::new(start, self.pos);
        let byte = match value.as_slice() {
            [byte] => *byte,
            _ if !terminated => 0,
            [] => {
                self.error(Diagnostic::error(span, "empty character literal"));
                0
            }
            _ => {
                self.error(
                    Diagnostic::error(span, "character literal is not a single byte")
                        .with_hint("use a string literal (\"...\") for text"),
                );
                0
            }
        };
        let literal = IntegerLiteral {
            value: u64::from(byte),
            suffix: IntegerSuffix::None,
        };
        self.push(TokenKind::Integer(literal), start, self.pos);
    }

    /// Lexes a literal that starts with the `quote` at the current position
    /// and returns its bytes with escapes resolved, and whether it has a
    /// closing quote. Leaves the position after the closing quote, or at the
    /// end of the line when there is none.
    fn lex_quoted(&mut self, quote: u8) -> (Vec<u8>, bool) {
        let start = self.pos;
        let mut pos = start + 1;
        let mut value = Vec::new();
        loop {
            match self.bytes.get(pos) {
                Some(&byte) if byte == quote => {
                    self.pos = pos + 1;
                    return (value, true);
                }
                None | Some(b'\n') => break,
                Some(b'\\') if matches!(self.byte_at(pos + 1), b'\n' | 0) => {
                    pos += 1;
                    break;
                }
                Some(b'\\') => pos = self.lex_escape(pos, &mut value),
                Some(&byte) => {
                    value.push(byte);
                    pos += 1;
                }
            }
        }

        let mut end = pos;
        if end > start + 1 && self.bytes[end - 1] == b'\r' {
            end -= 1;
        }
        let (what, closing) = if quote == b'"' {
            ("string", "\"")
        } else {
            ("character", "'")
        };
        self.error(
            Diagnostic::error(Span::new(start, end), format!("unterminated {what} literal")).with_hint(format!(
                "add a closing `{closing}`; a literal cannot span lines, so write `\\n` for a newline"
            )),
        );
        self.pos = pos;
        (value, false)
    }

    /// Resolves the escape sequence at `backslash`, appends its byte to
    /// `value`, and returns the offset after it.
    fn lex_escape(&mut self, backslash: usize, value: &mut Vec<u8>) -> usize {
        let pos = backslash + 1;
        let simple = match self.bytes[pos] {
            b'n' => Some(b'\n'),
            b't' => Some(b'\t'),
            b'r' => Some(b'\r'),
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'v' => Some(0x0b),
            b'e' => Some(0x1b),
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            b'\'' => Some(b'\''),
            _ => None,
        };
        if let Some(byte) = simple {
            value.push(byte);
            return pos + 1;
        }

        if self.bytes[pos] == b'x' {
            let mut end = pos + 1;
            while end < pos + 3 && self.byte_at(end).is_ascii_hexdigit() {
                end += 1;
            }
            let digits = &self.text[pos + 1..end];
            match u8::from_str_radix(digits, 16) {
                Ok(byte) => value.push(byte),
                Err(_) => self.error(
                    Diagnostic::error(Span::new(backslash, end), "missing hex digits after `\\x`")
                        .with_hint("write a byte as `\\xHH`, for example `\\x1b`"),
                ),
            }
            return end;
        }

        if (b'0'..=b'7').contains(&self.bytes[pos]) {
            let mut end = pos;
            while end < pos + 3 && (b'0'..=b'7').contains(&self.byte_at(end)) {
                end += 1;
            }
            let digits = &self.text[pos..end];
            match u8::from_str_radix(digits, 8) {
                Ok(byte) => value.push(byte),
                Err(_) => self.error(
                    Diagnostic::error(
                        Span::new(backslash, end),
                        format!("octal escape `\\{digits}` is out of range"),
                    )
                    .with_hint("the largest octal escape is `\\377`"),
                ),
            }
            return end;
        }

        let escaped = self.text[pos..].chars().next().unwrap_or('\0');
        let end = pos + escaped.len_utf8();
        self.error(
            Diagnostic::error(
                Span::new(backslash, end),
                format!("unknown escape sequence `\\{}`", escaped.escape_debug()),
            )
            .with_hint(r#"valid escapes are \n \t \r \a \b \f \v \e \\ \" \' \xHH and octal \NNN"#),
        );
        value.extend_from_slice(&self.bytes[pos..end]);
        end
    }

    /// Reports a run of characters that start no token, and skips it.
    fn lex_invalid_characters(&mut self) {
        let start = self.pos;
        let mut end = start;
        for c in self.text[start..].chars() {
            let starts_token = c.is_ascii() && (c.is_ascii_whitespace() || is_token_start(c as u8));
            if end > start && starts_token {
                break;
            }
            end += c.len_utf8();
        }
        let text = &self.text[start..end];
        let escaped: String = text.chars().flat_map(char::escape_debug).collect();
        let message = if text.chars().count() == 1 {
            format!("invalid character `{escaped}`")
        } else {
            format!("invalid characters `{escaped}`")
        };
        let mut diagnostic = Diagnostic::error(Span::new(start, end), message);
        if text.contains(['\u{201c}', '\u{201d}', '\u{2018}', '\u{2019}']) {
            diagnostic = diagnostic
                .with_hint("typographic quotes are not string delimiters; use ASCII `\"`");
        }
        self.error(diagnostic);
        self.pos = end;
    }
}

/// Returns the offset after the whitespace and comments that start at
/// `from`, and the offset of a `/*` that has no `*/`.
fn scan_trivia(bytes: &[u8], from: usize) -> (usize, Option<usize>) {
    let mut pos = from;
    loop {
        match bytes.get(pos) {
            Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) => pos += 1,
            Some(b'/') if bytes.get(pos + 1) == Some(&b'/') => {
                while pos < bytes.len() && bytes[pos] != b'\n' {
                    pos += 1;
                }
            }
            Some(b'/') if bytes.get(pos + 1) == Some(&b'*') => {
                let body = pos + 2;
                match bytes[body.min(bytes.len())..]
                    .windows(2)
                    .position(|pair| pair == b"*/")
                {
                    Some(offset) => pos = body + offset + 2,
                    None => return (bytes.len(), Some(pos)),
                }
            }
            _ => return (pos, None),
        }
    }
}

fn is_ident_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Returns true if an attach point may start with `c`: a letter, `_`, or any
/// non-ASCII character (which then gets an "unknown provider" message).
fn starts_attach_point(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

/// Returns true for the ASCII characters that start a token in code.
fn is_token_start(byte: u8) -> bool {
    is_ident_byte(byte) || b"\"'$@{}()[],;:?~.-+*/%&|^!=<>".contains(&byte)
}

/// The reason an integer literal is invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntegerError {
    /// The value does not fit in 64 bits.
    Overflow,
    InvalidDigit {
        digit: char,
        radix: u32,
    },
    /// A prefix such as `0x` with no digits after it.
    MissingDigits,
    InvalidSuffix(String),
}

/// Parses an integer literal: decimal (`1_000`, `1e6`), hexadecimal
/// (`0xff`), binary (`0b101`), octal (`0o17`, or C-style `017`), each with an
/// optional `u`/`l`/`ul`/`ll`/`ull` suffix in either case. `_` may separate
/// digits.
pub fn parse_integer(text: &str) -> Result<IntegerLiteral, IntegerError> {
    let lower = text.to_ascii_lowercase();
    let (radix, digits_start) = if lower.starts_with("0x") {
        (16, 2)
    } else if lower.starts_with("0b") {
        (2, 2)
    } else if lower.starts_with("0o") {
        (8, 2)
    } else if lower.len() > 1 && lower.starts_with('0') && lower.as_bytes()[1].is_ascii_digit() {
        (8, 1)
    } else {
        (10, 0)
    };

    let rest = &lower[digits_start..];
    let digits_len = rest
        .find(|c: char| {
            if radix == 16 {
                !c.is_ascii_hexdigit() && c != '_'
            } else {
                !c.is_ascii_digit() && c != '_'
            }
        })
        .unwrap_or(rest.len());
    let (digits, mut suffix) = rest.split_at(digits_len);

    let mut value: u64 = 0;
    let mut digit_count = 0;
    for c in digits.chars().filter(|&c| c != '_') {
        let digit = c
            .to_digit(radix)
            .ok_or(IntegerError::InvalidDigit { digit: c, radix })?;
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|value| value.checked_add(u64::from(digit)))
            .ok_or(IntegerError::Overflow)?;
        digit_count += 1;
    }
    if digit_count == 0 {
        return Err(IntegerError::MissingDigits);
    }

    if radix == 10
        && suffix.starts_with('e')
        && suffix[1..].starts_with(|c: char| c.is_ascii_digit())
    {
        let exponent_len = suffix[1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(suffix.len() - 1);
        let exponent: u32 = suffix[1..=exponent_len]
            .parse()
            .map_err(|_| IntegerError::Overflow)?;
        let scale = 10u64.checked_pow(exponent).ok_or(IntegerError::Overflow)?;
        value = value.checked_mul(scale).ok_or(IntegerError::Overflow)?;
        suffix = &suffix[1 + exponent_len..];
    }

    let suffix = match suffix {
        "" => IntegerSuffix::None,
        "u" => IntegerSuffix::Unsigned,
        "l" => IntegerSuffix::Long,
        "ul" | "lu" => IntegerSuffix::UnsignedLong,
        "ll" => IntegerSuffix::LongLong,
        "ull" | "llu" => IntegerSuffix::UnsignedLongLong,
        _ => {
            let start = text.len() - suffix.len();
            return Err(IntegerError::InvalidSuffix(text[start..].to_owned()));
        }
    };
    Ok(IntegerLiteral { value, suffix })
}

/// Builds the diagnostic for an invalid integer literal `text` at `span`.
pub fn integer_diagnostic(text: &str, span: Span, error: &IntegerError) -> Diagnostic {
    match error {
        IntegerError::Overflow => Diagnostic::error(span, format!("integer `{text}` is too large"))
            .with_hint("integers are 64 bits wide: the maximum is 18446744073709551615"),
        IntegerError::InvalidDigit { digit, radix } => {
            let base = match radix {
                2 => "binary",
                8 => "octal",
                16 => "hexadecimal",
                _ => "decimal",
            };
            let diagnostic = Diagnostic::error(
                span,
                format!("invalid digit `{digit}` in {base} integer `{text}`"),
            );
            if *radix == 8 && !text.to_ascii_lowercase().starts_with("0o") {
                diagnostic.with_hint(
                    "a leading `0` makes an integer octal; remove it for a decimal integer",
                )
            } else {
                diagnostic
            }
        }
        IntegerError::MissingDigits => {
            Diagnostic::error(span, format!("missing digits in integer `{text}`"))
        }
        IntegerError::InvalidSuffix(suffix) => Diagnostic::error(
            span,
            format!("invalid suffix `{suffix}` on integer `{text}`"),
        )
        .with_hint("integer suffixes are `u`, `l`, `ul`, `ll` and `ull`"),
    }
}

#[cfg(test)]
mod tests {
    use super::{IntegerError, parse_integer, tokenize};
    use crate::script::ast::{IntegerLiteral, IntegerSuffix};
    use crate::script::diagnostic::render_all;
    use crate::script::span::{Source, Span};
    use crate::script::token::TokenKind::{self, *};

    fn kinds(text: &str) -> Vec<TokenKind> {
        let (tokens, diagnostics) = tokenize(text);
        assert!(
            diagnostics.is_empty(),
            "unexpected diagnostics for {text:?}: {diagnostics:#?}"
        );
        let mut kinds: Vec<TokenKind> = tokens.into_iter().map(|token| token.kind).collect();
        assert_eq!(kinds.pop(), Some(EndOfInput));
        kinds
    }

    /// Lexes `text` as a probe body so that it is lexed as code.
    fn code_kinds(text: &str) -> Vec<TokenKind> {
        let mut kinds = kinds(&format!("BEGIN {{ {text} }}"));
        assert_eq!(
            kinds.drain(..2).collect::<Vec<_>>(),
            [AttachPoint("BEGIN".into()), LeftBrace]
        );
        assert_eq!(kinds.pop(), Some(RightBrace));
        kinds
    }

    fn errors(text: &str) -> std::string::String {
        let (_, diagnostics) = tokenize(text);
        render_all(&diagnostics, &Source::new("-e", text))
    }

    fn int(value: u64) -> TokenKind {
        Integer(IntegerLiteral {
            value,
            suffix: IntegerSuffix::None,
        })
    }

    fn ident(name: &str) -> TokenKind {
        Identifier(name.into())
    }

    fn attach(text: &str) -> TokenKind {
        AttachPoint(text.into())
    }

    #[test]
    fn punctuation_table() {
        let table: &[(&str, TokenKind)] = &[
            ("{", LeftBrace),
            ("(", LeftParen),
            (")", RightParen),
            ("[", LeftBracket),
            ("]", RightBracket),
            (",", Comma),
            (";", Semicolon),
            (":", Colon),
            ("?", Question),
            (".", Dot),
            ("..", DotDot),
            ("->", Arrow),
            ("+", Plus),
            ("-", Minus),
            ("*", Star),
            ("/", Slash),
            ("%", Percent),
            ("&", Ampersand),
            ("|", Pipe),
            ("^", Caret),
            ("!", Bang),
            ("~", Tilde),
            ("<<", ShiftLeft),
            (">>", ShiftRight),
            ("<", Less),
            ("<=", LessEqual),
            (">", Greater),
            (">=", GreaterEqual),
            ("==", EqualEqual),
            ("!=", NotEqual),
            ("&&", AndAnd),
            ("||", OrOr),
            ("=", Assign),
            ("+=", PlusAssign),
            ("-=", MinusAssign),
            ("*=", StarAssign),
            ("/=", SlashAssign),
            ("%=", PercentAssign),
            ("&=", AmpersandAssign),
            ("|=", PipeAssign),
            ("^=", CaretAssign),
            ("<<=", ShiftLeftAssign),
            (">>=", ShiftRightAssign),
            ("++", PlusPlus),
            ("--", MinusMinus),
        ];
        for (text, kind) in table {
            assert_eq!(code_kinds(text), [kind.clone()], "lexing {text:?}");
            assert_eq!(kind.symbol(), Some(*text), "symbol of {kind:?}");
        }
    }

    #[test]
    fn keyword_and_name_table() {
        let table: &[(&str, TokenKind)] = &[
            ("if", If),
            ("else", Else),
            ("unroll", Unroll),
            ("while", While),
            ("for", For),
            ("return", Return),
            ("break", Break),
            ("continue", Continue),
            ("let", Let),
            ("true", True),
            ("false", False),
            ("struct", Struct),
            ("union", Union),
            ("enum", Enum),
            ("sizeof", Sizeof),
            ("offsetof", Offsetof),
            ("pid", ident("pid")),
            ("arg0", ident("arg0")),
            ("_x9", ident("_x9")),
            ("iff", ident("iff")),
            ("$x", Variable("x".into())),
            ("$_tmp1", Variable("_tmp1".into())),
            ("$1", Positional(1)),
            ("$12", Positional(12)),
            ("$#", PositionalCount),
            ("@", Map(std::string::String::new())),
            ("@counts", Map("counts".into())),
            ("@_1", Map("_1".into())),
        ];
        for (text, kind) in table {
            assert_eq!(code_kinds(text), [kind.clone()], "lexing {text:?}");
        }
    }

    #[test]
    fn integer_table() {
        let table: &[(&str, u64, IntegerSuffix)] = &[
            ("0", 0, IntegerSuffix::None),
            ("42", 42, IntegerSuffix::None),
            ("1_000_000", 1_000_000, IntegerSuffix::None),
            ("0x1F", 31, IntegerSuffix::None),
            ("0XfF", 255, IntegerSuffix::None),
            ("0b1010", 10, IntegerSuffix::None),
            ("0o17", 15, IntegerSuffix::None),
            ("017", 15, IntegerSuffix::None),
            ("1e6", 1_000_000, IntegerSuffix::None),
            ("5E3", 5_000, IntegerSuffix::None),
            ("10u", 10, IntegerSuffix::Unsigned),
            ("10L", 10, IntegerSuffix::Long),
            ("10ul", 10, IntegerSuffix::UnsignedLong),
            ("10LU", 10, IntegerSuffix::UnsignedLong),
            ("10ll", 10, IntegerSuffix::LongLong),
            ("0xffULL", 255, IntegerSuffix::UnsignedLongLong),
            ("18446744073709551615", u64::MAX, IntegerSuffix::None),
            ("0xffff_ffff_ffff_ffff", u64::MAX, IntegerSuffix::None),
        ];
        for &(text, value, suffix) in table {
            assert_eq!(
                parse_integer(text),
                Ok(IntegerLiteral { value, suffix }),
                "parsing {text:?}"
            );
            assert_eq!(
                code_kinds(text),
                [Integer(IntegerLiteral { value, suffix })],
                "lexing {text:?}"
            );
        }
    }

    #[test]
    fn integer_errors() {
        assert_eq!(
            parse_integer("18446744073709551616"),
            Err(IntegerError::Overflow)
        );
        assert_eq!(
            parse_integer("0x1_0000_0000_0000_0000"),
            Err(IntegerError::Overflow)
        );
        assert_eq!(parse_integer("2e19"), Err(IntegerError::Overflow));
        assert_eq!(parse_integer("1e99999999999"), Err(IntegerError::Overflow));
        assert_eq!(
            parse_integer("09"),
            Err(IntegerError::InvalidDigit {
                digit: '9',
                radix: 8
            })
        );
        assert_eq!(
            parse_integer("0b102"),
            Err(IntegerError::InvalidDigit {
                digit: '2',
                radix: 2
            })
        );
        assert_eq!(parse_integer("0x"), Err(IntegerError::MissingDigits));
        assert_eq!(parse_integer("0b_"), Err(IntegerError::MissingDigits));
        assert_eq!(
            parse_integer("10ms"),
            Err(IntegerError::InvalidSuffix("ms".into()))
        );
        assert_eq!(
            parse_integer("1e"),
            Err(IntegerError::InvalidSuffix("e".into()))
        );
        assert_eq!(
            parse_integer("7UU"),
            Err(IntegerError::InvalidSuffix("UU".into()))
        );
    }

    #[test]
    fn integer_overflow_is_a_diagnostic() {
        let expected = "\
error: integer `99999999999999999999` is too large
  --> -e:1:14
  |
1 | BEGIN { $x = 99999999999999999999; }
  |              ^^^^^^^^^^^^^^^^^^^^
  = hint: integers are 64 bits wide: the maximum is 18446744073709551615
";
        assert_eq!(errors("BEGIN { $x = 99999999999999999999; }"), expected);
    }

    #[test]
    fn octal_digit_error_has_hint() {
        let expected = "\
error: invalid digit `8` in octal integer `0800`
  --> -e:1:9
  |
1 | BEGIN { 0800 }
  |         ^^^^
  = hint: a leading `0` makes an integer octal; remove it for a decimal integer
";
        assert_eq!(errors("BEGIN { 0800 }"), expected);
    }

    #[test]
    fn string_escapes() {
        let table: &[(&str, &[u8])] = &[
            (r#""plain""#, b"plain"),
            (r#""a\nb\tc""#, b"a\nb\tc"),
            (r#""\\ \" \'""#, b"\\ \" '"),
            (r#""\r\a\b\f\v\e""#, b"\r\x07\x08\x0c\x0b\x1b"),
            (r#""\x41\x7e\xff""#, b"A~\xff"),
            (r#""\x4g""#, b"\x04g"),
            (r#""\101\0\12""#, b"A\0\n"),
            (r#""\1012""#, b"A2"),
            ("\"é→\"", "é→".as_bytes()),
            (r#""""#, b""),
        ];
        for (text, bytes) in table {
            assert_eq!(code_kinds(text), [String(bytes.to_vec())], "lexing {text}");
        }
    }

    #[test]
    fn char_literals_are_integers() {
        assert_eq!(code_kinds("'a'"), [int(97)]);
        assert_eq!(code_kinds(r"'\n'"), [int(10)]);
        assert_eq!(code_kinds(r"'\x00'"), [int(0)]);
        assert_eq!(code_kinds(r"'\''"), [int(39)]);
    }

    #[test]
    fn char_literal_errors() {
        let rendered = errors("BEGIN { 'ab'; ''; 'é' }");
        assert!(
            rendered.contains("error: character literal is not a single byte\n  --> -e:1:9"),
            "{rendered}"
        );
        assert!(
            rendered.contains("error: empty character literal\n  --> -e:1:15"),
            "{rendered}"
        );
        assert!(rendered.contains("-e:1:19"), "`é` is two bytes: {rendered}");
    }

    #[test]
    fn unterminated_string() {
        let expected = "\
error: unterminated string literal
  --> -e:1:16
  |
1 | BEGIN { printf(\"hello);
  |                ^^^^^^^^
  = hint: add a closing `\"`; a literal cannot span lines, so write `\\n` for a newline
";
        assert_eq!(errors("BEGIN { printf(\"hello);\n}"), expected);
        let (tokens, _) = tokenize("BEGIN { printf(\"hello);\n}");
        let kinds: Vec<_> = tokens.iter().map(|token| &token.kind).collect();
        assert_eq!(
            kinds[kinds.len() - 2],
            &RightBrace,
            "lexing goes on after the line"
        );
    }

    #[test]
    fn unknown_escape() {
        let expected = "\
error: unknown escape sequence `\\q`
  --> -e:1:18
  |
1 | BEGIN { printf(\"a\\qb\") }
  |                  ^^
  = hint: valid escapes are \\n \\t \\r \\a \\b \\f \\v \\e \\\\ \\\" \\' \\xHH and octal \\NNN
";
        assert_eq!(errors("BEGIN { printf(\"a\\qb\") }"), expected);
        let (tokens, _) = tokenize("BEGIN { \"a\\qb\" }");
        assert_eq!(
            tokens[2].kind,
            String(b"aqb".to_vec()),
            "the escaped character is kept"
        );
    }

    #[test]
    fn escape_errors() {
        let rendered = errors(r#"BEGIN { "\x"; "\400"; "\é" }"#);
        assert!(
            rendered.contains("error: missing hex digits after `\\x`"),
            "{rendered}"
        );
        assert!(
            rendered.contains("error: octal escape `\\400` is out of range"),
            "{rendered}"
        );
        assert!(
            rendered.contains("error: unknown escape sequence `\\é`"),
            "{rendered}"
        );
    }

    #[test]
    fn attach_point_runs() {
        let table: &[(&str, &[&str])] = &[
            ("BEGIN{}", &["BEGIN"]),
            ("kprobe:vfs_read {}", &["kprobe:vfs_read"]),
            ("kprobe:vfs_* {}", &["kprobe:vfs_*"]),
            ("kprobe:foo.isra.0 {}", &["kprobe:foo.isra.0"]),
            (
                "kprobe:ext4:ext4_file_open+0x10 {}",
                &["kprobe:ext4:ext4_file_open+0x10"],
            ),
            ("t:syscalls:sys_enter_* {}", &["t:syscalls:sys_enter_*"]),
            (
                "uprobe:/usr/lib/libc.so.6:malloc {}",
                &["uprobe:/usr/lib/libc.so.6:malloc"],
            ),
            ("uretprobe:./a.out:main{}", &["uretprobe:./a.out:main"]),
            ("usdt:/bin/x:p:n {}", &["usdt:/bin/x:p:n"]),
            ("software:cpu-clock:1000 {}", &["software:cpu-clock:1000"]),
            (
                "interval:ms:100,profile:hz:99{}",
                &["interval:ms:100", "profile:hz:99"],
            ),
            ("BEGIN,\n  END {}", &["BEGIN", "END"]),
            (
                "uprobe:\"/opt/my app/bin\":f {}",
                &["uprobe:\"/opt/my app/bin\":f"],
            ),
            ("kprobe:f?o {}", &["kprobe:f?o"]),
        ];
        for (text, expected) in table {
            let attach_points: Vec<TokenKind> = kinds(text)
                .into_iter()
                .filter(|kind| matches!(kind, AttachPoint(_)))
                .collect();
            let expected: Vec<TokenKind> = expected.iter().map(|text| attach(text)).collect();
            assert_eq!(attach_points, expected, "lexing {text:?}");
        }
    }

    #[test]
    fn probe_with_predicate() {
        assert_eq!(
            kinds("kprobe:f /pid == 1/ { @x = 1 }"),
            [
                attach("kprobe:f"),
                Slash,
                ident("pid"),
                EqualEqual,
                int(1),
                PredicateEnd,
                LeftBrace,
                Map("x".into()),
                Assign,
                int(1),
                RightBrace,
            ]
        );
    }

    #[test]
    fn predicate_without_spaces_and_with_division() {
        assert_eq!(
            kinds("kprobe:f/$1 / 2/{}"),
            [
                attach("kprobe:f"),
                Slash,
                Positional(1),
                Slash,
                int(2),
                PredicateEnd,
                LeftBrace,
                RightBrace
            ]
        );
        assert_eq!(
            kinds("kprobe:f /x/ // comment\n /* more */ {}"),
            [
                attach("kprobe:f"),
                Slash,
                ident("x"),
                PredicateEnd,
                LeftBrace,
                RightBrace
            ]
        );
    }

    #[test]
    fn slash_brace_inside_body_is_division() {
        assert_eq!(
            code_kinds("$x / {"),
            [Variable("x".into()), Slash, LeftBrace]
        );
    }

    #[test]
    fn second_probe_is_attach_point_again() {
        assert_eq!(
            kinds("BEGIN { if (1) { } } kprobe:a,kprobe:b { }"),
            [
                attach("BEGIN"),
                LeftBrace,
                If,
                LeftParen,
                int(1),
                RightParen,
                LeftBrace,
                RightBrace,
                RightBrace,
                attach("kprobe:a"),
                Comma,
                attach("kprobe:b"),
                LeftBrace,
                RightBrace,
            ]
        );
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(
            kinds("// preamble\n/* block\n comment */ BEGIN { 1 // x\n /* y */ }"),
            [attach("BEGIN"), LeftBrace, int(1), RightBrace]
        );
    }

    #[test]
    fn c_definitions_in_preamble() {
        let text = "#include <linux/sched.h>\n#define X \\\n 1\nstruct foo { int a; struct { int b; } c; };\ntypedef int my_t;\nBEGIN {}";
        assert_eq!(
            kinds(text),
            [
                CPreprocessor("#include <linux/sched.h>".into()),
                CPreprocessor("#define X \\\n 1".into()),
                CDefinition("struct foo { int a; struct { int b; } c; };".into()),
                CDefinition("typedef int my_t;".into()),
                attach("BEGIN"),
                LeftBrace,
                RightBrace,
            ]
        );
    }

    #[test]
    fn shebang_line_is_skipped() {
        assert_eq!(
            kinds("#!/usr/bin/env probe\nBEGIN {}"),
            [attach("BEGIN"), LeftBrace, RightBrace]
        );
        assert_eq!(kinds("#!"), []);
        assert_eq!(
            kinds("BEGIN {}\n#!x"),
            [
                attach("BEGIN"),
                LeftBrace,
                RightBrace,
                CPreprocessor("#!x".into())
            ],
            "only the first line is a shebang"
        );
    }

    #[test]
    fn struct_keyword_in_body_is_a_token() {
        assert_eq!(
            code_kinds("(struct task_struct *)curtask"),
            [
                LeftParen,
                Struct,
                ident("task_struct"),
                Star,
                RightParen,
                ident("curtask")
            ]
        );
    }

    #[test]
    fn token_spans() {
        let (tokens, _) = tokenize("BEGIN { @x[\"é\"] = 10; }");
        let spans: Vec<Span> = tokens.iter().map(|token| token.span).collect();
        assert_eq!(
            spans,
            [
                Span::new(0, 5),
                Span::new(6, 7),
                Span::new(8, 10),
                Span::new(10, 11),
                Span::new(11, 15),
                Span::new(15, 16),
                Span::new(17, 18),
                Span::new(19, 21),
                Span::new(21, 22),
                Span::new(23, 24),
                Span::at(24),
            ]
        );
    }

    #[test]
    fn invalid_characters_are_reported_once_per_run() {
        let expected = "\
error: invalid characters `€€`
  --> -e:1:9
  |
1 | BEGIN { €€ 1 }
  |         ^^
";
        assert_eq!(errors("BEGIN { €€ 1 }"), expected);
        let rendered = errors("BEGIN { printf(“hi”) }");
        assert!(rendered.contains("use ASCII `\"`"), "{rendered}");
        let rendered = errors("BEGIN { # }");
        assert!(rendered.contains("invalid character `#`"), "{rendered}");
    }

    #[test]
    fn unterminated_block_comment() {
        let expected = "\
error: unterminated block comment
  --> -e:1:9
  |
1 | BEGIN { /* never closed
  |         ^^
  = hint: close the comment with `*/`
";
        assert_eq!(errors("BEGIN { /* never closed\n}"), expected);
    }

    #[test]
    fn lone_dollar_and_huge_positional() {
        let rendered = errors("BEGIN { $ ; $99999999999 }");
        assert!(
            rendered.contains("expected a variable name after `$`"),
            "{rendered}"
        );
        assert!(
            rendered.contains("invalid positional parameter `$99999999999`"),
            "{rendered}"
        );
    }

    #[test]
    fn edge_inputs_do_not_panic() {
        for text in [
            "",
            "/",
            "\"",
            "'",
            "\\",
            "$",
            "@",
            "#",
            "/*",
            "\"\\",
            "'\\",
            "\"\\x",
            "kprobe:\"",
            "é",
            "\u{0}",
            "0x",
            "struct",
        ] {
            let (tokens, _) = tokenize(text);
            assert_eq!(
                tokens.last().map(|token| &token.kind),
                Some(&EndOfInput),
                "lexing {text:?}"
            );
        }
    }
}
