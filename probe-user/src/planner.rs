//! The attach planner for kernel functions: turns what a user wrote
//! (`vfs_read`, `tcp_*`, `dummy:dummy_xmit`, a name plus `--address`) into
//! the code addresses to attach to, and explains every name it cannot use.
//!
//! It reads the kernel's own lists: the symbol table (`/proc/kallsyms`,
//! with module names), the functions ftrace can attach to
//! (`available_filter_functions`, which kprobes on function entries and
//! fentry both depend on), and the kprobe blacklist. Each is read once per
//! run, and only when a probe on a kernel function needs it.

use std::{
    collections::{HashMap, HashSet},
    fmt, fs,
    path::Path,
};

use crate::{
    kallsyms::{Kallsyms, Symbol},
    suggest,
};

/// Suffixes that GCC and LLVM append to the names of function copies they
/// specialise: interprocedural scalar replacement (`.isra.N`), constant
/// propagation (`.constprop.N`), partial inlining (`.part.N`), and LTO
/// promotion. A copy is a real function entry with its own address.
const CLONE_SUFFIXES: &[&str] = &["isra", "constprop", "part", "llvm", "lto_priv"];

/// Symbols that share a function's name but are not function entries:
/// `.cold` is the out-of-line part of a function body, and the `__pfx_`
/// and `__cfi_` symbols (Linux 6.2 and later) are the padding in front of
/// each function.
const NOT_ENTRIES: &[&str] = &["__pfx_", "__cfi_"];

/// One place to attach to: a function entry with its address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FunctionTarget {
    /// The name in kallsyms, for example `tcp_sendmsg` or `foo.isra.0`.
    pub symbol: String,
    /// The module that contains the function, `None` for vmlinux.
    pub module: Option<String>,
    /// The entry address, 0 when `kptr_restrict` hides addresses.
    pub address: u64,
}

impl FunctionTarget {
    /// Returns the name as the user would write it: `MODULE:FUNC` for
    /// module functions.
    pub fn qualified_name(&self) -> String {
        match &self.module {
            Some(module) => format!("{module}:{}", self.symbol),
            None => self.symbol.clone(),
        }
    }

    /// Tells whether this is a compiler clone such as `foo.isra.0`.
    pub fn is_clone(&self) -> bool {
        clone_base(&self.symbol).is_some()
    }
}

/// A match that was left out, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub reason: SkipReason,
}

/// The reason a matching symbol cannot be attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Missing from `available_filter_functions`: `notrace`, inlined
    /// everywhere, or excluded from ftrace for safety.
    NotTraceable,
    /// Listed in `/sys/kernel/debug/kprobes/blacklist`.
    Blacklisted,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotTraceable => f.write_str(
                "not in available_filter_functions: the kernel cannot trace it (marked notrace, or excluded from tracing)",
            ),
            SkipReason::Blacklisted => {
                f.write_str("on the kprobe blacklist (/sys/kernel/debug/kprobes/blacklist): probing it could crash the kernel")
            }
        }
    }
}

/// The function entries that a name or pattern resolved to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every function entry to attach to, in kallsyms order.
    pub targets: Vec<FunctionTarget>,
    /// Matches that cannot be attached to.
    pub skipped: Vec<Skipped>,
    /// Whether the request was a glob.
    pub wildcard: bool,
}

impl Plan {
    /// Returns the compiler clones among the targets.
    pub fn clones(&self) -> impl Iterator<Item = &FunctionTarget> {
        self.targets.iter().filter(|target| target.is_clone())
    }

    /// Tells whether several targets share one name (static functions with
    /// the same name in different files or modules).
    pub fn has_duplicates(&self) -> bool {
        let mut seen = HashSet::new();
        !self.targets.iter().all(|target| seen.insert(target.symbol.as_str()))
    }

    /// Describes in a sentence the targets the user may not expect: clones
    /// and duplicates. Returns `None` for one plain target or a glob.
    pub fn describe(&self, request: &str) -> Option<String> {
        if self.wildcard || self.targets.is_empty() {
            return None;
        }
        if let [target] = self.targets.as_slice() {
            if request.contains('.') {
                return None;
            }
            return clone_base(&target.symbol)
                .map(|_| format!("`{request}` exists only as the compiler clone {}, which is traced instead", target.symbol));
        }
        let clones: Vec<&str> = self.clones().map(|target| target.symbol.as_str()).collect();
        let mut parts = Vec::new();
        if !clones.is_empty() {
            parts.push(format!("compiler clone{} {}", plural(clones.len()), clones.join(", ")));
        }
        if self.has_duplicates() {
            let addresses: Vec<String> = self
                .targets
                .iter()
                .map(|target| format!("{} at {:#x}", target.qualified_name(), target.address))
                .collect();
            parts.push(format!(
                "{} functions with this name ({}); pick one with --address ADDR or MODULE:FUNC",
                self.targets.len(),
                addresses.join(", ")
            ));
        }
        Some(format!("`{request}` attaches to {} places: {}", self.targets.len(), parts.join("; ")))
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// A user's request for kernel functions: `FUNC`, `GLOB`, `MODULE:FUNC`
/// or `MODULE:GLOB`, with an optional entry address to pick one of
/// several functions with the same name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub module: Option<String>,
    pub name: String,
    pub address: Option<u64>,
}

impl Request {
    /// Parses `FUNC` or `MODULE:FUNC`.
    pub fn parse(text: &str) -> Self {
        match text.split_once(':') {
            Some((module, name)) => Self {
                module: Some(module.to_owned()),
                name: name.to_owned(),
                address: None,
            },
            None => Self {
                module: None,
                name: text.to_owned(),
                address: None,
            },
        }
    }

    /// Tells whether the name is a glob.
    pub fn is_wildcard(&self) -> bool {
        is_glob(&self.name) || self.module.as_deref().is_some_and(is_glob)
    }

    fn text(&self) -> String {
        match &self.module {
            Some(module) => format!("{module}:{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Tells whether `text` contains glob characters.
pub fn is_glob(text: &str) -> bool {
    text.contains(['*', '?'])
}

/// The reason a request matched nothing that can be attached to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("kernel function `{name}` not found{}", hint_suffix(.suggestions))]
    NotFound { name: String, suggestions: Vec<String> },
    #[error("no kernel function matches `{pattern}`")]
    NoMatch { pattern: String },
    #[error("module `{module}` is not loaded{}", load_hint(.module, *.installed))]
    ModuleNotLoaded { module: String, installed: bool },
    #[error("module `{module}` has no function `{name}`{}", hint_suffix(.suggestions))]
    NotInModule { module: String, name: String, suggestions: Vec<String> },
    #[error("`{name}` is a data symbol (kallsyms type `{kind}`), not a function")]
    DataSymbol { name: String, kind: char },
    #[error("`{name}` cannot be traced: it is {reason}")]
    Untraceable { name: String, reason: SkipReason },
    #[error("all {count} functions matching `{pattern}` cannot be traced; the first, `{first}`, is {reason}")]
    AllUntraceable { pattern: String, count: usize, first: String, reason: SkipReason },
    #[error("no function `{name}` starts at {address:#x}; its entries are at {}", .entries.join(", "))]
    NoSuchAddress { name: String, address: u64, entries: Vec<String> },
}

fn hint_suffix(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean: {}?", suggestions.join(", "))
    }
}

fn load_hint(module: &str, installed: bool) -> String {
    if installed {
        format!("; load it with `modprobe {module}` and try again")
    } else {
        format!(
            "; no module of that name is installed for this kernel (Linux {}); check the name with `lsmod` or `find /lib/modules/$(uname -r) -name '{module}.ko*'`",
            crate::kernel::release()
        )
    }
}

/// The kernel's function lists, read once.
pub struct KernelFunctions {
    kallsyms: Kallsyms,
    /// `(name, module)` pairs from `available_filter_functions`; `None`
    /// when the file cannot be read (not root, no tracefs).
    traceable: Option<HashSet<(String, Option<String>)>>,
    /// Names on the kprobe blacklist; `None` when it cannot be read.
    blacklist: Option<HashSet<String>>,
    /// Modules whose functions appear in kallsyms.
    loaded_modules: HashSet<String>,
}

impl KernelFunctions {
    /// Reads the running kernel's lists. Fails only when kallsyms cannot
    /// be read; the other lists are optional.
    pub fn read() -> std::io::Result<Self> {
        let kallsyms = Kallsyms::read()?;
        let traceable = read_filter_functions();
        let blacklist = read_blacklist();
        Ok(Self::new(kallsyms, traceable.as_deref(), blacklist.as_deref()))
    }

    /// Builds the lists from the text of kallsyms,
    /// `available_filter_functions` and the kprobe blacklist.
    pub fn new(kallsyms: Kallsyms, filter_functions: Option<&str>, blacklist: Option<&str>) -> Self {
        let traceable = filter_functions.map(|text| {
            text.lines()
                .filter_map(|line| {
                    let mut fields = line.split_whitespace();
                    let name = fields.next()?.to_owned();
                    let module = fields.next().map(|m| m.trim_matches(['[', ']']).to_owned());
                    Some((name, module))
                })
                .collect()
        });
        let blacklist = blacklist.map(|text| {
            text.lines()
                .filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
                .collect()
        });
        let loaded_modules = kallsyms.symbols().iter().filter_map(|s| s.module.clone()).collect();
        Self {
            kallsyms,
            traceable,
            blacklist,
            loaded_modules,
        }
    }

    /// Returns the symbol table.
    pub fn kallsyms(&self) -> &Kallsyms {
        &self.kallsyms
    }

    /// Tells whether ftrace's list of traceable functions was readable.
    pub fn knows_traceable(&self) -> bool {
        self.traceable.is_some()
    }

    /// Resolves a request to the function entries to attach to.
    pub fn plan(&self, request: &Request) -> Result<Plan, PlanError> {
        let wildcard = request.is_wildcard();
        if let Some(module) = &request.module {
            if !is_glob(module) && !self.loaded_modules.contains(module) {
                return Err(PlanError::ModuleNotLoaded {
                    module: module.clone(),
                    installed: module_installed(module),
                });
            }
        }

        let explicit_variant = request.name.contains('.');
        let matches_name = |symbol: &Symbol| {
            if wildcard {
                glob_match(&request.name, &symbol.name) && is_entry(&symbol.name)
            } else {
                symbol.name == request.name
                    || (!explicit_variant && clone_base(&symbol.name) == Some(request.name.as_str()))
            }
        };
        let matches_module = |symbol: &Symbol| match (&request.module, &symbol.module) {
            (None, _) => true,
            (Some(wanted), Some(module)) => glob_match(wanted, module),
            (Some(_), None) => false,
        };

        let mut seen = HashSet::new();
        let mut candidates: Vec<&Symbol> = self
            .kallsyms
            .symbols()
            .iter()
            .filter(|symbol| symbol.is_text() && matches_module(symbol) && matches_name(symbol))
            // kallsyms lists some entries twice (aliases at one address).
            .filter(|symbol| seen.insert((symbol.name.as_str(), symbol.address, symbol.module.as_deref())))
            .collect();

        if candidates.is_empty() {
            return Err(self.not_found(request));
        }
        if let Some(address) = request.address {
            let entries: Vec<String> = candidates
                .iter()
                .map(|symbol| format!("{:#x} ({})", symbol.address, qualified(symbol)))
                .collect();
            candidates.retain(|symbol| symbol.address == address);
            if candidates.is_empty() {
                return Err(PlanError::NoSuchAddress {
                    name: request.text(),
                    address,
                    entries,
                });
            }
        }

        let mut plan = Plan {
            wildcard,
            ..Plan::default()
        };
        for symbol in candidates {
            match self.skip_reason(symbol) {
                Some(reason) => plan.skipped.push(Skipped {
                    name: qualified(symbol),
                    reason,
                }),
                None => plan.targets.push(FunctionTarget {
                    symbol: symbol.name.clone(),
                    module: symbol.module.clone(),
                    address: symbol.address,
                }),
            }
        }
        if plan.targets.is_empty() {
            let first = &plan.skipped[0];
            return Err(if wildcard || plan.skipped.len() > 1 {
                PlanError::AllUntraceable {
                    pattern: request.text(),
                    count: plan.skipped.len(),
                    first: first.name.clone(),
                    reason: first.reason,
                }
            } else {
                PlanError::Untraceable {
                    name: first.name.clone(),
                    reason: first.reason,
                }
            });
        }
        Ok(plan)
    }

    fn skip_reason(&self, symbol: &Symbol) -> Option<SkipReason> {
        if let Some(traceable) = &self.traceable {
            let key = (symbol.name.clone(), symbol.module.clone());
            if !traceable.contains(&key) {
                return Some(SkipReason::NotTraceable);
            }
        }
        if self.blacklist.as_ref().is_some_and(|list| list.contains(&symbol.name)) {
            return Some(SkipReason::Blacklisted);
        }
        None
    }

    fn not_found(&self, request: &Request) -> PlanError {
        if request.is_wildcard() {
            return PlanError::NoMatch { pattern: request.text() };
        }
        if let Some(symbol) = self.kallsyms.symbol(&request.name) {
            if !symbol.is_text() {
                return PlanError::DataSymbol {
                    name: request.name.clone(),
                    kind: symbol.kind,
                };
            }
        }
        let in_scope = |symbol: &&Symbol| match &request.module {
            Some(module) => symbol.module.as_deref() == Some(module.as_str()),
            None => true,
        };
        let names = self
            .kallsyms
            .symbols()
            .iter()
            .filter(|symbol| symbol.is_text())
            .filter(in_scope)
            .map(|symbol| symbol.name.as_str());
        let suggestions = suggest::close_matches(&request.name, names, 3);
        match &request.module {
            Some(module) => PlanError::NotInModule {
                module: module.clone(),
                name: request.name.clone(),
                suggestions,
            },
            None => PlanError::NotFound {
                name: request.name.clone(),
                suggestions,
            },
        }
    }
}

fn qualified(symbol: &Symbol) -> String {
    match &symbol.module {
        Some(module) => format!("{module}:{}", symbol.name),
        None => symbol.name.clone(),
    }
}

/// Returns the name a compiler clone was made from: `foo` for
/// `foo.isra.0` or `foo.constprop.0.isra.0`. `None` for other names,
/// including `.cold` parts, which are not function entries.
pub fn clone_base(symbol: &str) -> Option<&str> {
    let (base, suffix) = symbol.split_once('.')?;
    let mut parts = suffix.split('.').peekable();
    let mut any = false;
    while let Some(kind) = parts.next() {
        if !CLONE_SUFFIXES.contains(&kind) {
            return None;
        }
        // Every kind is followed by a number, except in LTO names.
        if parts.peek().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
            parts.next();
        }
        any = true;
    }
    any.then_some(base)
}

/// Tells whether a symbol can be a function entry that a glob should
/// match.
fn is_entry(name: &str) -> bool {
    !NOT_ENTRIES.iter().any(|prefix| name.starts_with(prefix)) && !name.ends_with(".cold") && !name.contains(".cold.")
}

/// Matches `text` against a glob where `*` is any run of characters and
/// `?` any one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

fn read_filter_functions() -> Option<String> {
    let root = crate::tracepoint::tracefs_root().ok()?;
    fs::read_to_string(root.join("available_filter_functions")).ok()
}

fn read_blacklist() -> Option<String> {
    const BLACKLIST: &str = "/sys/kernel/debug/kprobes/blacklist";
    if !Path::new(BLACKLIST).exists() && Path::new("/sys/kernel/debug").is_dir() {
        // debugfs is often not mounted; mounting it is harmless.
        let _ = crate::tracepoint::mount_filesystem("debugfs", "/sys/kernel/debug", "debugfs");
    }
    fs::read_to_string(BLACKLIST).ok()
}

/// Tells whether a module file for `module` is installed for the running
/// kernel, so that `modprobe` would find it.
fn module_installed(module: &str) -> bool {
    let path = format!("/lib/modules/{}/modules.dep", crate::kernel::release());
    let Ok(text) = fs::read_to_string(path) else {
        return false;
    };
    // Module names use `_` where file names may use `-`.
    let wanted = module.replace('-', "_");
    text.lines().any(|line| {
        let file = line.split(':').next().unwrap_or("");
        let name = file.rsplit('/').next().unwrap_or("").split('.').next().unwrap_or("");
        name.replace('-', "_") == wanted
    })
}

/// Groups targets by module, for loading each module's BTF once.
pub fn modules_of(targets: &[FunctionTarget]) -> HashMap<Option<String>, Vec<&FunctionTarget>> {
    let mut groups: HashMap<Option<String>, Vec<&FunctionTarget>> = HashMap::new();
    for target in targets {
        groups.entry(target.module.clone()).or_default().push(target);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000100 T vfs_read
ffffffff81000200 T vfs_write
ffffffff81000300 t helper
ffffffff81000400 t helper
ffffffff81000500 t only_clone.isra.0
ffffffff81000600 t both
ffffffff81000700 t both.constprop.0
ffffffff81000800 t both.cold
ffffffff81000900 t __pfx_vfs_read
ffffffff81000a00 t notrace_fn
ffffffff81000b00 T kprobe_fn
ffffffff82000000 D jiffies
ffffffffc0001000 t dummy_xmit\t[dummy]
ffffffffc0002000 t helper\t[dummy]
";

    const FILTER: &str = "\
vfs_read
vfs_write
helper
helper
only_clone.isra.0
both
both.constprop.0
kprobe_fn
dummy_xmit [dummy]
helper [dummy]
";

    const BLACKLIST: &str = "0xffffffff81000b00-0xffffffff81000b10\tkprobe_fn\n";

    fn functions() -> KernelFunctions {
        KernelFunctions::new(Kallsyms::parse(KALLSYMS), Some(FILTER), Some(BLACKLIST))
    }

    fn symbols(plan: &Plan) -> Vec<String> {
        plan.targets.iter().map(FunctionTarget::qualified_name).collect()
    }

    #[test]
    fn plain_name_is_one_target() {
        let plan = functions().plan(&Request::parse("vfs_read")).unwrap();
        assert_eq!(symbols(&plan), ["vfs_read"]);
        assert_eq!(plan.targets[0].address, 0xffffffff81000100);
        assert!(plan.describe("vfs_read").is_none());
    }

    #[test]
    fn clone_only_function_resolves_to_clone() {
        let plan = functions().plan(&Request::parse("only_clone")).unwrap();
        assert_eq!(symbols(&plan), ["only_clone.isra.0"]);
        let description = plan.describe("only_clone").unwrap();
        assert!(description.contains("only as the compiler clone only_clone.isra.0"), "{description}");
    }

    #[test]
    fn plain_and_clone_both_attached() {
        let plan = functions().plan(&Request::parse("both")).unwrap();
        assert_eq!(symbols(&plan), ["both", "both.constprop.0"]);
        let description = plan.describe("both").unwrap();
        assert!(description.contains("compiler clone both.constprop.0"), "{description}");
    }

    #[test]
    fn explicit_variant_is_the_only_target() {
        let plan = functions().plan(&Request::parse("both.constprop.0")).unwrap();
        assert_eq!(symbols(&plan), ["both.constprop.0"]);
    }

    #[test]
    fn duplicate_statics_all_attached_and_named() {
        let plan = functions().plan(&Request::parse("helper")).unwrap();
        assert_eq!(symbols(&plan), ["helper", "helper", "dummy:helper"]);
        assert!(plan.has_duplicates());
        let description = plan.describe("helper").unwrap();
        assert!(description.contains("3 functions with this name"), "{description}");
        assert!(description.contains("--address"), "{description}");
    }

    #[test]
    fn address_picks_one_copy() {
        let mut request = Request::parse("helper");
        request.address = Some(0xffffffff81000400);
        let plan = functions().plan(&request).unwrap();
        assert_eq!(plan.targets.len(), 1);
        assert_eq!(plan.targets[0].address, 0xffffffff81000400);

        request.address = Some(0x1234);
        let err = functions().plan(&request).unwrap_err().to_string();
        assert!(err.contains("no function `helper` starts at 0x1234"), "{err}");
        assert!(err.contains("0xffffffff81000300"), "{err}");
    }

    #[test]
    fn module_qualified_name() {
        let plan = functions().plan(&Request::parse("dummy:helper")).unwrap();
        assert_eq!(symbols(&plan), ["dummy:helper"]);
        let err = functions().plan(&Request::parse("dummy:nothing")).unwrap_err().to_string();
        assert!(err.contains("module `dummy` has no function `nothing`"), "{err}");
    }

    #[test]
    fn unloaded_module_is_named() {
        let err = functions().plan(&Request::parse("nosuchmod:fn")).unwrap_err();
        assert!(matches!(&err, PlanError::ModuleNotLoaded { module, .. } if module == "nosuchmod"), "{err}");
        assert!(err.to_string().contains("module `nosuchmod` is not loaded"), "{err}");
    }

    #[test]
    fn wildcard_skips_padding_cold_and_untraceable() {
        let plan = functions().plan(&Request::parse("*")).unwrap();
        let names = symbols(&plan);
        assert!(names.contains(&"vfs_read".to_owned()));
        assert!(!names.iter().any(|n| n.starts_with("__pfx_") || n.ends_with(".cold")), "{names:?}");
        assert!(!names.contains(&"notrace_fn".to_owned()));
        assert!(plan.skipped.iter().any(|s| s.name == "notrace_fn" && s.reason == SkipReason::NotTraceable));
        assert!(plan.skipped.iter().any(|s| s.name == "kprobe_fn" && s.reason == SkipReason::Blacklisted));
    }

    #[test]
    fn wildcard_in_module() {
        let plan = functions().plan(&Request::parse("dummy:*")).unwrap();
        assert_eq!(symbols(&plan), ["dummy:dummy_xmit", "dummy:helper"]);
    }

    #[test]
    fn errors_name_the_reason() {
        let err = functions().plan(&Request::parse("notrace_fn")).unwrap_err().to_string();
        assert!(err.contains("not in available_filter_functions"), "{err}");
        let err = functions().plan(&Request::parse("kprobe_fn")).unwrap_err().to_string();
        assert!(err.contains("kprobe blacklist"), "{err}");
        let err = functions().plan(&Request::parse("jiffies")).unwrap_err().to_string();
        assert!(err.contains("data symbol"), "{err}");
        let err = functions().plan(&Request::parse("vfs_reed")).unwrap_err().to_string();
        assert!(err.contains("did you mean: vfs_read"), "{err}");
        let err = functions().plan(&Request::parse("zzz_*")).unwrap_err().to_string();
        assert_eq!(err, "no kernel function matches `zzz_*`");
    }

    #[test]
    fn clone_names() {
        assert_eq!(clone_base("foo.isra.0"), Some("foo"));
        assert_eq!(clone_base("foo.constprop.0.isra.0"), Some("foo"));
        assert_eq!(clone_base("foo.part.3"), Some("foo"));
        assert_eq!(clone_base("foo.cold"), None);
        assert_eq!(clone_base("foo"), None);
        assert_eq!(clone_base("foo.bar.1"), None);
    }

    #[test]
    fn glob_cases() {
        let cases = [
            ("vfs_*", "vfs_read", true),
            ("vfs_*", "do_vfs_read", false),
            ("*read*", "do_vfs_read", true),
            ("vfs_rea?", "vfs_read", true),
            ("vfs_rea?", "vfs_readv", false),
            ("*", "", true),
            ("", "x", false),
            ("tracepoint:syscalls:*openat", "tracepoint:syscalls:sys_enter_openat", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} against {text}");
        }
    }
}
