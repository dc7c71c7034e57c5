-- Policies, schema, template links and entities join consents in the store,
-- so that stateless replicas share one source of truth for all of them.

-- The counters that number policy versions and entity revisions. A write
-- claims the next number by incrementing its row inside its transaction
-- (SQLite serialises writers anyway; the PostgreSQL store needs the row lock).
CREATE TABLE store_counters (
    name TEXT NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL CHECK (value >= 0)
);

INSERT INTO store_counters (name, value) VALUES ('policy_version', 0), ('entity_revision', 0);

-- Every policy version ever in force: a change (through the API, from the
-- policy directory, or a rollback to an earlier version) adds the next one,
-- and the newest is in force. A rollback repeats an earlier hash, so hashes
-- are indexed but not unique. Rows are only ever inserted.
CREATE TABLE policy_versions (
    version INTEGER NOT NULL PRIMARY KEY CHECK (version >= 1),
    hash TEXT NOT NULL,
    schema TEXT,
    schema_is_json BOOLEAN NOT NULL CHECK (schema_is_json IN (0, 1)),
    policies TEXT NOT NULL,
    -- Template links, a JSON array.
    links TEXT NOT NULL,
    -- The special categories, JSON, if the bundle has any.
    special TEXT,
    origin TEXT NOT NULL CHECK (origin IN ('api', 'directory', 'rollback')),
    -- The version a rollback restored, and only for a rollback.
    rolled_back_from INTEGER CHECK ((origin = 'rollback') = (rolled_back_from IS NOT NULL)),
    -- The token name, or `directory`.
    actor TEXT NOT NULL,
    comment TEXT,
    recorded_at_unix_ms INTEGER NOT NULL
);

CREATE INDEX policy_versions_by_hash ON policy_versions (hash, version);

-- The entity directory as it is now, one row per entity, keyed by its Cedar
-- uid text (`Type::"id"`). `revision` is the revision that last wrote it:
-- a write finds the rows it changed by it, to log them.
CREATE TABLE entities (
    uid TEXT NOT NULL PRIMARY KEY,
    entity_type TEXT NOT NULL,
    -- The Cedar entity JSON of this one entity, as it was given.
    body TEXT NOT NULL,
    revision INTEGER NOT NULL CHECK (revision >= 1)
);

CREATE INDEX entities_by_type ON entities (entity_type, uid);
CREATE INDEX entities_by_revision ON entities (revision);

-- One row per write of the directory. Rows are only ever inserted.
CREATE TABLE entity_revisions (
    revision INTEGER NOT NULL PRIMARY KEY CHECK (revision >= 1),
    actor TEXT NOT NULL,
    comment TEXT,
    upserted INTEGER NOT NULL CHECK (upserted >= 0),
    deleted INTEGER NOT NULL CHECK (deleted >= 0),
    replaced_all BOOLEAN NOT NULL CHECK (replaced_all IN (0, 1)),
    recorded_at_unix_ms INTEGER NOT NULL
);

-- What each revision changed: the new body, or NULL for a deletion. A
-- replica catches up from the last revision it saw by replaying these in
-- order, and they are the directory's history. Rows are only ever inserted.
CREATE TABLE entity_changes (
    revision INTEGER NOT NULL CHECK (revision >= 1),
    uid TEXT NOT NULL,
    body TEXT,
    PRIMARY KEY (revision, uid)
);

CREATE TRIGGER policy_versions_never_updated BEFORE UPDATE ON policy_versions
BEGIN
    SELECT RAISE(ABORT, 'policy versions are never changed: add a new version');
END;

CREATE TRIGGER policy_versions_never_deleted BEFORE DELETE ON policy_versions
BEGIN
    SELECT RAISE(ABORT, 'policy versions are never deleted: add a new version');
END;

CREATE TRIGGER entity_revisions_never_updated BEFORE UPDATE ON entity_revisions
BEGIN
    SELECT RAISE(ABORT, 'entity revisions are never changed: write a new revision');
END;

CREATE TRIGGER entity_revisions_never_deleted BEFORE DELETE ON entity_revisions
BEGIN
    SELECT RAISE(ABORT, 'entity revisions are never deleted: write a new revision');
END;

CREATE TRIGGER entity_changes_never_updated BEFORE UPDATE ON entity_changes
BEGIN
    SELECT RAISE(ABORT, 'entity changes are never changed: write a new revision');
END;

CREATE TRIGGER entity_changes_never_deleted BEFORE DELETE ON entity_changes
BEGIN
    SELECT RAISE(ABORT, 'entity changes are never deleted: write a new revision');
END;
