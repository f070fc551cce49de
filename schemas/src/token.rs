//! Validation of NATS subject tokens used inside choreo subjects.

/// Longest accepted subject token (correlation ids, actor names, type tokens).
pub const MAX_TOKEN_LEN: usize = 128;

/// Why a string cannot be used as a subject token.
pub(crate) fn token_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("is empty".to_owned());
    }
    if s.len() > MAX_TOKEN_LEN {
        return Some(format!(
            "is {} bytes long, the limit is {MAX_TOKEN_LEN}",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Some(format!(
            "contains {c:?}; only ASCII letters, digits, '-' and '_' are allowed"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_tokens_and_rejects_subject_syntax() {
        assert!(token_problem("order-42_a").is_none());
        for bad in [
            "",
            "a.b",
            "a b",
            "*",
            ">",
            "é",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(token_problem(bad).is_some(), "{bad:?} should be rejected");
        }
    }
}
