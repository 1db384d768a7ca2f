//! Owns redaction of passwords and tokens: [`Secret`] never prints its value; it does not fetch or refresh credentials.

use std::fmt;

/// A password or token that must never reach logs or error messages.
///
/// `Debug` prints `Secret("...")`; there is deliberately no `Display` and no
/// `Serialize`, so the only way to the value is an explicit [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The raw value; call only where it is written to the upstream connection.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"...\")")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_is_redacted_and_expose_returns_value() {
        for value in ["hunter2", "", "a \"quoted\" token"] {
            let secret = Secret::new(value);
            assert_eq!(format!("{secret:?}"), r#"Secret("...")"#);
            assert_eq!(format!("{secret:#?}"), r#"Secret("...")"#);
            assert_eq!(secret.clone().expose(), value);
        }
    }
}
