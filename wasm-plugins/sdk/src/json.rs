//! Serialising the JSON handed back to the host.

use core::fmt::{self, Write as _};

use serde_json::Value;

/// Serialises `value` into a string allocated once, at its final size.
///
/// A plugin's memory is small (16 MiB by default) and a buffer that grows by
/// doubling can need three times the output's size while it copies; this
/// needs the output's size only, besides the value itself, at the cost of
/// serialising twice.
pub fn to_string(value: &Value) -> String {
    /// Counts the bytes written to it.
    struct Counter(usize);

    impl fmt::Write for Counter {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            self.0 += text.len();
            Ok(())
        }
    }

    let mut counter = Counter(0);
    // Neither writer fails, and `Value`'s `Display` does not either.
    let _ = write!(counter, "{value}");
    let mut json = String::with_capacity(counter.0);
    let _ = write!(json, "{value}");
    json
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn allocates_exactly() {
        let value = json!({"blob": "a".repeat(1000), "n": [1, 2.5, null], "s": "é\"\n"});
        let json = to_string(&value);
        assert_eq!(json, value.to_string());
        assert_eq!(json.capacity(), json.len());
    }
}
