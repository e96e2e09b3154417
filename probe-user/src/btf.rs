//! A reader for the kernel's BTF (BPF Type Format) type information.
//!
//! The kernel publishes the types of vmlinux in `/sys/kernel/btf/vmlinux`
//! and those of each loaded module in `/sys/kernel/btf/<module>`. This
//! reader indexes the type section in one pass and decodes a type only when
//! it is asked for, so that looking up one function's prototype in the
//! 5 MB vmlinux blob stays cheap.
//!
//! The format is described in the kernel's `Documentation/bpf/btf.rst`.

use std::{cell::OnceCell, collections::HashMap, fmt::Write as _, fs, io, path::Path, rc::Rc};

use thiserror::Error;

/// Path of the kernel's own BTF.
pub const VMLINUX_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

/// Kinds of BTF types, with the kernel's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::Void,
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    /// Size in bytes of the data that follows the 12-byte common header.
    fn trailing_len(self, vlen: usize) -> usize {
        match self {
            Self::Int | Self::Var | Self::DeclTag => 4,
            Self::Array => 12,
            Self::Struct | Self::Union | Self::Datasec | Self::Enum64 => 12 * vlen,
            Self::Enum | Self::FuncProto => 8 * vlen,
            _ => 0,
        }
    }
}

/// Errors from reading or parsing BTF.
#[derive(Debug, Error)]
pub enum BtfError {
    #[error("failed to read BTF from {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid BTF: {0}")]
    Invalid(String),
    #[error("BTF type id {0} does not exist")]
    UnknownType(u32),
}

/// One decoded type. Members, parameters and enumerators are decoded on
/// request through the methods of [`Btf`].
#[derive(Clone, Copy, Debug)]
pub struct Type<'a> {
    pub id: u32,
    pub kind: Kind,
    pub name: &'a str,
    /// `vlen`: number of members, parameters, enumerators or sections.
    pub vlen: u16,
    pub kind_flag: bool,
    /// Size in bytes for sized kinds, the referenced type id for the others.
    pub size_or_type: u32,
    /// Offset of the trailing data in the type section.
    data: usize,
}

/// A struct or union member.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    pub name: &'a str,
    pub type_id: u32,
    /// Offset from the start of the aggregate, in bits.
    pub bit_offset: u32,
    /// Width of a bitfield member, 0 for an ordinary member.
    pub bitfield_size: u32,
}

/// A function parameter.
#[derive(Clone, Copy, Debug)]
pub struct Param<'a> {
    pub name: &'a str,
    pub type_id: u32,
}

/// A function's prototype: parameter names and types, and the return type.
#[derive(Clone, Debug)]
pub struct FunctionSignature<'a> {
    pub name: &'a str,
    pub params: Vec<Param<'a>>,
    /// 0 for a function returning `void`.
    pub return_type: u32,
}

/// How a value of a given type is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// Signed integer of the given size in bytes.
    Signed(u32),
    /// Unsigned integer of the given size in bytes.
    Unsigned(u32),
    Bool,
    Char,
    Pointer,
    /// Structs, unions, arrays, floats and anything else that is not a
    /// scalar: printed as raw hex.
    Raw,
}

/// Parsed BTF: the raw bytes plus an index from type id to its position.
pub struct Btf {
    data: Vec<u8>,
    types_start: usize,
    types_end: usize,
    strings_start: usize,
    strings_end: usize,
    /// `offsets[i]` is the offset of type id `first_id + i` from
    /// `types_start`.
    offsets: Vec<u32>,
    /// The base that split BTF extends: a module's BTF numbers its types
    /// after vmlinux's and refers to vmlinux types and strings by their
    /// own ids and offsets.
    base: Option<Rc<Btf>>,
    /// Function name to `BTF_KIND_FUNC` type id, built on the first
    /// lookup: a scan of every type per lookup made listing all functions
    /// quadratic.
    function_ids: OnceCell<HashMap<String, u32>>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.type_count())
            .field("split", &self.base.is_some())
            .finish()
    }
}

impl Btf {
    /// Reads and parses the running kernel's vmlinux BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF_PATH))
    }

    /// Reads and parses a standalone (non-split) BTF file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(data)
    }

    /// Reads and parses a module's split BTF, as
    /// `/sys/kernel/btf/<module>` publishes it, on top of vmlinux's.
    pub fn from_split_file(path: &Path, base: Rc<Btf>) -> Result<Self, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_split(data, base)
    }

    /// Parses split BTF whose type ids and string offsets continue those of
    /// `base`.
    pub fn parse_split(data: Vec<u8>, base: Rc<Btf>) -> Result<Self, BtfError> {
        let mut btf = Self::parse(data)?;
        btf.base = Some(base);
        Ok(btf)
    }

    /// Parses standalone BTF, indexing every type.
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        if data.len() < HEADER_LEN {
            return Err(BtfError::Invalid(format!(
                "{} bytes is shorter than the BTF header",
                data.len()
            )));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic != BTF_MAGIC {
            return Err(BtfError::Invalid(format!(
                "bad magic {magic:#06x}, expected {BTF_MAGIC:#06x} (only little-endian BTF is supported)"
            )));
        }
        let header_len = read_u32(&data, 4) as usize;
        let type_off = read_u32(&data, 8) as usize;
        let type_len = read_u32(&data, 12) as usize;
        let str_off = read_u32(&data, 16) as usize;
        let str_len = read_u32(&data, 20) as usize;

        let types_start = header_len + type_off;
        let types_end = types_start + type_len;
        let strings_start = header_len + str_off;
        let strings_end = strings_start + str_len;
        if types_end > data.len() || strings_end > data.len() || header_len < HEADER_LEN {
            return Err(BtfError::Invalid(format!(
                "sections (types {types_start}..{types_end}, strings {strings_start}..{strings_end}) exceed the {} bytes of data",
                data.len()
            )));
        }

        let mut offsets = Vec::with_capacity(type_len / 16);
        let mut position = types_start;
        while position < types_end {
            if position + 12 > types_end {
                return Err(BtfError::Invalid(format!(
                    "truncated type header at offset {position}"
                )));
            }
            let info = read_u32(&data, position + 4);
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind).ok_or_else(|| {
                BtfError::Invalid(format!("unknown type kind {raw_kind} at offset {position}"))
            })?;
            let vlen = (info & 0xffff) as usize;
            offsets.push((position - types_start) as u32);
            position += 12 + kind.trailing_len(vlen);
        }
        if position != types_end {
            return Err(BtfError::Invalid("the last type overruns the type section".into()));
        }

        Ok(Self {
            data,
            types_start,
            types_end,
            strings_start,
            strings_end,
            offsets,
            base: None,
            function_ids: OnceCell::new(),
        })
    }

    /// Number of types, not counting `void` (id 0), the base's included.
    pub fn type_count(&self) -> u32 {
        self.base_type_count() + self.offsets.len() as u32
    }

    fn base_type_count(&self) -> u32 {
        self.base.as_ref().map_or(0, |base| base.type_count())
    }

    /// Tells whether type `id` belongs to the base of split BTF.
    fn in_base(&self, id: u32) -> Option<&Btf> {
        self.base.as_deref().filter(|base| id <= base.type_count())
    }

    fn strings_len(&self) -> u32 {
        let own = (self.strings_end - self.strings_start) as u32;
        own + self.base.as_ref().map_or(0, |base| base.strings_len())
    }

    /// Returns the string at `offset` in the string section.
    fn string(&self, mut offset: u32) -> &str {
        if let Some(base) = &self.base {
            let base_len = base.strings_len();
            if offset < base_len {
                return base.string(offset);
            }
            offset -= base_len;
        }
        let start = self.strings_start + offset as usize;
        if start >= self.strings_end {
            return "";
        }
        let bytes = &self.data[start..self.strings_end];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
    }

    /// Decodes type `id`. Id 0 is `void`.
    pub fn type_by_id(&self, id: u32) -> Result<Type<'_>, BtfError> {
        if id == 0 {
            return Ok(Type {
                id,
                kind: Kind::Void,
                name: "void",
                vlen: 0,
                kind_flag: false,
                size_or_type: 0,
                data: 0,
            });
        }
        if let Some(base) = self.in_base(id) {
            return base.type_by_id(id);
        }
        let index = (id - self.base_type_count()) as usize - 1;
        let offset = *self.offsets.get(index).ok_or(BtfError::UnknownType(id))?;
        let position = self.types_start + offset as usize;
        let name_off = read_u32(&self.data, position);
        let info = read_u32(&self.data, position + 4);
        Ok(Type {
            id,
            // The index pass accepted every kind, so this cannot fail.
            kind: Kind::from_raw((info >> 24) & 0x1f).unwrap_or(Kind::Void),
            name: self.string(name_off),
            vlen: (info & 0xffff) as u16,
            kind_flag: info >> 31 == 1,
            size_or_type: read_u32(&self.data, position + 8),
            data: position + 12,
        })
    }

    fn trailing_u32(&self, ty: &Type<'_>, index: usize) -> u32 {
        if let Some(base) = self.in_base(ty.id) {
            return base.trailing_u32(ty, index);
        }
        let position = ty.data + 4 * index;
        if position + 4 > self.types_end {
            return 0;
        }
        read_u32(&self.data, position)
    }

    /// Returns the members of a struct or union.
    pub fn members(&self, ty: &Type<'_>) -> Vec<Member<'_>> {
        if !matches!(ty.kind, Kind::Struct | Kind::Union) {
            return Vec::new();
        }
        (0..ty.vlen as usize)
            .map(|i| {
                let offset = self.trailing_u32(ty, 3 * i + 2);
                let (bit_offset, bitfield_size) = if ty.kind_flag {
                    (offset & 0x00ff_ffff, offset >> 24)
                } else {
                    (offset, 0)
                };
                Member {
                    name: self.string(self.trailing_u32(ty, 3 * i)),
                    type_id: self.trailing_u32(ty, 3 * i + 1),
                    bit_offset,
                    bitfield_size,
                }
            })
            .collect()
    }

    /// Returns the parameters of a function prototype.
    pub fn params(&self, ty: &Type<'_>) -> Vec<Param<'_>> {
        if ty.kind != Kind::FuncProto {
            return Vec::new();
        }
        (0..ty.vlen as usize)
            .map(|i| Param {
                name: self.string(self.trailing_u32(ty, 2 * i)),
                type_id: self.trailing_u32(ty, 2 * i + 1),
            })
            .collect()
    }

    /// Returns `(element type, element count)` of an array type.
    pub fn array_info(&self, ty: &Type<'_>) -> Option<(u32, u32)> {
        (ty.kind == Kind::Array).then(|| (self.trailing_u32(ty, 0), self.trailing_u32(ty, 2)))
    }

    /// Returns the encoding bits and width in bits of an integer type.
    fn int_info(&self, ty: &Type<'_>) -> (u32, u32) {
        let raw = self.trailing_u32(ty, 0);
        ((raw >> 24) & 0x0f, raw & 0xff)
    }

    /// Iterates over every type with its id.
    pub fn types(&self) -> impl Iterator<Item = Type<'_>> + '_ {
        (1..=self.type_count()).filter_map(|id| self.type_by_id(id).ok())
    }

    /// Iterates over the names of every function (`BTF_KIND_FUNC`).
    pub fn function_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.types()
            .filter(|ty| ty.kind == Kind::Func)
            .map(|ty| ty.name)
    }

    /// Finds a function by name and decodes its prototype.
    pub fn find_function(&self, name: &str) -> Option<FunctionSignature<'_>> {
        let ids = self.function_ids.get_or_init(|| {
            let mut ids = HashMap::new();
            for ty in self.types().filter(|ty| ty.kind == Kind::Func) {
                // The first definition wins, as a linear search would find.
                ids.entry(ty.name.to_owned()).or_insert(ty.id);
            }
            ids
        });
        let func = self.type_by_id(*ids.get(name)?).ok()?;
        let proto = self.type_by_id(func.size_or_type).ok()?;
        Some(FunctionSignature {
            name: func.name,
            params: self.params(&proto),
            return_type: proto.size_or_type,
        })
    }

    /// Returns the byte offset of `member` in the struct named
    /// `struct_name`, looking into anonymous struct and union members.
    /// Returns `None` when the struct or the member does not exist, or the
    /// member is a bitfield.
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Option<u32> {
        let ty = self
            .types()
            .find(|ty| ty.kind == Kind::Struct && ty.name == struct_name && ty.vlen > 0)?;
        self.member_bit_offset(&ty, member, 0)
            .filter(|bits| bits % 8 == 0)
            .map(|bits| bits / 8)
    }

    fn member_bit_offset(&self, ty: &Type<'_>, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for candidate in self.members(ty) {
            if candidate.name == member && candidate.bitfield_size == 0 {
                return Some(candidate.bit_offset);
            }
            if candidate.name.is_empty() {
                let inner = self.resolve(candidate.type_id).ok()?;
                if let Some(bits) = self.member_bit_offset(&inner, member, depth + 1) {
                    return Some(candidate.bit_offset + bits);
                }
            }
        }
        None
    }

    /// Returns the value of `enumerator` in the enum named `enum_name`.
    pub fn enum_value(&self, enum_name: &str, enumerator: &str) -> Option<i64> {
        let ty = self
            .types()
            .find(|ty| ty.kind == Kind::Enum && ty.name == enum_name)?;
        (0..ty.vlen as usize).find_map(|i| {
            let name = self.string(self.trailing_u32(&ty, 2 * i));
            (name == enumerator).then(|| i64::from(self.trailing_u32(&ty, 2 * i + 1) as i32))
        })
    }

    /// Follows typedefs and qualifiers (`const`, `volatile`, `restrict`,
    /// type tags) to the underlying type.
    pub fn resolve(&self, mut id: u32) -> Result<Type<'_>, BtfError> {
        // Bounded so that a malformed cycle cannot loop forever.
        for _ in 0..64 {
            let ty = self.type_by_id(id)?;
            match ty.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = ty.size_or_type;
                }
                _ => return Ok(ty),
            }
        }
        Err(BtfError::Invalid(format!(
            "type id {id} is part of a typedef or qualifier cycle"
        )))
    }

    /// Returns the size in bytes of a value of type `id`.
    pub fn size_of(&self, id: u32) -> Result<u32, BtfError> {
        let ty = self.resolve(id)?;
        Ok(match ty.kind {
            Kind::Int
            | Kind::Struct
            | Kind::Union
            | Kind::Enum
            | Kind::Enum64
            | Kind::Float
            | Kind::Datasec => ty.size_or_type,
            Kind::Ptr => 8,
            Kind::Array => {
                let (element, count) = self.array_info(&ty).unwrap_or((0, 0));
                self.size_of(element)?.saturating_mul(count)
            }
            _ => 0,
        })
    }

    /// Tells how a value of type `id` should be printed.
    pub fn value_format(&self, id: u32) -> ValueFormat {
        let Ok(ty) = self.resolve(id) else {
            return ValueFormat::Raw;
        };
        match ty.kind {
            Kind::Int => {
                let (encoding, bits) = self.int_info(&ty);
                let bytes = bits.div_ceil(8).max(1);
                if encoding & 0x4 != 0 {
                    ValueFormat::Bool
                } else if encoding & 0x2 != 0 && bytes == 1 {
                    ValueFormat::Char
                } else if encoding & 0x1 != 0 {
                    ValueFormat::Signed(bytes)
                } else {
                    ValueFormat::Unsigned(bytes)
                }
            }
            Kind::Ptr => ValueFormat::Pointer,
            // Enums are signed unless BTF marks them unsigned through the kind flag.
            Kind::Enum | Kind::Enum64 if ty.kind_flag => ValueFormat::Unsigned(ty.size_or_type),
            Kind::Enum | Kind::Enum64 => ValueFormat::Signed(ty.size_or_type),
            _ => ValueFormat::Raw,
        }
    }

    /// Renders type `id` as C would spell it, for example `const char *`
    /// or `struct file *`.
    pub fn type_name(&self, id: u32) -> String {
        let mut out = String::new();
        self.write_type_name(id, &mut out, 0);
        out
    }

    fn write_type_name(&self, id: u32, out: &mut String, depth: u32) {
        let Ok(ty) = self.type_by_id(id) else {
            let _ = write!(out, "<type {id}>");
            return;
        };
        if depth > 16 {
            out.push_str("...");
            return;
        }
        let tagged = |keyword: &str, out: &mut String| {
            out.push_str(keyword);
            out.push(' ');
            out.push_str(if ty.name.is_empty() { "(anon)" } else { ty.name });
        };
        match ty.kind {
            Kind::Void => out.push_str("void"),
            Kind::Int | Kind::Float | Kind::Typedef => out.push_str(ty.name),
            Kind::Struct => tagged("struct", out),
            Kind::Union => tagged("union", out),
            Kind::Enum | Kind::Enum64 => tagged("enum", out),
            Kind::Fwd => tagged(if ty.kind_flag { "union" } else { "struct" }, out),
            Kind::Ptr => {
                let target = self.type_by_id(ty.size_or_type);
                if matches!(&target, Ok(t) if t.kind == Kind::FuncProto) {
                    out.push_str("function pointer");
                    return;
                }
                self.write_type_name(ty.size_or_type, out, depth + 1);
                if !out.ends_with('*') {
                    out.push(' ');
                }
                out.push('*');
            }
            Kind::Const | Kind::Volatile | Kind::Restrict => {
                let qualifier = match ty.kind {
                    Kind::Const => "const ",
                    Kind::Volatile => "volatile ",
                    _ => "restrict ",
                };
                out.push_str(qualifier);
                self.write_type_name(ty.size_or_type, out, depth + 1);
            }
            Kind::TypeTag => self.write_type_name(ty.size_or_type, out, depth + 1),
            Kind::Array => {
                let (element, count) = self.array_info(&ty).unwrap_or((0, 0));
                self.write_type_name(element, out, depth + 1);
                let _ = write!(out, "[{count}]");
            }
            Kind::FuncProto => out.push_str("function"),
            Kind::Func | Kind::Var | Kind::Datasec | Kind::DeclTag => out.push_str(ty.name),
        }
    }
}

fn read_u32(data: &[u8], offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&data[offset..offset + 4]);
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: `int`, `char`, `const char *`, and
    /// `long f(int fd, const char *path)`.
    fn sample() -> Btf {
        let strings = b"\0int\0char\0long\0fd\0path\0f\0";
        let name = |s: &str| -> u32 {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .expect("string present")
        };
        let mut types: Vec<u32> = Vec::new();
        // 1: int, signed, 32 bits
        types.extend([name("int"), 1 << 24, 4, (1 << 24) | 32]);
        // 2: char, char encoding, 8 bits
        types.extend([name("char"), 1 << 24, 1, (2 << 24) | 8]);
        // 3: const char
        types.extend([0, 10 << 24, 2]);
        // 4: pointer to const char
        types.extend([0, 2 << 24, 3]);
        // 5: long, signed, 64 bits
        types.extend([name("long"), 1 << 24, 8, (1 << 24) | 64]);
        // 6: func proto long (int fd, const char *path)
        types.extend([0, (13 << 24) | 2, 5, name("fd"), 1, name("path"), 4]);
        // 7: func f
        types.extend([name("f"), 12 << 24, 6]);

        Btf::parse(blob(&types, strings)).expect("sample BTF parses")
    }

    /// Encodes BTF with a header, `types` and `strings`.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_bytes: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut data = Vec::new();
        data.extend(BTF_MAGIC.to_le_bytes());
        data.extend([1u8, 0]);
        data.extend((HEADER_LEN as u32).to_le_bytes());
        data.extend(0u32.to_le_bytes());
        data.extend((type_bytes.len() as u32).to_le_bytes());
        data.extend((type_bytes.len() as u32).to_le_bytes());
        data.extend((strings.len() as u32).to_le_bytes());
        data.extend(&type_bytes);
        data.extend(strings);
        data
    }

    #[test]
    fn split_btf_continues_base_ids_and_strings() {
        let base = Rc::new(sample());
        let base_strings = base.strings_len();
        // Split strings start with their own empty string, at offset
        // `base_strings` in the combined numbering.
        let strings = b"\0dev\0g\0";
        let dev = base_strings + 1;
        let g = base_strings + 5;
        let mut types: Vec<u32> = Vec::new();
        // 8: func proto int (const char *dev), using base types 1 and 4
        types.extend([0, (13 << 24) | 1, 1, dev, 4]);
        // 9: func g
        types.extend([g, 12 << 24, 8]);
        let split = Btf::parse_split(blob(&types, strings), base).expect("split BTF parses");

        assert_eq!(split.type_count(), 9);
        let signature = split.find_function("g").expect("g is found");
        assert_eq!(signature.params[0].name, "dev");
        assert_eq!(split.type_name(signature.params[0].type_id), "const char *");
        assert_eq!(split.type_name(signature.return_type), "int");
        // Base functions stay visible through the split view.
        assert!(split.find_function("f").is_some());
    }

    #[test]
    fn sample_function_signature() {
        let btf = sample();
        assert_eq!(btf.type_count(), 7);
        let signature = btf.find_function("f").expect("f is found");
        let names: Vec<_> = signature.params.iter().map(|p| p.name).collect();
        assert_eq!(names, ["fd", "path"]);
        assert_eq!(btf.type_name(signature.params[1].type_id), "const char *");
        assert_eq!(btf.type_name(signature.return_type), "long");
        assert!(btf.find_function("g").is_none());
    }

    #[test]
    fn sample_value_formats() {
        let btf = sample();
        assert_eq!(btf.value_format(1), ValueFormat::Signed(4));
        assert_eq!(btf.value_format(2), ValueFormat::Char);
        assert_eq!(btf.value_format(4), ValueFormat::Pointer);
        assert_eq!(btf.value_format(5), ValueFormat::Signed(8));
        assert_eq!(btf.size_of(4).unwrap(), 8);
        assert_eq!(btf.size_of(3).unwrap(), 1);
    }

    #[test]
    fn rejects_bad_magic() {
        let err = Btf::parse(vec![0; 32]).err().expect("bad magic is rejected");
        assert!(err.to_string().contains("bad magic"), "{err}");
    }

    #[test]
    fn rejects_truncated_sections() {
        let mut data = Vec::new();
        data.extend(BTF_MAGIC.to_le_bytes());
        data.extend([1u8, 0]);
        data.extend((HEADER_LEN as u32).to_le_bytes());
        data.extend([0u32, 100, 100, 10].iter().flat_map(|v| v.to_le_bytes()));
        let err = Btf::parse(data).err().expect("truncated BTF is rejected");
        assert!(err.to_string().contains("exceed"), "{err}");
    }

    #[test]
    fn running_kernel_has_do_sys_openat2() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: {VMLINUX_BTF_PATH} is not readable on this machine");
            return;
        };
        let signature = btf
            .find_function("do_sys_openat2")
            .expect("vmlinux BTF has do_sys_openat2");
        let names: Vec<_> = signature.params.iter().map(|p| p.name).collect();
        assert_eq!(names, ["dfd", "filename", "how"]);
        assert_eq!(btf.type_name(signature.params[1].type_id), "const char *");
        assert_eq!(btf.type_name(signature.params[2].type_id), "struct open_how *");
        // `long` before Linux 6.6 or so, `int` after.
        assert!(
            matches!(btf.value_format(signature.return_type), ValueFormat::Signed(4 | 8)),
            "{:?}",
            btf.value_format(signature.return_type)
        );
    }
}
