-- The decision log shared by every replica: one hash chain in one table.
--
-- `line` is the record exactly as the JSON Lines sink would write it (the
-- canonical form of `audit/chain.rs`), so `consentry audit verify` checks a
-- table and a directory the same way; the other columns repeat fields of the
-- line so that "what was decided about patient P, and when" is an index
-- lookup. Verification checks that they still agree with the line.
--
-- Tables are created unqualified, in the first schema of `search_path`, so
-- that one database can hold several independent logs. Grant the sidecar
-- INSERT and SELECT only: rows are never updated or deleted.
CREATE TABLE consentry_audit_log (
    seq BIGINT PRIMARY KEY CHECK (seq >= 0),
    decision_id UUID NOT NULL UNIQUE,
    at TIMESTAMPTZ NOT NULL,
    patients TEXT[] NOT NULL,
    line TEXT NOT NULL
);

-- "Every decision about patient P": `patients @> ARRAY[P]`.
CREATE INDEX consentry_audit_log_patients ON consentry_audit_log USING GIN (patients);

-- Time ranges, for reports and retention.
CREATE INDEX consentry_audit_log_at ON consentry_audit_log (at);
