//! bpftrace maps and aggregations in user space: the key and value types
//! of a map, the byte layout the BPF program writes, decoding and merging
//! of per-CPU values, and printing in bpftrace's text layout ([`text`]) or
//! as JSON lines ([`json`]).
//!
//! This module makes no syscalls. The runtime reads each map with
//! `BPF_MAP_LOOKUP_ELEM` and hands the raw bytes to [`MapSpec::decode_entry`].
//!
//! # Byte layout the BPF program writes
//!
//! All integers are little-endian.
//!
//! **Keys.** A key is its parts in order. Each part starts at a multiple of
//! 8 bytes:
//!
//! - an integer part is 8 bytes, sign-extended or zero-extended from its
//!   width (user space truncates to the width, so the upper bytes of a
//!   narrow part are ignored when decoding);
//! - a string part of length `len` is `len` bytes, the text ending at the
//!   first NUL, padded with zeros to a multiple of 8.
//!
//! A map without keys (`@x = count()`) uses one 8-byte key of zero, because
//! the kernel's hash maps reject a key size of 0.
//!
//! Every byte of a key must be deterministic: the kernel compares whole
//! keys, so stale bytes after a string's NUL would split one key into
//! several entries. Helpers such as `bpf_probe_read_kernel_str` leave the
//! tail of the buffer untouched, so the key buffer has to be zeroed first.
//!
//! **Values.** Aggregations live in `BPF_MAP_TYPE_PERCPU_HASH` maps.
//! Plain assignments (`@m[k] = v`) live in `BPF_MAP_TYPE_HASH` maps. A
//! lookup of a per-CPU map returns one slot per possible CPU, each slot
//! rounded up to 8 bytes. Every slot size below is already a multiple
//! of 8.
//!
//! | value kind        | slot                                               | merge across CPUs           |
//! |-------------------|----------------------------------------------------|-----------------------------|
//! | plain integer     | 8 bytes, extended from its width                   | not per-CPU                 |
//! | plain string      | `len` bytes NUL-padded to a multiple of 8          | not per-CPU                 |
//! | `count()`         | `u64` counter                                      | add                         |
//! | `sum()`           | 64-bit two's complement total                      | wrapping add                |
//! | `min()`, `max()`  | 64-bit value, then a `u64` flag, 16 bytes          | min or max of flagged slots |
//! | `avg()`, `stats()`| `u64` count, then 64-bit total, 16 bytes           | add each field              |
//! | `hist()`          | [`HIST_BUCKETS`] `u64` counters, 520 bytes         | add bucketwise              |
//! | `lhist()`         | [`LhistParams::rows`] `u64` counters               | add bucketwise              |
//!
//! The `min()`/`max()` flag is non-zero once that CPU has stored a value.
//! A CPU that never saw a value has a zero slot, and the flag keeps its 0
//! out of the result. An entry whose flags are all zero is skipped when
//! printing. Signed and unsigned `sum()`, `min()` and `max()` share the
//! layout, and the map's declared signedness decides how the 64 bits are
//! read and compared.
//!
//! The BPF program increments counter [`hist_bucket`]`(value)` of a
//! `hist()` slot and counter [`lhist_bucket`]`(value, min, max, step)` of an
//! `lhist()` slot. A `hist()` slot is larger than the 512-byte BPF stack,
//! so the first insertion of a key cannot copy a zeroed value from the
//! stack. A zeroed value kept in another map, such as a one-entry array,
//! can serve as the initial value instead.
//!
//! Unlike bpftrace, which stores one map entry per bucket with the bucket
//! index appended to the key, one entry here contains all buckets of a key.
//!
//! # Differences from bpftrace 0.17's output
//!
//! - `hist()` has buckets up to `[4E, 8E)`; bpftrace 0.17 counts every
//!   value of 2^31 or more in `[2G, 4G)`.
//! - A `max()` of only negative values prints; bpftrace 0.17 leaves such
//!   an entry out of the map.
//! - Entries with equal values are ordered by key (see [`sort_entries`]),
//!   where bpftrace's order partly depends on the kernel's hash table.
//! - Strings print as UTF-8, invalid bytes replaced with U+FFFD; bpftrace
//!   writes the raw bytes.

pub mod hist;
pub mod json;
pub mod text;

#[cfg(test)]
mod tests;

use std::cmp::Ordering;

use thiserror::Error;

pub use hist::{
    HIST_BUCKETS, LHIST_MAX_BUCKETS, LhistError, LhistParams, hist_bucket, lhist_bucket,
};

/// Type of one part of a map key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPartType {
    /// An integer of `bytes` bytes (1, 2, 4 or 8).
    Int { bytes: u8, signed: bool },
    /// A string buffer of `len` bytes, such as `comm` (16).
    Str { len: usize },
    /// Raw bytes that user space renders with what only it has: symbol
    /// tables and the stack trace maps.
    Special(Special),
}

impl KeyPartType {
    /// Size of the part in the key: 8 for integers, `len` rounded up to a
    /// multiple of 8 for strings.
    pub fn size(&self) -> usize {
        match *self {
            KeyPartType::Int { .. } => 8,
            KeyPartType::Str { len } => len.next_multiple_of(8),
            KeyPartType::Special(special) => special.size(),
        }
    }
}

/// A value kept as raw bytes in the kernel and rendered as text in user
/// space. Layouts, all little-endian:
///
/// - `Kstack`: the stack id (i64) that `bpf_get_stackid` returned for
///   stack trace map number `map`, negative on failure;
/// - `Ustack`: the stack id (i64), then the process id (u64);
/// - `Ksym`: a kernel address (u64);
/// - `Usym`: a user address (u64), then the process id (u64);
/// - `Inet`: the address family (u64), then 16 address bytes in network
///   order (4 used for IPv4);
/// - `Buf`: the byte count the script asked for (u64; more than `len`
///   when the bytes were cut), then `len` bytes padded to 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Special {
    Kstack { frames: u8, map: u16 },
    Ustack { frames: u8, map: u16 },
    Ksym,
    Usym,
    Inet,
    Buf { len: u16 },
}

impl Special {
    /// Size of the bytes, a multiple of 8.
    pub fn size(&self) -> usize {
        match *self {
            Special::Kstack { .. } | Special::Ksym => 8,
            Special::Ustack { .. } | Special::Usym => 16,
            Special::Inet => 24,
            Special::Buf { len } => 8 + usize::from(len).next_multiple_of(8),
        }
    }
}

/// Kind of value a map holds, which fixes its slot layout, how CPUs merge
/// and how it prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `@m = expr` with an integer of `bytes` bytes (1, 2, 4 or 8).
    Int {
        bytes: u8,
        signed: bool,
    },
    /// `@m = expr` with a string buffer of `len` bytes.
    Str {
        len: usize,
    },
    Count,
    Sum {
        signed: bool,
    },
    Min {
        signed: bool,
    },
    Max {
        signed: bool,
    },
    Avg,
    Stats,
    Hist,
    Lhist(LhistParams),
}

impl ValueKind {
    /// Tells whether the map is a per-CPU map, so that a lookup returns one
    /// slot per possible CPU.
    pub fn is_per_cpu(&self) -> bool {
        !matches!(self, ValueKind::Int { .. } | ValueKind::Str { .. })
    }

    /// Size of one CPU's slot in bytes, a multiple of 8.
    pub fn slot_size(&self) -> usize {
        match *self {
            ValueKind::Int { .. } | ValueKind::Count | ValueKind::Sum { .. } => 8,
            ValueKind::Str { len } => len.next_multiple_of(8),
            ValueKind::Min { .. } | ValueKind::Max { .. } | ValueKind::Avg | ValueKind::Stats => 16,
            ValueKind::Hist => HIST_BUCKETS * 8,
            ValueKind::Lhist(params) => params.rows() * 8,
        }
    }
}

/// A map's name and types, as the compiler declares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// Name without the `@`; empty for the anonymous map `@`.
    pub name: String,
    /// Key parts in order; empty for a map without keys.
    pub key: Vec<KeyPartType>,
    pub value: ValueKind,
}

/// One decoded part of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPart {
    Int(i64),
    Uint(u64),
    Str(String),
    /// The bytes of a [`Special`] part, until user space renders them
    /// into a `Str`.
    Raw(Special, Vec<u8>),
}

/// A decoded key. Keys order as bpftrace orders them when it sorts by key:
/// part by part, integers by their 64-bit pattern read as unsigned (so
/// `-1` comes after `256`), strings bytewise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Key(pub Vec<KeyPart>);

impl KeyPart {
    fn rank(&self) -> u8 {
        match self {
            KeyPart::Int(_) | KeyPart::Uint(_) => 0,
            KeyPart::Str(_) => 1,
            KeyPart::Raw(..) => 2,
        }
    }

    /// Returns the 64 bits an integer part is stored as.
    fn stored_integer(&self) -> Option<u64> {
        match self {
            KeyPart::Int(value) => Some(*value as u64),
            KeyPart::Uint(value) => Some(*value),
            KeyPart::Str(_) | KeyPart::Raw(..) => None,
        }
    }
}

impl Ord for KeyPart {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (KeyPart::Int(a), KeyPart::Int(b)) => (*a as u64).cmp(&(*b as u64)),
            (KeyPart::Int(a), KeyPart::Uint(b)) => (*a as u64).cmp(b),
            (KeyPart::Uint(a), KeyPart::Int(b)) => a.cmp(&(*b as u64)),
            (KeyPart::Uint(a), KeyPart::Uint(b)) => a.cmp(b),
            (KeyPart::Str(a), KeyPart::Str(b)) => a.as_bytes().cmp(b.as_bytes()),
            (KeyPart::Raw(_, a), KeyPart::Raw(_, b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for KeyPart {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Key {
    /// Compares keys by their bytes as stored in the map (integers
    /// little-endian, strings NUL-padded), the order bpftrace 0.17 leaves
    /// equal `hist()`, `lhist()`, `avg()` and `stats()` entries in. So `256`
    /// comes before `1`, and `-1` last.
    pub fn cmp_stored(&self, other: &Self) -> Ordering {
        for (a, b) in self.0.iter().zip(&other.0) {
            let order = match (a, b) {
                (KeyPart::Str(a), KeyPart::Str(b)) => a.as_bytes().cmp(b.as_bytes()),
                _ => match (a.stored_integer(), b.stored_integer()) {
                    (Some(a), Some(b)) => a.to_le_bytes().cmp(&b.to_le_bytes()),
                    _ => a.rank().cmp(&b.rank()),
                },
            };
            if order != Ordering::Equal {
                return order;
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

/// A value merged across CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Signed plain integer, `sum()`, `min()` or `max()`.
    Int(i64),
    /// Unsigned plain integer, `count()`, `sum()`, `min()` or `max()`.
    Uint(u64),
    Str(String),
    Avg {
        count: u64,
        total: i64,
    },
    Stats {
        count: u64,
        total: i64,
    },
    /// `hist()` counters, [`HIST_BUCKETS`] of them.
    Hist(Vec<u64>),
    /// `lhist()` counters, `params.rows()` of them.
    Lhist {
        counts: Vec<u64>,
        params: LhistParams,
    },
}

impl Value {
    /// Returns `total / count` truncated toward zero, or 0 when `count` is
    /// 0, as bpftrace computes `avg()` and the average of `stats()`.
    pub fn average(count: u64, total: i64) -> i64 {
        if count == 0 {
            return 0;
        }
        (i128::from(total) / i128::from(count)) as i64
    }

    /// Returns the number entries sort by (see [`sort_entries`]), or
    /// `None` for strings.
    fn sort_value(&self) -> Option<i128> {
        match self {
            Value::Int(value) => Some(i128::from(*value)),
            Value::Uint(value) => Some(i128::from(*value)),
            Value::Str(_) => None,
            Value::Avg { count, total } | Value::Stats { count, total } => {
                Some(i128::from(Value::average(*count, *total)))
            }
            Value::Hist(counts) | Value::Lhist { counts, .. } => {
                Some(counts.iter().map(|&count| i128::from(count)).sum())
            }
        }
    }
}

/// One map entry, decoded and merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Key,
    pub value: Value,
}

/// Error decoding raw map bytes that do not match a [`MapSpec`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("map @{map}: key is {actual} bytes, expected {expected}")]
    KeySize {
        map: String,
        expected: usize,
        actual: usize,
    },
    #[error(
        "map @{map}: value is {actual} bytes, expected a positive multiple of the \
         {slot}-byte per-CPU slot"
    )]
    PerCpuValueSize {
        map: String,
        slot: usize,
        actual: usize,
    },
    #[error("map @{map}: value is {actual} bytes, expected {expected}")]
    ValueSize {
        map: String,
        expected: usize,
        actual: usize,
    },
}

/// Options of `print(@m, top, div)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrintOptions {
    /// Number of entries to print, taken from the end of the sort order
    /// (the largest values). 0 prints all.
    pub top: usize,
    /// Divisor of printed values. 0 and 1 leave them unchanged.
    pub div: u32,
}

impl Default for PrintOptions {
    fn default() -> Self {
        Self { top: 0, div: 1 }
    }
}

impl MapSpec {
    /// Size of the map's key in bytes: the sum of the parts' sizes, or 8
    /// for a map without keys.
    pub fn key_size(&self) -> usize {
        if self.key.is_empty() {
            return 8;
        }
        self.key.iter().map(KeyPartType::size).sum()
    }

    /// Decodes a key, with parts laid out as the module documentation
    /// describes.
    pub fn decode_key(&self, bytes: &[u8]) -> Result<Key, DecodeError> {
        let expected = self.key_size();
        if bytes.len() != expected {
            return Err(DecodeError::KeySize {
                map: self.name.clone(),
                expected,
                actual: bytes.len(),
            });
        }

        let mut parts = Vec::with_capacity(self.key.len());
        let mut offset = 0;
        for part_type in &self.key {
            let size = part_type.size();
            let field = &bytes[offset..offset + size];
            let part = match *part_type {
                KeyPartType::Int { bytes, signed } => {
                    match extend(read_u64(field), bytes, signed) {
                        Integer::Signed(value) => KeyPart::Int(value),
                        Integer::Unsigned(value) => KeyPart::Uint(value),
                    }
                }
                KeyPartType::Str { len } => KeyPart::Str(read_c_string(&field[..len])),
                KeyPartType::Special(special) => KeyPart::Raw(special, field.to_vec()),
            };
            parts.push(part);
            offset += size;
        }
        Ok(Key(parts))
    }

    /// Decodes a value and merges its per-CPU slots. `bytes` is what a
    /// lookup returns: one slot for a plain map, one slot per possible CPU
    /// for a per-CPU map.
    ///
    /// Returns `None` for a `min()` or `max()` entry that no CPU has
    /// stored a value in.
    pub fn decode_value(&self, bytes: &[u8]) -> Result<Option<Value>, DecodeError> {
        let slot = self.value.slot_size();
        if !self.value.is_per_cpu() {
            if bytes.len() != slot {
                return Err(DecodeError::ValueSize {
                    map: self.name.clone(),
                    expected: slot,
                    actual: bytes.len(),
                });
            }
        } else if bytes.is_empty() || !bytes.len().is_multiple_of(slot) {
            return Err(DecodeError::PerCpuValueSize {
                map: self.name.clone(),
                slot,
                actual: bytes.len(),
            });
        }

        // Only a plain string of length 0 has a 0-byte slot, and plain maps
        // do not use `slots`.
        let slots = bytes.chunks_exact(slot.max(1));
        let value = match self.value {
            ValueKind::Int {
                bytes: width,
                signed,
            } => Some(match extend(read_u64(bytes), width, signed) {
                Integer::Signed(value) => Value::Int(value),
                Integer::Unsigned(value) => Value::Uint(value),
            }),
            ValueKind::Str { len } => Some(Value::Str(read_c_string(&bytes[..len]))),
            ValueKind::Count => Some(Value::Uint(sum_words(slots, 0))),
            ValueKind::Sum { signed } => {
                let total = sum_words(slots, 0);
                Some(if signed {
                    Value::Int(total as i64)
                } else {
                    Value::Uint(total)
                })
            }
            ValueKind::Min { signed } => merge_extreme(slots, signed, Ordering::Less),
            ValueKind::Max { signed } => merge_extreme(slots, signed, Ordering::Greater),
            ValueKind::Avg => Some(Value::Avg {
                count: sum_words(slots.clone(), 0),
                total: sum_words(slots, 1) as i64,
            }),
            ValueKind::Stats => Some(Value::Stats {
                count: sum_words(slots.clone(), 0),
                total: sum_words(slots, 1) as i64,
            }),
            ValueKind::Hist => Some(Value::Hist(sum_counters(slots, HIST_BUCKETS))),
            ValueKind::Lhist(params) => Some(Value::Lhist {
                counts: sum_counters(slots, params.rows()),
                params,
            }),
        };
        Ok(value)
    }

    /// Decodes one entry from its raw key and value bytes. Returns `None`
    /// for an entry with nothing to print, as [`MapSpec::decode_value`]
    /// describes.
    pub fn decode_entry(&self, key: &[u8], value: &[u8]) -> Result<Option<Entry>, DecodeError> {
        let key = self.decode_key(key)?;
        let value = self.decode_value(value)?;
        Ok(value.map(|value| Entry { key, value }))
    }
}

/// Sorts entries in bpftrace's print order: maps of strings by key (the
/// order of [`Key`]), all others ascending by value: the number itself,
/// the average for `avg()` and `stats()`, the total count of a histogram.
///
/// Equal values order by [`Key::cmp_stored`]. bpftrace 0.17 printed equal
/// `hist()`, `lhist()`, `avg()` and `stats()` entries of small maps in that
/// order. It sorts with the unstable `std::sort`, so large maps may differ,
/// and for the other kinds equal values stay in the kernel's hash-table
/// order, which no sort reproduces.
pub fn sort_entries(entries: &mut [Entry]) {
    entries.sort_by(|a, b| match (a.value.sort_value(), b.value.sort_value()) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.key.cmp_stored(&b.key)),
        _ => a.key.cmp(&b.key),
    });
}

/// Returns the entries `print(@m, top, div)` shows, sorted: all of them,
/// or the last `top` in sort order.
///
/// A `count()` map without keys and with no entry yet prints as 0, as
/// bpftrace 0.17 does. Other empty maps print nothing.
pub(crate) fn entries_to_print(spec: &MapSpec, entries: &[Entry], top: usize) -> Vec<Entry> {
    let mut sorted = entries.to_vec();
    if sorted.is_empty() && spec.key.is_empty() && spec.value == ValueKind::Count {
        sorted.push(Entry {
            key: Key::default(),
            value: Value::Uint(0),
        });
    }
    sort_entries(&mut sorted);

    if top > 0 && sorted.len() > top {
        sorted.drain(..sorted.len() - top);
    }
    sorted
}

/// Sorts maps into the order bpftrace prints them at exit: by name,
/// bytewise, so `@` comes first and `@B` before `@a`.
pub(crate) fn sort_maps_by_name<'a>(
    maps: &[(&'a MapSpec, &'a [Entry])],
) -> Vec<(&'a MapSpec, &'a [Entry])> {
    let mut sorted = maps.to_vec();
    sorted.sort_by(|a, b| a.0.name.as_bytes().cmp(b.0.name.as_bytes()));
    sorted
}

enum Integer {
    Signed(i64),
    Unsigned(u64),
}

/// Truncates `raw` to `bytes` bytes and extends it back to 64 bits.
fn extend(raw: u64, bytes: u8, signed: bool) -> Integer {
    let bits = u32::from(bytes.clamp(1, 8)) * 8;
    let unused = 64 - bits;
    if signed {
        Integer::Signed(((raw << unused) as i64) >> unused)
    } else {
        Integer::Unsigned((raw << unused) >> unused)
    }
}

/// Reads the little-endian `u64` at the start of `bytes`. Callers pass at
/// least 8 bytes.
fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

/// Reads a NUL-terminated string from a fixed buffer, replacing invalid
/// UTF-8.
fn read_c_string(buffer: &[u8]) -> String {
    let end = buffer
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// Adds word `index` of every slot, wrapping as the kernel's adds do.
fn sum_words<'a>(slots: impl Iterator<Item = &'a [u8]>, index: usize) -> u64 {
    slots.fold(0u64, |total, slot| {
        total.wrapping_add(read_u64(&slot[index * 8..]))
    })
}

/// Adds the first `counters` words of every slot, position by position.
fn sum_counters<'a>(slots: impl Iterator<Item = &'a [u8]>, counters: usize) -> Vec<u64> {
    let mut totals = vec![0u64; counters];
    for slot in slots {
        for (index, total) in totals.iter_mut().enumerate() {
            *total = total.wrapping_add(read_u64(&slot[index * 8..]));
        }
    }
    totals
}

/// Merges `min()` (`keep` is `Less`) or `max()` (`Greater`) slots, skipping
/// slots whose flag word is zero.
fn merge_extreme<'a>(
    slots: impl Iterator<Item = &'a [u8]>,
    signed: bool,
    keep: Ordering,
) -> Option<Value> {
    let mut best: Option<u64> = None;
    for slot in slots {
        if read_u64(&slot[8..]) == 0 {
            continue;
        }
        let value = read_u64(slot);
        let replace = match best {
            None => true,
            Some(best) if signed => (value as i64).cmp(&(best as i64)) == keep,
            Some(best) => value.cmp(&best) == keep,
        };
        if replace {
            best = Some(value);
        }
    }
    best.map(|value| {
        if signed {
            Value::Int(value as i64)
        } else {
            Value::Uint(value)
        }
    })
}
