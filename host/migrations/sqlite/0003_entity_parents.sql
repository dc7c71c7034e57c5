-- The parent edges of the entity directory, so that a search can ask the
-- store for "the records of patient P" (`Record in [Patient]`) with one
-- index range, instead of loading every record to look at its parents.
-- A parent is kept as the `type` and `id` of its entity reference, as the
-- entity JSON gives them; the edges of an entity are rewritten in the
-- transaction of every revision that changes or deletes it.
CREATE TABLE entity_parents (
    parent_type TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    uid TEXT NOT NULL,
    PRIMARY KEY (parent_type, parent_id, entity_type, uid)
);

CREATE INDEX entity_parents_by_uid ON entity_parents (uid);

-- The edges of the entities stored before this table existed. A parent is
-- `{"type", "id"}` or `{"__entity": {"type", "id"}}`.
INSERT OR IGNORE INTO entity_parents (parent_type, parent_id, entity_type, uid)
SELECT parent_type, parent_id, entity_type, uid FROM (
    SELECT COALESCE(json_extract(p.value, '$.__entity.type'), json_extract(p.value, '$.type')) AS parent_type,
           COALESCE(json_extract(p.value, '$.__entity.id'), json_extract(p.value, '$.id')) AS parent_id,
           e.entity_type AS entity_type, e.uid AS uid
    FROM entities e, json_each(e.body, '$.parents') p
) WHERE parent_type IS NOT NULL AND parent_id IS NOT NULL;
