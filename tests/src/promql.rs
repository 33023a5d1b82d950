//! The metric names a PromQL expression selects, read by a small
//! tokenizer: it skips strings, label matchers (`{…}`), ranges and
//! subqueries (`[…]`), label lists after `by`/`without`/`on`/`ignoring`/
//! `group_left`/`group_right`, numbers and durations, keywords and binary
//! operators, and identifiers called as functions or aggregations.

/// Aggregation operators and keywords that are never metric names.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "offset",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` selects, in order of appearance, each once.
pub fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_to(&chars, i, '}');
        } else if c == '[' {
            i = skip_to(&chars, i, ']');
        } else if c == '#' {
            i = skip_to(&chars, i, '\n');
        } else if c.is_ascii_digit() || (c == '.' && next_is_digit(&chars, i)) {
            i = skip_number(&chars, i);
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let after = skip_space(&chars, i);
            let called = chars.get(after) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) && called {
                i = skip_to(&chars, after, ')');
            } else if !called && !is_keyword(&word) && !names.contains(&word) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// PromQL's keywords are case-insensitive (`SUM`, `Inf`).
fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(char::is_ascii_digit)
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

/// Past a quoted string starting at `i` (backslash escapes in `"` and `'`).
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        if chars[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// Past the first `close` after `i`, skipping strings on the way.
fn skip_to(chars: &[char], i: usize, close: char) -> usize {
    let mut j = i + 1;
    while j < chars.len() && chars[j] != close {
        if chars[j] == '"' || chars[j] == '\'' || chars[j] == '`' {
            j = skip_string(chars, j);
        } else {
            j += 1;
        }
    }
    j + 1
}

/// Past a number: decimal, hex, exponent, or a duration such as `5m`.
fn skip_number(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
        let exponent_sign =
            matches!(chars[i], 'e' | 'E') && matches!(chars.get(i + 1), Some('+') | Some('-'));
        i += if exponent_sign { 2 } else { 1 };
    }
    i
}

#[cfg(test)]
mod tests {
    use super::metric_names;

    fn check(expr: &str, expect: &[&str]) {
        assert_eq!(metric_names(expr), expect, "{expr}");
    }

    #[test]
    fn metric_names_skip_functions_keywords_matchers_and_strings() {
        check("up", &["up"]);
        check(r#"up{job="yizhan-hub"} == 0"#, &["up"]);
        check(
            r#"sum by (center, kind) (rate(yizhan_messages_received_total{center=~"$center", kind!="x{y}"}[$__rate_interval]))"#,
            &["yizhan_messages_received_total"],
        );
        check(
            "histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket[5m])))",
            &["a_seconds_bucket"],
        );
        check(
            "sum without (instance) (a) / on (center) group_left (room) b",
            &["a", "b"],
        );
        check("a > bool 0.9 and b unless c or d", &["a", "b", "c", "d"]);
        check("c - time() < 30 * 86400 + 1e3 + 0x1F + .5", &["c"]);
        check("max_over_time(a[5m:30s]) offset 1h", &["a"]);
        check("count(a) by (center) + count(a)", &["a"]);
        check("clamp_min(x, 1) / sum (y)", &["x", "y"]);
        check(r#"label_replace(a, "dst", "$1", "src", "(.*)")"#, &["a"]);
        check("a:recorded:rate5m + nan + Inf", &["a:recorded:rate5m"]);
        check(
            "# a comment naming fake_metric\nreal_metric",
            &["real_metric"],
        );
        check("1.5e-3 * x", &["x"]);
    }
}
