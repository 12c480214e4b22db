-- lightstore catalogue, migration 3: metrics.
--
-- Numbers a realizer records about its output (`build_metric(b, "loss",
-- 0.12)`), or that are attached later (`Store.set_metric`). They are part of
-- the record, not of the content hash: the same RRef may carry different
-- metrics in two stores. They travel with the realization in archives and
-- remote caches. Like the rest of history (migration 2) they outlive garbage
-- collection: a metric belongs to a realization record, present
-- (`realizations`) or collected (`collected_realizations`), and goes only
-- when the last record of its realization is forgotten.

-- One value per (realization, name). Values are finite integers or reals;
-- the column has no declared type so that an integer stays an integer.
CREATE TABLE metrics (
  rref      TEXT NOT NULL,                          -- in realizations or collected_realizations
  name      TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
  value     NOT NULL CHECK (typeof(value) IN ('integer', 'real')),
  recorded  REAL NOT NULL,                          -- when it was recorded or last set
  PRIMARY KEY (rref, name)
) WITHOUT ROWID;
-- "Runs with metric X, best first" walks this index.
CREATE INDEX metrics_by_name ON metrics (name, value);

-- A foreign key cannot point at either of two tables: these triggers keep the
-- same promise. A metric needs a record of its realization...
CREATE TRIGGER metrics_need_a_record BEFORE INSERT ON metrics
WHEN NOT EXISTS (SELECT 1 FROM realizations WHERE rref = NEW.rref)
 AND NOT EXISTS (SELECT 1 FROM collected_realizations WHERE rref = NEW.rref)
BEGIN
  SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: metrics of an unknown realization');
END;

-- ...and goes when the last record goes (gc copies a realization to
-- collected_realizations before deleting it, so collecting keeps metrics;
-- `forget` deleting the collected record removes them).
CREATE TRIGGER metrics_go_with_the_last_record_present AFTER DELETE ON realizations
WHEN NOT EXISTS (SELECT 1 FROM collected_realizations WHERE rref = OLD.rref)
BEGIN
  DELETE FROM metrics WHERE rref = OLD.rref;
END;
CREATE TRIGGER metrics_go_with_the_last_record_collected AFTER DELETE ON collected_realizations
WHEN NOT EXISTS (SELECT 1 FROM realizations WHERE rref = OLD.rref)
 AND NOT EXISTS (SELECT 1 FROM collected_realizations WHERE rref = OLD.rref)
BEGIN
  DELETE FROM metrics WHERE rref = OLD.rref;
END;

-- The history view with each record's metrics as one JSON object
-- ({"loss": 0.12}; '{}' when it has none). A companion of `history`, not a
-- redefinition, so it follows whatever `history` is (present and collected
-- records; `WHERE collected IS NULL` for what is in the store):
--   SELECT rref, json_extract(config, '$.lr') AS lr, json_extract(metrics, '$.loss') AS loss
--   FROM runs WHERE name = 'train' AND collected IS NULL ORDER BY loss
CREATE VIEW runs AS
SELECT
  h.*,
  coalesce(
    (SELECT json_group_object(m.name, m.value) FROM metrics AS m WHERE m.rref = h.rref),
    '{}'
  ) AS metrics
FROM history AS h;
