-- Every version of every consent. Rows are only ever inserted: a change to a
-- consent adds its next version, so what was in force at any time stays on
-- record. The trigger below refuses any update or delete.
--
-- Tables are created unqualified, in the first schema of `search_path`, so
-- that one database can hold several independent stores.
--
-- Ids and patients compare byte-wise (`COLLATE "C"`), as in SQLite and Rust,
-- so "ordered by id" means the same on every backend and the index serves it.
CREATE TABLE consent_versions (
    id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    patient TEXT COLLATE "C" NOT NULL,
    status TEXT NOT NULL,
    fhir_version TEXT NOT NULL,
    -- The FHIR Consent resource as compact JSON, exactly as it was stored
    -- (JSONB would reorder keys and refuse `\u0000`).
    body TEXT NOT NULL,
    recorded_at_unix_ms BIGINT NOT NULL,
    PRIMARY KEY (id, version)
);

-- The newest version of each consent and its patient, changed in the same
-- transaction as the version is added. Indexed by patient so that "the
-- consents in force for patient P" is one index range, however many
-- consents the store holds.
CREATE TABLE consent_heads (
    id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL CHECK (version >= 1),
    patient TEXT COLLATE "C" NOT NULL
);

CREATE INDEX consent_heads_by_patient ON consent_heads (patient, id);

CREATE FUNCTION consent_versions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent versions are never changed or deleted: add a new version';
END
$$;

CREATE TRIGGER consent_versions_append_only BEFORE UPDATE OR DELETE ON consent_versions
    FOR EACH ROW EXECUTE FUNCTION consent_versions_append_only();
