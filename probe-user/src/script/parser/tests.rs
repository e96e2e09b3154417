//! Parser tests: every construct printed back as S-expressions, spans,
//! rendered diagnostics, and inputs that must not panic.

use super::{MAX_NESTING, parse, parse_with_recovery};
use crate::script::ast::{AttachTarget, ExprKind, Location, Provider, StatementKind};
use crate::script::diagnostic::{Diagnostic, render_all};
use crate::script::span::{Source, Span};

/// Parses `text`, requires it to have no diagnostics, and returns the
/// program as S-expressions without the final newline.
fn sexpr(text: &str) -> String {
    let source = Source::new("-e", text);
    let (program, diagnostics) = parse(&source);
    assert!(
        diagnostics.is_empty(),
        "diagnostics for {text:?}:\n{}",
        render_all(&diagnostics, &source)
    );
    let program = program.expect("a program without errors");
    program.to_sexpr().trim_end().to_owned()
}

/// Parses `statements` as the body of a `BEGIN` probe and returns the
/// statements as S-expressions separated by spaces.
fn body(statements: &str) -> String {
    let printed = sexpr(&format!("BEGIN {{ {statements} }}"));
    let inner = printed
        .strip_prefix("(probe (BEGIN) (block")
        .and_then(|rest| rest.strip_suffix("))"))
        .unwrap_or_else(|| panic!("unexpected probe shape: {printed}"));
    inner.trim_start().to_owned()
}

/// Parses one attach point and returns it as an S-expression.
fn attach(attach_point: &str) -> String {
    let printed = sexpr(&format!("{attach_point} {{}}"));
    let inner = printed
        .strip_prefix("(probe ")
        .and_then(|rest| rest.strip_suffix(" (block))"))
        .unwrap_or_else(|| panic!("unexpected probe shape: {printed}"));
    inner.to_owned()
}

/// Renders all diagnostics for `text`, named `-e`.
fn errors(text: &str) -> String {
    let source = Source::new("-e", text);
    let (_, diagnostics) = parse(&source);
    render_all(&diagnostics, &source)
}

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    parse(&Source::new("-e", text)).1
}

#[test]
fn empty_program() {
    assert_eq!(sexpr(""), "");
    assert_eq!(sexpr("  // only a comment\n/* and a block */\n"), "");
}

#[test]
fn begin_and_end_probes() {
    assert_eq!(
        sexpr("BEGIN { }\nEND { }"),
        "(probe (BEGIN) (block))\n(probe (END) (block))"
    );
}

#[test]
fn several_attach_points_and_predicate() {
    assert_eq!(
        sexpr("kprobe:vfs_read, kprobe:vfs_write /pid == 42/ { @[comm] = count(); }"),
        "(probe (kprobe vfs_read) (kprobe vfs_write) (predicate (== pid 42)) (block (= (@ comm) (call count))))"
    );
    assert_eq!(
        sexpr(
            "tracepoint:syscalls:sys_enter_openat\n/comm == \"bash\"/\n{\n  printf(\"%s\\n\", str(args.filename));\n}"
        ),
        "(probe (tracepoint syscalls sys_enter_openat) (predicate (== comm \"bash\")) \
         (block (call printf \"%s\\n\" (call str (. args filename)))))"
    );
}

#[test]
fn predicate_with_division_and_no_spaces() {
    assert_eq!(
        sexpr("kprobe:f/$1 / 2 > 1/{}"),
        "(probe (kprobe f) (predicate (> (/ $1 2) 1)) (block))"
    );
}

#[test]
fn preamble_comments_and_c_definitions() {
    let text = "// count opens\n/* by process */\n#include <linux/fs.h>\nstruct pair { int a; int b; };\nBEGIN {}";
    assert_eq!(
        sexpr(text),
        "(preprocessor \"#include <linux/fs.h>\")\n(c-type \"struct pair { int a; int b; };\")\n(probe (BEGIN) (block))"
    );
}

#[test]
fn attach_point_forms() {
    let table: &[(&str, &str)] = &[
        ("BEGIN", "(BEGIN)"),
        ("END", "(END)"),
        ("kprobe:do_sys_openat2", "(kprobe do_sys_openat2)"),
        ("kretprobe:vfs_read", "(kretprobe vfs_read)"),
        (
            "kprobe:ext4:ext4_file_open",
            "(kprobe :module ext4 ext4_file_open)",
        ),
        ("kprobe:tcp_v4_connect+16", "(kprobe tcp_v4_connect+16)"),
        ("kprobe:tcp_v4_connect+0x10", "(kprobe tcp_v4_connect+16)"),
        ("kprobe:0xffffffff81000000", "(kprobe 0xffffffff81000000)"),
        ("kprobe:vfs_*", "(kprobe vfs_*)"),
        ("kprobe:foo.isra.0", "(kprobe foo.isra.0)"),
        ("kprobe:tcp_?end", "(kprobe tcp_?end)"),
        ("kprobe:$1", "(kprobe $1)"),
        ("fentry:vfs_open", "(fentry vfs_open)"),
        (
            "fentry:nf_tables:nft_do_chain",
            "(fentry :module nf_tables nft_do_chain)",
        ),
        ("fexit:vfs_read", "(fexit vfs_read)"),
        (
            "tracepoint:sched:sched_switch",
            "(tracepoint sched sched_switch)",
        ),
        (
            "tracepoint:syscalls:sys_enter_*",
            "(tracepoint syscalls sys_enter_*)",
        ),
        ("rawtracepoint:sched_switch", "(rawtracepoint sched_switch)"),
        (
            "rawtracepoint:mod:event",
            "(rawtracepoint :module mod event)",
        ),
        (
            "uprobe:/bin/bash:readline",
            "(uprobe :binary /bin/bash readline)",
        ),
        (
            "uretprobe:/bin/bash:readline",
            "(uretprobe :binary /bin/bash readline)",
        ),
        (
            "uprobe:/usr/lib/libc.so.6:malloc",
            "(uprobe :binary /usr/lib/libc.so.6 malloc)",
        ),
        ("uprobe:./a.out:main+8", "(uprobe :binary ./a.out main+8)"),
        ("uprobe:/bin/x:0x401000", "(uprobe :binary /bin/x 0x401000)"),
        (
            "uprobe:/bin/x:cpp:ns::f",
            "(uprobe :binary /bin/x :language cpp ns::f)",
        ),
        (
            "uprobe:\"/opt/my app/bin\":main",
            "(uprobe :binary \"/opt/my app/bin\" main)",
        ),
        ("uprobe:malloc", "(uprobe malloc)"),
        ("usdt:/bin/x:probe", "(usdt :binary /bin/x probe)"),
        (
            "usdt:/bin/x:provider:probe",
            "(usdt :binary /bin/x :provider provider probe)",
        ),
        ("interval:s:1", "(interval s 1)"),
        ("interval:ms:100", "(interval ms 100)"),
        ("interval:us:500", "(interval us 500)"),
        ("interval:hz:10", "(interval hz 10)"),
        ("interval:100ms", "(interval ms 100)"),
        ("profile:hz:99", "(profile hz 99)"),
        ("profile:99hz", "(profile hz 99)"),
        ("software:cpu-clock:1000000", "(software cpu-clock 1000000)"),
        ("software:faults", "(software faults)"),
        (
            "hardware:cache-misses:1_000_000",
            "(hardware cache-misses 1000000)",
        ),
        ("watchpoint:0x10000000:8:rw", "(watchpoint 0x10000000 8 rw)"),
        ("asyncwatchpoint:0x1000:4:w", "(asyncwatchpoint 0x1000 4 w)"),
        ("iter:task", "(iter task)"),
        (
            "iter:task:/sys/fs/bpf/tasks",
            "(iter task :pin /sys/fs/bpf/tasks)",
        ),
        ("lsm:socket_create", "(lsm socket_create)"),
    ];
    for (text, expected) in table {
        assert_eq!(attach(text), *expected, "attach point {text}");
    }
}

#[test]
fn provider_aliases_normalize() {
    let table: &[(&str, &str)] = &[
        ("k:f", "(kprobe f)"),
        ("kr:f", "(kretprobe f)"),
        ("u:/b:f", "(uprobe :binary /b f)"),
        ("ur:/b:f", "(uretprobe :binary /b f)"),
        ("U:/b:p", "(usdt :binary /b p)"),
        ("t:a:b", "(tracepoint a b)"),
        ("rt:a", "(rawtracepoint a)"),
        ("f:a", "(fentry a)"),
        ("kfunc:a", "(fentry a)"),
        ("fr:a", "(fexit a)"),
        ("kretfunc:a", "(fexit a)"),
        ("s:faults:1", "(software faults 1)"),
        ("h:cycles:1", "(hardware cycles 1)"),
        ("p:hz:1", "(profile hz 1)"),
        ("i:s:1", "(interval s 1)"),
        ("w:0x1:1:r", "(watchpoint 0x1 1 r)"),
        ("aw:0x1:1:r", "(asyncwatchpoint 0x1 1 r)"),
        ("it:task", "(iter task)"),
    ];
    for (text, expected) in table {
        assert_eq!(attach(text), *expected, "attach point {text}");
    }
}

#[test]
fn attach_point_keeps_text_and_spans() {
    let text = "BEGIN {} kfunc:ext4:ext4_file_open { }";
    let (program, _) = parse(&Source::new("-e", text));
    let program = program.unwrap();
    let attach_point = &program.probes[1].attach_points[0];
    assert_eq!(attach_point.provider, Provider::Fentry);
    assert_eq!(attach_point.provider_name.text, "kfunc");
    assert_eq!(attach_point.provider_name.span, Span::new(9, 14));
    assert_eq!(attach_point.raw, "kfunc:ext4:ext4_file_open");
    assert_eq!(attach_point.span, Span::new(9, 34));
    let AttachTarget::Fentry {
        module: Some(module),
        function,
    } = &attach_point.target
    else {
        panic!("unexpected target {:?}", attach_point.target);
    };
    assert_eq!(module.span, Span::new(15, 19));
    assert_eq!(function.span, Span::new(20, 34));
    assert!(!function.has_wildcard());
}

#[test]
fn kprobe_offset_spans() {
    let (program, _) = parse(&Source::new("-e", "kprobe:f+0x10 {}"));
    let program = program.unwrap();
    let AttachTarget::Kprobe {
        location: Location::Symbol {
            name,
            offset: Some(offset),
        },
        ..
    } = &program.probes[0].attach_points[0].target
    else {
        panic!("unexpected target");
    };
    assert_eq!(name.span, Span::new(7, 8));
    assert_eq!(offset.span, Span::new(9, 13));
    assert_eq!(offset.value, 16);
}

#[test]
fn wildcard_names() {
    let (program, _) = parse(&Source::new("-e", "kprobe:vfs_* {}"));
    let program = program.unwrap();
    let AttachTarget::Kprobe {
        location: Location::Symbol { name, .. },
        ..
    } = &program.probes[0].attach_points[0].target
    else {
        panic!("unexpected target");
    };
    assert!(name.has_wildcard());
}

#[test]
fn assignments() {
    assert_eq!(body("$x = 1"), "(= $x 1)");
    assert_eq!(body("@m = 1"), "(= @m 1)");
    assert_eq!(body("@ = 1"), "(= @ 1)");
    assert_eq!(body("@m[pid, comm] = nsecs"), "(= (@m pid comm) nsecs)");
    assert_eq!(body("@[comm] = count()"), "(= (@ comm) (call count))");
    assert_eq!(body("$s = \"text\""), "(= $s \"text\")");
}

#[test]
fn compound_assignments() {
    let table: &[(&str, &str)] = &[
        ("$x += 1", "(+= $x 1)"),
        ("$x -= 1", "(-= $x 1)"),
        ("$x *= 2", "(*= $x 2)"),
        ("$x /= 2", "(/= $x 2)"),
        ("$x %= 2", "(%= $x 2)"),
        ("@m &= 3", "(&= @m 3)"),
        ("@m |= 3", "(|= @m 3)"),
        ("@m ^= 3", "(^= @m 3)"),
        ("@m[1] <<= 2", "(<<= (@m 1) 2)"),
        ("@m[1] >>= 2", "(>>= (@m 1) 2)"),
    ];
    for (text, expected) in table {
        assert_eq!(body(text), *expected, "statement {text}");
    }
}

#[test]
fn increments_and_decrements() {
    assert_eq!(body("$x++"), "(post++ $x)");
    assert_eq!(body("$x--"), "(post-- $x)");
    assert_eq!(body("++$x"), "(pre++ $x)");
    assert_eq!(body("--@m[tid]"), "(pre-- (@m tid))");
    assert_eq!(body("@count++"), "(post++ @count)");
    assert_eq!(body("$y = $x++ + 1"), "(= $y (+ (post++ $x) 1))");
}

#[test]
fn if_else_chains() {
    assert_eq!(
        body("if (pid == 1) { exit(); }"),
        "(if (== pid 1) (block (call exit)))"
    );
    assert_eq!(
        body("if ($x) { $y = 1; } else if ($z) { $y = 2 } else { $y = 3 }"),
        "(if $x (block (= $y 1)) (if $z (block (= $y 2)) (block (= $y 3))))"
    );
    assert_eq!(
        body("if (1) {} $x = 1"),
        "(if 1 (block)) (= $x 1)",
        "no `;` after a block"
    );
}

#[test]
fn loops() {
    assert_eq!(
        body("unroll (3) { @i++; }"),
        "(unroll 3 (block (post++ @i)))"
    );
    assert_eq!(body("unroll($1) { }"), "(unroll $1 (block))");
    assert_eq!(
        body("while ($i < 10) { $i++; if ($i == 5) { break; } continue; }"),
        "(while (< $i 10) (block (post++ $i) (if (== $i 5) (block (break))) (continue)))"
    );
    assert_eq!(
        body("for ($kv : @m) { print($kv.0); }"),
        "(for $kv @m (block (call print (. $kv 0))))"
    );
    assert_eq!(
        body("for ($i : 0..10) { }"),
        "(for $i (range 0 10) (block))"
    );
    assert_eq!(
        body("for ($i : 1..$#) { }"),
        "(for $i (range 1 $#) (block))"
    );
}

#[test]
fn other_statements() {
    assert_eq!(body("return"), "(return)");
    assert_eq!(body("return;"), "(return)");
    assert_eq!(body("return 1"), "(return 1)");
    assert_eq!(
        body("delete(@m[tid]); clear(@m)"),
        "(call delete (@m tid)) (call clear @m)"
    );
    assert_eq!(body("let $x"), "(let $x)");
    assert_eq!(body("let $x = 5"), "(let $x = 5)");
    assert_eq!(body("let $x: uint16 = 5"), "(let $x : <uint16> = 5)");
    assert_eq!(body("{ $x = 1; { } }"), "(block (= $x 1) (block))");
    assert_eq!(body(";; $x = 1;;"), "(= $x 1)", "empty statements");
    assert_eq!(body("$a = 1; $b = 2;"), "(= $a 1) (= $b 2)", "a final `;`");
    assert_eq!(body("$a = 1; $b = 2"), "(= $a 1) (= $b 2)", "no final `;`");
}

#[test]
fn binary_precedence() {
    let table: &[(&str, &str)] = &[
        ("1 + 2 * 3", "(+ 1 (* 2 3))"),
        ("1 * 2 + 3", "(+ (* 1 2) 3)"),
        ("1 - 2 - 3", "(- (- 1 2) 3)"),
        ("8 / 4 / 2", "(/ (/ 8 4) 2)"),
        ("7 % 3 * 2", "(* (% 7 3) 2)"),
        ("1 << 2 + 3", "(<< 1 (+ 2 3))"),
        ("1 < 2 << 3", "(< 1 (<< 2 3))"),
        ("a < b == c > d", "(== (< a b) (> c d))"),
        ("a <= b != c >= d", "(!= (<= a b) (>= c d))"),
        ("a == b & c", "(& (== a b) c)"),
        ("a & b ^ c", "(^ (& a b) c)"),
        ("a ^ b | c", "(| (^ a b) c)"),
        ("a | b && c", "(&& (| a b) c)"),
        ("a && b || c && d", "(|| (&& a b) (&& c d))"),
        ("a >> 1 >> 2", "(>> (>> a 1) 2)"),
        ("a || b ? c : d", "(? (|| a b) c d)"),
        ("a ? b : c ? d : e", "(? a b (? c d e))"),
        ("a ? b ? c : d : e", "(? a (? b c d) e)"),
        ("(1 + 2) * 3", "(* (+ 1 2) 3)"),
    ];
    for (text, expected) in table {
        assert_eq!(body(text), *expected, "expression {text}");
    }
}

#[test]
fn unary_operators() {
    let table: &[(&str, &str)] = &[
        ("!a", "(! a)"),
        ("~a", "(~ a)"),
        ("-a", "(- a)"),
        ("+a", "(+ a)"),
        ("*a", "(* a)"),
        ("&a", "(& a)"),
        ("- -a", "(- (- a))"),
        ("!a && b", "(&& (! a) b)"),
        ("-a * b", "(* (- a) b)"),
        ("*p + 1", "(+ (* p) 1)"),
        ("-x->y", "(- (-> x y))"),
        ("!!a", "(! (! a))"),
    ];
    for (text, expected) in table {
        assert_eq!(body(text), *expected, "expression {text}");
    }
}

#[test]
fn casts() {
    let table: &[(&str, &str)] = &[
        ("(uint32)x", "(cast <uint32> x)"),
        ("(int8)-1", "(cast <int8> (- 1))"),
        ("(uint64)arg0 + 1", "(+ (cast <uint64> arg0) 1)"),
        (
            "(struct task_struct *)curtask",
            "(cast <struct task_struct *> curtask)",
        ),
        (
            "(struct task_struct *)curtask->mm",
            "(cast <struct task_struct *> (-> curtask mm))",
        ),
        (
            "((struct task_struct *)curtask)->mm",
            "(-> (cast <struct task_struct *> curtask) mm)",
        ),
        ("(struct sock **)p", "(cast <struct sock **> p)"),
        ("(union u *)p", "(cast <union u *> p)"),
        ("(enum e)x", "(cast <enum e> x)"),
        ("(pid_t *)p", "(cast <pid_t *> p)"),
        ("(uint8[4])x", "(cast <uint8[4]> x)"),
        ("(bool)x", "(cast <bool> x)"),
        ("(void *)x", "(cast <void *> x)"),
        ("(x)", "x"),
        ("(x) * y", "(* x y)"),
    ];
    for (text, expected) in table {
        assert_eq!(body(text), *expected, "expression {text}");
    }
}

#[test]
fn postfix_operators() {
    let table: &[(&str, &str)] = &[
        ("args.filename", "(. args filename)"),
        ("args->filename", "(-> args filename)"),
        (
            "curtask->mm->owner->pid",
            "(-> (-> (-> curtask mm) owner) pid)",
        ),
        ("a.b.c", "(. (. a b) c)"),
        ("$t.0", "(. $t 0)"),
        ("$t.1.0", "(. (. $t 1) 0)"),
        ("arr[1]", "([] arr 1)"),
        ("args.buf[i + 1]", "([] (. args buf) (+ i 1))"),
        ("@m[1][2]", "([] (@m 1) 2)"),
        ("$x[0].f", "(. ([] $x 0) f)"),
    ];
    for (text, expected) in table {
        assert_eq!(body(text), *expected, "expression {text}");
    }
}

#[test]
fn calls_and_builtins() {
    let table: &[(&str, &str)] = &[
        (
            "printf(\"%d %s\\n\", pid, comm)",
            "(call printf \"%d %s\\n\" pid comm)",
        ),
        ("exit()", "(call exit)"),
        ("kstack()", "(call kstack)"),
        ("kstack(perf, 3)", "(call kstack perf 3)"),
        (
            "str(args->filename, 16)",
            "(call str (-> args filename) 16)",
        ),
        ("@h = hist(retval)", "(= @h (call hist retval))"),
        ("@s[cpid] = sum(arg2)", "(= (@s cpid) (call sum arg2))"),
        ("print((1, 2),)", "(call print (tuple 1 2))"),
        (
            "uid + gid + tid + cpu + nsecs",
            "(+ (+ (+ (+ uid gid) tid) cpu) nsecs)",
        ),
        ("kstack", "kstack"),
    ];
    for (text, expected) in table {
        assert_eq!(body(text), *expected, "expression {text}");
    }
}

#[test]
fn literals() {
    let table: &[(&str, &str)] = &[
        ("0", "0"),
        ("1_000", "1000"),
        ("0x10", "16"),
        ("0b11", "3"),
        ("0o17", "15"),
        ("1e3", "1000"),
        ("10ul", "10ul"),
        ("'A'", "65"),
        ("\"a\\tb\\x41\\101\"", "\"a\\tbAA\""),
        ("true", "true"),
        ("false", "false"),
        ("$1", "$1"),
        ("$#", "$#"),
        ("@", "@"),
        ("(1, \"a\", $x)", "(tuple 1 \"a\" $x)"),
        ("(1, 2,)", "(tuple 1 2)"),
        (
            "sizeof(struct task_struct)",
            "(sizeof <struct task_struct>)",
        ),
        ("sizeof(uint32)", "(sizeof <uint32>)"),
        ("sizeof($x)", "(sizeof $x)"),
        (
            "offsetof(struct task_struct, pid)",
            "(offsetof <struct task_struct> pid)",
        ),
        ("offsetof(struct s, a.b)", "(offsetof <struct s> a b)"),
    ];
    for (text, expected) in table {
        assert_eq!(body(text), *expected, "expression {text}");
    }
}

#[test]
fn unicode_in_strings_and_comments() {
    assert_eq!(
        body("printf(\"héllo → ✓\\n\") // ünïcode\n"),
        "(call printf \"h\\xc3\\xa9llo \\xe2\\x86\\x92 \\xe2\\x9c\\x93\\n\")"
    );
}

#[test]
fn spans_of_statements_and_expressions() {
    let text = "BEGIN { @m[pid] = 1 + 2; if (x) { } }";
    let (program, _) = parse(&Source::new("-e", text));
    let program = program.unwrap();
    let probe = &program.probes[0];
    assert_eq!(probe.span, Span::new(0, text.len()));
    assert_eq!(probe.body.span, Span::new(6, text.len()));
    let assign = &probe.body.statements[0];
    assert_eq!(&text[assign.span.start..assign.span.end], "@m[pid] = 1 + 2");
    let StatementKind::Assign { target, value, .. } = &assign.kind else {
        panic!("not an assignment: {assign:?}");
    };
    assert_eq!(&text[target.span().start..target.span().end], "@m[pid]");
    assert_eq!(&text[value.span.start..value.span.end], "1 + 2");
    let if_statement = &probe.body.statements[1];
    assert_eq!(
        &text[if_statement.span.start..if_statement.span.end],
        "if (x) { }"
    );
}

#[test]
fn span_of_parenthesized_expression_includes_parens() {
    let text = "BEGIN { (a + b) * c }";
    let (program, _) = parse(&Source::new("-e", text));
    let program = program.unwrap();
    let StatementKind::Expr(expr) = &program.probes[0].body.statements[0].kind else {
        panic!("not an expression statement");
    };
    let ExprKind::Binary { left, .. } = &expr.kind else {
        panic!("not a binary expression");
    };
    assert_eq!(&text[left.span.start..left.span.end], "(a + b)");
    assert_eq!(&text[expr.span.start..expr.span.end], "(a + b) * c");
}

// Diagnostics, compared as rendered text.

#[test]
fn missing_semicolon() {
    let expected = "\
error: expected `;` or `}` after statement, found identifier `exit`
  --> -e:1:21
  |
1 | BEGIN { printf(\"x\") exit() }
  |                     ^^^^
  = hint: separate statements with `;`
";
    assert_eq!(errors("BEGIN { printf(\"x\") exit() }"), expected);
}

#[test]
fn assignment_in_predicate() {
    let expected = "\
error: unexpected `=` in a predicate
  --> -e:1:15
  |
1 | kprobe:f /pid = 1/ { }
  |               ^
  = hint: did you mean `==`?
";
    assert_eq!(errors("kprobe:f /pid = 1/ { }"), expected);
}

#[test]
fn assignment_in_if_condition() {
    let rendered = errors("BEGIN { if ($x = 1) { } }");
    assert!(
        rendered.starts_with("error: unexpected `=` in the `if` condition\n"),
        "{rendered}"
    );
    assert!(rendered.contains("did you mean `==`?"), "{rendered}");
}

#[test]
fn unknown_provider_with_suggestion() {
    let expected = "\
error: unknown probe provider `kprobes`
  --> -e:1:1
  |
1 | kprobes:vfs_read { }
  | ^^^^^^^
  = hint: did you mean `kprobe`?
";
    assert_eq!(errors("kprobes:vfs_read { }"), expected);
}

#[test]
fn unknown_provider_suggestions() {
    let rendered = errors("tracepiont:a:b { }");
    assert!(
        rendered.contains("did you mean `tracepoint`?"),
        "{rendered}"
    );
    let rendered = errors("begin { }");
    assert!(rendered.contains("did you mean `BEGIN`?"), "{rendered}");
    let rendered = errors("zzzz:a { }");
    assert!(
        rendered.contains("= hint: the providers are BEGIN, END, kprobe, kretprobe,"),
        "{rendered}"
    );
}

#[test]
fn attach_point_without_provider() {
    let expected = "\
error: unknown probe provider `vfs_read`
  --> -e:1:1
  |
1 | vfs_read { }
  | ^^^^^^^^
  = hint: an attach point starts with a provider, as in `kprobe:vfs_read` or `tracepoint:CATEGORY:vfs_read`
";
    assert_eq!(errors("vfs_read { }"), expected);
}

#[test]
fn malformed_attach_points() {
    let expected = "\
error: invalid `tracepoint` attach point `tracepoint:syscalls`
  --> -e:1:1
  |
1 | tracepoint:syscalls { }
  | ^^^^^^^^^^^^^^^^^^^
  = hint: write `tracepoint:CATEGORY:NAME`
";
    assert_eq!(errors("tracepoint:syscalls { }"), expected);

    let expected = "\
error: invalid character `(` in function name `vfs_read()`
  --> -e:1:16
  |
1 | kprobe:vfs_read() { }
  |                ^
  = hint: name the function without `()`
";
    assert_eq!(errors("kprobe:vfs_read() { }"), expected);

    let expected = "\
error: unknown unit `sec` in `interval` attach point
  --> -e:1:10
  |
1 | interval:sec:1 { }
  |          ^^^
  = hint: the units are `s`, `ms`, `us` and `hz`
";
    assert_eq!(errors("interval:sec:1 { }"), expected);

    let expected = "\
error: missing function name in `kprobe` attach point
  --> -e:1:8
  |
1 | kprobe: { }
  |        ^
  = hint: write `kprobe:FUNCTION`, `kprobe:MODULE:FUNCTION`, `kprobe:FUNCTION+OFFSET` or `kprobe:ADDRESS`
";
    assert_eq!(errors("kprobe: { }"), expected);

    let rendered = errors("BEGIN:x { }");
    assert!(
        rendered.starts_with("error: `BEGIN` takes no target\n"),
        "{rendered}"
    );
    let rendered = errors("profile:hz:lots { }");
    assert!(
        rendered.starts_with("error: expected a number for the rate, found `lots`\n"),
        "{rendered}"
    );
    let rendered = errors("kprobe:f+ { }");
    assert!(
        rendered.starts_with("error: missing offset in `kprobe` attach point\n"),
        "{rendered}"
    );
    let rendered = errors("software:faults:99999999999999999999 { }");
    assert!(
        rendered.starts_with("error: integer `99999999999999999999` is too large\n"),
        "{rendered}"
    );
}

#[test]
fn unclosed_block_at_end_of_input() {
    let expected = "\
error: expected `}` to close the block, found end of input
  --> -e:2:10
  |
2 |   exit();
  |          ^
note: the block starts here
  --> -e:1:7
  |
1 | BEGIN {
  |       ^
";
    assert_eq!(errors("BEGIN {\n  exit();\n"), expected);
}

#[test]
fn unclosed_call_arguments() {
    let expected = "\
error: expected `)` or `,` in the arguments of `printf`, found `;`
  --> -e:1:25
  |
1 | BEGIN { printf(\"%d\", pid; exit(); }
  |                         ^
note: to match this
  --> -e:1:15
  |
1 | BEGIN { printf(\"%d\", pid; exit(); }
  |               ^
";
    assert_eq!(errors("BEGIN { printf(\"%d\", pid; exit(); }"), expected);
}

#[test]
fn invalid_assignment_target() {
    let expected = "\
error: cannot assign to this expression
  --> -e:1:9
  |
1 | BEGIN { pid + 1 = 2; }
  |         ^^^^^^^
  = hint: only variables (`$x`) and maps (`@m`, `@m[key]`) can be written
";
    assert_eq!(errors("BEGIN { pid + 1 = 2; }"), expected);
    let rendered = errors("BEGIN { 1++; }");
    assert!(
        rendered.starts_with("error: cannot apply `++` to this expression\n"),
        "{rendered}"
    );
}

#[test]
fn empty_predicate() {
    let expected = "\
error: empty predicate
  --> -e:1:10
  |
1 | kprobe:f / / { }
  |          ^^^
  = hint: write a condition between the slashes, or remove them
";
    assert_eq!(errors("kprobe:f / / { }"), expected);
}

#[test]
fn unclosed_predicate() {
    let expected = "\
error: expected `/` to end the predicate, found `{`
  --> -e:1:20
  |
1 | kprobe:f /pid == 1 { exit() }
  |                    ^
  = hint: a predicate is written `/condition/` before the probe's `{`
note: the predicate starts here
  --> -e:1:10
  |
1 | kprobe:f /pid == 1 { exit() }
  |          ^
";
    assert_eq!(errors("kprobe:f /pid == 1 { exit() }"), expected);
}

#[test]
fn misplaced_tokens() {
    let table: &[(&str, &str)] = &[
        (
            "BEGIN { else { } }",
            "error: `else` without a preceding `if`",
        ),
        (
            "BEGIN { for ($k : 5) { } }",
            "error: expected a map or a range to iterate over",
        ),
        ("BEGIN { @m[] = 1 }", "error: empty map key"),
        (
            "BEGIN { $x = ; }",
            "error: expected an expression, found `;`",
        ),
        ("{ exit() }", "error: expected an attach point, found `{`"),
        (
            "kprobe:f pid { }",
            "error: expected a predicate `/.../` or `{` after the attach point, found identifier `pid`",
        ),
        (
            "kprobe:a, { }",
            "error: expected an attach point after `,`, found `{`",
        ),
        (
            "BEGIN { $x.; }",
            "error: expected a field name after `.`, found `;`",
        ),
        (
            "BEGIN { (struct) x }",
            "error: expected a name after `struct`, found `)`",
        ),
        (
            "BEGIN { let 5 }",
            "error: expected a variable such as `$x` after `let`, found integer `5`",
        ),
        (
            "BEGIN { if 1 { } }",
            "error: expected `(` after `if`, found integer `1`",
        ),
        (
            "BEGIN { 1 ? 2 }",
            "error: expected `:` in the conditional expression `?:`, found `}`",
        ),
    ];
    for (text, expected) in table {
        let rendered = errors(text);
        let first_line = rendered.lines().next().unwrap_or("");
        assert_eq!(first_line, *expected, "input {text:?}:\n{rendered}");
    }
}

#[test]
fn recovery_reports_several_errors() {
    let text = "\
BEGIN {
  $x = ;
  printf(\"ok\\n\");
  @y[ = 2;
}
kprobez:f { }
kprobe:g /pid = 1/ { $z = 1 + ; }
END { exit() }
";
    let diagnostics = diagnostics(text);
    let source = Source::new("-e", text);
    let messages: Vec<(usize, &str)> = diagnostics
        .iter()
        .map(|diagnostic| {
            (
                source.line_column(diagnostic.span.start).line,
                diagnostic.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            (2, "expected an expression, found `;`"),
            (4, "expected an expression, found `=`"),
            (6, "unknown probe provider `kprobez`"),
            (7, "unexpected `=` in a predicate"),
            (7, "expected an expression, found `;`"),
        ]
    );

    let (program, _) = parse_with_recovery(&source);
    let printed = program.to_sexpr();
    assert!(
        printed.contains("(call printf \"ok\\n\")"),
        "statements after an error are kept: {printed}"
    );
    assert!(
        printed.contains("(probe (END) (block (call exit)))"),
        "probes after errors are kept: {printed}"
    );
    assert!(
        printed.contains("(probe (kprobe g) (predicate (== pid 1))"),
        "{printed}"
    );
}

#[test]
fn missing_semicolon_keeps_parsing() {
    let text = "BEGIN { $a = 1\n $b = 2\n $c = 3 }";
    let (program, diagnostics) = parse_with_recovery(&Source::new("-e", text));
    assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
    assert_eq!(
        program.to_sexpr(),
        "(probe (BEGIN) (block (= $a 1) (= $b 2) (= $c 3)))\n"
    );
}

#[test]
fn parse_returns_no_program_on_error() {
    let (program, diagnostics) = parse(&Source::new("-e", "BEGIN { $x = }"));
    assert!(program.is_none());
    assert_eq!(diagnostics.len(), 1);
}

#[test]
fn lexer_and_parser_diagnostics_in_source_order() {
    let rendered = errors("BEGIN { $x = \"abc\n; $y = 0x; }");
    let lexer_error = rendered
        .find("unterminated string literal")
        .expect(&rendered);
    let integer_error = rendered
        .find("missing digits in integer `0x`")
        .expect(&rendered);
    assert!(lexer_error < integer_error, "{rendered}");
}

// Nesting limits and inputs that must not panic.

#[test]
fn nesting_below_the_limit_parses() {
    let depth = MAX_NESTING - 2;
    let text = format!("BEGIN {{ {}1{} }}", "(".repeat(depth), ")".repeat(depth));
    assert!(diagnostics(&text).is_empty());
    let text = format!("BEGIN {{ {}1 }}", "- ".repeat(depth));
    assert!(diagnostics(&text).is_empty());
    let text = format!("BEGIN {{ 1{} }}", " + 1".repeat(depth));
    assert!(diagnostics(&text).is_empty());
    let text = format!("BEGIN {{ $x{} }}", ".f".repeat(depth));
    assert!(diagnostics(&text).is_empty());
    let text = format!("BEGIN {}{}", "{".repeat(depth), "}".repeat(depth));
    assert!(diagnostics(&text).is_empty());
}

#[test]
fn nesting_too_deep_is_one_diagnostic() {
    let inputs = [
        format!("BEGIN {{ {}1{} }}", "(".repeat(5000), ")".repeat(5000)),
        format!("BEGIN {{ {}", "(".repeat(100_000)),
        format!("BEGIN {}", "{".repeat(100_000)),
        format!("BEGIN {{ $x = {}1 }}", "!-~*&".repeat(2000)),
        format!("BEGIN {{ {} }}", "if (1) { ".repeat(1000)),
        format!(
            "BEGIN {{ if (1) {{ }} {} }}",
            "else if (1) { } ".repeat(1000)
        ),
        format!("BEGIN {{ {}1 }}", "1 ? 2 : ".repeat(1000)),
        format!("BEGIN {{ {}1 }}", "@a[".repeat(1000)),
        format!("BEGIN {{ {}", "f(".repeat(1000)),
        format!("BEGIN {{ $y = {}; }}", vec!["1"; 20_000].join(" + ")),
        format!("BEGIN {{ $y = $x{}; }}", "->f[0]".repeat(20_000)),
    ];
    for text in &inputs {
        let diagnostics = diagnostics(text);
        assert_eq!(
            diagnostics.len(),
            1,
            "input starting {:?}: {diagnostics:#?}",
            &text[..40]
        );
        assert_eq!(diagnostics[0].message, "the program nests too deeply");
    }
}

#[test]
fn many_statements_parse() {
    let statements = "$x = 1; ".repeat(20_000);
    let text = format!("BEGIN {{ {statements} }}");
    assert!(diagnostics(&text).is_empty());
}

/// Valid scripts that the no-panic tests cut and mutate.
const SCRIPTS: &[&str] = &[
    "BEGIN { printf(\"Tracing... Hit Ctrl-C to end.\\n\"); }\n\
     tracepoint:syscalls:sys_enter_openat /comm != \"bash\"/ {\n\
       @filename[tid] = args.filename;\n\
     }\n\
     tracepoint:syscalls:sys_exit_openat /@filename[tid]/ {\n\
       $ret = args.ret;\n\
       $fd = $ret >= 0 ? $ret : -1;\n\
       printf(\"%-6d %-16s %4d %s\\n\", pid, comm, $fd, str(@filename[tid]));\n\
       delete(@filename[tid]);\n\
     }\n\
     END { clear(@filename); }\n",
    "#include <linux/sched.h>\n\
     struct s { int a; };\n\
     kprobe:vfs_read*, kretprobe:ext4:ext4_file_open+0x10, uprobe:/usr/lib/libc.so.6:\"malloc\" {\n\
       $t = (struct task_struct *)curtask;\n\
       @[kstack, ustack(perf, 3)] = hist(retval - (uint64)arg0 << 2);\n\
       if ($t->mm == 0 && !($1 > 'a')) { return; } else if (@x++ > 10) { @x--; } else { unroll(2) { $i += 1; } }\n\
       while ($i < 0b1_0) { $i++; for ($kv : @m) { print(($kv.0, $kv.1)); } }\n\
       let $y: uint8[4] = sizeof(struct s) + offsetof(struct s, a);\n\
     }\n\
     interval:ms:100 { exit(); } profile:99hz { @[cpu] = count() } software:faults:1e3 { }\n",
    "/* é → ✓ */ BEGIN { printf(\"é\\x41\\101\\t\"); $a = -9223372036854775808; @ = (1, \"x\", true); }",
];

/// Parses `text` and checks what must hold for any input: no panic, every
/// diagnostic span inside the text, and a program exactly when there is no
/// error.
fn check_any_input(text: &str) {
    let source = Source::new("-e", text);
    let (program, diagnostics) = parse(&source);
    for diagnostic in &diagnostics {
        assert!(
            diagnostic.span.end <= text.len(),
            "span {:?} past the end of {text:?}",
            diagnostic.span
        );
        let rendered = diagnostic.render(&source);
        assert!(rendered.starts_with("error: ") || rendered.starts_with("warning: "));
    }
    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    assert_eq!(program.is_some(), !has_errors, "input {text:?}");
    if let Some(program) = program {
        program.to_sexpr();
    }
}

#[test]
fn sample_scripts_parse() {
    for script in SCRIPTS {
        sexpr(script);
    }
}

#[test]
fn every_prefix_parses_without_panic() {
    for script in SCRIPTS {
        for (end, _) in script.char_indices() {
            check_any_input(&script[..end]);
        }
    }
}

#[test]
fn edge_inputs_parse_without_panic() {
    let inputs = [
        "",
        " ",
        "/",
        "//",
        "/*",
        "*/",
        "{",
        "}",
        "(",
        ")",
        "/ {",
        "/x/ {",
        ",",
        ":",
        "\"",
        "'",
        "$",
        "@",
        "#",
        "\\",
        "BEGIN",
        "BEGIN {",
        "BEGIN }",
        "BEGIN { ) }",
        "BEGIN { ( }",
        "BEGIN,",
        "BEGIN, {",
        "kprobe:",
        ":::",
        "uprobe:\"",
        "uprobe:/a/b",
        "BEGIN { \"\\",
        "é",
        "é:é { é }",
        "\u{0}",
        "\u{feff}BEGIN {}",
        "BEGIN\r\n{\r\n}\r\n",
        "struct",
        "struct {",
        "struct x { int a; ",
        "BEGIN { $x = (struct",
        "BEGIN { sizeof(",
        "BEGIN { offsetof(x,",
        "BEGIN { for (",
        "BEGIN { for ($k",
        "BEGIN { for ($k :",
        "BEGIN { let",
        "BEGIN { let $x :",
        "BEGIN { if",
        "BEGIN { unroll",
        "BEGIN { while (1",
        "BEGIN { $x.",
        "BEGIN { $x->",
        "BEGIN { $x[",
        "BEGIN { @x[1,",
        "BEGIN { (1,",
        "BEGIN { 1 ?",
        "BEGIN { 1 ? 2",
        "BEGIN { 1 ? 2 :",
        "kprobe:f / / {",
        "kprobe:f /1",
        "BEGIN { } }",
        "} BEGIN {}",
        "BEGIN { return",
        "BEGIN { ++",
        "BEGIN { $x++ ++",
        "BEGIN { 0x }",
        "interval:",
        "interval:ms",
        "interval:ms:",
        "profile:hz:99:1",
        "watchpoint:1:2",
        "t::",
        "u::",
        "usdt:::::",
    ];
    for text in inputs {
        check_any_input(text);
    }
}

/// xorshift64*: a small deterministic generator, so that failures repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

#[test]
fn random_mutations_parse_without_panic() {
    const PIECES: &[&str] = &[
        "{", "}", "(", ")", "[", "]", "/", "*", "\"", "'", "\\", ":", ",", ";", "$", "@", "#", "=",
        "+", "-", "!", "?", ".", "..", "->", "<<=", "0x", "9", "e", "é", "✓", "\n", " ", "\t",
        "if", "else", "struct", "kprobe:", "BEGIN", "/*", "*/", "//", "\u{0}",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for script in SCRIPTS {
        let chars: Vec<char> = script.chars().collect();
        for _ in 0..1500 {
            let mut mutated = chars.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(mutated.len() + 1);
                match rng.below(3) {
                    0 if at < mutated.len() => {
                        mutated.remove(at);
                    }
                    1 if at < mutated.len() => {
                        let piece = PIECES[rng.below(PIECES.len())];
                        mutated.splice(at..at + 1, piece.chars());
                    }
                    _ => {
                        let piece = PIECES[rng.below(PIECES.len())];
                        mutated.splice(at..at, piece.chars());
                    }
                }
            }
            let text: String = mutated.into_iter().collect();
            check_any_input(&text);
        }
    }
}
