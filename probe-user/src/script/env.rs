//! The kernel facts the compiler uses: BTF types and
//! tracepoint formats, loaded when a script first needs them and cached
//! for the rest of the run.
//!
//! Tests build an environment from fixed data instead of the running
//! kernel, so that compiler tests do not depend on the machine.

use std::{
    cell::{OnceCell, RefCell},
    collections::HashMap,
    rc::Rc,
};

use crate::{
    btf::{Btf, Kind},
    planner::KernelFunctions,
    tracepoint::{self, Format},
};

/// Kernel type information for one compilation.
pub struct Environment {
    btf: OnceCell<Option<Rc<Btf>>>,
    btf_loader: Box<dyn Fn() -> Option<Btf>>,
    formats: RefCell<HashMap<(String, String), Option<Rc<Format>>>>,
    format_loader: Box<dyn Fn(&str, &str) -> Result<Option<Format>, String>>,
    functions: OnceCell<Option<Rc<KernelFunctions>>>,
    functions_loader: Box<dyn Fn() -> Option<KernelFunctions>>,
    kprobe_multi: OnceCell<bool>,
    kprobe_multi_probe: Box<dyn Fn() -> bool>,
    module_btf: RefCell<HashMap<String, Option<Rc<Btf>>>>,
    /// The entry address that `--address` picked, for functions that
    /// share a name.
    pub function_address: Option<u64>,
    /// The process that `-p` names: uprobes fire only in it, and a
    /// library name is looked up in its mappings first.
    pub target_pid: Option<u32>,
    /// Allows uprobes that can crash the traced program: uretprobes on Go
    /// programs, and addresses that cannot be checked to start an
    /// instruction.
    pub unsafe_uprobes: bool,
}

impl Environment {
    /// Creates an environment that reads the running kernel's BTF and
    /// tracefs.
    pub fn running_kernel() -> Self {
        Self {
            btf: OnceCell::new(),
            btf_loader: Box::new(|| match Btf::from_sys_fs() {
                Ok(btf) => Some(btf),
                Err(err) => {
                    log::info!("no kernel BTF: {err}");
                    None
                }
            }),
            formats: RefCell::new(HashMap::new()),
            format_loader: Box::new(|category, name| {
                tracepoint::read_format(category, name).map_err(|err| err.to_string())
            }),
            functions: OnceCell::new(),
            functions_loader: Box::new(|| match KernelFunctions::read() {
                Ok(functions) => Some(functions),
                Err(err) => {
                    log::info!("cannot read the kernel's symbols: {err}");
                    None
                }
            }),
            kprobe_multi: OnceCell::new(),
            kprobe_multi_probe: Box::new(crate::kprobe_link::multi_supported),
            module_btf: RefCell::new(HashMap::new()),
            function_address: None,
            target_pid: None,
            unsafe_uprobes: false,
        }
    }

    /// Creates an environment with fixed BTF and tracepoint formats, for
    /// tests.
    pub fn fixed(btf: Option<Btf>, formats: Vec<Format>) -> Self {
        let btf = OnceCell::from(btf.map(Rc::new));
        let table: HashMap<(String, String), Option<Rc<Format>>> = formats
            .into_iter()
            .map(|f| ((f.category.clone(), f.name.clone()), Some(Rc::new(f))))
            .collect();
        Self {
            btf,
            btf_loader: Box::new(|| None),
            formats: RefCell::new(table),
            format_loader: Box::new(|_, _| Ok(None)),
            functions: OnceCell::from(None),
            functions_loader: Box::new(|| None),
            kprobe_multi: OnceCell::from(false),
            kprobe_multi_probe: Box::new(|| false),
            module_btf: RefCell::new(HashMap::new()),
            function_address: None,
            target_pid: None,
            unsafe_uprobes: false,
        }
    }

    /// Sets the kernel's function lists and whether kprobe.multi links
    /// work, for tests of the attach planner.
    pub fn with_functions(mut self, functions: KernelFunctions, kprobe_multi: bool) -> Self {
        self.functions = OnceCell::from(Some(Rc::new(functions)));
        self.kprobe_multi = OnceCell::from(kprobe_multi);
        self
    }

    /// Returns the kernel's symbol table and tracing lists, read on first
    /// use; `None` when `/proc/kallsyms` cannot be read (and always for
    /// fixed environments without them).
    pub fn functions(&self) -> Option<Rc<KernelFunctions>> {
        self.functions.get_or_init(|| (self.functions_loader)().map(Rc::new)).clone()
    }

    /// Tells whether the kernel attaches kprobe.multi links, found out on
    /// first use.
    pub fn kprobe_multi(&self) -> bool {
        *self.kprobe_multi.get_or_init(|| (self.kprobe_multi_probe)())
    }

    /// Returns the split BTF of a loaded module, read on first use;
    /// `None` when the module or the kernel publishes none.
    pub fn module_btf(&self, module: &str) -> Option<Rc<Btf>> {
        if let Some(cached) = self.module_btf.borrow().get(module) {
            return cached.clone();
        }
        let path = std::path::Path::new("/sys/kernel/btf").join(module);
        let btf = self.btf().and_then(|base| match Btf::from_split_file(&path, base) {
            Ok(btf) => Some(Rc::new(btf)),
            Err(err) => {
                log::info!("no BTF for module {module}: {err}");
                None
            }
        });
        self.module_btf.borrow_mut().insert(module.to_owned(), btf.clone());
        btf
    }

    /// Returns the kernel's BTF, read on first use.
    pub fn btf(&self) -> Option<Rc<Btf>> {
        self.btf.get_or_init(|| (self.btf_loader)().map(Rc::new)).clone()
    }

    /// Returns the format of tracepoint `category:name`, or `None` when it
    /// does not exist.
    pub fn tracepoint(&self, category: &str, name: &str) -> Result<Option<Rc<Format>>, String> {
        let key = (category.to_owned(), name.to_owned());
        if let Some(cached) = self.formats.borrow().get(&key) {
            return Ok(cached.clone());
        }
        let format = (self.format_loader)(category, name)?.map(Rc::new);
        self.formats.borrow_mut().insert(key, format.clone());
        Ok(format)
    }

    /// Finds a struct or union type by name in BTF.
    pub fn find_struct(&self, name: &str, union: bool) -> Option<u32> {
        let btf = self.btf()?;
        let kind = if union { Kind::Union } else { Kind::Struct };
        btf.types()
            .find(|ty| ty.kind == kind && ty.name == name)
            .map(|ty| ty.id)
    }
}
