//! Compiles small scripts against fixed tracepoint formats, without a
//! kernel, and checks the diagnostics and the shape of the generated code.
//! What the code computes is checked on the host kernel by
//! `probe-user/tests/host_scripts.rs`.

use super::{
    IntTy,
    expr::{common_signedness, field_int_type},
};
use crate::{
    script::{
        compile::{self, CompileOptions, Compiled},
        diagnostic::{self, has_errors},
        env::Environment,
        insn::Insn,
        regalloc::STACK_LIMIT,
        span::Source,
    },
    tracepoint::Format,
};

/// `syscalls:sys_enter_openat` and `syscalls:sys_exit_openat` as tracefs
/// prints them on Linux 6.18 (x86_64).
const FORMATS: [(&str, &str, &str); 2] = [
    (
        "syscalls",
        "sys_enter_openat",
        "name: sys_enter_openat
ID: 782
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;

print fmt: \"dfd: 0x%08lx, filename: 0x%08lx, flags: 0x%08lx, mode: 0x%08lx\", ((unsigned long)(REC->dfd)), ((unsigned long)(REC->filename)), ((unsigned long)(REC->flags)), ((unsigned long)(REC->mode))
",
    ),
    (
        "syscalls",
        "sys_exit_openat",
        "name: sys_exit_openat
ID: 781
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;

print fmt: \"0x%lx\", REC->ret
",
    ),
];

fn environment() -> Environment {
    let formats = FORMATS
        .iter()
        .map(|(category, name, text)| {
            Format::parse(category, name, text).unwrap_or_else(|message| panic!("format {category}:{name}: {message}"))
        })
        .collect();
    Environment::fixed(None, formats)
}

fn compile(text: &str) -> Result<Compiled, String> {
    let source = Source::new("-e", text);
    compile::compile(&source, &environment(), &CompileOptions::default())
        .map_err(|diagnostics| diagnostic::render_all(&diagnostics, &source))
}

/// Compiles `text`, which must succeed, and checks what the kernel's
/// verifier checks before it runs anything: every instruction is
/// reachable and the stack fits.
fn compile_ok(text: &str) -> Compiled {
    let compiled = compile(text).unwrap_or_else(|rendered| panic!("{text}\nfailed to compile:\n{rendered}"));
    for probe in &compiled.probes {
        assert!(probe.code.stack_size <= STACK_LIMIT, "{text}\nuses {} bytes of stack", probe.code.stack_size);
        assert_all_reachable(&probe.code.insns, text);
    }
    compiled
}

/// Returns the rendered errors of `text`, which must fail to compile.
fn compile_err(text: &str) -> String {
    match compile(text) {
        Ok(_) => panic!("{text}\ncompiled, but an error was expected"),
        Err(rendered) => rendered,
    }
}

/// Returns the rendered warnings of `text`, which must compile.
fn warnings(text: &str) -> String {
    let compiled = compile_ok(text);
    assert!(!has_errors(&compiled.warnings));
    diagnostic::render_all(&compiled.warnings, &Source::new("-e", text))
}

/// Fails unless a path from the first instruction reaches every other one.
fn assert_all_reachable(insns: &[Insn], text: &str) {
    const JA: u8 = 0x05;
    const EXIT: u8 = 0x95;
    let mut reached = vec![false; insns.len()];
    let mut pending = vec![0usize];
    while let Some(index) = pending.pop() {
        if index >= insns.len() || reached[index] {
            continue;
        }
        reached[index] = true;
        let insn = insns[index];
        if insn.is_ld_imm64() {
            reached[index + 1] = true;
            pending.push(index + 2);
            continue;
        }
        if insn.opcode == EXIT {
            continue;
        }
        if insn.is_jump() {
            pending.push((index as i64 + 1 + i64::from(insn.off)) as usize);
            if insn.opcode == JA {
                continue;
            }
        }
        pending.push(index + 1);
    }
    let unreachable: Vec<usize> = (0..insns.len()).filter(|&i| !reached[i]).collect();
    assert!(unreachable.is_empty(), "{text}\nunreachable instructions: {unreachable:?}");
}

#[test]
fn code_after_jumps_is_removed() {
    let scripts = [
        "BEGIN { $i = 0; while (1) { $i++; if ($i > 5) { break; } } printf(\"%d\\n\", $i); }",
        "BEGIN { $i = 0; while ($i < 9) { $i++; if ($i % 2) { continue; } printf(\"%d\\n\", $i); } }",
        "BEGIN { if (pid > 1) { return; } else { exit(); } printf(\"never\\n\"); }",
        "BEGIN { return; printf(\"never\\n\"); }",
        "BEGIN { printf(\"%d\\n\", \"a\" == \"b\"); }",
    ];
    for script in scripts {
        compile_ok(script);
    }
}

#[test]
fn comm_literal_of_each_length_compiles() {
    for length in 1..=15 {
        let literal = "abcdefghijklmnop"[..length].to_owned();
        let script = format!("tracepoint:syscalls:sys_enter_openat /comm == \"{literal}\"/ {{ printf(\"%s\\n\", comm); }}");
        assert_eq!(warnings(&script), "", "{script}");
    }
}

#[test]
fn comm_literal_too_long_warns() {
    let script = "tracepoint:syscalls:sys_enter_openat /comm == \"abcdefghijklmnop\"/ { exit(); }";
    assert_eq!(
        warnings(script),
        "warning: `comm` has at most 15 characters, so it never equals this 16-character string
  --> -e:1:47
  |
1 | tracepoint:syscalls:sys_enter_openat /comm == \"abcdefghijklmnop\"/ { exit(); }
  |                                               ^^^^^^^^^^^^^^^^^^
"
    );
    // The literal on the left, and `!=`, which is then always true.
    let script = "BEGIN { if (\"abcdefghijklmnopq\" != comm) { exit(); } }";
    assert!(warnings(script).contains("never equals this 17-character string"));
}

#[test]
fn temporaries_share_stack_across_statements() {
    let four = "printf(\"%s %s %s %s\\n\", str(args.filename), str(args.filename), str(args.filename), str(args.filename));";
    let compiled = compile_ok(&format!("tracepoint:syscalls:sys_enter_openat {{ {four} {four} {four} }}"));
    let one_statement = compile_ok(&format!("tracepoint:syscalls:sys_enter_openat {{ {four} }}"));
    assert_eq!(compiled.probes[0].code.stack_size, one_statement.probes[0].code.stack_size);

    compile_ok("BEGIN { $i = 0; unroll(100) { $i++; printf(\"%d %s %d\\n\", $i, comm, nsecs); } }");
}

#[test]
fn string_variables_keep_their_own_stack() {
    // `$s` lives across statements, so later temporaries must not reuse
    // its slot.
    let compiled = compile_ok("BEGIN { $s = comm; if (str(0) == \"x\") { exit(); } printf(\"%s\\n\", $s); }");
    let stack = compiled.probes[0].code.stack_size;
    assert!(stack >= 16 + 64, "$s (16 bytes) and str() (64 bytes) share memory: {stack} bytes of stack");
}

#[test]
fn printf_strings_share_stack() {
    // Each argument goes into the record before the next is computed, so
    // sixteen 64-byte strings need the stack of one.
    let args = ", str(args.filename)".repeat(16);
    let format = "%s ".repeat(16);
    let many = compile_ok(&format!("tracepoint:syscalls:sys_enter_openat {{ printf(\"{format}\\n\"{args}); }}"));
    let single = compile_ok("tracepoint:syscalls:sys_enter_openat { printf(\"%s\\n\", str(args.filename)); }");
    assert_eq!(many.probes[0].code.stack_size, single.probes[0].code.stack_size);
}

#[test]
fn printf_takes_many_arguments() {
    compile_ok(
        "tracepoint:syscalls:sys_exit_openat { printf(\"%d %u %x %s %d %d %d %d %s %c\\n\", \
         args.ret, args.ret, args.ret, comm, pid, tid, uid, cpu, \"lit\", 65); }",
    );
}

#[test]
fn string_ternary_compiles() {
    compile_ok("tracepoint:syscalls:sys_exit_openat { printf(\"%s\\n\", args.ret < 0 ? \"fail\" : comm); }");
    compile_ok("BEGIN { $s = pid > 1 ? \"a\" : pid > 0 ? \"b\" : \"c\"; if ($s == \"a\") { exit(); } }");
}

#[test]
fn string_ternary_with_integer_arm_is_an_error() {
    assert_eq!(
        compile_err("BEGIN { $s = pid > 0 ? \"yes\" : 5; }"),
        "error: the first arm of `?:` is a string, so the second must be one too, not an integer (int64)
  --> -e:1:32
  |
1 | BEGIN { $s = pid > 0 ? \"yes\" : 5; }
  |                                ^
"
    );
}

#[test]
fn spilling_expression_compiles() {
    let mut expression = String::from("0");
    for i in 1..=15 {
        expression = format!("nsecs * 0 + pid - tid + {i} + ({expression})");
    }
    let compiled = compile_ok(&format!("BEGIN {{ printf(\"%d\\n\", {expression}); }}"));
    assert!(compiled.probes[0].code.stack_size > 16, "nothing was spilled");
}

#[test]
fn unknown_builtin_suggests_name() {
    assert_eq!(
        compile_err("BEGIN { printf(\"%d\\n\", pdi); }"),
        "error: unknown identifier `pdi`
  --> -e:1:24
  |
1 | BEGIN { printf(\"%d\\n\", pdi); }
  |                        ^^^
  = hint: did you mean: pid?
"
    );
}

#[test]
fn unknown_tracepoint_field_suggests_name() {
    assert_eq!(
        compile_err("tracepoint:syscalls:sys_enter_openat { printf(\"%s\\n\", str(args.filenme)); }"),
        "error: tracepoint syscalls:sys_enter_openat has no field `filenme`
  --> -e:1:64
  |
1 | tracepoint:syscalls:sys_enter_openat { printf(\"%s\\n\", str(args.filenme)); }
  |                                                                ^^^^^^^
  = hint: did you mean: filename?
"
    );
}

#[test]
fn printf_argument_count_mismatch() {
    assert_eq!(
        compile_err("BEGIN { printf(\"%d %d\\n\", 1); }"),
        "error: the format string has 2 conversions but 1 argument follows
  --> -e:1:9
  |
1 | BEGIN { printf(\"%d %d\\n\", 1); }
  |         ^^^^^^^^^^^^^^^^^^^^
"
    );
}

#[test]
fn printf_type_mismatch() {
    assert_eq!(
        compile_err("BEGIN { printf(\"%d\\n\", comm); }"),
        "error: `%d` needs an integer, found a string
  --> -e:1:24
  |
1 | BEGIN { printf(\"%d\\n\", comm); }
  |                        ^^^^
  = hint: print strings with `%s`
"
    );
}

#[test]
fn variable_type_change_is_an_error() {
    assert_eq!(
        compile_err("BEGIN { $x = 1; $x = \"a\"; }"),
        "error: `$x` holds an integer but is assigned a string
  --> -e:1:17
  |
1 | BEGIN { $x = 1; $x = \"a\"; }
  |                 ^^
  = hint: a variable keeps the type of its first assignment; use another variable
"
    );
}

#[test]
fn narrow_integers_promote_to_int64() {
    let u32 = IntTy { bytes: 4, signed: false };
    let u64 = IntTy::U64;
    let i64 = IntTy::I64;
    // `pid > -1`: every 32-bit unsigned value fits in int64, so the
    // comparison is signed.
    assert!(common_signedness(u32, i64));
    assert!(common_signedness(i64, u32));
    // `pid - tid` is signed too, so `-7 / (pid - tid + 2)` is -3.
    assert!(common_signedness(u32, u32));
    // `(uint64)x / -3`: C converts the signed operand to unsigned.
    assert!(!common_signedness(u64, i64));
    assert!(!common_signedness(i64, u64));
    assert!(!common_signedness(u32, u64));
    assert!(common_signedness(i64, i64));
}

#[test]
fn syscall_fields_take_declared_type() {
    let openat = environment().tracepoint("syscalls", "sys_enter_openat").unwrap().unwrap();
    let field = |name: &str| openat.field(name).unwrap().clone();
    // Stored in 8 unsigned bytes, declared `int`: AT_FDCWD must read as -100.
    assert_eq!(field_int_type(&field("dfd")), IntTy { bytes: 4, signed: true });
    assert_eq!(field_int_type(&field("mode")), IntTy { bytes: 2, signed: false });
    let exit = environment().tracepoint("syscalls", "sys_exit_openat").unwrap().unwrap();
    assert_eq!(field_int_type(exit.field("ret").unwrap()), IntTy::I64);
}

#[test]
fn unassigned_variable_is_an_error() {
    let hint = "  = hint: a `$variable` lives for one run of one probe: assign it earlier in this probe, \
                or share a value between probes with a map (`@name`)\n";
    assert_eq!(
        compile_err("BEGIN { $x++; }"),
        format!("error: `$x` is used before it is assigned\n  --> -e:1:9\n  |\n1 | BEGIN {{ $x++; }}\n  |         ^^\n{hint}")
    );
    assert_eq!(
        compile_err("BEGIN { $x += 2; }"),
        format!("error: `$x` is used before it is assigned\n  --> -e:1:9\n  |\n1 | BEGIN {{ $x += 2; }}\n  |         ^^\n{hint}")
    );
    let rendered = compile_err("BEGIN { $x = 1; } END { printf(\"%d\\n\", $x); }");
    assert!(rendered.starts_with("error: `$x` is used before it is assigned\n  --> -e:1:40\n"), "{rendered}");
    assert!(rendered.ends_with(&hint), "{rendered}");
}

const OPENAT: &str = "tracepoint:syscalls:sys_enter_openat";

#[test]
fn stacks_compile_in_printf_and_keys() {
    let compiled = compile_ok(&format!(
        "{OPENAT} {{ printf(\"%s\", kstack); print(ustack(3)); @k[kstack(5), comm] = count(); @u[ustack] = count(); }}"
    ));
    // One stack trace map per kind and frame limit.
    assert_eq!(compiled.stack_maps, vec![(false, 5), (true, 127)]);
    assert!(compiled.map_names().contains(&"stack_1".to_owned()));
}

#[test]
fn stack_limit_is_checked() {
    assert!(compile_err(&format!("{OPENAT} {{ print(kstack(0)); }}")).contains("invalid frame limit 0"));
    assert!(compile_err(&format!("{OPENAT} {{ print(kstack(128)); }}")).contains("use 1 to 127 frames"));
    assert!(compile_err(&format!("{OPENAT} {{ $n = 3; print(kstack($n)); }}")).contains("must be an integer literal"));
    assert!(compile_err("BEGIN { print(ustack); }").contains("`ustack` is not available in BEGIN"));
    assert!(compile_err(&format!("{OPENAT} {{ print(kstack(perf, 3)); }}")).contains("the stack mode `perf` is not supported yet"));
    assert!(compile_err(&format!("{OPENAT} {{ $s = kstack; }}")).contains("cannot assign a kernel stack"));
}

#[test]
fn str_length_limits_depend_on_use() {
    compile_ok(&format!("{OPENAT} {{ printf(\"%s\\n\", str(args.filename, 4095)); }}"));
    let error = compile_err(&format!("{OPENAT} {{ printf(\"%s\\n\", str(args.filename, 4096)); }}"));
    assert!(error.contains("str() reads at most 4095 characters in printf, not 4096"), "{error}");
    compile_ok(&format!("{OPENAT} {{ @[str(args.filename, 200)] = count(); }}"));
    let error = compile_err(&format!("{OPENAT} {{ @[str(args.filename, 201)] = count(); }}"));
    assert!(error.contains("at most 200 characters outside printf and print"), "{error}");
    assert!(error.contains("read up to 4095 characters"), "{error}");
}

#[test]
fn buf_needs_percent_r() {
    compile_ok(&format!("{OPENAT} {{ printf(\"%r\\n\", buf(args.filename, 16)); @[buf(args.filename, 8)] = count(); }}"));
    assert!(compile_err(&format!("{OPENAT} {{ printf(\"%s\\n\", buf(args.filename, 16)); }}")).contains("print it with `%r`"));
    assert!(compile_err(&format!("{OPENAT} {{ printf(\"%r\\n\", comm); }}")).contains("`%r` needs a buf() value"));
    assert!(compile_err(&format!("{OPENAT} {{ print(buf(args.filename, 2000)); }}")).contains("invalid buf() length 2000"));
}

#[test]
fn symbols_and_addresses_compile() {
    compile_ok(&format!(
        "{OPENAT} {{ printf(\"%s %s %s\\n\", ksym(args.filename), usym(args.filename), ntop(args.dfd)); @[ntop(2, args.dfd)] = count(); }}"
    ));
    assert!(compile_err(&format!("{OPENAT} {{ print(ntop(comm)); }}")).contains("ntop() needs an address"));
    assert!(compile_err(&format!("{OPENAT} {{ print(kaddr(\"x\")); }}")).contains("kaddr() needs the kernel's symbol table"));
}

#[test]
fn uprobe_without_binary_is_explained() {
    let error = compile_err("uprobe:main { }");
    assert!(error.contains("the uprobe names no binary"), "{error}");
    let error = compile_err("uprobe:/nonexistent/binary:main { }");
    assert!(error.contains("binary `/nonexistent/binary` not found"), "{error}");
}
