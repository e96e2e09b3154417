//! The compiler driver: source text in, an ELF object and the tables that
//! the runtime needs out.

use super::{
    aggregate::MapSpec,
    ast::Probe,
    codegen::{self, CodegenOptions, MapTable, OutputSpec},
    diagnostic::{self, Diagnostic},
    elf::{self, MapDef, MapType, ProgramCode},
    env::Environment,
    insn,
    parser,
    ir::Function,
    probes::{self, ProbeKind, ResolvedProbe},
    regalloc::{self, Lowered},
    span::Source,
};

/// Default size of the events ring buffer, in bytes.
pub const DEFAULT_EVENTS_BUFFER: u32 = 1 << 20;

/// Name of the events ring buffer map.
pub const EVENTS_MAP_NAME: &str = "events";
/// Name of the per-CPU lost-record counter map.
pub const LOST_MAP_NAME: &str = "lost";
/// Name of the one-entry array of zeroes that initializes map values.
pub const ZERO_MAP_NAME: &str = "zero";
/// Name of the per-CPU counters of updates dropped because a map was full.
pub const DROPS_MAP_NAME: &str = "drops";
/// Name of the array of function and probe names that kprobe.multi
/// programs index with their BPF cookie.
pub const NAMES_MAP_NAME: &str = "names";
/// Name of the flag that `exit()` sets.
pub const EXIT_MAP_NAME: &str = "exited";
/// `BPF_F_STACK_BUILD_ID`: a stack trace map of build ids and offsets.
const BPF_F_STACK_BUILD_ID: u32 = 1 << 5;
/// Default number of entries of each script map, as in bpftrace.
pub const DEFAULT_MAP_SIZE: u32 = 4096;

/// The ELF name of script map number `index`.
pub fn script_map_name(index: usize) -> String {
    format!("map_{index}")
}

/// Returns the ELF name of stack trace map number `index`.
pub fn stack_map_name(index: usize) -> String {
    format!("stack_{index}")
}

/// Settings for one compilation.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub codegen: CodegenOptions,
    /// Size of the events ring buffer: a power of two, at least a page.
    pub events_buffer: u32,
    /// Maximum number of entries of each script map.
    pub map_size: u32,
    /// Makes kernel functions that match a probe but cannot be attached
    /// to an error rather than a warning.
    pub strict: bool,
    /// Return instances for each kretprobe attached one by one; `None`
    /// keeps the kernel's default of max(10, 2 * CPUs).
    pub maxactive: Option<u32>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            codegen: CodegenOptions::default(),
            events_buffer: DEFAULT_EVENTS_BUFFER,
            map_size: DEFAULT_MAP_SIZE,
            strict: false,
            maxactive: None,
        }
    }
}

/// One compiled program, for one attach point.
#[derive(Clone, Debug)]
pub struct CompiledProbe {
    /// The program's symbol in the object.
    pub symbol: String,
    pub kind: ProbeKind,
    /// The lowered code, with the script line of each instruction.
    pub code: Lowered,
    /// Whether the probe is one of many functions that a glob or a shared
    /// name matched: when it cannot be loaded or attached, the others
    /// still run, unless the compilation was strict.
    pub optional: bool,
}

/// The result of compiling a script.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub object: Vec<u8>,
    pub probes: Vec<CompiledProbe>,
    /// How to render each record kind, by the index in its header.
    pub outputs: Vec<OutputSpec>,
    /// The script's maps, in order of first assignment; map `i` is named
    /// [`script_map_name`]`(i)` in the object.
    pub maps: Vec<MapSpec>,
    /// Entries per script map.
    pub map_size: u32,
    /// The stack trace maps that `kstack` and `ustack` map keys refer to:
    /// `(user, frames)` each; map `i` is named [`stack_map_name`]`(i)`.
    pub stack_maps: Vec<(bool, u32)>,
    /// Contents of the names map: for each kprobe.multi cookie `c`, the
    /// function's name at `2 * c` and the probe's name at `2 * c + 1`.
    pub function_names: Vec<String>,
    /// Entry size of the names map.
    pub name_size: u32,
    /// Whether an optional probe that fails to load or attach is an error.
    pub strict: bool,
    /// See [`CompileOptions::maxactive`].
    pub maxactive: Option<u32>,
    /// Warnings, to show even though compilation succeeded.
    pub warnings: Vec<Diagnostic>,
}

impl Compiled {
    /// Names of the object's maps, in `MapRef` order.
    pub fn map_names(&self) -> Vec<String> {
        let mut names: Vec<String> = [EVENTS_MAP_NAME, LOST_MAP_NAME, ZERO_MAP_NAME, DROPS_MAP_NAME, NAMES_MAP_NAME, EXIT_MAP_NAME]
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        names.extend((0..self.maps.len()).map(script_map_name));
        names.extend((0..self.stack_maps.len()).map(stack_map_name));
        names
    }

    /// Tells whether the script collects user stacks, whose frames are
    /// named through the build ids of files.
    pub fn uses_user_stacks(&self) -> bool {
        let printed = self.outputs.iter().any(|output| match output {
            OutputSpec::Printf { args, .. } => args.iter().any(|arg| matches!(arg, codegen::ArgSpec::Stack { user: true, .. })),
            _ => false,
        });
        printed || self.stack_maps.iter().any(|&(user, _)| user)
    }

    /// An annotated listing of every program: each instruction with the
    /// script line that produced it.
    pub fn listing(&self, source: &Source) -> String {
        let mut out = String::new();
        for probe in &self.probes {
            out.push_str(&format!(
                "{} ({}, {} instructions, {} bytes of stack):\n",
                probe.kind.display_name(),
                probe.symbol,
                probe.code.insns.len(),
                probe.code.stack_size
            ));
            let mut previous_line = 0;
            let comments: Vec<Option<String>> = probe
                .code
                .lines
                .iter()
                .map(|&line| {
                    if line == 0 || line == previous_line {
                        return None;
                    }
                    previous_line = line;
                    Some(format!("{}:{line}: {}", source.name(), source.line_text(line as usize).trim()))
                })
                .collect();
            out.push_str(&insn::listing(&probe.code.insns, &comments));
            out.push('\n');
        }
        out
    }
}

/// Compiles a script. Errors come back as diagnostics to render against
/// `source`.
pub fn compile(source: &Source, env: &Environment, options: &CompileOptions) -> Result<Compiled, Vec<Diagnostic>> {
    let (program, mut diagnostics) = parser::parse(source);
    let Some(program) = program else {
        return Err(diagnostics);
    };
    if diagnostic::has_errors(&diagnostics) {
        return Err(diagnostics);
    }
    if program.probes.is_empty() {
        diagnostics.push(
            Diagnostic::error(program.span, "the script has no probes")
                .with_hint("a probe looks like `tracepoint:syscalls:sys_enter_openat { printf(\"%s\\n\", comm); }`"),
        );
        return Err(diagnostics);
    }
    for definition in &program.c_definitions {
        diagnostics.push(
            Diagnostic::warning(definition.span, "C definitions are ignored: types come from the kernel's BTF"),
        );
    }

    // Each attach point is resolved once: resolving a kernel function reads
    // /proc/kallsyms, which takes tens of milliseconds.
    let mut resolve_notes = Vec::new();
    let mut resolutions: Vec<Vec<Result<ResolvedProbe, Diagnostic>>> = program
        .probes
        .iter()
        .map(|probe| {
            let mut resolved = Vec::new();
            for point in &probe.attach_points {
                match probes::resolve(point, env, &mut resolve_notes) {
                    Ok(list) => resolved.extend(list.into_iter().map(Ok)),
                    Err(diagnostic) => resolved.push(Err(diagnostic)),
                }
            }
            resolved
        })
        .collect();
    if options.strict {
        for note in &mut resolve_notes {
            if note.severity == diagnostic::Severity::Warning {
                note.severity = diagnostic::Severity::Error;
                note.message = note.message.replace(" and are skipped", "").replace(" and is skipped", "");
                note.hints.push("--strict makes this an error; drop it to attach to the rest".into());
            }
        }
    }
    diagnostics.append(&mut resolve_notes);
    let function_names = assign_cookies(&mut resolutions);
    // Programs expanded from a glob print `func` and `probe` at one size
    // too, so that map keys made of them are not cut to the first name.
    // Every program prints `func` and `probe` at one size, so that a map
    // keyed by them is not cut to the first program's name (several
    // attach points share one body, and a glob expands to many).
    let expanded_names: Vec<String> = resolutions
        .iter()
        .flatten()
        .flatten()
        .map(|resolved| resolved.kind.display_name())
        .collect();
    let name_size = codegen::name_size(function_names.iter().chain(&expanded_names));
    let mut codegen_options = options.codegen.clone();
    codegen_options.name_size = name_size;

    // A map's types come from its first assignment, which may come after
    // a read in the text (a kretprobe above its kprobe). A first pass
    // collects the map table, and its output and diagnostics are discarded.
    let mut maps = MapTable::default();
    maps.discovering = true;
    let mut scratch_outputs = Vec::new();
    let mut scratch_diagnostics = Vec::new();
    for (probe, resolved) in program.probes.iter().zip(&resolutions) {
        if let Some(resolved) = resolved.iter().find_map(|r| r.as_ref().ok()) {
            let mut generate = CodegenRun {
                env,
                source,
                options: &codegen_options,
                outputs: &mut scratch_outputs,
                maps: &mut maps,
                diagnostics: &mut scratch_diagnostics,
            };
            generate.probe(resolved, probe);
        }
    }

    maps.discovering = false;
    let mut outputs = Vec::new();
    let mut probes = Vec::new();
    for (probe_index, (probe, resolved)) in program.probes.iter().zip(resolutions).enumerate() {
        for (point_index, resolved) in resolved.into_iter().enumerate() {
            let resolved = match resolved {
                Ok(resolved) => resolved,
                Err(diagnostic) => {
                    diagnostics.push(diagnostic);
                    continue;
                }
            };
            let mut generate = CodegenRun {
                env,
                source,
                options: &codegen_options,
                outputs: &mut outputs,
                maps: &mut maps,
                diagnostics: &mut diagnostics,
            };
            let Some(function) = generate.probe(&resolved, probe) else {
                continue;
            };
            match regalloc::lower(&function) {
                Ok(code) => probes.push(CompiledProbe {
                    symbol: format!("probe_{probe_index}_{point_index}"),
                    kind: resolved.kind,
                    code,
                    optional: resolved.optional,
                }),
                Err(err) => diagnostics.push(Diagnostic::error(probe.span, err.to_string())),
            }
        }
        // Only one attach point's diagnostics are kept when several share
        // a body, since the body produces the same ones for each.
        dedup_diagnostics(&mut diagnostics);
    }
    if diagnostic::has_errors(&diagnostics) {
        return Err(diagnostics);
    }

    let code: Vec<ProgramCode> = probes
        .iter()
        .map(|probe| ProgramCode {
            name: probe.symbol.clone(),
            section: probe.kind.section(&probe.symbol),
            insns: probe.code.insns.clone(),
            map_loads: probe.code.map_loads.clone(),
        })
        .collect();
    let mut map_defs = vec![
        MapDef {
            name: EVENTS_MAP_NAME.into(),
            map_type: MapType::RingBuf,
            key_size: 0,
            value_size: 0,
            max_entries: options.events_buffer,
            flags: 0,
        },
        MapDef {
            name: LOST_MAP_NAME.into(),
            map_type: MapType::PerCpuArray,
            key_size: 4,
            value_size: 8,
            max_entries: 1,
            flags: 0,
        },
        MapDef {
            name: ZERO_MAP_NAME.into(),
            map_type: MapType::Array,
            key_size: 4,
            value_size: maps.largest_value() as u32,
            max_entries: 1,
            flags: 0,
        },
        MapDef {
            name: DROPS_MAP_NAME.into(),
            map_type: MapType::PerCpuArray,
            key_size: 4,
            value_size: 8,
            max_entries: maps.maps().len().max(1) as u32,
            flags: 0,
        },
        MapDef {
            name: NAMES_MAP_NAME.into(),
            map_type: MapType::Array,
            key_size: 4,
            value_size: name_size,
            max_entries: function_names.len().max(1) as u32,
            flags: 0,
        },
        MapDef {
            name: EXIT_MAP_NAME.into(),
            map_type: MapType::Array,
            key_size: 4,
            value_size: 8,
            max_entries: 1,
            flags: 0,
        },
    ];
    for (index, decl) in maps.maps().iter().enumerate() {
        let value = decl.spec.value;
        map_defs.push(MapDef {
            name: script_map_name(index),
            map_type: if value.is_per_cpu() { MapType::PerCpuHash } else { MapType::Hash },
            key_size: codegen::maps::key_size(&decl.spec.key) as u32,
            value_size: value.slot_size() as u32,
            max_entries: options.map_size,
            flags: 0,
        });
    }
    for (index, &(user, frames)) in maps.stack_maps().iter().enumerate() {
        // User stacks keep a build id and a file offset per frame
        // (`BPF_F_STACK_BUILD_ID`), which name frames after the process
        // exited.
        let (value_size, flags) = if user { (frames * codegen::BUILD_ID_FRAME_SIZE, BPF_F_STACK_BUILD_ID) } else { (frames * 8, 0) };
        map_defs.push(MapDef {
            name: stack_map_name(index),
            map_type: MapType::StackTrace,
            key_size: 4,
            value_size,
            max_entries: options.map_size,
            flags,
        });
    }
    let object = elf::write_object(&code, &map_defs)
        .map_err(|err| vec![Diagnostic::error(program.span, err.to_string())])?;
    Ok(Compiled {
        object,
        probes,
        outputs,
        maps: maps.maps().iter().map(|decl| decl.spec.clone()).collect(),
        map_size: options.map_size,
        stack_maps: maps.stack_maps().to_vec(),
        function_names,
        name_size,
        strict: options.strict,
        maxactive: options.maxactive,
        warnings: diagnostics,
    })
}

/// The shared state of one code generation pass over a script's probes.
struct CodegenRun<'a> {
    env: &'a Environment,
    source: &'a Source,
    options: &'a CodegenOptions,
    outputs: &'a mut Vec<OutputSpec>,
    maps: &'a mut MapTable,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl CodegenRun<'_> {
    /// Generates the IR of `probe`'s body for one resolved attach point.
    fn probe(&mut self, resolved: &ResolvedProbe, probe: &Probe) -> Option<Function> {
        codegen::generate(
            resolved,
            probe.predicate.as_ref(),
            &probe.body,
            self.env,
            self.source,
            self.options,
            self.outputs,
            self.maps,
            self.diagnostics,
        )
    }
}

/// Numbers the targets of every kprobe.multi probe with BPF cookies and
/// returns the names map's contents, two entries per cookie.
fn assign_cookies(resolutions: &mut [Vec<Result<ResolvedProbe, Diagnostic>>]) -> Vec<String> {
    let mut names = Vec::new();
    for resolved in resolutions.iter_mut().flatten().flatten() {
        if let ProbeKind::KprobeMulti { targets, ret, first_cookie, .. } = &mut resolved.kind {
            *first_cookie = (names.len() / 2) as u32;
            let provider = if *ret { "kretprobe" } else { "kprobe" };
            for target in targets.iter() {
                names.push(target.symbol.clone());
                names.push(format!("{provider}:{}", target.qualified_name()));
            }
        }
    }
    names
}

fn dedup_diagnostics(diagnostics: &mut Vec<Diagnostic>) {
    let mut seen = Vec::new();
    diagnostics.retain(|d| {
        let key = (d.span, d.message.clone());
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
}
