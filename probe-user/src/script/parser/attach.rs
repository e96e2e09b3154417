//! Attach points: splits the raw text the lexer produced into a provider
//! and its parts, and checks the parts' shape for each provider.
//!
//! Parts are separated by `:`; a part may be quoted (`uprobe:"/opt/my
//! app":main`) to contain `:` or spaces. Whether a function or tracepoint
//! exists is left to later stages.

use crate::script::ast::{AttachPoint, AttachTarget, Location, Name, Number, Provider, RateUnit};
use crate::script::diagnostic::Diagnostic;
use crate::script::lexer::{integer_diagnostic, parse_integer};
use crate::script::span::Span;
use crate::suggest::close_matches;

/// Provider names and their aliases, as bpftrace accepts them.
const PROVIDERS: &[(&str, Provider)] = &[
    ("BEGIN", Provider::Begin),
    ("END", Provider::End),
    ("kprobe", Provider::Kprobe),
    ("k", Provider::Kprobe),
    ("kretprobe", Provider::Kretprobe),
    ("kr", Provider::Kretprobe),
    ("uprobe", Provider::Uprobe),
    ("u", Provider::Uprobe),
    ("uretprobe", Provider::Uretprobe),
    ("ur", Provider::Uretprobe),
    ("usdt", Provider::Usdt),
    ("U", Provider::Usdt),
    ("tracepoint", Provider::Tracepoint),
    ("t", Provider::Tracepoint),
    ("rawtracepoint", Provider::RawTracepoint),
    ("rt", Provider::RawTracepoint),
    ("fentry", Provider::Fentry),
    ("f", Provider::Fentry),
    ("kfunc", Provider::Fentry),
    ("fexit", Provider::Fexit),
    ("fr", Provider::Fexit),
    ("kretfunc", Provider::Fexit),
    ("software", Provider::Software),
    ("s", Provider::Software),
    ("hardware", Provider::Hardware),
    ("h", Provider::Hardware),
    ("profile", Provider::Profile),
    ("p", Provider::Profile),
    ("interval", Provider::Interval),
    ("i", Provider::Interval),
    ("watchpoint", Provider::Watchpoint),
    ("w", Provider::Watchpoint),
    ("asyncwatchpoint", Provider::AsyncWatchpoint),
    ("aw", Provider::AsyncWatchpoint),
    ("iter", Provider::Iter),
    ("it", Provider::Iter),
    ("lsm", Provider::Lsm),
];

/// Parses the attach point `raw` found at `span`. Reports problems to
/// `diagnostics` and returns `None` when the attach point is unusable.
pub(super) fn parse_attach_point(
    raw: &str,
    span: Span,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<AttachPoint> {
    let mut parts = split_parts(raw, span);
    let provider_part = parts.remove(0);
    let Some(provider) = lookup_provider(&provider_part.text) else {
        diagnostics.push(unknown_provider(&provider_part, parts.is_empty()));
        return None;
    };
    let mut checker = Checker {
        provider,
        raw,
        span,
        diagnostics,
    };
    let target = checker.target(&parts)?;
    Some(AttachPoint {
        provider,
        provider_name: Name {
            text: provider_part.text,
            span: provider_part.span,
        },
        target,
        raw: raw.to_owned(),
        span,
    })
}

fn lookup_provider(text: &str) -> Option<Provider> {
    PROVIDERS
        .iter()
        .find(|(name, _)| *name == text)
        .map(|&(_, provider)| provider)
}

fn unknown_provider(part: &Part, has_no_colon: bool) -> Diagnostic {
    let text = &part.text;
    let mut diagnostic = Diagnostic::error(part.span, format!("unknown probe provider `{text}`"));
    let full_names: Vec<&str> = PROVIDERS
        .iter()
        .map(|(_, provider)| provider.name())
        .collect();
    let mut suggestions: Vec<String> = PROVIDERS
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, provider)| provider.name().to_owned())
        .collect();
    if suggestions.is_empty() {
        let mut unique = full_names.clone();
        unique.dedup();
        suggestions = closest(text, close_matches(text, unique, 3));
    }
    if !suggestions.is_empty() {
        let quoted: Vec<String> = suggestions.iter().map(|name| format!("`{name}`")).collect();
        diagnostic = diagnostic.with_hint(format!("did you mean {}?", join_or(&quoted)));
    } else if has_no_colon {
        diagnostic = diagnostic.with_hint(format!(
            "an attach point starts with a provider, as in `kprobe:{text}` or `tracepoint:CATEGORY:{text}`"
        ));
    } else {
        let mut unique = full_names;
        unique.dedup();
        diagnostic = diagnostic.with_hint(format!("the providers are {}", unique.join(", ")));
    }
    diagnostic
}

/// Keeps the candidates at the smallest edit distance from `text`, so that
/// `kprobes` suggests `kprobe` but not also `uprobe`.
fn closest(text: &str, candidates: Vec<String>) -> Vec<String> {
    let distance = |name: &String| strsim::levenshtein(text, name);
    let Some(best) = candidates.iter().map(distance).min() else {
        return candidates;
    };
    candidates
        .into_iter()
        .filter(|name| distance(name) == best)
        .collect()
}

/// Joins `["a", "b", "c"]` as `a, b or c`.
fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// One `:`-separated part with its quotes removed.
#[derive(Clone, Debug)]
struct Part {
    text: String,
    span: Span,
    quoted: bool,
}

impl Part {
    /// Returns the span of `text[start..end]` when the part is not quoted,
    /// and the whole part's span otherwise.
    fn sub_span(&self, start: usize, end: usize) -> Span {
        if self.quoted {
            self.span
        } else {
            Span::new(self.span.start + start, self.span.start + end)
        }
    }
}

/// Splits `raw` at each `:` outside quotes. `\` inside quotes escapes the
/// next character. Always returns at least one part.
fn split_parts(raw: &str, span: Span) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut part_start = 0;
    let mut in_quote = false;
    let mut quoted = false;
    let mut chars = raw.char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '"' => {
                in_quote = !in_quote;
                quoted = true;
            }
            '\\' if in_quote => text.extend(chars.next().map(|(_, escaped)| escaped)),
            ':' if !in_quote => {
                let part_span = Span::new(span.start + part_start, span.start + offset);
                parts.push(Part {
                    text: std::mem::take(&mut text),
                    span: part_span,
                    quoted,
                });
                part_start = offset + 1;
                quoted = false;
            }
            _ => text.push(c),
        }
    }
    let part_span = Span::new(span.start + part_start, span.start + raw.len());
    parts.push(Part {
        text,
        span: part_span,
        quoted,
    });
    parts
}

/// The strictness of the check on a name part.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameKind {
    /// Kernel symbols, tracepoint names, modules, hooks: letters, digits
    /// and `_ . - $`, plus the wildcards `* ? [ ]`.
    Symbol,
    /// File paths and user-space symbols (C++ names contain `:`, `<`, `(`
    /// and spaces): anything but an empty string.
    Any,
}

struct Checker<'d> {
    provider: Provider,
    raw: &'d str,
    span: Span,
    diagnostics: &'d mut Vec<Diagnostic>,
}

impl Checker<'_> {
    fn target(&mut self, args: &[Part]) -> Option<AttachTarget> {
        match self.provider {
            Provider::Begin | Provider::End => {
                if let Some(first) = args.first() {
                    let extra = first.span.to(args[args.len() - 1].span);
                    self.error(
                        Span::new(extra.start.saturating_sub(1), extra.end),
                        format!("`{}` takes no target", self.provider.name()),
                    );
                    return None;
                }
                Some(AttachTarget::None)
            }
            Provider::Kprobe | Provider::Kretprobe => {
                let (module, location) = match args {
                    [location] => (None, location),
                    [module, location] => (
                        Some(self.name(module, "module name", NameKind::Symbol)?),
                        location,
                    ),
                    _ => return self.wrong_part_count(),
                };
                let location = self.kernel_location(location)?;
                Some(AttachTarget::Kprobe { module, location })
            }
            Provider::Fentry | Provider::Fexit => {
                let (module, function) = match args {
                    [function] => (None, function),
                    [module, function] => (
                        Some(self.name(module, "module name", NameKind::Symbol)?),
                        function,
                    ),
                    _ => return self.wrong_part_count(),
                };
                let function = self.name(function, "function name", NameKind::Symbol)?;
                Some(AttachTarget::Fentry { module, function })
            }
            Provider::Uprobe | Provider::Uretprobe => self.uprobe(args),
            Provider::Usdt => {
                let (binary, provider, name) = match args {
                    [name] => (None, None, name),
                    [binary, name] => (Some(binary), None, name),
                    [binary, provider, name] => (Some(binary), Some(provider), name),
                    _ => return self.wrong_part_count(),
                };
                let binary = match binary {
                    Some(binary) => Some(self.name(binary, "binary path", NameKind::Any)?),
                    None => None,
                };
                let provider = match provider {
                    Some(provider) => {
                        Some(self.name(provider, "USDT provider", NameKind::Symbol)?)
                    }
                    None => None,
                };
                let name = self.name(name, "probe name", NameKind::Symbol)?;
                Some(AttachTarget::Usdt {
                    binary,
                    provider,
                    name,
                })
            }
            Provider::Tracepoint => {
                let [category, name] = args else {
                    return self.wrong_part_count();
                };
                let category = self.name(category, "tracepoint category", NameKind::Symbol)?;
                let name = self.name(name, "tracepoint name", NameKind::Symbol)?;
                Some(AttachTarget::Tracepoint { category, name })
            }
            Provider::RawTracepoint => {
                let (module, name) = match args {
                    [name] => (None, name),
                    [module, name] => (
                        Some(self.name(module, "module name", NameKind::Symbol)?),
                        name,
                    ),
                    _ => return self.wrong_part_count(),
                };
                let name = self.name(name, "tracepoint name", NameKind::Symbol)?;
                Some(AttachTarget::RawTracepoint { module, name })
            }
            Provider::Software | Provider::Hardware => {
                let (event, count) = match args {
                    [event] => (event, None),
                    [event, count] => (event, Some(self.number(count, "event count")?)),
                    _ => return self.wrong_part_count(),
                };
                let event = self.name(event, "event name", NameKind::Symbol)?;
                Some(AttachTarget::PerfEvent { event, count })
            }
            Provider::Profile | Provider::Interval => self.timer(args),
            Provider::Watchpoint | Provider::AsyncWatchpoint => {
                let [address, length, mode] = args else {
                    return self.wrong_part_count();
                };
                let address = self.name(address, "address", NameKind::Symbol)?;
                let length = self.number(length, "length")?;
                let mode = self.name(mode, "mode", NameKind::Symbol)?;
                Some(AttachTarget::Watchpoint {
                    address,
                    length,
                    mode,
                })
            }
            Provider::Iter => {
                let (object, pin) = match args {
                    [object] => (object, None),
                    [object, pin] => (object, Some(self.name(pin, "pin path", NameKind::Any)?)),
                    _ => return self.wrong_part_count(),
                };
                let object = self.name(object, "iterator name", NameKind::Symbol)?;
                Some(AttachTarget::Iter { object, pin })
            }
            Provider::Lsm => {
                let [hook] = args else {
                    return self.wrong_part_count();
                };
                let hook = self.name(hook, "LSM hook name", NameKind::Symbol)?;
                Some(AttachTarget::Lsm { hook })
            }
        }
    }

    /// `uprobe:[BINARY:][LANGUAGE:]LOCATION`. Parts after the binary (and
    /// the language) are joined back with `:`, because a C++ name such as
    /// `ns::f` splits into `ns`, `` and `f`.
    fn uprobe(&mut self, args: &[Part]) -> Option<AttachTarget> {
        let (binary, language, rest) = match args {
            [] => return self.wrong_part_count(),
            [location] => (None, None, std::slice::from_ref(location)),
            [binary, language, rest @ ..] if language.text == "cpp" && !rest.is_empty() => {
                (Some(binary), Some(language), rest)
            }
            [binary, rest @ ..] => (Some(binary), None, rest),
        };
        let binary = match binary {
            Some(binary) => Some(self.name(binary, "binary path", NameKind::Any)?),
            None => None,
        };
        let language = language.map(|part| Name {
            text: part.text.clone(),
            span: part.span,
        });
        let joined = Part {
            text: rest
                .iter()
                .map(|part| part.text.as_str())
                .collect::<Vec<_>>()
                .join(":"),
            span: rest[0].span.to(rest[rest.len() - 1].span),
            quoted: rest.iter().any(|part| part.quoted),
        };
        let location = self.user_location(&joined)?;
        Some(AttachTarget::Uprobe {
            binary,
            language,
            location,
        })
    }

    /// `interval:UNIT:N`, `profile:UNIT:N`, or the short form `interval:1s`.
    fn timer(&mut self, args: &[Part]) -> Option<AttachTarget> {
        let (unit_text, unit_span, value) = match args {
            [unit, value] => (unit.text.clone(), unit.span, self.number(value, "rate")?),
            [short] => {
                let digits_len = short
                    .text
                    .find(|c: char| !c.is_ascii_digit() && c != '_')
                    .unwrap_or(short.text.len());
                let (digits, unit) = short.text.split_at(digits_len);
                if digits.is_empty() || unit.is_empty() {
                    return self.wrong_part_count();
                }
                let number_part = Part {
                    text: digits.to_owned(),
                    span: short.sub_span(0, digits_len),
                    quoted: false,
                };
                let value = self.number(&number_part, "rate")?;
                (
                    unit.to_owned(),
                    short.sub_span(digits_len, short.text.len()),
                    value,
                )
            }
            _ => return self.wrong_part_count(),
        };
        let unit = match unit_text.as_str() {
            "hz" => RateUnit::Hertz,
            "s" => RateUnit::Seconds,
            "ms" => RateUnit::Milliseconds,
            "us" => RateUnit::Microseconds,
            _ => {
                let message = format!(
                    "unknown unit `{unit_text}` in `{}` attach point",
                    self.provider.name()
                );
                self.diagnostics.push(
                    Diagnostic::error(unit_span, message)
                        .with_hint("the units are `s`, `ms`, `us` and `hz`"),
                );
                return None;
            }
        };
        Some(AttachTarget::Timer {
            unit,
            unit_span,
            value,
        })
    }

    /// Parses a kernel location: `FUNCTION`, `FUNCTION+OFFSET` or `ADDRESS`.
    fn kernel_location(&mut self, part: &Part) -> Option<Location> {
        if part.text.starts_with(|c: char| c.is_ascii_digit()) {
            return Some(Location::Address(self.number(part, "address")?));
        }
        let Some(plus) = part.text.find('+') else {
            let name = self.name(part, "function name", NameKind::Symbol)?;
            return Some(Location::Symbol { name, offset: None });
        };
        let name_part = Part {
            text: part.text[..plus].to_owned(),
            span: part.sub_span(0, plus),
            quoted: part.quoted,
        };
        let name = self.name(&name_part, "function name", NameKind::Symbol)?;
        let offset_part = Part {
            text: part.text[plus + 1..].to_owned(),
            span: part.sub_span(plus + 1, part.text.len()),
            quoted: part.quoted,
        };
        let offset = self.number(&offset_part, "offset")?;
        Some(Location::Symbol {
            name,
            offset: Some(offset),
        })
    }

    /// Parses a user-space location. Unlike in a kernel location, a `+`
    /// followed by something other than a number is part of the name, as in
    /// `operator+`.
    fn user_location(&mut self, part: &Part) -> Option<Location> {
        if part.text.starts_with(|c: char| c.is_ascii_digit()) {
            return Some(Location::Address(self.number(part, "address")?));
        }
        let offset_start = part.text.rfind('+').map(|plus| plus + 1).filter(|&start| {
            start < part.text.len() && part.text[start..].starts_with(|c: char| c.is_ascii_digit())
        });
        let Some(start) = offset_start else {
            let name = self.name(part, "function name", NameKind::Any)?;
            return Some(Location::Symbol { name, offset: None });
        };
        let name_part = Part {
            text: part.text[..start - 1].to_owned(),
            span: part.sub_span(0, start - 1),
            quoted: part.quoted,
        };
        let name = self.name(&name_part, "function name", NameKind::Any)?;
        let offset_part = Part {
            text: part.text[start..].to_owned(),
            span: part.sub_span(start, part.text.len()),
            quoted: part.quoted,
        };
        let offset = self.number(&offset_part, "offset")?;
        Some(Location::Symbol {
            name,
            offset: Some(offset),
        })
    }

    /// Checks a name part: it must not be empty and, for symbols, may only
    /// contain symbol characters and wildcards.
    fn name(&mut self, part: &Part, role: &str, kind: NameKind) -> Option<Name> {
        if part.text.is_empty() {
            let message = format!("missing {role} in `{}` attach point", self.provider.name());
            self.error(part.span, message);
            return None;
        }
        if kind == NameKind::Symbol {
            let invalid = part.text.char_indices().find(|&(_, c)| !is_symbol_char(c));
            if let Some((offset, c)) = invalid {
                let span = part.sub_span(offset, offset + c.len_utf8());
                let message = format!(
                    "invalid character `{}` in {role} `{}`",
                    c.escape_debug(),
                    part.text
                );
                let mut diagnostic = Diagnostic::error(span, message);
                if c == '(' || c == ')' {
                    diagnostic = diagnostic.with_hint("name the function without `()`");
                } else {
                    diagnostic = diagnostic.with_hint(format!("write {}", usage(self.provider)));
                }
                self.diagnostics.push(diagnostic);
                return None;
            }
        }
        Some(Name {
            text: part.text.clone(),
            span: part.span,
        })
    }

    fn number(&mut self, part: &Part, role: &str) -> Option<Number> {
        if part.text.is_empty() {
            let message = format!("missing {role} in `{}` attach point", self.provider.name());
            self.error(part.span, message);
            return None;
        }
        if !part.text.starts_with(|c: char| c.is_ascii_digit()) {
            let message = format!("expected a number for the {role}, found `{}`", part.text);
            self.error(part.span, message);
            return None;
        }
        match parse_integer(&part.text) {
            Ok(literal) => Some(Number {
                value: literal.value,
                span: part.span,
            }),
            Err(error) => {
                self.diagnostics
                    .push(integer_diagnostic(&part.text, part.span, &error));
                None
            }
        }
    }

    /// Reports an attach point with too few or too many parts.
    fn wrong_part_count<T>(&mut self) -> Option<T> {
        let message = format!(
            "invalid `{}` attach point `{}`",
            self.provider.name(),
            self.raw
        );
        self.error(self.span, message);
        None
    }

    /// Reports `message` at `span` with the provider's usage as a hint.
    fn error(&mut self, span: Span, message: String) {
        let hint = format!("write {}", usage(self.provider));
        self.diagnostics
            .push(Diagnostic::error(span, message).with_hint(hint));
    }
}

fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '$' | '*' | '?' | '[' | ']')
}

/// Returns the accepted forms of a provider's attach points, for hints.
fn usage(provider: Provider) -> &'static str {
    match provider {
        Provider::Begin => "`BEGIN` alone",
        Provider::End => "`END` alone",
        Provider::Kprobe => {
            "`kprobe:FUNCTION`, `kprobe:MODULE:FUNCTION`, `kprobe:FUNCTION+OFFSET` or `kprobe:ADDRESS`"
        }
        Provider::Kretprobe => "`kretprobe:FUNCTION` or `kretprobe:MODULE:FUNCTION`",
        Provider::Uprobe => {
            "`uprobe:BINARY:FUNCTION`, `uprobe:BINARY:FUNCTION+OFFSET` or `uprobe:BINARY:ADDRESS`"
        }
        Provider::Uretprobe => "`uretprobe:BINARY:FUNCTION`",
        Provider::Usdt => "`usdt:BINARY:PROBE` or `usdt:BINARY:PROVIDER:PROBE`",
        Provider::Tracepoint => "`tracepoint:CATEGORY:NAME`",
        Provider::RawTracepoint => "`rawtracepoint:NAME` or `rawtracepoint:MODULE:NAME`",
        Provider::Fentry => "`fentry:FUNCTION` or `fentry:MODULE:FUNCTION`",
        Provider::Fexit => "`fexit:FUNCTION` or `fexit:MODULE:FUNCTION`",
        Provider::Software => "`software:EVENT` or `software:EVENT:COUNT`",
        Provider::Hardware => "`hardware:EVENT` or `hardware:EVENT:COUNT`",
        Provider::Profile => {
            "`profile:UNIT:RATE` with a unit of `hz`, `s`, `ms` or `us`, as in `profile:hz:99`"
        }
        Provider::Interval => {
            "`interval:UNIT:PERIOD` with a unit of `s`, `ms`, `us` or `hz`, as in `interval:s:1`"
        }
        Provider::Watchpoint => {
            "`watchpoint:ADDRESS:LENGTH:MODE`, as in `watchpoint:0x10000000:8:rw`"
        }
        Provider::AsyncWatchpoint => "`asyncwatchpoint:ADDRESS:LENGTH:MODE`",
        Provider::Iter => "`iter:OBJECT` or `iter:OBJECT:PIN_PATH`",
        Provider::Lsm => "`lsm:HOOK`",
    }
}
