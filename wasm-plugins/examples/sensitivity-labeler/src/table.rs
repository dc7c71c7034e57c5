//! The table from ICD-10 codes to sensitivity labels, read from the config.

use std::collections::BTreeSet;

/// The code systems whose codes are ICD-10 codes; bare codes count too.
const ICD10_SYSTEMS: [&str; 2] = ["http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm"];

/// The prefix of the config keys that are rules.
const KEY_PREFIX: &str = "icd10:";

/// Which codes a rule matches, on codes normalised by [`normalise`].
#[derive(Debug, PartialEq, Eq)]
enum Pattern {
    /// Codes that begin with this: a chapter letter, a category, or a code
    /// and the codes beneath it.
    Prefix(String),
    /// Codes whose 3-character category lies in this inclusive range.
    Categories(String, String),
}

impl Pattern {
    fn parse(pattern: &str) -> Result<Self, String> {
        if let Some((low, high)) = pattern.split_once('-') {
            let (low, high) = (normalise(low), normalise(high));
            if !is_category(&low) || !is_category(&high) {
                return Err("a range must join two 3-character categories, as in `F10-F19`".to_owned());
            }
            if low > high {
                return Err("the range is empty".to_owned());
            }
            return Ok(Self::Categories(low, high));
        }
        let prefix = normalise(pattern);
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("a pattern is a code or a prefix of one, such as `F` or `Z71.41`".to_owned());
        }
        Ok(Self::Prefix(prefix))
    }

    fn matches(&self, code: &str) -> bool {
        match self {
            Self::Prefix(prefix) => code.starts_with(prefix.as_str()),
            Self::Categories(low, high) => {
                code.get(..3).is_some_and(|category| (low.as_str()..=high.as_str()).contains(&category))
            }
        }
    }
}

/// Whether `code` is a 3-character category: a letter and two letters or
/// digits, as in `F10` or `C7A`.
fn is_category(code: &str) -> bool {
    let bytes = code.as_bytes();
    bytes.len() == 3 && bytes[0].is_ascii_uppercase() && bytes[1..].iter().all(u8::is_ascii_alphanumeric)
}

/// A code without dots or surrounding space, in upper case.
fn normalise(code: &str) -> String {
    code.trim().chars().filter(|&c| c != '.').map(|c| c.to_ascii_uppercase()).collect()
}

/// The ICD-10 code of a `codes` entry (`system|code` or a bare code), or
/// `None` if it belongs to another system.
fn icd10_code(entry: &str) -> Option<String> {
    match entry.split_once('|') {
        Some((system, code)) => ICD10_SYSTEMS.contains(&system).then(|| normalise(code)),
        None => Some(normalise(entry)),
    }
}

/// The rules: each pattern with its labels.
#[derive(Debug)]
pub struct LabelTable {
    rules: Vec<(Pattern, Vec<String>)>,
}

impl LabelTable {
    /// Reads the `icd10:` keys of the config; other keys are ignored.
    pub fn from_config(entries: &[(String, String)]) -> Result<Self, String> {
        let mut rules = Vec::new();
        for (key, value) in entries {
            let Some(pattern) = key.strip_prefix(KEY_PREFIX) else { continue };
            let pattern = Pattern::parse(pattern).map_err(|error| format!("config key `{key}`: {error}"))?;
            let labels: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|label| !label.is_empty())
                .map(str::to_owned)
                .collect();
            if labels.is_empty() {
                return Err(format!("config key `{key}` names no label"));
            }
            rules.push((pattern, labels));
        }
        Ok(Self { rules })
    }

    /// The labels of every rule that matches one of the ICD-10 codes among
    /// `codes`.
    pub fn labels_for<'a>(&self, codes: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let codes: Vec<String> = codes.into_iter().filter_map(icd10_code).collect();
        self.rules
            .iter()
            .filter(|(pattern, _)| codes.iter().any(|code| pattern.matches(code)))
            .flat_map(|(_, labels)| labels.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str)]) -> Result<LabelTable, String> {
        let entries: Vec<_> = entries.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
        LabelTable::from_config(&entries)
    }

    fn labels(table: &LabelTable, codes: &[&str]) -> Vec<String> {
        table.labels_for(codes.iter().copied()).into_iter().collect()
    }

    #[test]
    fn prefixes_codes_and_ranges() {
        let table = table(&[
            ("icd10:F", "PSY"),
            ("icd10:F10-F19", "ETH"),
            ("icd10:B20-B24", "HIV"),
            ("icd10:Z71.41", "ETH, SUD"),
            ("unrelated", "x"),
        ])
        .unwrap();
        assert_eq!(labels(&table, &["F32.1"]), ["PSY"]);
        assert_eq!(labels(&table, &["F10"]), ["ETH", "PSY"]);
        assert_eq!(labels(&table, &["f19.20"]), ["ETH", "PSY"]);
        assert_eq!(labels(&table, &["F20"]), ["PSY"]);
        assert_eq!(labels(&table, &["B20"]), ["HIV"]);
        assert_eq!(labels(&table, &["B24"]), ["HIV"]);
        assert_eq!(labels(&table, &["B25"]), Vec::<String>::new());
        assert_eq!(labels(&table, &["B19.9"]), Vec::<String>::new());
        assert_eq!(labels(&table, &["Z71.41"]), ["ETH", "SUD"]);
        assert_eq!(labels(&table, &["Z7141"]), ["ETH", "SUD"]);
        assert_eq!(labels(&table, &["Z71.4"]), Vec::<String>::new());
        assert_eq!(labels(&table, &["Z71.42"]), Vec::<String>::new());
        assert_eq!(labels(&table, &["B21", "Z71.41"]), ["ETH", "HIV", "SUD"]);
    }

    #[test]
    fn only_icd10_systems() {
        let table = table(&[("icd10:F", "PSY")]).unwrap();
        assert_eq!(labels(&table, &["http://hl7.org/fhir/sid/icd-10|F32"]), ["PSY"]);
        assert_eq!(labels(&table, &["http://hl7.org/fhir/sid/icd-10-cm|F32.A"]), ["PSY"]);
        assert_eq!(labels(&table, &["http://snomed.info/sct|F32"]), Vec::<String>::new());
        assert_eq!(labels(&table, &["|F32"]), Vec::<String>::new());
    }

    #[test]
    fn rejects_bad_rules() {
        for key in ["icd10:", "icd10:F1-F", "icd10:F19-F10", "icd10:F 3", "icd10:10-19", "icd10:F10-F19-F29"]
        {
            let error = table(&[(key, "PSY")]).unwrap_err();
            assert!(error.contains(key), "{key}: {error}");
        }
        assert!(table(&[("icd10:F", " , ")]).unwrap_err().contains("names no label"));
        assert!(table(&[]).unwrap().labels_for(["F10"]).is_empty());
    }
}
