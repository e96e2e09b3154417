//! The kernel's symbol table, as `/proc/kallsyms` prints it.
//!
//! The kernel formats the whole table (over 100,000 lines) on every read,
//! which takes tens of milliseconds, so callers read it once per run and only
//! when they need it.

use std::{fs, io};

/// Path of the kernel's symbol table.
pub const KALLSYMS_PATH: &str = "/proc/kallsyms";

/// One symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Address, or 0 when `kptr_restrict` hides addresses from this reader.
    pub address: u64,
    /// The `nm`-style type letter: `t`/`T` for text (code).
    pub kind: char,
    pub name: String,
    /// The module that contains the symbol, `None` for vmlinux.
    pub module: Option<String>,
}

impl Symbol {
    /// Tells whether the symbol is code, which kprobes can attach to. Text
    /// symbols are code, and so are weak symbols (`W`, such as memcpy on
    /// Linux 6.1), because weak objects have the letter `V`.
    pub fn is_text(&self) -> bool {
        matches!(self.kind, 't' | 'T' | 'w' | 'W')
    }
}

/// A parsed symbol table.
pub struct Kallsyms {
    symbols: Vec<Symbol>,
}

impl Kallsyms {
    /// Reads and parses `/proc/kallsyms`.
    pub fn read() -> io::Result<Self> {
        Ok(Self::parse(&fs::read_to_string(KALLSYMS_PATH)?))
    }

    /// Parses the text of `/proc/kallsyms`, skipping malformed lines.
    pub fn parse(text: &str) -> Self {
        let symbols = text.lines().filter_map(parse_line).collect();
        Self { symbols }
    }

    /// Returns every text symbol called `name`. Static functions with the
    /// same name in several files appear once per copy.
    pub fn text_symbols<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Symbol> + 'a {
        self.symbols
            .iter()
            .filter(move |symbol| symbol.is_text() && symbol.name == name)
    }

    /// Returns every symbol, in the kernel's order.
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols
    }

    /// Returns the first symbol called `name`, of any type.
    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|symbol| symbol.name == name)
    }

    /// Iterates over the names of every text symbol.
    pub fn text_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.symbols
            .iter()
            .filter(|symbol| symbol.is_text())
            .map(|symbol| symbol.name.as_str())
    }
}

fn parse_line(line: &str) -> Option<Symbol> {
    let mut fields = line.split_ascii_whitespace();
    let address = u64::from_str_radix(fields.next()?, 16).ok()?;
    let kind = fields.next()?.chars().next()?;
    let name = fields.next()?.to_owned();
    let module = fields
        .next()
        .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_owned());
    Some(Symbol {
        address,
        kind,
        name,
        module,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff816d81b0 t do_sys_openat2
ffffffff816d8300 T do_sys_open
ffffffff82a00000 D jiffies
ffffffffc0a01000 t dummy_dev_init\t[dummy]
garbage line
ffffffff81100000 t helper.isra.0
ffffffff81200000 t helper.isra.0
";

    #[test]
    fn parses_vmlinux_and_module_symbols() {
        let table = Kallsyms::parse(SAMPLE);
        let symbol = table.text_symbols("do_sys_openat2").next().expect("found");
        assert_eq!(symbol.address, 0xffffffff816d81b0);
        assert_eq!(symbol.module, None);
        let module_symbol = table.text_symbols("dummy_dev_init").next().expect("found");
        assert_eq!(module_symbol.module.as_deref(), Some("dummy"));
    }

    #[test]
    fn data_symbols_are_not_text() {
        let table = Kallsyms::parse(SAMPLE);
        assert_eq!(table.text_symbols("jiffies").count(), 0);
        assert!(!table.text_names().any(|name| name == "jiffies"));
    }

    #[test]
    fn duplicate_static_names_are_all_listed() {
        let table = Kallsyms::parse(SAMPLE);
        assert_eq!(table.text_symbols("helper.isra.0").count(), 2);
    }
}
