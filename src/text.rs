//! Text that came from the network, made safe to log or to put in an error.

/// `s` cut to `max_chars` characters, with every control character and
/// every character that can reorder or hide text (bidi controls, zero-width
/// and line/paragraph separators) escaped as `\u{..}`: a remote string can
/// neither forge a log line nor disguise itself.
pub(crate) fn remote(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 2));
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() || is_invisible(c) || c == '\\' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' // zero-width, LRM, RLM
        | '\u{2028}' | '\u{2029}' // line / paragraph separator
        | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' // bidi isolates
        | '\u{FEFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::remote;

    #[test]
    fn control_and_invisible_characters_are_escaped_and_length_is_bounded() {
        assert_eq!(remote("invalid_client", 64), "invalid_client");
        assert_eq!(remote("a\nb\r\u{1b}[31m", 64), "a\\u{a}b\\u{d}\\u{1b}[31m");
        assert_eq!(remote("x\u{202E}y\u{2028}", 64), "x\\u{202e}y\\u{2028}");
        assert_eq!(
            remote("\\u{a}", 64),
            "\\u{5c}u{a}",
            "an escape cannot be faked"
        );
        assert_eq!(remote("abcdef", 3), "abc…");
        assert_eq!(remote("é日本", 64), "é日本");
        assert!(!remote(&"\n".repeat(10_000), 100).contains('\n'));
        assert!(remote(&"\n".repeat(10_000), 100).len() <= 100 * 8 + 3);
    }
}
