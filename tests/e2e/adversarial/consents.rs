//! Consents that granted more than they said, or could not be decided (findings 5, 6, 8, 10, 13, 14, 17).
