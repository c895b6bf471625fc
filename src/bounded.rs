//! Bounds for text that comes from outside the operator (Amperity's answers, a
//! resource author's fields) before it is stored in a status, an Event or a log.
//! Without them one 3 MB error message, copied into five conditions, pushes the
//! resource past the API server's request limit and the status write fails.

/// Appended to text that was cut, so a reader knows there was more.
pub const CUT_MARK: &str = "…[cut]";

/// `text` whole when it fits in `max_bytes`, else its longest prefix that ends on
/// a character boundary and leaves room for [`CUT_MARK`], followed by the mark.
/// The result is never longer than `max_bytes` (for `max_bytes` ≥ the mark).
pub fn cut(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let room = max_bytes.saturating_sub(CUT_MARK.len());
    let mut end = room.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT_MARK}", &text[..end])
}

/// [`cut`] for optional text.
pub fn cut_opt(text: Option<&str>, max_bytes: usize) -> Option<String> {
    text.map(|t| cut(t, max_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_kept_long_text_is_marked() {
        assert_eq!(cut("short", 100), "short");
        let long = "x".repeat(3_000_000);
        let c = cut(&long, 1024);
        assert_eq!(c.len(), 1024);
        assert!(c.ends_with(CUT_MARK));
    }

    #[test]
    fn multi_byte_characters_are_never_split() {
        let text = "é".repeat(1000);
        for max in 8..40 {
            let c = cut(&text, max);
            assert!(c.len() <= max, "{max}: {}", c.len());
            assert!(c.ends_with(CUT_MARK));
        }
    }

    proptest! {
        #[test]
        fn any_text_fits_its_bound_and_keeps_a_prefix(text in ".{0,300}", max in 8usize..200) {
            let c = cut(&text, max);
            prop_assert!(c.len() <= max.max(text.len().min(max)));
            if text.len() <= max {
                prop_assert_eq!(&c, &text);
            } else {
                let kept = c.strip_suffix(CUT_MARK).unwrap();
                prop_assert!(text.starts_with(kept));
            }
        }
    }
}
