//! "Did you mean" suggestions for names that were not found.

/// Returns up to `limit` names from `candidates` that are close to `wanted`:
/// names within a small edit distance come first (closest first), then
/// names that contain it or that it contains (shortest first).
pub fn close_matches<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    limit: usize,
) -> Vec<String> {
    let max_distance = match wanted.len() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    let mut containing: Vec<&str> = Vec::new();
    let mut near: Vec<(usize, &str)> = Vec::new();
    for candidate in candidates {
        if candidate == wanted {
            continue;
        }
        let contains = candidate.contains(wanted) || (candidate.len() >= 4 && wanted.contains(candidate));
        if wanted.len() >= 4 && contains {
            containing.push(candidate);
            continue;
        }
        if candidate.len().abs_diff(wanted.len()) > max_distance {
            continue;
        }
        // Optimal string alignment counts a swap of two neighbours, the
        // most common typo (`pdi` for `pid`), as one edit.
        let distance = strsim::osa_distance(wanted, candidate);
        if distance <= max_distance {
            near.push((distance, candidate));
        }
    }
    containing.sort_by_key(|name| (name.len(), *name));
    near.sort();
    let mut matches: Vec<String> = Vec::new();
    for name in near.iter().map(|(_, name)| *name).chain(containing) {
        if matches.len() == limit {
            break;
        }
        if !matches.iter().any(|m| m == name) {
            matches.push(name.to_owned());
        }
    }
    matches
}

#[cfg(test)]
mod tests {
    use super::close_matches;

    const NAMES: &[&str] = &[
        "do_sys_openat2",
        "do_sys_open",
        "vfs_read",
        "vfs_write",
        "ksys_read",
        "__x64_sys_openat2",
    ];

    #[test]
    fn typo_is_suggested_first() {
        let matches = close_matches("do_sys_opneat2", NAMES.iter().copied(), 3);
        assert_eq!(matches.first().map(String::as_str), Some("do_sys_openat2"));
    }

    #[test]
    fn swapped_letters_count_as_one_edit() {
        let matches = close_matches("pdi", ["pid", "tid", "cpid", "comm"], 3);
        assert_eq!(matches.first().map(String::as_str), Some("pid"), "{matches:?}");
    }

    #[test]
    fn substring_finds_longer_names() {
        let matches = close_matches("openat2", NAMES.iter().copied(), 5);
        assert!(matches.contains(&"do_sys_openat2".to_owned()), "{matches:?}");
        assert!(matches.contains(&"__x64_sys_openat2".to_owned()), "{matches:?}");
    }

    #[test]
    fn unrelated_name_has_no_match() {
        assert!(close_matches("zzzzzzzzzz", NAMES.iter().copied(), 5).is_empty());
    }
}
