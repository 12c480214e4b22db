-- lightstore catalogue, migration 3: metrics.
--
-- Numbers a realizer records about its output (`build_metric(b, "loss",
-- 0.12)`), or that are attached later (`Store.set_metric`). They are part of
-- the record, not of the content hash: the same RRef may carry different
-- metrics in two stores. They travel with the realization in archives.

-- One value per (realization, name). Values are finite integers or reals;
-- the column has no declared type so that an integer stays an integer.
-- No foreign key: like the rest of the record, metrics outlive gc (the rref
-- is then in collected_realizations); `forget` deletes those of forgotten
-- records.
CREATE TABLE metrics (
  rref      TEXT NOT NULL,                          -- in realizations or collected_realizations
  name      TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
  value     NOT NULL CHECK (typeof(value) IN ('integer', 'real')),
  recorded  REAL NOT NULL,                          -- when it was recorded or last set
  PRIMARY KEY (rref, name)
) WITHOUT ROWID;
-- What the missing foreign key would check: a metric belongs to a realization
-- that is, or was, in the store.
CREATE TRIGGER metrics_of_known_realizations BEFORE INSERT ON metrics
WHEN NOT EXISTS (SELECT 1 FROM realizations WHERE rref = NEW.rref)
  AND NOT EXISTS (SELECT 1 FROM collected_realizations WHERE rref = NEW.rref)
BEGIN
  SELECT RAISE(ABORT, 'metrics: no such realization');
END;
-- "Runs with metric X, best first" walks this index.
CREATE INDEX metrics_by_name ON metrics (name, value);

-- The history view with each realization's metrics as one JSON object
-- ({"loss": 0.12}; '{}' when it has none). A companion of `history`, not a
-- redefinition, so it follows whatever `history` is:
--   SELECT rref, json_extract(config, '$.lr') AS lr, json_extract(metrics, '$.loss') AS loss
--   FROM runs WHERE name = 'train' ORDER BY loss
CREATE VIEW runs AS
SELECT
  h.*,
  coalesce(
    (SELECT json_group_object(m.name, m.value) FROM metrics AS m WHERE m.rref = h.rref),
    '{}'
  ) AS metrics
FROM history AS h;
