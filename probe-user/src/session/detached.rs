//! The parts of a script that can run in a session, with no process
//! reading its output.
//!
//! `printf` and `print(expr)` records wait in the pinned ring buffer for
//! `probe session attach`, and are counted as lost once it is full.
//! `exit()`, and `print`, `clear` and `zero` on a whole map, are carried
//! out by the reading process. Outside `END` they would silently do
//! nothing, so a session rejects them. `BEGIN` runs once at `start` and
//! `END` at `stop`, where the tool itself prints their output.

use crate::script::{
    ast::{AssignTarget, Block, ElseBranch, Expr, ExprKind, ForIterable, Probe, Program, Provider, Statement, StatementKind},
    span::{Source, Span},
};

/// Returns why `program` cannot run in a session, or `Ok` when it can.
pub fn check(program: &Program, source: &Source) -> Result<(), String> {
    for probe in &program.probes {
        let only_end = probe.attach_points.iter().all(|point| point.provider == Provider::End);
        if let Some(point) = probe
            .attach_points
            .iter()
            .find(|point| matches!(point.provider, Provider::Interval | Provider::Profile))
        {
            return Err(format!(
                "{} (line {}) cannot run in a session: interval and profile probes exist to print at a steady rate to a \
                 live reader, and this tool cannot pin their perf-event attachment; run the script with `probe run`",
                point.raw,
                line(source, point.span)
            ));
        }
        if only_end {
            continue;
        }
        let mut found = None;
        visit_probe(probe, &mut |expr| {
            if found.is_none()
                && let Some(what) = needs_reader(expr)
            {
                found = Some((what, expr.span));
            }
        });
        if let Some((what, span)) = found {
            return Err(format!(
                "{what} at line {} cannot run in a session: the process that reads the output carries it out, and a \
                 session has none until `probe session attach`; move it to an END block, which runs at `probe session \
                 stop`, or run the script with `probe run`",
                line(source, span)
            ));
        }
    }
    Ok(())
}

fn line(source: &Source, span: Span) -> usize {
    source.line_column(span.start).line
}

/// Names the call in `expr` that needs a reading process.
fn needs_reader(expr: &Expr) -> Option<String> {
    let ExprKind::Call { name, args } = &expr.kind else {
        return None;
    };
    let whole_map = matches!(args.first(), Some(Expr { kind: ExprKind::Map(access), .. }) if access.keys.is_empty());
    match name.text.as_str() {
        "exit" => Some("exit()".into()),
        "clear" | "zero" => Some(format!("{}()", name.text)),
        "print" if whole_map => Some("print() of a map".into()),
        _ => None,
    }
}

fn visit_probe(probe: &Probe, visit: &mut dyn FnMut(&Expr)) {
    if let Some(predicate) = &probe.predicate {
        visit_expr(predicate, visit);
    }
    visit_block(&probe.body, visit);
}

fn visit_block(block: &Block, visit: &mut dyn FnMut(&Expr)) {
    for statement in &block.statements {
        visit_statement(statement, visit);
    }
}

fn visit_statement(statement: &Statement, visit: &mut dyn FnMut(&Expr)) {
    match &statement.kind {
        StatementKind::Expr(expr) => visit_expr(expr, visit),
        StatementKind::Assign { target, value, .. } => {
            visit_target(target, visit);
            visit_expr(value, visit);
        }
        StatementKind::Let { value, .. } => {
            if let Some(value) = value {
                visit_expr(value, visit);
            }
        }
        StatementKind::If { condition, then_block, else_branch } => {
            visit_expr(condition, visit);
            visit_block(then_block, visit);
            match else_branch {
                Some(ElseBranch::If(statement)) => visit_statement(statement, visit),
                Some(ElseBranch::Block(block)) => visit_block(block, visit),
                None => {}
            }
        }
        StatementKind::Unroll { count, body } | StatementKind::While { condition: count, body } => {
            visit_expr(count, visit);
            visit_block(body, visit);
        }
        StatementKind::For { iterable, body, .. } => {
            if let ForIterable::Range { start, end } = iterable {
                visit_expr(start, visit);
                visit_expr(end, visit);
            }
            visit_block(body, visit);
        }
        StatementKind::Return(Some(expr)) => visit_expr(expr, visit),
        StatementKind::Block(block) => visit_block(block, visit),
        StatementKind::Return(None) | StatementKind::Break | StatementKind::Continue => {}
    }
}

fn visit_target(target: &AssignTarget, visit: &mut dyn FnMut(&Expr)) {
    if let AssignTarget::Map(access) = target {
        for key in &access.keys {
            visit_expr(key, visit);
        }
    }
}

fn visit_expr(expr: &Expr, visit: &mut dyn FnMut(&Expr)) {
    visit(expr);
    match &expr.kind {
        ExprKind::Map(access) => access.keys.iter().for_each(|key| visit_expr(key, visit)),
        ExprKind::Call { args, .. } | ExprKind::Tuple(args) => args.iter().for_each(|arg| visit_expr(arg, visit)),
        ExprKind::Unary { operand, .. } | ExprKind::Cast { operand, .. } => visit_expr(operand, visit),
        ExprKind::Binary { left, right, .. } => {
            visit_expr(left, visit);
            visit_expr(right, visit);
        }
        ExprKind::Ternary { condition, then_expr, else_expr } => {
            visit_expr(condition, visit);
            visit_expr(then_expr, visit);
            visit_expr(else_expr, visit);
        }
        ExprKind::Field { base, .. } => visit_expr(base, visit),
        ExprKind::Index { base, index } => {
            visit_expr(base, visit);
            visit_expr(index, visit);
        }
        ExprKind::Increment { target, .. } => visit_target(target, visit),
        // Literals, names and sizes contain no calls.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::parser;

    fn check_text(text: &str) -> Result<(), String> {
        let source = Source::new("-e", text.to_owned());
        let (program, diagnostics) = parser::parse(&source);
        let program = program.unwrap_or_else(|| panic!("{text}: {diagnostics:?}"));
        check(&program, &source)
    }

    #[test]
    fn printing_and_counting_probes_can_run_detached() {
        let script = "BEGIN { printf(\"start\\n\"); }\n\
                      tracepoint:syscalls:sys_enter_getppid { @calls[comm] = count(); printf(\"%d\\n\", pid); print(pid); }\n\
                      END { print(@calls); clear(@calls); exit(); }";
        assert_eq!(check_text(script), Ok(()));
    }

    #[test]
    fn reader_actions_outside_end_are_rejected() {
        let cases = [
            ("tracepoint:syscalls:sys_enter_getppid { exit(); }", "exit() at line 1"),
            ("BEGIN { @x = 1; }\ntracepoint:syscalls:sys_enter_getppid /pid == 1/ { if (1) { print(@x); } }", "print() of a map at line 2"),
            ("kprobe:vfs_read { clear(@x); }", "clear() at line 1"),
            ("interval:s:1 { @x = count(); }", "interval:s:1 (line 1) cannot run in a session"),
            ("profile:hz:99 { @x = count(); }", "profile:hz:99 (line 1)"),
        ];
        for (script, expected) in cases {
            let error = check_text(script).expect_err(script);
            assert!(error.contains(expected), "{script}: {error}");
        }
    }
}
