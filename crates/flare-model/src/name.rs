use crate::{Error, Result};

/// Longest DNS-1123 label.
const MAX_NAME_LEN: usize = 63;

/// Checks that `name` is a DNS-1123 label: 1–63 characters of lowercase
/// letters, digits and `-`, starting with a letter and ending with a letter
/// or digit. `what` names the thing in the error ("function name").
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "invalid {what} \"{name}\": {why} (use 1-{MAX_NAME_LEN} lowercase letters, digits or '-', starting with a letter)"
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is too long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("it has a character other than a-z, 0-9 or '-'");
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return bad("it does not start with a letter");
    }
    if name.ends_with('-') {
        return bad("it ends with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for name in ["a", "hello", "hello-world-2", &"a".repeat(63)] {
            assert!(validate_name("function name", name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for name in [
            "",
            "Hello",
            "1abc",
            "-abc",
            "abc-",
            "a_b",
            "a.b",
            "a/b",
            "héllo",
            &"a".repeat(64),
        ] {
            let err = validate_name("function name", name).unwrap_err();
            assert_eq!(err.code, crate::ErrorCode::InvalidArgument, "{name}");
            assert!(err.message.contains("function name"), "{}", err.message);
        }
    }
}
