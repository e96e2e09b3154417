//! Formatting of the default tracer's events as one line per call.

use std::fmt::Write as _;

use probe_common::{CallEvent, EVENT_HAS_ARGS, EVENT_HAS_RETVAL, MAX_ARGS};

use crate::btf::{Btf, FunctionSignature, ValueFormat};

/// How one parameter is printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamFormat {
    pub name: String,
    pub format: ValueFormat,
}

/// Formats `CallEvent`s of one function.
#[derive(Clone, Debug)]
pub struct CallFormatter {
    function: String,
    /// Parameters from BTF; `None` when the function has no BTF prototype,
    /// in which case the six argument registers are printed raw.
    params: Option<Vec<ParamFormat>>,
    /// `None` for a function returning `void`.
    return_format: Option<ValueFormat>,
    /// Add to a `bpf_ktime_get_ns()` timestamp to get wall-clock time.
    realtime_offset_ns: i128,
}

impl CallFormatter {
    /// Builds a formatter from the function's BTF prototype, if it has one.
    pub fn new(function: &str, btf: Option<(&Btf, &FunctionSignature<'_>)>) -> Self {
        let (params, return_format) = match btf {
            Some((btf, signature)) => {
                let params = signature
                    .params
                    .iter()
                    .map(|param| ParamFormat {
                        name: param.name.to_owned(),
                        format: btf.value_format(param.type_id),
                    })
                    .collect();
                let return_format = (signature.return_type != 0)
                    .then(|| btf.value_format(signature.return_type));
                (Some(params), return_format)
            }
            None => (None, Some(ValueFormat::Raw)),
        };
        Self {
            function: function.to_owned(),
            params,
            return_format,
            realtime_offset_ns: realtime_offset_ns(),
        }
    }

    /// The column header printed above the event lines.
    pub fn header() -> String {
        format!("{:<15} {:<16} {:>7} {:>7} CALL", "TIME", "COMM", "PID", "TID")
    }

    /// Appends one event as a line, without the newline, to `out`.
    pub fn write_event(&self, event: &CallEvent, out: &mut String) {
        write_time_of_day(i128::from(event.timestamp_ns) + self.realtime_offset_ns, out);
        let comm = comm_str(&event.comm);
        let _ = write!(out, " {comm:<16} {:>7} {:>7} {}(", event.pid, event.tid, self.function);
        if event.flags & EVENT_HAS_ARGS != 0 {
            self.write_args(event, out);
        } else {
            out.push_str("...");
        }
        out.push(')');
        if event.flags & EVENT_HAS_RETVAL != 0 {
            if let Some(format) = self.return_format {
                out.push_str(" = ");
                write_value(event.retval, format, out);
            }
        }
    }

    fn write_args(&self, event: &CallEvent, out: &mut String) {
        let available = (event.arg_count as usize).min(MAX_ARGS);
        match &self.params {
            Some(params) => {
                for (i, param) in params.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let name = if param.name.is_empty() { "?" } else { param.name.as_str() };
                    out.push_str(name);
                    out.push('=');
                    if i < available {
                        write_value(event.args[i], param.format, out);
                    } else {
                        // Arguments past the sixth register are on the stack,
                        // which the default tracer does not read.
                        out.push('?');
                    }
                }
            }
            None => {
                for (i, value) in event.args[..available].iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{value:#x}");
                }
            }
        }
    }
}

/// Writes a raw 64-bit register value as its type wants.
pub fn write_value(raw: u64, format: ValueFormat, out: &mut String) {
    let _ = match format {
        ValueFormat::Signed(bytes) => write!(out, "{}", sign_extend(raw, bytes)),
        ValueFormat::Unsigned(bytes) => write!(out, "{}", truncate(raw, bytes)),
        ValueFormat::Bool => write!(out, "{}", raw & 0xff != 0),
        ValueFormat::Char => {
            let byte = raw as u8;
            if byte.is_ascii_graphic() || byte == b' ' {
                write!(out, "'{}'", byte as char)
            } else {
                write!(out, "{byte}")
            }
        }
        ValueFormat::Pointer | ValueFormat::Raw => write!(out, "{raw:#x}"),
    };
}

fn sign_extend(raw: u64, bytes: u32) -> i64 {
    match bytes {
        1 => raw as u8 as i8 as i64,
        2 => raw as u16 as i16 as i64,
        4 => raw as u32 as i32 as i64,
        _ => raw as i64,
    }
}

fn truncate(raw: u64, bytes: u32) -> u64 {
    match bytes {
        1 => raw & 0xff,
        2 => raw & 0xffff,
        4 => raw & 0xffff_ffff,
        _ => raw,
    }
}

/// Returns the command name up to its first NUL, with invalid UTF-8
/// replaced.
pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Returns `CLOCK_REALTIME - CLOCK_MONOTONIC` in nanoseconds.
/// `bpf_ktime_get_ns()` reads `CLOCK_MONOTONIC`.
fn realtime_offset_ns() -> i128 {
    let read = |clock: libc::clockid_t| -> i128 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec and both clock ids exist
        // on every Linux kernel.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
}

/// Writes `HH:MM:SS.uuuuuu` in the local time zone.
pub fn write_time_of_day(realtime_ns: i128, out: &mut String) {
    let seconds = (realtime_ns / 1_000_000_000) as libc::time_t;
    let micros = (realtime_ns % 1_000_000_000) / 1_000;
    // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    let converted = unsafe { !libc::localtime_r(&seconds, &mut tm).is_null() };
    if converted {
        let _ = write!(out, "{:02}:{:02}:{:02}.{micros:06}", tm.tm_hour, tm.tm_min, tm.tm_sec);
    } else {
        let _ = write!(out, "{seconds}.{micros:06}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(args: [u64; MAX_ARGS], retval: u64, flags: u32, arg_count: u32) -> CallEvent {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"cat");
        CallEvent {
            timestamp_ns: 1_000,
            args,
            retval,
            pid: 42,
            tid: 43,
            flags,
            arg_count,
            comm,
        }
    }

    fn formatter_with_params() -> CallFormatter {
        CallFormatter {
            function: "do_sys_openat2".into(),
            params: Some(vec![
                ParamFormat {
                    name: "dfd".into(),
                    format: ValueFormat::Signed(4),
                },
                ParamFormat {
                    name: "filename".into(),
                    format: ValueFormat::Pointer,
                },
            ]),
            return_format: Some(ValueFormat::Signed(8)),
            realtime_offset_ns: 0,
        }
    }

    fn call_part(line: &str) -> &str {
        line.split_once(" 43 ").expect("tid column present").1
    }

    #[test]
    fn typed_arguments_and_negative_return() {
        let formatter = formatter_with_params();
        let mut line = String::new();
        let args = [(-100i64) as u64, 0xffff_8880_0000_1000, 0, 0, 0, 0];
        formatter.write_event(
            &event(args, (-2i64) as u64, EVENT_HAS_ARGS | EVENT_HAS_RETVAL, 2),
            &mut line,
        );
        assert_eq!(call_part(&line), "do_sys_openat2(dfd=-100, filename=0xffff888000001000) = -2");
        assert!(line.contains(" cat "), "{line}");
    }

    #[test]
    fn int_argument_ignores_upper_register_bits() {
        let formatter = formatter_with_params();
        let mut line = String::new();
        let args = [0xdead_beef_ffff_ff9c, 0, 0, 0, 0, 0];
        formatter.write_event(&event(args, 0, EVENT_HAS_ARGS, 2), &mut line);
        assert_eq!(call_part(&line), "do_sys_openat2(dfd=-100, filename=0x0)");
    }

    #[test]
    fn raw_arguments_without_btf() {
        let mut formatter = formatter_with_params();
        formatter.params = None;
        formatter.return_format = Some(ValueFormat::Raw);
        let mut line = String::new();
        formatter.write_event(
            &event([1, 2, 3, 4, 5, 6], 0x10, EVENT_HAS_ARGS | EVENT_HAS_RETVAL, 6),
            &mut line,
        );
        assert_eq!(call_part(&line), "do_sys_openat2(0x1, 0x2, 0x3, 0x4, 0x5, 0x6) = 0x10");
    }

    #[test]
    fn return_without_saved_arguments() {
        let formatter = formatter_with_params();
        let mut line = String::new();
        formatter.write_event(&event([0; 6], 3, EVENT_HAS_RETVAL, 0), &mut line);
        assert_eq!(call_part(&line), "do_sys_openat2(...) = 3");
    }

    #[test]
    fn void_function_prints_no_return_value() {
        let mut formatter = formatter_with_params();
        formatter.return_format = None;
        let mut line = String::new();
        formatter.write_event(&event([0; 6], 7, EVENT_HAS_ARGS | EVENT_HAS_RETVAL, 2), &mut line);
        assert_eq!(call_part(&line), "do_sys_openat2(dfd=0, filename=0x0)");
    }

    #[test]
    fn value_formats() {
        let cases = [
            (0xff, ValueFormat::Signed(1), "-1"),
            (0xffff_ffff, ValueFormat::Unsigned(4), "4294967295"),
            (0x1_0000_0001, ValueFormat::Unsigned(4), "1"),
            (1, ValueFormat::Bool, "true"),
            (b'A' as u64, ValueFormat::Char, "'A'"),
            (7, ValueFormat::Char, "7"),
            (0x1234, ValueFormat::Pointer, "0x1234"),
        ];
        for (raw, format, expected) in cases {
            let mut out = String::new();
            write_value(raw, format, &mut out);
            assert_eq!(out, expected, "{raw:#x} as {format:?}");
        }
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_str(b"bash\0\0\0garbage"), "bash");
        assert_eq!(comm_str(b"0123456789abcdef"), "0123456789abcdef");
    }
}
