//! Turning addresses into names: kernel addresses through
//! `/proc/kallsyms` (with the module a symbol is in), user addresses
//! through the process's mappings and the ELF symbols and DWARF line
//! tables of the files it mapped (with blazesym).
//!
//! Both are read on first use: a script without stacks or symbols pays
//! nothing.

use std::{
    cell::{OnceCell, RefCell},
    collections::{HashMap, HashSet},
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::maps::MapData;
use blazesym::symbolize::{self, Symbolized, Symbolizer};

use crate::{
    kallsyms::Kallsyms,
    mapio::RawMap,
    script::{
        aggregate::Special,
        codegen::{BUILD_ID_FRAME_SIZE, Frame, Symbols, TRUNCATION_MARK},
    },
};

/// Largest offset into a kernel function that symbolization accepts. The
/// largest functions of a distribution kernel are tens of kilobytes.
const MAX_FUNCTION_SIZE: u64 = 1 << 20;
/// Indentation of each frame of a printed stack, as bpftrace 0.17 prints
/// them.
const FRAME_INDENT: &str = "        ";
/// Indentation of each frame of a stack in a map key, as bpftrace 0.17
/// prints them.
const KEY_FRAME_INDENT: &str = "    ";
/// `EFAULT`, which the stack helpers return when there is no user stack
/// (a kernel thread).
const EFAULT: i64 = 14;
/// `EEXIST`, which `bpf_get_stackid` returns on a hash collision.
const EEXIST: i64 = 17;

/// Kernel text symbols sorted by address.
struct KernelSymbols {
    /// `(address, name, module)`.
    symbols: Vec<(u64, String, Option<String>)>,
}

impl KernelSymbols {
    fn read() -> Option<Self> {
        let kallsyms = Kallsyms::read().map_err(|err| log::info!("cannot read kallsyms for ksym/kstack: {err}")).ok()?;
        let mut symbols: Vec<(u64, String, Option<String>)> = kallsyms
            .symbols()
            .iter()
            .filter(|symbol| symbol.is_text() && symbol.address != 0)
            .map(|symbol| (symbol.address, symbol.name.clone(), symbol.module.clone()))
            .collect();
        symbols.sort_by_key(|symbol| symbol.0);
        Some(Self { symbols })
    }

    /// Returns the symbol that contains `address` and the offset into it.
    /// kallsyms has no sizes, so an address further than
    /// [`MAX_FUNCTION_SIZE`] past the closest symbol counts as unknown: BPF
    /// programs without kallsyms entries lie in such gaps.
    fn find(&self, address: u64) -> Option<(&str, u64, Option<&str>)> {
        let index = self.symbols.partition_point(|symbol| symbol.0 <= address).checked_sub(1)?;
        let (start, name, module) = &self.symbols[index];
        let offset = address - start;
        (offset < MAX_FUNCTION_SIZE).then_some((name, offset, module.as_deref()))
    }

    /// Tells whether `address` is in a BPF program or trampoline, or in no
    /// known function.
    fn is_glue(&self, address: u64) -> bool {
        match self.find(address) {
            None => true,
            Some((name, _, module)) => module == Some("bpf") || name.starts_with("bpf_trampoline_"),
        }
    }
}

/// The symbolizer of one run, with the stack trace maps that map keys
/// refer to.
pub struct Resolver {
    kernel: OnceCell<Option<KernelSymbols>>,
    user: Symbolizer,
    /// Symbolized user addresses by process, so that a process that has
    /// exited still prints the frames seen while it ran.
    user_cache: RefCell<HashMap<(u32, u64), UserSymbol>>,
    /// Symbolized file offsets, `None` where the file has no symbol there.
    file_cache: RefCell<HashMap<(PathBuf, u64), Option<UserSymbol>>>,
    build_ids: RefCell<BuildIds>,
    /// Stack trace maps with `(user, frames)`, in the compiler's order.
    stack_maps: Vec<(MapData, bool, u32)>,
}

/// Files by GNU build id, learned from the files that traced processes
/// map and from the files the run is known to involve.
#[derive(Default)]
struct BuildIds {
    files: HashMap<[u8; 20], PathBuf>,
    /// Loadable segments of each file: `(file offset, size, address)`.
    segments: HashMap<PathBuf, Vec<(u64, u64, u64)>>,
    /// Files whose build id was read already.
    read: HashSet<PathBuf>,
    /// Files to read when a build id is not known yet: the uprobe targets,
    /// and the `-c` command's program and libraries.
    candidates: Vec<PathBuf>,
}

impl BuildIds {
    fn index(&mut self, path: &Path) {
        if !self.read.insert(path.to_path_buf()) {
            return;
        }
        let Ok(data) = fs::read(path) else { return };
        let Ok(file) = object::File::parse(&*data) else { return };
        if let Ok(Some(id)) = object::Object::build_id(&file) {
            if let Ok(id) = <[u8; 20]>::try_from(id) {
                self.files.insert(id, path.to_path_buf());
                let segments = object::Object::segments(&file)
                    .map(|segment| {
                        let (offset, size) = object::ObjectSegment::file_range(&segment);
                        (offset, size, object::ObjectSegment::address(&segment))
                    })
                    .collect();
                self.segments.insert(path.to_path_buf(), segments);
            }
        }
    }

    /// Converts a file offset of a file found by build id to the virtual
    /// address its symbols use, or `None` outside its loadable segments.
    fn virtual_address(&self, path: &Path, offset: u64) -> Option<u64> {
        self.segments
            .get(path)?
            .iter()
            .find(|(start, size, _)| offset >= *start && offset < start + size)
            .map(|(start, _, address)| address + (offset - start))
    }

    /// Finds the file with `build_id`, reading the files that process
    /// `pid` maps (while it runs) and the candidates.
    fn find(&mut self, build_id: &[u8; 20], pid: u32) -> Option<PathBuf> {
        if let Some(path) = self.files.get(build_id) {
            return Some(path.clone());
        }
        if let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) {
            let paths: HashSet<&str> = maps.lines().filter_map(|line| line.split_whitespace().nth(5)).filter(|path| path.starts_with('/')).collect();
            for path in paths {
                self.index(Path::new(path));
            }
        }
        for path in std::mem::take(&mut self.candidates) {
            self.index(&path);
        }
        self.files.get(build_id).cloned()
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Resolver {
    /// Creates a resolver over `stack_maps`: each map with whether it contains
    /// user stacks and its frame limit.
    pub fn new(stack_maps: Vec<(MapData, bool, u32)>) -> Self {
        Self {
            kernel: OnceCell::new(),
            user: Symbolizer::new(),
            user_cache: RefCell::new(HashMap::new()),
            file_cache: RefCell::new(HashMap::new()),
            build_ids: RefCell::new(BuildIds::default()),
            stack_maps,
        }
    }

    /// Returns the stack trace maps: each with whether it contains user
    /// stacks and its frame limit.
    pub fn stack_maps(&self) -> &[(MapData, bool, u32)] {
        &self.stack_maps
    }

    /// Adds files whose build ids may name user frames of processes that
    /// exited before their stacks were printed.
    pub fn add_files(&self, paths: impl IntoIterator<Item = PathBuf>) {
        self.build_ids.borrow_mut().candidates.extend(paths);
    }

    /// Formats a user frame given as a file offset: `symbol+offset` with
    /// `(file:line)` from DWARF, or the file and offset when no symbol
    /// covers it. Returns `None` for an offset outside the file's code,
    /// which the kernel reports past the last real frame.
    fn file_frame(&self, pid: u32, build_id: &[u8; 20], offset: u64) -> Option<String> {
        let (path, address) = {
            let mut build_ids = self.build_ids.borrow_mut();
            let Some(path) = build_ids.find(build_id, pid) else {
                let id: String = build_id.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
                return Some(format!("[build id {id}...]+0x{offset:x}"));
            };
            let address = build_ids.virtual_address(&path, offset)?;
            (path, address)
        };
        let key = (path.clone(), offset);
        if let Some(cached) = self.file_cache.borrow().get(&key) {
            return Some(format_file_symbol(cached.as_ref(), &path, offset));
        }
        // Sources in order: the file with its DWARF, its own symbol
        // tables, then the symbol table of its detached debug file
        // (Debian's `-dbg` packages, found by build id). blazesym fails a
        // whole source on a debug section it cannot read, and stripped
        // files such as ld.so name their internal functions only in the
        // debug file. A debug file has the addresses but not the code, so
        // every source is looked up by address, not by file offset.
        let mut sources = vec![symbolize::source::Elf::new(&path)];
        let mut elf = symbolize::source::Elf::new(&path);
        elf.debug_syms = false;
        sources.push(elf);
        let debug_file = debug_file_path(build_id);
        if debug_file.is_file() {
            let mut elf = symbolize::source::Elf::new(&debug_file);
            elf.debug_syms = false;
            sources.push(elf);
        }
        let symbol = sources.into_iter().find_map(|elf| {
            let source = symbolize::source::Source::Elf(elf);
            let result = self.user.symbolize(&source, symbolize::Input::VirtOffset(&[address]));
            match result.map(|mut results| results.pop()) {
                Ok(Some(Symbolized::Sym(symbol))) => Some(UserSymbol::from(&symbol)),
                Ok(other) => {
                    log::debug!("no symbol at {address:#x} of {source:?}: {other:?}");
                    None
                }
                Err(err) => {
                    log::debug!("cannot symbolize {address:#x} of {source:?}: {err}");
                    None
                }
            }
        });
        let text = format_file_symbol(symbol.as_ref(), &path, offset);
        self.file_cache.borrow_mut().insert(key, symbol);
        Some(text)
    }

    fn kernel_symbols(&self) -> Option<&KernelSymbols> {
        self.kernel.get_or_init(KernelSymbols::read).as_ref()
    }

    /// Formats a kernel address as `symbol+offset`, with ` [module]` for
    /// module code, or in hex when no symbol contains it.
    pub fn kernel_frame(&self, address: u64, with_offset: bool) -> String {
        match self.kernel_symbols().and_then(|symbols| symbols.find(address)) {
            Some((name, offset, module)) => {
                let mut text = if with_offset { format!("{name}+{offset}") } else { name.to_owned() };
                if let Some(module) = module {
                    text.push_str(&format!(" [{module}]"));
                }
                text
            }
            None => format!("0x{address:x}"),
        }
    }

    /// Formats user addresses of process `pid` as `symbol+offset`, with
    /// `(file:line)` when the file has DWARF line tables.
    fn user_frames(&self, pid: u32, addresses: &[u64], with_offset: bool) -> Vec<String> {
        let missing: Vec<u64> = {
            let cache = self.user_cache.borrow();
            addresses.iter().copied().filter(|address| !cache.contains_key(&(pid, *address))).collect()
        };
        if !missing.is_empty() && pid != 0 {
            // DWARF gives file and line, but blazesym fails the whole batch
            // on a debug section it cannot read; ELF symbols alone still
            // give the names.
            let with_dwarf = symbolize::source::Source::Process(symbolize::source::Process::new(pid.into()));
            let mut process = symbolize::source::Process::new(pid.into());
            process.debug_syms = false;
            let without_dwarf = symbolize::source::Source::Process(process);
            let results = self
                .user
                .symbolize(&with_dwarf, symbolize::Input::AbsAddr(&missing))
                .or_else(|err| {
                    log::debug!("cannot read DWARF of process {pid}: {err}");
                    self.user.symbolize(&without_dwarf, symbolize::Input::AbsAddr(&missing))
                });
            match results {
                Ok(results) => {
                    let mut cache = self.user_cache.borrow_mut();
                    for (address, result) in missing.iter().zip(results) {
                        if let Symbolized::Sym(symbol) = result {
                            cache.insert((pid, *address), UserSymbol::from(&symbol));
                        }
                    }
                }
                Err(err) => log::debug!("cannot symbolize addresses of process {pid}: {err}"),
            }
        }
        let cache = self.user_cache.borrow();
        addresses
            .iter()
            .map(|address| match cache.get(&(pid, *address)) {
                Some(symbol) => symbol.format(with_offset),
                None => format!("0x{address:x}"),
            })
            .collect()
    }

    fn stack_text(&self, user: bool, pid: u32, stack: &[Frame], limit: usize, indent: &str) -> String {
        let frames = if user {
            self.user_stack(pid, &stack[..stack.len().min(limit)])
        } else {
            let addresses = addresses_of(stack);
            let glue = match self.kernel_symbols() {
                Some(symbols) => addresses.iter().take_while(|address| symbols.is_glue(**address)).count(),
                None => 0,
            };
            // A stack of nothing but glue keeps it, rather than print empty.
            let start = if glue == addresses.len() { 0 } else { glue };
            addresses[start..].iter().take(limit).map(|address| self.kernel_frame(*address, true)).collect()
        };
        let mut text = String::from("\n");
        for frame in frames {
            text.push_str(indent);
            text.push_str(&frame);
            text.push('\n');
        }
        text
    }

    /// Formats user frames: addresses through the process's mappings,
    /// file offsets through the file with their build id.
    fn user_stack(&self, pid: u32, stack: &[Frame]) -> Vec<String> {
        let addresses = addresses_of(stack);
        let mut named_addresses = self.user_frames(pid, &addresses, true).into_iter();
        stack
            .iter()
            .filter_map(|frame| match frame {
                // The kernel ends some user stacks with a zero address.
                Frame::Address(0) => None,
                Frame::Address(address) => Some(named_addresses.next().unwrap_or_else(|| format!("0x{address:x}"))),
                Frame::FileOffset { build_id, offset } => self.file_frame(pid, build_id, *offset),
            })
            .collect()
    }

    /// Looks stack `id` up in stack trace map `map` and formats it.
    fn stack_by_id(&self, map: usize, id: i64, pid: u32, limit: usize) -> String {
        if id < 0 {
            return match -id {
                EFAULT => "\n".to_owned(),
                EEXIST => format!("\n{KEY_FRAME_INDENT}[stack lost: another stack has the same hash]\n"),
                errno => format!("\n{KEY_FRAME_INDENT}[stack lost: error {errno}]\n"),
            };
        }
        let Some((stacks, user, frames)) = self.stack_maps.get(map) else {
            return format!("\n{KEY_FRAME_INDENT}[stack map {map} missing]\n");
        };
        let entry_size = if *user { BUILD_ID_FRAME_SIZE } else { 8 };
        let raw = RawMap::new(stacks.fd(), 4, (frames * entry_size) as usize, false, 1);
        match raw.lookup(&(id as u32).to_le_bytes()) {
            Ok(Some(bytes)) => {
                let stack = if *user { Frame::decode_user(&bytes) } else { Frame::decode_kernel(&bytes) };
                self.stack_text(*user, pid, &stack, limit, KEY_FRAME_INDENT)
            }
            Ok(None) => format!("\n{KEY_FRAME_INDENT}[stack {id} no longer in its map]\n"),
            Err(err) => format!("\n{KEY_FRAME_INDENT}[stack {id} unreadable: {err}]\n"),
        }
    }
}

/// A symbolized user address.
struct UserSymbol {
    name: String,
    offset: usize,
    /// `file:line` from DWARF, when the file has line tables.
    location: Option<String>,
}

impl From<&symbolize::Sym<'_>> for UserSymbol {
    fn from(symbol: &symbolize::Sym<'_>) -> Self {
        let location = symbol.code_info.as_ref().map(|code| {
            let file = Path::new(&code.file).file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            match code.line {
                Some(line) => format!("{file}:{line}"),
                None => file,
            }
        });
        Self { name: symbol.name.to_string(), offset: symbol.offset, location }
    }
}

impl UserSymbol {
    /// Formats a stack frame, `name+offset (file:line)`, or with
    /// `as_frame` false the name alone, as `usym()` prints it.
    fn format(&self, as_frame: bool) -> String {
        if !as_frame {
            return self.name.clone();
        }
        let mut text = format!("{}+{}", self.name, self.offset);
        if let Some(location) = &self.location {
            text.push_str(&format!(" ({location})"));
        }
        text
    }
}

/// Returns the frames given as addresses, in order.
fn addresses_of(stack: &[Frame]) -> Vec<u64> {
    stack
        .iter()
        .filter_map(|frame| match frame {
            Frame::Address(address) => Some(*address),
            Frame::FileOffset { .. } => None,
        })
        .collect()
}

/// Returns where Debian and Fedora install the detached debug file of
/// the file with `build_id`.
fn debug_file_path(build_id: &[u8; 20]) -> PathBuf {
    let hex: String = build_id.iter().map(|byte| format!("{byte:02x}")).collect();
    PathBuf::from(format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..]))
}

/// Formats a frame in a file: the symbol, or the file's name and the
/// offset.
fn format_file_symbol(symbol: Option<&UserSymbol>, path: &Path, offset: u64) -> String {
    match symbol {
        Some(symbol) => symbol.format(true),
        None => {
            let name = path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned());
            format!("[{name}]+0x{offset:x}")
        }
    }
}

fn word(bytes: &[u8], index: usize) -> u64 {
    bytes
        .get(index * 8..index * 8 + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Formats the special values that need no symbols: `ntop()` addresses
/// and `buf()` bytes.
pub fn render_plain(special: Special, bytes: &[u8]) -> Option<String> {
    match special {
        Special::Inet => {
            let family = word(bytes, 0);
            let address = bytes.get(8..24)?;
            Some(match family {
                10 => Ipv6Addr::from(<[u8; 16]>::try_from(address).ok()?).to_string(),
                _ => Ipv4Addr::new(address[0], address[1], address[2], address[3]).to_string(),
            })
        }
        Special::Buf { len } => {
            let requested = word(bytes, 0);
            let count = requested.min(u64::from(len)) as usize;
            let data = bytes.get(8..8 + count).unwrap_or(&[]);
            let mut text = escape_bytes(data);
            if requested > u64::from(len) {
                text.push_str(TRUNCATION_MARK);
            }
            Some(text)
        }
        _ => None,
    }
}

/// Escapes bytes as `%r` prints them: printable ASCII as it is, other
/// bytes as `\xNN`.
pub fn escape_bytes(data: &[u8]) -> String {
    let mut text = String::with_capacity(data.len() * 2);
    for &byte in data {
        if byte.is_ascii_graphic() || byte == b' ' {
            text.push(byte as char);
        } else {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

impl Symbols for Resolver {
    fn stack(&self, user: bool, pid: u32, stack: &[Frame], frames: usize) -> String {
        self.stack_text(user, pid, stack, frames, FRAME_INDENT)
    }

    fn special(&self, special: Special, bytes: &[u8]) -> String {
        if let Some(text) = render_plain(special, bytes) {
            return text;
        }
        match special {
            Special::Kstack { map, frames } => {
                self.stack_by_id(usize::from(map), word(bytes, 0) as i64, 0, usize::from(frames))
            }
            Special::Ustack { map, frames } => {
                self.stack_by_id(usize::from(map), word(bytes, 0) as i64, word(bytes, 1) as u32, usize::from(frames))
            }
            Special::Ksym => {
                let address = word(bytes, 0);
                match self.kernel_symbols().and_then(|symbols| symbols.find(address)) {
                    Some((name, _, _)) => name.to_owned(),
                    None => format!("0x{address:x}"),
                }
            }
            Special::Usym => {
                let address = word(bytes, 0);
                self.user_frames(word(bytes, 1) as u32, &[address], false).remove(0)
            }
            Special::Inet | Special::Buf { .. } => unreachable!("rendered by render_plain"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntop_formats_both_families() {
        let mut bytes = vec![0u8; 24];
        bytes[0] = 2;
        bytes[8..12].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(render_plain(Special::Inet, &bytes).as_deref(), Some("127.0.0.1"));
        bytes[0] = 10;
        bytes[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(render_plain(Special::Inet, &bytes).as_deref(), Some("::1"));
    }

    #[test]
    fn buf_escapes_unprintable_bytes() {
        let mut bytes = vec![0u8; 16];
        bytes[0] = 5;
        bytes[8..13].copy_from_slice(b"ab\x00\xff ");
        assert_eq!(render_plain(Special::Buf { len: 8 }, &bytes).as_deref(), Some("ab\\x00\\xff "));
        bytes[0] = 9;
        bytes[13..16].copy_from_slice(b"cde");
        assert_eq!(render_plain(Special::Buf { len: 8 }, &bytes).as_deref(), Some("ab\\x00\\xff cde..."));
    }

    #[test]
    fn kernel_symbols_find_the_containing_function() {
        let symbols = KernelSymbols {
            symbols: vec![(0x1000, "first".into(), None), (0x2000, "second".into(), Some("dummy".into()))],
        };
        assert_eq!(symbols.find(0x1010), Some(("first", 0x10, None)));
        assert_eq!(symbols.find(0x2000), Some(("second", 0, Some("dummy"))));
        assert_eq!(symbols.find(0x10), None);
        assert_eq!(symbols.find(0x2000 + MAX_FUNCTION_SIZE), None);
        assert!(symbols.is_glue(0x2000 + MAX_FUNCTION_SIZE));
        assert!(!symbols.is_glue(0x1010));
    }
}
