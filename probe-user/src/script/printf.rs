//! `printf` format strings: parsed when the script is compiled, checked
//! against the argument types, and rendered in user space from the raw
//! values that the BPF program sends.

use std::fmt::Write as _;

/// One piece of a format string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Conversion(Conversion),
}

/// A `%` conversion: flags, width, precision, length modifier and the
/// conversion character.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Conversion {
    pub left_align: bool,
    pub zero_pad: bool,
    pub plus_sign: bool,
    pub space_sign: bool,
    pub alternate: bool,
    pub width: Option<usize>,
    pub precision: Option<usize>,
    /// Operand size in bytes forced by a length modifier (`hh` 1, `h` 2,
    /// `l`/`ll`/`j`/`z`/`t` 8), or `None` to use the argument's own size.
    pub length: Option<u32>,
    pub kind: char,
}

impl Conversion {
    /// Tells whether the conversion takes an integer.
    pub fn takes_integer(&self) -> bool {
        matches!(self.kind, 'd' | 'i' | 'u' | 'x' | 'X' | 'o' | 'c' | 'p')
    }

    /// Tells whether the conversion takes a string: `%s`, or `%r` for the
    /// bytes of `buf()`.
    pub fn takes_string(&self) -> bool {
        matches!(self.kind, 's' | 'r')
    }
}

/// Why a format string is invalid, with the byte offset in the string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError {
    pub offset: usize,
    pub message: String,
}

/// The conversion characters `printf` accepts.
pub const CONVERSIONS: &str = "d i u x X o s r c p %";

/// Parses a format string (escape sequences already decoded).
pub fn parse(format: &str) -> Result<Vec<Segment>, FormatError> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut chars = format.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let mut conversion = Conversion::default();
        while let Some(&(_, flag)) = chars.peek() {
            match flag {
                '-' => conversion.left_align = true,
                '0' => conversion.zero_pad = true,
                '+' => conversion.plus_sign = true,
                ' ' => conversion.space_sign = true,
                '#' => conversion.alternate = true,
                _ => break,
            }
            chars.next();
        }
        conversion.width = digits(&mut chars);
        if chars.peek().map(|&(_, c)| c) == Some('.') {
            chars.next();
            conversion.precision = Some(digits(&mut chars).unwrap_or(0));
        }
        let mut length = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if matches!(c, 'h' | 'l' | 'j' | 'z' | 't') && length.len() < 2 {
                length.push(c);
                chars.next();
            } else {
                break;
            }
        }
        conversion.length = match length.as_str() {
            "" => None,
            "hh" => Some(1),
            "h" => Some(2),
            "l" | "ll" | "j" | "z" | "t" => Some(8),
            other => {
                return Err(FormatError {
                    offset: start,
                    message: format!("invalid length modifier `{other}`"),
                });
            }
        };
        let Some((_, kind)) = chars.next() else {
            return Err(FormatError {
                offset: start,
                message: "incomplete conversion at the end of the format string".into(),
            });
        };
        if kind == '%' {
            literal.push('%');
            continue;
        }
        if !CONVERSIONS.split(' ').any(|c| c.starts_with(kind)) {
            return Err(FormatError {
                offset: start,
                message: format!("unknown conversion `%{}`; use one of %{}", kind.escape_debug(), CONVERSIONS.replace(' ', " %")),
            });
        }
        conversion.kind = kind;
        if !literal.is_empty() {
            segments.push(Segment::Literal(std::mem::take(&mut literal)));
        }
        segments.push(Segment::Conversion(conversion));
    }
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(segments)
}

fn digits(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> Option<usize> {
    let mut value: Option<usize> = None;
    while let Some(&(_, c)) = chars.peek() {
        let Some(digit) = c.to_digit(10) else {
            break;
        };
        value = Some(value.unwrap_or(0).saturating_mul(10).saturating_add(digit as usize).min(4096));
        chars.next();
    }
    value
}

/// One argument value, as decoded from an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// An integer's raw bits, its size in bytes, and whether its type is
    /// signed.
    Int { raw: u64, size: u32, signed: bool },
    Str(String),
}

/// Renders `segments` with `args`, which the compiler has already checked
/// for count and kinds.
pub fn render(segments: &[Segment], args: &[Arg], out: &mut String) {
    let mut args = args.iter();
    for segment in segments {
        match segment {
            Segment::Literal(text) => out.push_str(text),
            Segment::Conversion(conversion) => match args.next() {
                Some(arg) => render_one(conversion, arg, out),
                None => out.push_str("<missing>"),
            },
        }
    }
}

fn render_one(conversion: &Conversion, arg: &Arg, out: &mut String) {
    let body = match (conversion.kind, arg) {
        ('s', Arg::Str(text)) => match conversion.precision {
            Some(max) => text.chars().take(max).collect(),
            None => text.clone(),
        },
        ('s', Arg::Int { raw, .. }) => raw.to_string(),
        (_, Arg::Str(text)) => text.clone(),
        ('c', Arg::Int { raw, .. }) => char::from_u32(*raw as u8 as u32).unwrap_or('?').to_string(),
        (kind, Arg::Int { raw, size, .. }) => {
            let size = conversion.length.unwrap_or(*size);
            return write_integer(conversion, kind, *raw, size, out);
        }
    };
    pad(conversion, &body, false, out);
}

fn write_integer(conversion: &Conversion, kind: char, raw: u64, size: u32, out: &mut String) {
    if kind == 'p' && raw == 0 {
        // glibc prints a null pointer this way, and so does bpftrace.
        return pad(conversion, "(nil)", false, out);
    }
    let bits = size.clamp(1, 8) * 8;
    let unsigned = if bits == 64 { raw } else { raw & ((1u64 << bits) - 1) };
    let (negative, magnitude) = match kind {
        'd' | 'i' => {
            let shift = 64 - bits;
            let value = ((unsigned << shift) as i64) >> shift;
            (value < 0, value.unsigned_abs())
        }
        _ => (false, unsigned),
    };
    let mut digits = match kind {
        'x' => format!("{magnitude:x}"),
        'X' => format!("{magnitude:X}"),
        'o' => format!("{magnitude:o}"),
        'p' => format!("{raw:x}"),
        _ => magnitude.to_string(),
    };
    if let Some(precision) = conversion.precision {
        if precision == 0 && magnitude == 0 && kind != 'p' {
            digits.clear();
        }
        while digits.len() < precision {
            digits.insert(0, '0');
        }
    }
    let mut prefix = String::new();
    if negative {
        prefix.push('-');
    } else if matches!(kind, 'd' | 'i') && conversion.plus_sign {
        prefix.push('+');
    } else if matches!(kind, 'd' | 'i') && conversion.space_sign {
        prefix.push(' ');
    }
    match kind {
        'p' => prefix.push_str("0x"),
        'x' if conversion.alternate && magnitude != 0 => prefix.push_str("0x"),
        'X' if conversion.alternate && magnitude != 0 => prefix.push_str("0X"),
        'o' if conversion.alternate && !digits.starts_with('0') => prefix.push('0'),
        _ => {}
    }
    let zero_pad = conversion.zero_pad && !conversion.left_align && conversion.precision.is_none();
    if zero_pad {
        let width = conversion.width.unwrap_or(0);
        while prefix.len() + digits.len() < width {
            digits.insert(0, '0');
        }
    }
    let body = format!("{prefix}{digits}");
    pad(conversion, &body, zero_pad, out);
}

fn pad(conversion: &Conversion, body: &str, already_padded: bool, out: &mut String) {
    let width = conversion.width.unwrap_or(0);
    let length = body.chars().count();
    if already_padded || length >= width {
        out.push_str(body);
    } else if conversion.left_align {
        let _ = write!(out, "{body}{}", " ".repeat(width - length));
    } else {
        let _ = write!(out, "{}{body}", " ".repeat(width - length));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(raw: i64, size: u32, signed: bool) -> Arg {
        Arg::Int { raw: raw as u64, size, signed }
    }

    fn show(format: &str, args: &[Arg]) -> String {
        let segments = parse(format).expect("format parses");
        let mut out = String::new();
        render(&segments, args, &mut out);
        out
    }

    /// Each case compared with what C's printf prints for the same
    /// conversion and a value of the same C type, except where noted.
    #[test]
    fn renders_like_c() {
        let cases: &[(&str, Arg, &str)] = &[
            ("%d", int(-5, 4, true), "-5"),
            ("%d", int(-5, 8, true), "-5"),
            ("%u", int(-1, 4, true), "4294967295"),
            ("%u", int(-1, 8, false), "18446744073709551615"),
            ("%x", int(255, 8, false), "ff"),
            ("%X", int(255, 8, false), "FF"),
            ("%#x", int(255, 8, false), "0xff"),
            ("%o", int(8, 8, false), "10"),
            ("%5d", int(42, 4, true), "   42"),
            ("%-5d|", int(42, 4, true), "42   |"),
            ("%05d", int(-42, 4, true), "-0042"),
            ("%+d", int(42, 4, true), "+42"),
            ("%.3d", int(7, 4, true), "007"),
            ("%hhd", int(255, 8, false), "-1"),
            ("%hd", int(65535, 8, false), "-1"),
            // Values arrive sign-extended to 64 bits, so widening keeps the sign.
            ("%ld", int(-1, 4, true), "-1"),
            ("%lu", int(-1, 8, true), "18446744073709551615"),
            ("%c", int(65, 1, false), "A"),
            ("%p", int(0x1234, 8, false), "0x1234"),
            ("%p", int(0, 8, false), "(nil)"),
            ("%7p|", int(0, 8, false), "  (nil)|"),
            ("%s", Arg::Str("bash".into()), "bash"),
            ("%8s|", Arg::Str("bash".into()), "    bash|"),
            ("%-8s|", Arg::Str("bash".into()), "bash    |"),
            ("%.2s", Arg::Str("bash".into()), "ba"),
            ("100%%", int(0, 4, true), "100%"),
        ];
        for (format, arg, expected) in cases {
            assert_eq!(show(format, std::slice::from_ref(arg)), *expected, "format {format:?} with {arg:?}");
        }
    }

    #[test]
    fn literal_and_several_conversions() {
        let out = show("%s opened %s = %d\n", &[
            Arg::Str("cat".into()),
            Arg::Str("/etc/hostname".into()),
            int(3, 8, true),
        ]);
        assert_eq!(out, "cat opened /etc/hostname = 3\n");
    }

    #[test]
    fn rejects_unknown_conversion() {
        let err = parse("value %q\n").err().expect("fails");
        assert_eq!(err.offset, 6);
        assert!(err.message.contains("unknown conversion `%q`"), "{}", err.message);
        let err = parse("value %\n").err().expect("fails");
        assert!(err.message.contains("unknown conversion `%\\n`"), "the newline is escaped: {}", err.message);
        let err = parse("value %y").err().expect("fails");
        assert!(err.message.contains("unknown conversion `%y`"), "{}", err.message);
    }

    #[test]
    fn rejects_trailing_percent() {
        let err = parse("50%").err().expect("fails");
        assert_eq!(err.offset, 2);
        assert!(err.message.contains("incomplete"), "{}", err.message);
    }

    #[test]
    fn counts_conversions() {
        let segments = parse("%d %s %%").unwrap();
        let conversions = segments.iter().filter(|s| matches!(s, Segment::Conversion(_))).count();
        assert_eq!(conversions, 2);
    }
}
