//! `${VAR}` and `${VAR:-default}` substitution inside string values.
//!
//! `$$` is a literal `$`; a `$` followed by anything else is kept as it is. As in the shell,
//! `${VAR:-default}` uses the default when `VAR` is unset or empty.

use std::ops::Range;

/// A `${...}` that could not be substituted, with its byte range in the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unresolved {
    pub range: Range<usize>,
    pub message: String,
    pub hint: String,
}

/// Substitutes every `${VAR}` and `${VAR:-default}` in `text`, or reports every one that could
/// not be substituted.
pub(crate) fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<Unresolved>> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let at = text.len() - rest.len() + dollar;
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push(Unresolved {
                    range: at..text.len(),
                    message: "unterminated `${` in string".into(),
                    hint: "close it with `}`, or write `$$` for a literal `$`".into(),
                });
                rest = "";
                break;
            };
            let range = at..at + 2 + close + 1;
            let inner = &body[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_variable_name(name) {
                errors.push(Unresolved {
                    range,
                    message: format!("`${{{inner}}}` is not a variable reference"),
                    hint: "write `${VAR}` or `${VAR:-default}` with VAR made of letters, digits \
                           and `_`; write `$$` for a literal `$`"
                        .into(),
                });
            } else {
                match (env(name), default) {
                    (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                    (Some(value), _) => out.push_str(&value),
                    (None, Some(default)) => out.push_str(default),
                    (None, None) => errors.push(Unresolved {
                        range,
                        message: format!("environment variable `{name}` is not set"),
                        hint: format!("set {name} or write ${{{name}:-default}}"),
                    }),
                }
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "OUT" => Some("/tmp/out".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_values_and_defaults() {
        assert_eq!(
            substitute("${OUT}/a.jsonl", &env).unwrap(),
            "/tmp/out/a.jsonl"
        );
        assert_eq!(substitute("${NOPE:-out}/a", &env).unwrap(), "out/a");
        assert_eq!(substitute("${OUT:-x}", &env).unwrap(), "/tmp/out");
        assert_eq!(substitute("${EMPTY:-d}|${EMPTY}|", &env).unwrap(), "d||");
        assert_eq!(substitute("${NOPE:-}", &env).unwrap(), "");
    }

    #[test]
    fn dollars_are_literal_unless_they_open_a_reference() {
        assert_eq!(
            substitute("$$OUT costs $5 $", &env).unwrap(),
            "$OUT costs $5 $"
        );
        assert_eq!(substitute("$${OUT}", &env).unwrap(), "${OUT}");
    }

    #[test]
    fn reports_every_unresolved_reference_with_its_range() {
        let errors = substitute("a${X}b${OUT}${Y:-1}${Z}", &env).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].range, 1..5);
        assert_eq!(errors[0].hint, "set X or write ${X:-default}");
        assert_eq!(errors[1].range, 19..23);
        let errors = substitute("x${1A} ${oops", &env).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].message.contains("not a variable reference"));
        assert_eq!(errors[1].range, 7..13);
        assert!(errors[1].message.contains("unterminated"));
    }
}
