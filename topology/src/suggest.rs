//! "did you mean ...?" hints.

/// The candidate closest to `name`, if any is close enough to be a likely typo.
pub(crate) fn closest<'c>(
    name: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            let other = c.to_lowercase();
            let score = if other == lower {
                2.0
            } else {
                strsim::normalized_damerau_levenshtein(&lower, &other)
                    .max(strsim::jaro_winkler(&lower, &other) - 0.25)
            };
            (score, c)
        })
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A hint for a name that is not among `candidates`: the closest one, else the list of them
/// (when short enough to read), else `fallback`.
pub(crate) fn hint(name: &str, candidates: &[&str], fallback: impl Into<String>) -> String {
    if let Some(best) = closest(name, candidates.iter().copied()) {
        return format!("did you mean `{best}`?");
    }
    match candidates {
        [] => {}
        [only] => return format!("expected `{only}`"),
        _ if candidates.len() <= 12 => return format!("expected one of {}", list(candidates)),
        _ => {}
    }
    fallback.into()
}

/// `a`, `b` and `c`
pub(crate) fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, init)) => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_not_strangers() {
        let types = ["PARCEL_SHIPPED", "PARCEL_DELIVERED", "ORDER_CREATED"];
        assert_eq!(closest("PARCEL_SHIPED", types), Some("PARCEL_SHIPPED"));
        assert_eq!(closest("parcel_shipped", types), Some("PARCEL_SHIPPED"));
        assert_eq!(closest("SHOE_RETURNED", types), None);
        assert_eq!(
            closest("shrads", ["name", "shards", "workers"]),
            Some("shards")
        );
        assert_eq!(closest("pth", ["kind", "path", "type_field"]), Some("path"));
    }

    #[test]
    fn hints_list_the_choices_when_nothing_is_close() {
        assert_eq!(
            hint("sftp", &["file", "stdout"], "x"),
            "expected one of `file` or `stdout`"
        );
        assert_eq!(
            hint("stdot", &["file", "stdout"], "x"),
            "did you mean `stdout`?"
        );
        assert_eq!(hint("zzz", &[], "declare it"), "declare it");
        assert_eq!(hint("zzz", &["paid"], "x"), "expected `paid`");
        assert_eq!(list(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
