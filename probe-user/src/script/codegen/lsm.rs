//! `deny()` and `deny(ERRNO)` in `lsm:HOOK` probes: end the program and
//! make the hook fail with `-ERRNO` (`EPERM` by default).
//!
//! The kernel uses an LSM program's return value as the hook's result, so
//! the compiler allows only values the kernel accepts. `deny` returns a
//! negative errno from -1 to -4095, and is rejected on hooks that return
//! void or a boolean. The program returns 0 (allow) everywhere else.

use super::{Codegen, Result, Val};
use crate::script::{
    ast::{Expr, ExprKind},
    diagnostic::Diagnostic,
    ir::{Inst, Value},
    probes::{ArgSource, ProbeKind},
    span::Span,
};

/// `MAX_ERRNO` in `include/linux/err.h`: the largest errno a hook may
/// return.
const MAX_ERRNO: u64 = 4095;

/// Hooks whose return value is a boolean (0 or 1) rather than 0 or a
/// negative errno; Linux 6.10 and later restrict their BPF programs to 0
/// and 1.
const BOOLEAN_HOOKS: [&str; 3] = ["xfrm_state_pol_flow_match", "audit_rule_known", "inode_xattr_skipcap"];

/// errno names that `deny(NAME)` accepts, with their x86-64 values.
const ERRNO_NAMES: [(&str, i32); 14] = [
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("EIO", libc::EIO),
    ("EBADF", libc::EBADF),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EACCES", libc::EACCES),
    ("EBUSY", libc::EBUSY),
    ("EEXIST", libc::EEXIST),
    ("EINVAL", libc::EINVAL),
    ("ENOSYS", libc::ENOSYS),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ("EPROTONOSUPPORT", libc::EPROTONOSUPPORT),
];

impl Codegen<'_> {
    /// `deny()` / `deny(ERRNO)`: returns `-ERRNO` from the program.
    pub(crate) fn deny(&mut self, args: &[Expr], span: Span) -> Result<Val> {
        let ProbeKind::Lsm { hook } = &self.probe.kind else {
            return Err(self.error(
                Diagnostic::error(span, format!("deny() works only in lsm probes, not in {}", self.probe.kind.display_name()))
                    .with_hint("deny an operation from an LSM hook: `lsm:socket_create /args.family == 17/ { deny(); }`"),
            ));
        };
        let hook = hook.clone();
        if let ArgSource::Trampoline(signature) = &self.probe.args
            && signature.return_type == 0
        {
            return Err(self.error(
                Diagnostic::error(span, format!("the LSM hook `{hook}` returns void, so deny() cannot make it fail"))
                    .with_hint("use a hook that returns int; `probe list -v 'lsm:*'` shows their prototypes"),
            ));
        }
        if BOOLEAN_HOOKS.contains(&hook.as_str()) {
            return Err(self.error(Diagnostic::error(
                span,
                format!("the LSM hook `{hook}` returns a boolean, not an errno, so deny() does not apply to it"),
            )));
        }
        let errno = match args {
            [] => libc::EPERM,
            [arg] => self.errno_argument(arg)?,
            _ => return Err(self.error(Diagnostic::error(span, "deny() takes at most one argument: deny(ERRNO)"))),
        };
        self.f.push(Inst::Exit { value: Value::Imm(-errno) });
        Ok(Val::Void)
    }

    /// Reads the errno of `deny(ERRNO)`: an integer literal from 1 to 4095
    /// or a name such as `EACCES`.
    fn errno_argument(&mut self, arg: &Expr) -> Result<i32> {
        let names = || ERRNO_NAMES.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
        match &arg.kind {
            ExprKind::Integer(literal) if (1..=MAX_ERRNO).contains(&literal.value) => Ok(literal.value as i32),
            ExprKind::Integer(literal) => Err(self.error(
                Diagnostic::error(arg.span, format!("invalid errno {}: the kernel accepts 1 to {MAX_ERRNO}", literal.value))
                    .with_hint("deny(1) makes the hook fail with -1 (-EPERM)"),
            )),
            ExprKind::Identifier(name) => match ERRNO_NAMES.iter().find(|(known, _)| known == name) {
                Some((_, value)) => Ok(*value),
                None => Err(self.error(
                    Diagnostic::error(arg.span, format!("unknown errno name `{name}`"))
                        .with_hint(format!("use a number or one of {}", names())),
                )),
            },
            _ => Err(self.error(
                Diagnostic::error(arg.span, "the errno of deny() must be a positive integer literal or a name such as EPERM")
                    .with_hint("the kernel takes the hook's result as a negative errno, which deny() adds"),
            )),
        }
    }
}
