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
    tracepoint::{self, Format},
};

/// Kernel type information for one compilation.
pub struct Environment {
    btf: OnceCell<Option<Rc<Btf>>>,
    btf_loader: Box<dyn Fn() -> Option<Btf>>,
    formats: RefCell<HashMap<(String, String), Option<Rc<Format>>>>,
    format_loader: Box<dyn Fn(&str, &str) -> Result<Option<Format>, String>>,
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
        }
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
