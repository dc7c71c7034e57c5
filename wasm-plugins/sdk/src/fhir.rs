//! Checks for FHIR identifiers, for plugins that read FHIR data or URLs.

/// Whether `id` is a valid FHIR logical id: 1 to 64 of `A-Z a-z 0-9 - .`.
pub fn is_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Whether `name` looks like a FHIR resource type: an upper-case ASCII letter
/// followed by up to 63 ASCII letters, as in `Observation`.
pub fn is_resource_type(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && bytes.all(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_id("obs-1.2"));
        assert!(is_id(&"a".repeat(64)));
        assert!(!is_id(&"a".repeat(65)));
        // The FHIR pattern allows ids made of dots only; a URL mapper should
        // reject `.` and `..` path segments itself.
        assert!(is_id(".."));
        for bad in ["", "a b", "a/b", "a_b", "é", "a%2F"] {
            assert!(!is_id(bad), "{bad}");
        }
    }

    #[test]
    fn resource_types() {
        assert!(is_resource_type("Observation"));
        for bad in ["", "observation", "Obs1", "Obs-x", "_history"] {
            assert!(!is_resource_type(bad), "{bad}");
        }
    }
}
