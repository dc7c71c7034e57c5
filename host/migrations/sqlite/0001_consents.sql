-- Every version of every consent. Rows are only ever inserted: a change to a
-- consent adds its next version, so what was in force at any time stays on
-- record. The triggers below refuse any update or delete.
CREATE TABLE consent_versions (
    id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    patient TEXT NOT NULL,
    status TEXT NOT NULL,
    fhir_version TEXT NOT NULL,
    -- The FHIR Consent resource as compact JSON, exactly as it was stored.
    body TEXT NOT NULL,
    recorded_at_unix_ms INTEGER NOT NULL,
    PRIMARY KEY (id, version)
);

-- The newest version of each consent and its patient, changed in the same
-- transaction as the version is added. Indexed by patient so that "the
-- consents in force for patient P" is one index range, however many
-- consents the store holds.
CREATE TABLE consent_heads (
    id TEXT NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version >= 1),
    patient TEXT NOT NULL
);

CREATE INDEX consent_heads_by_patient ON consent_heads (patient, id);

CREATE TRIGGER consent_versions_never_updated BEFORE UPDATE ON consent_versions
BEGIN
    SELECT RAISE(ABORT, 'consent versions are never changed: add a new version');
END;

CREATE TRIGGER consent_versions_never_deleted BEFORE DELETE ON consent_versions
BEGIN
    SELECT RAISE(ABORT, 'consent versions are never deleted: add a new version');
END;
