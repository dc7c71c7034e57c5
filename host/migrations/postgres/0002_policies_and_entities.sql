-- Policies, schema, template links and entities join consents in the store,
-- so that stateless replicas share one source of truth for all of them.
--
-- Keys compare byte-wise (`COLLATE "C"`), as in SQLite and Rust, so that
-- paging by uid means the same on every backend and the index serves it.

-- The counters that number policy versions and entity revisions. A write
-- claims the next number by incrementing its row inside its transaction:
-- the row stays locked until commit, so a writer on another replica waits,
-- then takes the number after. Numbers therefore commit in order, and a
-- replica that has seen N has seen everything up to N.
CREATE TABLE store_counters (
    name TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL CHECK (value >= 0)
);

INSERT INTO store_counters (name, value) VALUES ('policy_version', 0), ('entity_revision', 0);

-- Every policy version ever in force: a change (through the API, from the
-- policy directory, or a rollback to an earlier version) adds the next one,
-- and the newest is in force. A rollback repeats an earlier hash, so hashes
-- are indexed but not unique. Rows are only ever inserted.
CREATE TABLE policy_versions (
    version BIGINT NOT NULL PRIMARY KEY CHECK (version >= 1),
    hash TEXT COLLATE "C" NOT NULL,
    schema TEXT,
    schema_is_json BOOLEAN NOT NULL,
    policies TEXT NOT NULL,
    -- Template links, a JSON array (text: JSONB would reorder keys).
    links TEXT NOT NULL,
    -- The special categories, JSON, if the bundle has any.
    special TEXT,
    origin TEXT NOT NULL CHECK (origin IN ('api', 'directory', 'rollback')),
    -- The version a rollback restored, and only for a rollback.
    rolled_back_from BIGINT CHECK ((origin = 'rollback') = (rolled_back_from IS NOT NULL)),
    -- The token name, or `directory`.
    actor TEXT NOT NULL,
    comment TEXT,
    recorded_at_unix_ms BIGINT NOT NULL
);

CREATE INDEX policy_versions_by_hash ON policy_versions (hash, version);

-- The entity directory as it is now, one row per entity, keyed by its Cedar
-- uid text (`Type::"id"`). `revision` is the revision that last wrote it:
-- a write finds the rows it changed by it, to log them.
CREATE TABLE entities (
    uid TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    entity_type TEXT COLLATE "C" NOT NULL,
    -- The Cedar entity JSON of this one entity, as it was given.
    body TEXT NOT NULL,
    revision BIGINT NOT NULL CHECK (revision >= 1)
);

CREATE INDEX entities_by_type ON entities (entity_type, uid);
CREATE INDEX entities_by_revision ON entities (revision);

-- One row per write of the directory. Rows are only ever inserted.
CREATE TABLE entity_revisions (
    revision BIGINT NOT NULL PRIMARY KEY CHECK (revision >= 1),
    actor TEXT NOT NULL,
    comment TEXT,
    upserted BIGINT NOT NULL CHECK (upserted >= 0),
    deleted BIGINT NOT NULL CHECK (deleted >= 0),
    replaced_all BOOLEAN NOT NULL,
    recorded_at_unix_ms BIGINT NOT NULL
);

-- What each revision changed: the new body, or NULL for a deletion. A
-- replica catches up from the last revision it saw by replaying these in
-- order, and they are the directory's history. Rows are only ever inserted.
CREATE TABLE entity_changes (
    revision BIGINT NOT NULL CHECK (revision >= 1),
    uid TEXT COLLATE "C" NOT NULL,
    body TEXT,
    PRIMARY KEY (revision, uid)
);

CREATE FUNCTION policy_versions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'policy versions are never changed or deleted: add a new version';
END
$$;

CREATE TRIGGER policy_versions_append_only BEFORE UPDATE OR DELETE ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION policy_versions_append_only();

CREATE FUNCTION entity_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'entity revisions and changes are never changed or deleted: write a new revision';
END
$$;

CREATE TRIGGER entity_revisions_append_only BEFORE UPDATE OR DELETE ON entity_revisions
    FOR EACH ROW EXECUTE FUNCTION entity_history_append_only();

CREATE TRIGGER entity_changes_append_only BEFORE UPDATE OR DELETE ON entity_changes
    FOR EACH ROW EXECUTE FUNCTION entity_history_append_only();
