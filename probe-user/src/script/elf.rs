//! The in-memory ELF object that carries compiled programs to aya's loader.
//!
//! aya 0.14 loads programs only from ELF objects, so the compiler writes a
//! small relocatable object: one section per program (named by program
//! type, which is how aya picks the type), a legacy `maps` section with one
//! `struct bpf_map_def` per map, an `R_BPF_64_64` relocation on every
//! instruction that loads a map, and a `license` section. The same bytes
//! can be written to a file for `llvm-objdump` or `bpftool`.

use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind,
    SymbolScope,
    write::{Object, Relocation, Symbol, SymbolSection},
};
use thiserror::Error;

use super::{insn::Insn, ir::MapRef};

/// `R_BPF_64_64`: the relocation type for a map load (`ld_imm64`).
const R_BPF_64_64: u32 = 1;
/// Size of `struct bpf_map_def` as aya parses it: type, key size, value
/// size, max entries, flags, id and pinning, each a u32.
const MAP_DEF_SIZE: usize = 28;

/// Kernel map types the compiler uses, with the kernel's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    Hash = 1,
    Array = 2,
    PerCpuHash = 5,
    PerCpuArray = 6,
    StackTrace = 7,
    LruHash = 9,
    RingBuf = 27,
}

/// One map definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// One program: its symbol name, its section (the section's first part
/// gives the program type, for example `kprobe/...` or `tracepoint/...`),
/// its instructions and the instructions that load maps.
#[derive(Clone, Debug)]
pub struct ProgramCode {
    pub name: String,
    pub section: String,
    pub insns: Vec<Insn>,
    pub map_loads: Vec<(usize, MapRef)>,
}

#[derive(Debug, Error)]
pub enum ElfError {
    #[error("failed to write the ELF object: {0}")]
    Write(#[from] object::write::Error),
    #[error("internal compiler error: program `{program}` refers to map #{map}, which does not exist")]
    UnknownMap { program: String, map: u32 },
}

/// Writes `programs` and `maps` as a BPF ELF object.
pub fn write_object(programs: &[ProgramCode], maps: &[MapDef]) -> Result<Vec<u8>, ElfError> {
    let mut object = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);

    let mut map_symbols = Vec::with_capacity(maps.len());
    if !maps.is_empty() {
        let section = object.add_section(Vec::new(), b"maps".to_vec(), SectionKind::Data);
        for map in maps {
            let mut def = Vec::with_capacity(MAP_DEF_SIZE);
            for field in [
                map.map_type as u32,
                map.key_size,
                map.value_size,
                map.max_entries,
                map.flags,
                0,
                0,
            ] {
                def.extend_from_slice(&field.to_le_bytes());
            }
            let offset = object.append_section_data(section, &def, 4);
            map_symbols.push(object.add_symbol(Symbol {
                name: map.name.as_bytes().to_vec(),
                value: offset,
                size: MAP_DEF_SIZE as u64,
                kind: SymbolKind::Data,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Section(section),
                flags: SymbolFlags::None,
            }));
        }
    }

    for program in programs {
        let section = object.add_section(
            Vec::new(),
            program.section.as_bytes().to_vec(),
            SectionKind::Text,
        );
        let code: Vec<u8> = program.insns.iter().flat_map(Insn::encode).collect();
        let offset = object.append_section_data(section, &code, 8);
        object.add_symbol(Symbol {
            name: program.name.as_bytes().to_vec(),
            value: offset,
            size: code.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(section),
            flags: SymbolFlags::None,
        });
        for &(index, map) in &program.map_loads {
            let symbol = *map_symbols
                .get(map.0 as usize)
                .ok_or_else(|| ElfError::UnknownMap {
                    program: program.name.clone(),
                    map: map.0,
                })?;
            object.add_relocation(
                section,
                Relocation {
                    offset: offset + 8 * index as u64,
                    symbol,
                    addend: 0,
                    flags: RelocationFlags::Elf {
                        r_type: R_BPF_64_64,
                    },
                },
            )?;
        }
    }

    let license = object.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    object.append_section_data(license, b"GPL\0", 1);

    Ok(object.write()?)
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

    use super::*;
    use crate::script::insn::Reg;

    fn sample() -> Vec<u8> {
        let mut insns = Vec::new();
        insns.extend(Insn::ld_map_fd(Reg::R1));
        insns.push(Insn::mov64_imm(Reg::R0, 0));
        insns.push(Insn::exit());
        let program = ProgramCode {
            name: "probe_0".into(),
            section: "tracepoint/syscalls/sys_enter_getppid".into(),
            insns,
            map_loads: vec![(0, MapRef(0))],
        };
        let map = MapDef {
            name: "counts".into(),
            map_type: MapType::Array,
            key_size: 4,
            value_size: 8,
            max_entries: 1,
            flags: 0,
        };
        write_object(&[program], &[map]).expect("object is written")
    }

    #[test]
    fn object_has_program_map_and_license() {
        let bytes = sample();
        let file = object::File::parse(bytes.as_slice()).expect("parses back");
        assert_eq!(file.architecture(), Architecture::Bpf);
        let program = file
            .section_by_name("tracepoint/syscalls/sys_enter_getppid")
            .expect("program section");
        assert_eq!(program.data().unwrap().len(), 4 * 8);
        let relocations: Vec<_> = program.relocations().collect();
        assert_eq!(relocations.len(), 1);
        assert_eq!(relocations[0].0, 0);
        let maps = file.section_by_name("maps").expect("maps section");
        let def = maps.data().unwrap();
        assert_eq!(def.len(), MAP_DEF_SIZE);
        assert_eq!(&def[..4], &(MapType::Array as u32).to_le_bytes());
        let license = file.section_by_name("license").expect("license");
        assert_eq!(license.data().unwrap(), b"GPL\0");
        let names: Vec<_> = file.symbols().filter_map(|s| s.name().ok().map(str::to_owned)).collect();
        assert!(names.contains(&"probe_0".to_owned()), "{names:?}");
        assert!(names.contains(&"counts".to_owned()), "{names:?}");
    }

    #[test]
    fn aya_parses_the_object() {
        let bytes = sample();
        let parsed = aya_obj::Object::parse(&bytes).expect("aya-obj parses our object");
        assert!(parsed.programs.contains_key("probe_0"));
        assert!(parsed.maps.contains_key("counts"));
    }

    #[test]
    fn unknown_map_is_an_error() {
        let program = ProgramCode {
            name: "p".into(),
            section: "kprobe/f".into(),
            insns: Insn::ld_map_fd(Reg::R1).to_vec(),
            map_loads: vec![(0, MapRef(3))],
        };
        let err = write_object(&[program], &[]).err().expect("fails");
        assert!(err.to_string().contains("map #3"), "{err}");
    }
}
