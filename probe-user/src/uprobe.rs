//! Resolving user-space probe targets: which file a `uprobe:BINARY:...`
//! names, and which file offset a function, `FUNC+OFFSET` or an address
//! in it is at. The kernel attaches uprobes by inode and file offset.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::suggest;

/// Directories searched for a library named without a path, in the
/// dynamic loader's default order on Debian and Fedora, after the
/// directories listed in `/etc/ld.so.conf.d`.
const LIBRARY_DIRECTORIES: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// A failure to resolve a user-space target, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    pub message: String,
    pub hint: Option<String>,
}

impl TargetError {
    fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None }
    }

    fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

/// Finds the file that `binary` names: a path (absolute or relative), a
/// library name such as `libc` or `libc.so.6`, or a program name found in
/// `PATH`. A library is looked up in the mappings of process `pid` when
/// it is given, then where the dynamic loader looks.
pub fn resolve_binary(binary: &str, pid: Option<u32>) -> Result<PathBuf, TargetError> {
    if binary.is_empty() {
        return Err(TargetError::new("the uprobe names no binary")
            .with_hint("write `uprobe:BINARY:FUNCTION`, for example `uprobe:/bin/bash:readline`"));
    }
    if binary.contains('/') {
        let path = Path::new(binary);
        return match fs::metadata(path) {
            Ok(metadata) if metadata.is_file() => Ok(fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())),
            Ok(_) => Err(TargetError::new(format!("`{binary}` is not a regular file"))
                .with_hint("name an executable or a shared library")),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(TargetError::new(format!("binary `{binary}` not found"))
                .with_hint("check the path, or name a library (`libc`) or a program in PATH (`bash`)")),
            Err(err) => Err(TargetError::new(format!("binary `{binary}` cannot be read: {err}"))),
        };
    }
    if let Some(pid) = pid {
        if let Some(path) = mapped_library(binary, pid) {
            return Ok(path);
        }
    }
    if let Some(path) = library_path(binary) {
        return Ok(path);
    }
    if let Some(path) = program_path(binary) {
        return Ok(path);
    }
    Err(TargetError::new(format!("binary `{binary}` not found"))
        .with_hint("give its path, for example `uprobe:/usr/bin/NAME:FUNCTION`; libraries are looked up where the dynamic loader looks, programs in PATH"))
}

/// Tells whether process `pid` maps the file at `path`, by device and
/// inode as `/proc/PID/maps` lists them. `None` when the process's maps
/// cannot be read.
pub fn process_maps_file(pid: u32, path: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt as _;

    let metadata = fs::metadata(path).ok()?;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let inode = metadata.ino().to_string();
    Some(maps.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(4) == Some(&inode.as_str()) && fields.get(5).is_some_and(|mapped| Path::new(mapped).file_name() == path.file_name())
    }))
}

/// Returns the program that `command` runs (its first word, a path or a
/// name in `PATH`) and the shared libraries it needs, found as the
/// dynamic loader would find them. Missing files are left out.
pub fn program_files(command: &str) -> Vec<PathBuf> {
    let Some(program) = command.split_whitespace().next() else {
        return Vec::new();
    };
    let Ok(program) = resolve_binary(program, None) else {
        return Vec::new();
    };
    let mut files = vec![program];
    let mut index = 0;
    // Breadth first through DT_NEEDED, bounded for pathological graphs.
    while index < files.len() && files.len() < 64 {
        for library in needed_libraries(&files[index]) {
            if let Some(path) = library_path(&library) {
                if !files.contains(&path) {
                    files.push(path);
                }
            }
        }
        index += 1;
    }
    files
}

/// Returns the `DT_NEEDED` entries of the ELF file at `path`.
fn needed_libraries(path: &Path) -> Vec<String> {
    use object::read::elf::{Dyn as _, FileHeader as _};

    let Ok(data) = fs::read(path) else { return Vec::new() };
    let Ok(header) = object::elf::FileHeader64::<object::Endianness>::parse(&*data) else {
        return Vec::new();
    };
    let Ok(endian) = header.endian() else { return Vec::new() };
    let Ok(sections) = header.sections(endian, &*data) else { return Vec::new() };
    let Ok(Some((entries, strings_index))) = sections.dynamic(endian, &*data) else {
        return Vec::new();
    };
    let Ok(strings) = sections.strings(endian, &*data, strings_index) else { return Vec::new() };
    entries
        .iter()
        .filter(|entry| entry.tag32(endian) == Some(object::elf::DT_NEEDED as i32))
        .filter_map(|entry| entry.string(endian, strings).ok())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect()
}

/// Tells whether a file name is library `name`: `libc` and `c` match
/// `libc.so.6`, and `libc.so.6` matches itself.
fn is_library_named(file_name: &str, name: &str) -> bool {
    if file_name == name {
        return file_name.contains(".so");
    }
    // `libc.so` names `libc.so.6` too.
    if name.ends_with(".so") && file_name.starts_with(name) && file_name[name.len()..].starts_with('.') {
        return true;
    }
    let stem = name.strip_prefix("lib").unwrap_or(name);
    let Some(rest) = file_name.strip_prefix("lib").and_then(|rest| rest.strip_prefix(stem)) else {
        return false;
    };
    rest.starts_with(".so") || (rest.starts_with('-') && rest.contains(".so"))
}

/// Looks a library up in `/proc/PID/maps`, so that `-p PID` probes the
/// copy that process really mapped.
fn mapped_library(name: &str, pid: u32) -> Option<PathBuf> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .and_then(|file| file.to_str())
                .is_some_and(|file| is_library_named(file, name))
        })
        .map(PathBuf::from)
}

/// Returns the directories of `/etc/ld.so.conf.d/*.conf`, then the
/// default library directories.
fn library_directories() -> Vec<PathBuf> {
    let mut directories = Vec::new();
    if let Ok(entries) = fs::read_dir("/etc/ld.so.conf.d") {
        let mut files: Vec<PathBuf> = entries.filter_map(|entry| entry.ok()).map(|entry| entry.path()).collect();
        files.sort();
        for file in files.iter().filter(|file| file.extension().is_some_and(|e| e == "conf")) {
            let Ok(text) = fs::read_to_string(file) else { continue };
            for line in text.lines().map(str::trim) {
                if line.starts_with('/') {
                    directories.push(PathBuf::from(line));
                }
            }
        }
    }
    directories.extend(LIBRARY_DIRECTORIES.iter().map(PathBuf::from));
    directories
}

/// Finds a shared library by name where the dynamic loader looks. The
/// versioned file (`libc.so.6`) wins over the development symlink
/// (`libc.so`), which may be a linker script.
fn library_path(name: &str) -> Option<PathBuf> {
    for directory in library_directories() {
        let Ok(entries) = fs::read_dir(&directory) else { continue };
        let mut found: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|file| is_library_named(file, name))
            .collect();
        found.sort_by_key(|file| (file.ends_with(".so"), file.len()));
        for file in found {
            let path = directory.join(&file);
            if is_elf(&path) {
                return Some(fs::canonicalize(&path).unwrap_or(path));
            }
        }
    }
    None
}

fn program_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .map(|path| fs::canonicalize(&path).unwrap_or(path))
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The place inside a binary that a uprobe attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserLocation {
    /// A function symbol, plus an offset into it.
    Symbol { name: String, offset: u64 },
    /// A virtual address as the ELF file's symbols give it.
    Address(u64),
}

/// A resolved user-space attach point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserTarget {
    pub path: PathBuf,
    /// Offset in the file, which the kernel attaches at.
    pub file_offset: u64,
    /// The function (or address) for messages and `func`.
    pub name: String,
    /// The binary is a Go program, whose return probes can crash it.
    pub go: bool,
}

/// Most functions one wildcard uprobe may attach to: each is one program
/// and one attachment.
pub const MAX_GLOB_MATCHES: usize = 512;

fn read_elf(path: &Path) -> Result<Vec<u8>, TargetError> {
    fs::read(path).map_err(|err| TargetError::new(format!("failed to read `{}`: {err}", path.display())))
}

fn parse_elf<'a>(path: &Path, data: &'a [u8]) -> Result<object::File<'a>, TargetError> {
    object::File::parse(data).map_err(|err| {
        log::debug!("cannot parse {}: {err}", path.display());
        TargetError::new(format!("`{}` is not an ELF file", path.display()))
            .with_hint("uprobes attach to executables and shared libraries")
    })
}

fn is_go(file: &object::File<'_>) -> bool {
    file.section_by_name(".gopclntab").is_some() || file.section_by_name(".go.buildinfo").is_some()
}

/// Resolves every function of the ELF file at `path` whose name matches
/// the glob `pattern`. Functions at one address under several names
/// (aliases such as `openat` and `openat64`) are attached once, under the
/// shortest name.
pub fn resolve_glob(path: &Path, pattern: &str) -> Result<Vec<UserTarget>, TargetError> {
    let data = read_elf(path)?;
    let file = parse_elf(path, &data)?;
    let go = is_go(&file);
    let mut functions: Vec<(u64, &str)> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|symbol| symbol.kind() == SymbolKind::Text && !symbol.is_undefined() && symbol.address() != 0)
        .filter_map(|symbol| Some((symbol.address(), symbol.name().ok()?)))
        .filter(|(_, name)| crate::planner::glob_match(pattern, name))
        .collect();
    functions.sort_by_key(|&(address, name)| (address, name.len(), name));
    functions.dedup_by_key(|(address, _)| *address);
    if functions.is_empty() {
        return Err(TargetError::new(format!("no function in `{}` matches `{pattern}`", path.display()))
            .with_hint("list its functions with `nm -D --defined-only FILE` or `nm FILE`"));
    }
    if functions.len() > MAX_GLOB_MATCHES {
        return Err(TargetError::new(format!(
            "`{pattern}` matches {} functions in `{}`; a wildcard uprobe attaches to at most {MAX_GLOB_MATCHES}",
            functions.len(),
            path.display()
        ))
        .with_hint("use a narrower pattern"));
    }
    functions
        .into_iter()
        .map(|(address, name)| {
            let file_offset = file_offset_of(&file, address).ok_or_else(|| {
                TargetError::new(format!("`{name}` at {address:#x} is not in any loadable segment of `{}`", path.display()))
            })?;
            Ok(UserTarget { path: path.to_path_buf(), file_offset, name: name.to_owned(), go })
        })
        .collect()
}

/// Returns the names of the functions defined in the ELF file at `path`,
/// sorted and without repeats.
pub fn function_names(path: &Path) -> Result<Vec<String>, TargetError> {
    let data = read_elf(path)?;
    let file = parse_elf(path, &data)?;
    let names: std::collections::BTreeSet<String> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|symbol| symbol.kind() == SymbolKind::Text && !symbol.is_undefined() && symbol.address() != 0)
        .filter_map(|symbol| symbol.name().ok().map(str::to_owned))
        .collect();
    Ok(names.into_iter().collect())
}

/// The checks that [`resolve_location`] makes besides the location's
/// existence.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocationChecks {
    /// The probe is a uretprobe, which must sit at a function's entry.
    pub ret: bool,
    /// Skips the check that an offset or address starts an instruction:
    /// a uprobe in the middle of one corrupts the traced program.
    pub unchecked: bool,
}

/// Resolves `location` in the ELF file at `path` to a file offset. An
/// offset or an address must start an instruction of the function that
/// contains it, and a uretprobe must sit at a function's entry.
pub fn resolve_location(path: &Path, location: &UserLocation, checks: LocationChecks) -> Result<UserTarget, TargetError> {
    let shown = path.display();
    let data = read_elf(path)?;
    let file = parse_elf(path, &data)?;
    let go = is_go(&file);

    let (address, function, name) = match location {
        UserLocation::Symbol { name, offset } => {
            let (start, size) = find_function(&file, name).ok_or_else(|| missing_symbol(&file, path, name))?;
            if *offset > 0 && size > 0 && *offset >= size {
                return Err(TargetError::new(format!(
                    "offset {offset:#x} is past the end of `{name}` in `{shown}`, which is {size} bytes long"
                )));
            }
            if *offset > 0 && checks.ret {
                return Err(TargetError::new(format!("a uretprobe cannot attach at an offset: `{name}+{offset:#x}`"))
                    .with_hint(format!("a uretprobe fires when the function returns: write `uretprobe:{shown}:{name}`")));
            }
            let shown_name = if *offset > 0 { format!("{name}+{offset:#x}") } else { name.clone() };
            (start + offset, Some((start, size, name.clone())), shown_name)
        }
        UserLocation::Address(address) => {
            let function = containing_function(&file, *address);
            let shown_name = match &function {
                Some((start, _, name)) if start == address => name.clone(),
                Some((start, _, name)) => format!("{name}+{:#x}", address - start),
                None => format!("{address:#x}"),
            };
            if checks.ret && !function.as_ref().is_some_and(|(start, _, _)| start == address) {
                return Err(TargetError::new(format!("a uretprobe must attach at a function's entry, and {address:#x} is not one in `{shown}`"))
                    .with_hint("name the function instead, or list the functions with `probe list 'uprobe:FILE:*'`"));
            }
            (*address, function, shown_name)
        }
    };
    let segment = file.segments().find(|segment| {
        let (_, size) = segment.file_range();
        address >= segment.address() && address < segment.address() + size
    });
    let Some(segment) = segment else {
        return Err(TargetError::new(format!("address {address:#x} is not in any loadable segment of `{shown}`"))
            .with_hint("give a virtual address from the file's symbol table (`nm`, `readelf -s`)"));
    };
    if let object::SegmentFlags::Elf { p_flags } = segment.flags() {
        if p_flags & object::elf::PF_X == 0 {
            return Err(TargetError::new(format!("address {address:#x} of `{shown}` is in a segment without code"))
                .with_hint("give the address of an instruction, from `objdump -d`"));
        }
    }
    let (segment_offset, _) = segment.file_range();
    let file_offset = address - segment.address() + segment_offset;

    if !checks.unchecked {
        match &function {
            Some((start, size, function_name)) if *start != address => {
                check_instruction_start(&file, &data, *start, *size, address, function_name)?;
            }
            Some(_) => {}
            None => {
                return Err(TargetError::new(format!(
                    "no function of `{shown}` contains address {address:#x}, so it cannot be checked to start an instruction"
                ))
                .with_hint("attach at a function, or pass --unsafe-uprobes if you know the address starts an instruction"));
            }
        }
    }
    Ok(UserTarget { path: path.to_path_buf(), file_offset, name, go })
}

/// Returns the function symbol that contains `address`: its start, size
/// and name.
fn containing_function(file: &object::File<'_>, address: u64) -> Option<(u64, u64, String)> {
    file.symbols()
        .chain(file.dynamic_symbols())
        .filter(|symbol| symbol.kind() == SymbolKind::Text && !symbol.is_undefined() && symbol.address() != 0)
        .find(|symbol| {
            let start = symbol.address();
            address == start || (address > start && address < start + symbol.size())
        })
        .and_then(|symbol| Some((symbol.address(), symbol.size(), symbol.name().ok()?.to_owned())))
}

/// Decodes the x86-64 instructions of the function at `start` up to
/// `address` and fails unless one of them starts there. A uprobe
/// replaces the first byte of an instruction with a breakpoint; in the
/// middle of one it corrupts the program.
fn check_instruction_start(
    file: &object::File<'_>,
    data: &[u8],
    start: u64,
    size: u64,
    address: u64,
    function: &str,
) -> Result<(), TargetError> {
    let offset = address - start;
    let length = if size > 0 { size } else { offset + 16 };
    let code = file_offset_of(file, start)
        .and_then(|begin| data.get(begin as usize..(begin + length) as usize))
        .ok_or_else(|| TargetError::new(format!("the code of `{function}` cannot be read from the file")))?;
    let mut decoder = iced_x86::Decoder::with_ip(64, code, start, iced_x86::DecoderOptions::NONE);
    let mut previous = start;
    let mut next = None;
    while decoder.can_decode() {
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            break;
        }
        if instruction.ip() == address {
            return Ok(());
        }
        if instruction.ip() > address {
            next = Some(instruction.ip());
            break;
        }
        previous = instruction.ip();
    }
    let next = next.unwrap_or_else(|| decoder.ip());
    Err(TargetError::new(format!(
        "{function}+{offset:#x} is in the middle of an instruction; a uprobe there would corrupt the program"
    ))
    .with_hint(format!(
        "the nearest instructions start at {function}+{:#x} and {function}+{:#x}",
        previous - start,
        next.max(previous) - start
    )))
}

/// Returns the address and size of the defined function `name`, from the
/// symbol table or, in stripped files, the dynamic symbol table.
fn find_function(file: &object::File<'_>, name: &str) -> Option<(u64, u64)> {
    file.symbols()
        .chain(file.dynamic_symbols())
        .find(|symbol| {
            symbol.kind() == SymbolKind::Text && !symbol.is_undefined() && symbol.name() == Ok(name) && symbol.address() != 0
        })
        .map(|symbol| (symbol.address(), symbol.size()))
}

fn missing_symbol(file: &object::File<'_>, path: &Path, name: &str) -> TargetError {
    let names: Vec<&str> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|symbol| symbol.kind() == SymbolKind::Text && !symbol.is_undefined())
        .filter_map(|symbol| symbol.name().ok())
        .collect();
    let error = TargetError::new(format!("function `{name}` not found in `{}`", path.display()));
    if names.is_empty() {
        return error.with_hint("the file has no function symbols: attach at an address, `uprobe:BINARY:0xADDRESS`");
    }
    let matches = suggest::close_matches(name, names.iter().copied(), 3);
    let error = if matches.is_empty() {
        error.with_hint(format!("list its functions with `probe list 'uprobe:{}:*'`", path.display()))
    } else {
        error.with_hint(format!("did you mean: {}?", matches.join(", ")))
    };
    if file.symbols().next().is_none() {
        // Only the dynamic symbol table is left: internal functions have
        // no names.
        let mut error = error;
        error.message.push_str(" (the file is stripped: only its exported functions have names)");
        return error;
    }
    error
}

/// Converts a virtual address to a file offset through the loadable
/// segment that contains it.
fn file_offset_of(file: &object::File<'_>, address: u64) -> Option<u64> {
    file.segments().find_map(|segment| {
        let start = segment.address();
        let (offset, size) = segment.file_range();
        (address >= start && address < start + size).then(|| address - start + offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names_match_versions() {
        assert!(is_library_named("libc.so.6", "libc"));
        assert!(is_library_named("libc.so.6", "c"));
        assert!(is_library_named("libc.so.6", "libc.so.6"));
        assert!(is_library_named("libpython3.11.so.1.0", "libpython3.11"));
        assert!(is_library_named("libssl-3.so", "libssl"));
        assert!(!is_library_named("libcrypt.so.1", "libc"));
        assert!(!is_library_named("libc_malloc_debug.so.0", "libc"));
        assert!(is_library_named("libc.so.6", "libc.so"));
        assert!(!is_library_named("libcap.so.2", "libc.so"));
    }

    #[test]
    fn missing_binary_names_it() {
        let error = resolve_binary("/nonexistent/prog", None).unwrap_err();
        assert!(error.message.contains("`/nonexistent/prog` not found"), "{}", error.message);
        let error = resolve_binary("no-such-program-or-library", None).unwrap_err();
        assert!(error.message.contains("`no-such-program-or-library` not found"), "{}", error.message);
    }

    #[test]
    fn own_executable_resolves_symbol() {
        let path = std::env::current_exe().expect("test executable");
        let target = resolve_location(&path, &UserLocation::Symbol { name: "main".into(), offset: 0 }, LocationChecks::default())
            .expect("main resolves");
        assert!(target.file_offset > 0);
        assert!(!target.go);
        let error =
            resolve_location(&path, &UserLocation::Symbol { name: "no_such_function_xyz".into(), offset: 0 }, LocationChecks::default())
                .unwrap_err();
        assert!(error.message.contains("function `no_such_function_xyz` not found"), "{}", error.message);
    }

    #[test]
    fn glob_attaches_aliases_once() {
        let path = resolve_binary("libc", None).expect("libc is installed");
        let targets = resolve_glob(&path, "openat*").expect("libc has openat");
        let offsets: std::collections::HashSet<u64> = targets.iter().map(|target| target.file_offset).collect();
        assert_eq!(offsets.len(), targets.len(), "an address was attached twice: {targets:?}");
        assert!(targets.iter().any(|target| target.name == "openat"), "{targets:?}");
        let error = resolve_glob(&path, "no_such_function_*").unwrap_err();
        assert!(error.message.contains("no function in"), "{}", error.message);
    }

    #[test]
    fn program_files_follow_needed_libraries() {
        let files = program_files("sh -c true");
        assert!(files.len() >= 2, "{files:?}");
        assert!(files.iter().any(|file| file.to_string_lossy().contains("libc.so")), "{files:?}");
    }

    #[test]
    fn libc_is_found_by_name() {
        let path = resolve_binary("libc", None).expect("libc is installed");
        assert!(path.to_string_lossy().contains("libc"), "{}", path.display());
        resolve_location(&path, &UserLocation::Symbol { name: "getpid".into(), offset: 0 }, LocationChecks::default())
            .expect("libc has getpid");
    }
}
