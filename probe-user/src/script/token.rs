//! Tokens produced by the lexer.

use std::fmt;

use super::ast::IntegerLiteral;
use super::span::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TokenKind {
    /// An attach point as one raw run of text, such as `kprobe:vfs_*` or
    /// `uprobe:/usr/bin/bash:readline`, lexed only where a probe header is
    /// expected. The parser splits it.
    AttachPoint(String),
    /// A preprocessor line at the top level, such as `#include <x.h>`.
    CPreprocessor(String),
    /// A C `struct`, `union` or `enum` definition or a `typedef` at the top
    /// level, as raw text.
    CDefinition(String),
    /// The `/` that closes a predicate: a `/` outside any probe body that is
    /// followed by `{`, with only whitespace and comments in between.
    PredicateEnd,

    Identifier(String),
    Integer(IntegerLiteral),
    /// A string literal's bytes after escapes are resolved.
    String(Vec<u8>),
    /// `$name`, without the `$`.
    Variable(String),
    /// `$N`.
    Positional(u32),
    /// `$#`.
    PositionalCount,
    /// `@name`, without the `@`; empty for the anonymous map `@`.
    Map(String),

    // Keywords.
    If,
    Else,
    Unroll,
    While,
    For,
    Return,
    Break,
    Continue,
    Let,
    True,
    False,
    Struct,
    Union,
    Enum,
    Sizeof,
    Offsetof,

    // Punctuation.
    LeftBrace,
    RightBrace,
    LeftParen,
    RightParen,
    LeftBracket,
    RightBracket,
    Comma,
    Semicolon,
    Colon,
    Question,
    Dot,
    DotDot,
    Arrow,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Ampersand,
    Pipe,
    Caret,
    Bang,
    Tilde,
    ShiftLeft,
    ShiftRight,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    EqualEqual,
    NotEqual,
    AndAnd,
    OrOr,
    Assign,
    PlusAssign,
    MinusAssign,
    StarAssign,
    SlashAssign,
    PercentAssign,
    AmpersandAssign,
    PipeAssign,
    CaretAssign,
    ShiftLeftAssign,
    ShiftRightAssign,
    PlusPlus,
    MinusMinus,

    EndOfInput,
}

impl TokenKind {
    /// Returns the keyword token for `word`, if it is one.
    pub fn keyword(word: &str) -> Option<TokenKind> {
        let kind = match word {
            "if" => TokenKind::If,
            "else" => TokenKind::Else,
            "unroll" => TokenKind::Unroll,
            "while" => TokenKind::While,
            "for" => TokenKind::For,
            "return" => TokenKind::Return,
            "break" => TokenKind::Break,
            "continue" => TokenKind::Continue,
            "let" => TokenKind::Let,
            "true" => TokenKind::True,
            "false" => TokenKind::False,
            "struct" => TokenKind::Struct,
            "union" => TokenKind::Union,
            "enum" => TokenKind::Enum,
            "sizeof" => TokenKind::Sizeof,
            "offsetof" => TokenKind::Offsetof,
            _ => return None,
        };
        Some(kind)
    }

    /// Returns the text of a keyword or punctuation token, or `None` for
    /// tokens that carry a value.
    pub fn symbol(&self) -> Option<&'static str> {
        let symbol = match self {
            TokenKind::AttachPoint(_)
            | TokenKind::CPreprocessor(_)
            | TokenKind::CDefinition(_)
            | TokenKind::Identifier(_)
            | TokenKind::Integer(_)
            | TokenKind::String(_)
            | TokenKind::Variable(_)
            | TokenKind::Positional(_)
            | TokenKind::PositionalCount
            | TokenKind::Map(_)
            | TokenKind::EndOfInput => return None,
            TokenKind::PredicateEnd => "/",
            TokenKind::If => "if",
            TokenKind::Else => "else",
            TokenKind::Unroll => "unroll",
            TokenKind::While => "while",
            TokenKind::For => "for",
            TokenKind::Return => "return",
            TokenKind::Break => "break",
            TokenKind::Continue => "continue",
            TokenKind::Let => "let",
            TokenKind::True => "true",
            TokenKind::False => "false",
            TokenKind::Struct => "struct",
            TokenKind::Union => "union",
            TokenKind::Enum => "enum",
            TokenKind::Sizeof => "sizeof",
            TokenKind::Offsetof => "offsetof",
            TokenKind::LeftBrace => "{",
            TokenKind::RightBrace => "}",
            TokenKind::LeftParen => "(",
            TokenKind::RightParen => ")",
            TokenKind::LeftBracket => "[",
            TokenKind::RightBracket => "]",
            TokenKind::Comma => ",",
            TokenKind::Semicolon => ";",
            TokenKind::Colon => ":",
            TokenKind::Question => "?",
            TokenKind::Dot => ".",
            TokenKind::DotDot => "..",
            TokenKind::Arrow => "->",
            TokenKind::Plus => "+",
            TokenKind::Minus => "-",
            TokenKind::Star => "*",
            TokenKind::Slash => "/",
            TokenKind::Percent => "%",
            TokenKind::Ampersand => "&",
            TokenKind::Pipe => "|",
            TokenKind::Caret => "^",
            TokenKind::Bang => "!",
            TokenKind::Tilde => "~",
            TokenKind::ShiftLeft => "<<",
            TokenKind::ShiftRight => ">>",
            TokenKind::Less => "<",
            TokenKind::LessEqual => "<=",
            TokenKind::Greater => ">",
            TokenKind::GreaterEqual => ">=",
            TokenKind::EqualEqual => "==",
            TokenKind::NotEqual => "!=",
            TokenKind::AndAnd => "&&",
            TokenKind::OrOr => "||",
            TokenKind::Assign => "=",
            TokenKind::PlusAssign => "+=",
            TokenKind::MinusAssign => "-=",
            TokenKind::StarAssign => "*=",
            TokenKind::SlashAssign => "/=",
            TokenKind::PercentAssign => "%=",
            TokenKind::AmpersandAssign => "&=",
            TokenKind::PipeAssign => "|=",
            TokenKind::CaretAssign => "^=",
            TokenKind::ShiftLeftAssign => "<<=",
            TokenKind::ShiftRightAssign => ">>=",
            TokenKind::PlusPlus => "++",
            TokenKind::MinusMinus => "--",
        };
        Some(symbol)
    }
}

/// Describes a token for "found ..." in messages: `` `;` ``, ``identifier
/// `pid` ``, `end of input`.
impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(symbol) = self.symbol() {
            return write!(f, "`{symbol}`");
        }
        match self {
            TokenKind::AttachPoint(text) => write!(f, "attach point `{text}`"),
            TokenKind::CPreprocessor(_) => f.write_str("preprocessor directive"),
            TokenKind::CDefinition(_) => f.write_str("C definition"),
            TokenKind::Identifier(name) => write!(f, "identifier `{name}`"),
            TokenKind::Integer(literal) => write!(f, "integer `{}`", literal.value),
            TokenKind::String(_) => f.write_str("string literal"),
            TokenKind::Variable(name) => write!(f, "variable `${name}`"),
            TokenKind::Positional(index) => write!(f, "positional parameter `${index}`"),
            TokenKind::PositionalCount => f.write_str("`$#`"),
            TokenKind::Map(name) => write!(f, "map `@{name}`"),
            TokenKind::EndOfInput => f.write_str("end of input"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TokenKind;

    #[test]
    fn keywords_round_trip() {
        for word in [
            "if", "else", "unroll", "while", "for", "return", "let", "sizeof",
        ] {
            let kind = TokenKind::keyword(word).unwrap();
            assert_eq!(kind.symbol(), Some(word));
        }
        assert_eq!(TokenKind::keyword("pid"), None);
        assert_eq!(
            TokenKind::keyword("If"),
            None,
            "keywords are case-sensitive"
        );
    }

    #[test]
    fn display_describes_tokens() {
        assert_eq!(TokenKind::Semicolon.to_string(), "`;`");
        assert_eq!(
            TokenKind::Identifier("exit".into()).to_string(),
            "identifier `exit`"
        );
        assert_eq!(TokenKind::Map(String::new()).to_string(), "map `@`");
        assert_eq!(TokenKind::Variable("x".into()).to_string(), "variable `$x`");
        assert_eq!(TokenKind::EndOfInput.to_string(), "end of input");
        assert_eq!(TokenKind::PredicateEnd.to_string(), "`/`");
    }
}
