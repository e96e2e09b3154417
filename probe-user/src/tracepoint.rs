//! Tracepoint formats, as tracefs publishes them in
//! `events/CATEGORY/NAME/format`, and mounting tracefs when it is missing.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use log::info;

/// Where tracefs is normally mounted, and the older location under debugfs.
const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// One field of a tracepoint's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C type as the format file spells it, without the field name
    /// (for example `const char *` or `__data_loc char[]`).
    pub type_name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
    /// Element count when the field is a fixed-size array (`char comm[16]`).
    pub array_len: Option<u32>,
}

impl Field {
    /// A `__data_loc` field: a u32 holding the offset (low 16 bits) and
    /// length (high 16 bits) of variable-length data in the same record.
    pub fn is_data_loc(&self) -> bool {
        self.type_name.starts_with("__data_loc")
    }

    /// A pointer field.
    pub fn is_pointer(&self) -> bool {
        self.type_name.trim_end().ends_with('*')
    }

    /// A `char` array or a `__data_loc char[]`, readable as a string.
    pub fn is_char_array(&self) -> bool {
        let base = self.type_name.trim_start_matches("__data_loc").trim();
        (self.array_len.is_some() || self.is_data_loc()) && base.contains("char")
    }
}

/// A tracepoint's record layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub category: String,
    pub name: String,
    pub id: u32,
    /// Every field, the common ones (`common_type`, `common_pid`, ...)
    /// first.
    pub fields: Vec<Field>,
}

impl Format {
    /// Returns the fields that are not `common_*` header fields: the ones
    /// scripts reach through `args`.
    pub fn arguments(&self) -> impl Iterator<Item = &Field> + '_ {
        self.fields.iter().filter(|f| !f.name.starts_with("common_"))
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.arguments().find(|f| f.name == name)
    }

    /// Parses the text of a format file.
    pub fn parse(category: &str, name: &str, text: &str) -> Result<Format, String> {
        let mut id = None;
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(value) = line.strip_prefix("ID:") {
                id = value.trim().parse().ok();
            } else if line.starts_with("field:") {
                fields.push(parse_field(line)?);
            }
        }
        Ok(Format {
            category: category.to_owned(),
            name: name.to_owned(),
            id: id.ok_or_else(|| "the format has no ID line".to_owned())?,
            fields,
        })
    }
}

/// Parses `field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;`.
fn parse_field(line: &str) -> Result<Field, String> {
    let mut declaration = "";
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in line.split(';') {
        let part = part.trim();
        if let Some(value) = part.strip_prefix("field:") {
            declaration = value.trim();
        } else if let Some(value) = part.strip_prefix("offset:") {
            offset = value.parse().ok();
        } else if let Some(value) = part.strip_prefix("size:") {
            size = value.parse().ok();
        } else if let Some(value) = part.strip_prefix("signed:") {
            signed = value == "1";
        }
    }
    let invalid = || format!("invalid field line {line:?}");
    // The name is the last identifier of the declaration, possibly followed
    // by an array suffix: `char comm[16]`, `__data_loc char[] name`.
    let (mut type_name, mut name) = declaration
        .rsplit_once(|c: char| c.is_whitespace() || c == '*')
        .map(|(t, n)| (t.to_owned(), n.to_owned()))
        .ok_or_else(invalid)?;
    if declaration[type_name.len()..].starts_with('*') {
        type_name.push('*');
    }
    let mut array_len = None;
    if let Some((base, suffix)) = name.split_once('[') {
        array_len = suffix.trim_end_matches(']').parse().ok();
        type_name = format!("{} [{}]", type_name.trim_end(), suffix.trim_end_matches(']'));
        name = base.to_owned();
    }
    Ok(Field {
        name,
        type_name: type_name.trim().to_owned(),
        offset: offset.ok_or_else(invalid)?,
        size: size.ok_or_else(invalid)?,
        signed,
        array_len,
    })
}

/// Returns the tracefs mount point, mounting tracefs at
/// `/sys/kernel/tracing` when no tracefs is mounted.
pub fn tracefs_root() -> io::Result<PathBuf> {
    for path in TRACEFS_PATHS {
        if Path::new(path).join("events").is_dir() {
            return Ok(PathBuf::from(path));
        }
    }
    let target = TRACEFS_PATHS[0];
    mount_filesystem("tracefs", target, "tracefs")?;
    info!("mounted tracefs at {target}");
    Ok(PathBuf::from(target))
}

/// Mounts a pseudo file system such as tracefs or debugfs at `target`.
pub fn mount_filesystem(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let source = CString::new(source)?;
    let target_c = CString::new(target)?;
    let fstype_c = CString::new(fstype)?;
    // SAFETY: all three pointers are valid NUL-terminated strings for the
    // duration of the call, and a null data pointer is allowed.
    let result = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        let err = io::Error::last_os_error();
        Err(io::Error::new(
            err.kind(),
            format!("failed to mount {fstype} at {target} ({err}); mount it by hand: mount -t {fstype} {fstype} {target}"),
        ))
    }
}

/// Reads the format of `category:name`. `Ok(None)` when no such
/// tracepoint exists.
pub fn read_format(category: &str, name: &str) -> io::Result<Option<Format>> {
    let root = tracefs_root()?;
    let path = root.join("events").join(category).join(name).join("format");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(io::Error::new(
                err.kind(),
                format!("failed to read {}: {err}", path.display()),
            ));
        }
    };
    Format::parse(category, name, &text)
        .map(Some)
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {message}", path.display())))
}

/// Lists every tracepoint as `category:name`.
pub fn list_all() -> io::Result<Vec<String>> {
    let root = tracefs_root()?;
    let text = fs::read_to_string(root.join("available_events"))?;
    Ok(text.lines().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAT: &str = "name: sys_enter_openat
ID: 782
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:48;\tsize:16;\tsigned:0;
\tfield:__data_loc char[] name;\toffset:64;\tsize:4;\tsigned:0;

print fmt: \"dfd: 0x%08lx\", ((unsigned long)(REC->dfd))
";

    #[test]
    fn parses_fields() {
        let format = Format::parse("syscalls", "sys_enter_openat", OPENAT).expect("parses");
        assert_eq!(format.id, 782);
        let names: Vec<_> = format.arguments().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["__syscall_nr", "dfd", "filename", "comm", "name"]);
        let filename = format.field("filename").unwrap();
        assert_eq!(filename.type_name, "const char *");
        assert_eq!((filename.offset, filename.size), (24, 8));
        assert!(filename.is_pointer());
        let comm = format.field("comm").unwrap();
        assert_eq!(comm.array_len, Some(16));
        assert!(comm.is_char_array());
        let name = format.field("name").unwrap();
        assert!(name.is_data_loc() && name.is_char_array());
        assert!(format.field("__syscall_nr").unwrap().signed);
    }

    #[test]
    fn missing_id_is_an_error() {
        assert!(Format::parse("a", "b", "format:\n").is_err());
    }

    #[test]
    fn host_openat_format() {
        let Ok(Some(format)) = read_format("syscalls", "sys_enter_openat") else {
            eprintln!("skipped: tracefs or the syscalls:sys_enter_openat tracepoint is not available");
            return;
        };
        let filename = format.field("filename").expect("filename field");
        assert_eq!(filename.size, 8);
        assert!(filename.is_pointer());
    }
}
