-- Changes to the rules (policies, schema, links, entities, consents,
-- plugins) are recorded in the same chain as decisions, so they are rows of
-- the same table. A change row has no decision: it carries its `change_id`
-- and `change_kind` instead, and an empty `patients`, so a patient's report
-- never finds it.
--
-- The new columns are nullable without a default (no rewrite) and the check
-- is `NOT VALID` (existing rows, all decisions, are not scanned; new rows
-- are checked). Building the two partial indexes reads the table once each;
-- they hold only change rows, so they stay small.
ALTER TABLE consentry_audit_log ALTER COLUMN decision_id DROP NOT NULL;
ALTER TABLE consentry_audit_log ADD COLUMN change_id UUID;
ALTER TABLE consentry_audit_log ADD COLUMN change_kind TEXT;
ALTER TABLE consentry_audit_log ADD CONSTRAINT consentry_audit_log_decision_or_change
    CHECK ((decision_id IS NULL) = (change_id IS NOT NULL)
           AND (change_id IS NULL) = (change_kind IS NULL)) NOT VALID;

CREATE UNIQUE INDEX consentry_audit_log_change_id ON consentry_audit_log (change_id)
    WHERE change_id IS NOT NULL;

-- "Every change since T", for auditors: change rows only, in chain order.
CREATE INDEX consentry_audit_log_changes ON consentry_audit_log (seq) WHERE change_id IS NOT NULL;
