-- lightstore catalogue, version 6: non-finite metrics, metric series (curves), tags and
-- notes.
--
-- A diverged run is a result: its loss may be NaN or infinite, and is recorded as such.
-- SQLite keeps infinities as REALs (9e999 and -9e999 in SQL) but has no NaN: a NaN
-- bound to a statement becomes NULL. So a metric's value is NULL exactly when it is NaN.
-- A metric may also be a series over integer steps (a loss per epoch): its steps are
-- in `metric_steps`, and its row in `metrics` holds the value at its last step (and
-- that step), so that every query of one number per metric keeps working.
-- Tags (name = text) and notes (free text) are attached to realizations. Like metrics
-- they are part of the record, not of any hash, travel with the realization, outlive
-- gc and go with `forget`.

-- `metrics` again, with NULL (NaN) allowed and the step of a series' last value. The
-- table is rebuilt (SQLite cannot change a CHECK); the view over it goes first.
DROP VIEW runs;
CREATE TABLE metrics_v6 (
  rref      TEXT NOT NULL,                          -- in realizations or collected_realizations
  name      TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
  -- An integer or a real (infinities included); NULL is NaN.
  value     CHECK (value IS NULL OR typeof(value) IN ('integer', 'real')),
  step      INTEGER CHECK (step IS NULL OR typeof(step) = 'integer'),  -- a series' last step
  recorded  REAL NOT NULL,                          -- when it was recorded or last set
  PRIMARY KEY (rref, name)
) WITHOUT ROWID;
INSERT INTO metrics_v6 (rref, name, value, step, recorded)
  SELECT rref, name, value, NULL, recorded FROM metrics;
DROP TABLE metrics;
ALTER TABLE metrics_v6 RENAME TO metrics;
CREATE TRIGGER metrics_of_known_realizations BEFORE INSERT ON metrics
WHEN NOT EXISTS (SELECT 1 FROM realizations WHERE rref = NEW.rref)
  AND NOT EXISTS (SELECT 1 FROM collected_realizations WHERE rref = NEW.rref)
BEGIN
  SELECT RAISE(ABORT, 'metrics: no such realization');
END;
CREATE INDEX metrics_by_name ON metrics (name, value);

-- The values of a series, one row per step. Its row in `metrics` is its parent: deleting
-- that row deletes the series (`forget`, `remove_metric`).
CREATE TABLE metric_steps (
  rref      TEXT NOT NULL,
  name      TEXT NOT NULL,
  step      INTEGER NOT NULL CHECK (typeof(step) = 'integer'),
  value     CHECK (value IS NULL OR typeof(value) IN ('integer', 'real')),  -- NULL is NaN
  recorded  REAL NOT NULL,
  PRIMARY KEY (rref, name, step),
  FOREIGN KEY (rref, name) REFERENCES metrics (rref, name) ON DELETE CASCADE
) WITHOUT ROWID;

-- Tags: one text value (often empty) per (realization, name), with who set it and when.
CREATE TABLE tags (
  rref      TEXT NOT NULL,                          -- in realizations or collected_realizations
  name      TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
  value     TEXT NOT NULL CHECK (typeof(value) = 'text'),
  recorded  REAL NOT NULL,                          -- when it was set
  author    TEXT,                                   -- who set it: user@host
  PRIMARY KEY (rref, name)
) WITHOUT ROWID;
CREATE TRIGGER tags_of_known_realizations BEFORE INSERT ON tags
WHEN NOT EXISTS (SELECT 1 FROM realizations WHERE rref = NEW.rref)
  AND NOT EXISTS (SELECT 1 FROM collected_realizations WHERE rref = NEW.rref)
BEGIN
  SELECT RAISE(ABORT, 'tags: no such realization');
END;
-- "Runs tagged baseline" (and "tagged status=diverged") walk this index.
CREATE INDEX tags_by_name ON tags (name, value);

-- Notes: free text about a realization, as many as wanted, oldest first.
CREATE TABLE notes (
  id        INTEGER PRIMARY KEY,
  rref      TEXT NOT NULL,                          -- in realizations or collected_realizations
  text      TEXT NOT NULL CHECK (typeof(text) = 'text' AND length(text) >= 1),
  recorded  REAL NOT NULL,                          -- when it was written
  author    TEXT                                    -- who wrote it: user@host
);
CREATE INDEX notes_by_rref ON notes (rref, recorded);
CREATE TRIGGER notes_of_known_realizations BEFORE INSERT ON notes
WHEN NOT EXISTS (SELECT 1 FROM realizations WHERE rref = NEW.rref)
  AND NOT EXISTS (SELECT 1 FROM collected_realizations WHERE rref = NEW.rref)
BEGIN
  SELECT RAISE(ABORT, 'notes: no such realization');
END;

-- The history view with each realization's metrics and tags as JSON objects. JSON has
-- no NaN nor infinity: a NaN is the text "NaN" (what float() reads back), an infinity
-- the number 9e999 or -9e999 (which JSON parsers read as infinite, and json_extract as
-- SQLite's infinity, so comparisons keep working).
CREATE VIEW runs AS
SELECT
  h.*,
  coalesce(
    (SELECT json_group_object(
              m.name,
              CASE
                WHEN m.value IS NULL THEN 'NaN'
                WHEN m.value = 9e999 THEN json('9e999')
                WHEN m.value = -9e999 THEN json('-9e999')
                ELSE m.value
              END)
     FROM metrics AS m WHERE m.rref = h.rref),
    '{}'
  ) AS metrics,
  coalesce(
    (SELECT json_group_object(t.name, t.value) FROM tags AS t WHERE t.rref = h.rref),
    '{}'
  ) AS tags
FROM history AS h;
