-- lightstore catalogue, version 2: history that outlives garbage collection,
-- and where an imported realization came from.
--
-- The live tables (derivations, realizations and their edges, pins, links,
-- build_inputs) keep holding only what is present in the tree, with the same
-- foreign keys as version 1: matching, dependencies and the Pylightnix
-- queries read them and never see a collected object. What gc, rmref or
-- `verify --repair` removes is first copied into the collected_* tables
-- below, in the same transaction, so its record stays queryable (see the
-- `history` view). `lightstore forget` deletes those records.

-- Derivations removed from the store, kept as a record. A derivation recorded
-- again later moves back to `derivations` (keeping its first `created`).
CREATE TABLE collected_derivations (
  dref       TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  config     TEXT NOT NULL CHECK (json_valid(config)),
  created    REAL NOT NULL,                       -- when first recorded
  collected  REAL NOT NULL,                       -- when it was removed
  reason     TEXT NOT NULL CHECK (reason IN ('gc', 'rmref', 'repair'))
);
CREATE INDEX collected_derivations_by_name ON collected_derivations (name);

-- Builds outlive their derivation's rows: version 1 deleted a derivation's
-- build attempts with it (ON DELETE CASCADE). The table is rebuilt without
-- that foreign key (the catalogue's migration runs with foreign keys off).
CREATE TABLE builds_v2 (
  id            INTEGER PRIMARY KEY,
  dref          TEXT NOT NULL,                     -- in derivations or collected_derivations
  context_hash  TEXT NOT NULL,
  context       TEXT NOT NULL CHECK (json_valid(context)),
  status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
  started       REAL NOT NULL,
  stopped       REAL,
  host          TEXT NOT NULL,
  pid           INTEGER NOT NULL,
  error         TEXT                                -- traceback text of a failed build
);
INSERT INTO builds_v2 (id, dref, context_hash, context, status, started, stopped, host, pid, error)
  SELECT id, dref, context_hash, context, status, started, stopped, host, pid, error FROM builds;
DROP VIEW build_log;
DROP VIEW history;
DROP TABLE builds;
ALTER TABLE builds_v2 RENAME TO builds;
CREATE INDEX builds_by_dref ON builds (dref, context_hash);
CREATE INDEX builds_running ON builds (status) WHERE status = 'running';

-- Provenance of imports (sunpack, copy_closure, pull): host, pid and build
-- times stay the builder's; these say when and by whom it entered this store.
-- NULL for realizations built here (and for rows written by version 1).
ALTER TABLE realizations ADD COLUMN imported REAL;
ALTER TABLE realizations ADD COLUMN import_host TEXT;
ALTER TABLE realizations ADD COLUMN import_pid INTEGER;
CREATE INDEX realizations_by_build ON realizations (build_id) WHERE build_id IS NOT NULL;

-- Realizations removed from the store, kept as a record: every column of
-- `realizations` plus when and why. One row per removal: a realization built
-- again after it was collected is present in `realizations` and keeps its
-- older record here.
CREATE TABLE collected_realizations (
  id             INTEGER PRIMARY KEY,
  rref           TEXT NOT NULL,
  dref           TEXT NOT NULL,                     -- in derivations or collected_derivations
  context        TEXT NOT NULL CHECK (json_valid(context)),
  context_hash   TEXT NOT NULL,
  build_id       INTEGER REFERENCES builds (id) ON DELETE SET NULL,
  build_started  REAL,
  build_stopped  REAL,
  size           INTEGER NOT NULL CHECK (size >= 0),
  file_count     INTEGER NOT NULL CHECK (file_count >= 0),
  host           TEXT,
  pid            INTEGER,
  created        REAL NOT NULL,
  imported       REAL,
  import_host    TEXT,
  import_pid     INTEGER,
  collected      REAL NOT NULL,                     -- when it was removed
  reason         TEXT NOT NULL CHECK (reason IN ('gc', 'rmref', 'repair'))
);
CREATE INDEX collected_realizations_by_rref ON collected_realizations (rref);
CREATE INDEX collected_realizations_by_dref ON collected_realizations (dref);
CREATE INDEX collected_realizations_by_time ON collected_realizations (build_stopped);
CREATE INDEX collected_realizations_by_build ON collected_realizations (build_id)
  WHERE build_id IS NOT NULL;

-- One row per realization record, present or collected. `collected` is NULL
-- for what is in the store; `SELECT ... FROM history WHERE collected IS NULL`
-- is what version 1's view returned. `build_id` groups the outputs of one
-- build: a multi-output build has one row per output, so sum durations over
-- `build_history` (or GROUP BY build_id), not over this view.
CREATE VIEW history AS
SELECT
  r.rref,
  r.dref,
  d.name,
  d.config,
  r.context,
  r.build_started  AS started,
  r.build_stopped  AS stopped,
  r.build_stopped - r.build_started AS duration,
  r.size,
  r.file_count,
  r.host,
  r.pid,
  r.build_id,
  r.created,
  r.imported,
  r.import_host,
  NULL AS collected,
  NULL AS collected_reason
FROM realizations AS r JOIN derivations AS d ON d.dref = r.dref
UNION ALL
SELECT
  c.rref,
  c.dref,
  coalesce(d.name, cd.name),
  coalesce(d.config, cd.config),
  c.context,
  c.build_started,
  c.build_stopped,
  c.build_stopped - c.build_started,
  c.size,
  c.file_count,
  c.host,
  c.pid,
  c.build_id,
  c.created,
  c.imported,
  c.import_host,
  c.collected,
  c.reason
FROM collected_realizations AS c
  LEFT JOIN derivations AS d ON d.dref = c.dref
  LEFT JOIN collected_derivations AS cd ON cd.dref = c.dref;

-- Every build attempt with its derivation's name (collected or not).
CREATE VIEW build_log AS
SELECT b.id, b.dref, coalesce(d.name, cd.name) AS name, b.status, b.started, b.stopped,
       b.stopped - b.started AS duration, b.host, b.pid, b.error
FROM builds AS b
  LEFT JOIN derivations AS d ON d.dref = b.dref
  LEFT JOIN collected_derivations AS cd ON cd.dref = b.dref;

-- One row per build attempt, for per-build questions ("how long did the train
-- runs take"): a multi-output build counts once. `outputs` counts the
-- realizations it published (present or collected), `present` those still in
-- the store, `size` their bytes.
CREATE VIEW build_history AS
SELECT
  b.id AS build_id,
  b.dref,
  coalesce(d.name, cd.name) AS name,
  coalesce(d.config, cd.config) AS config,
  b.context,
  b.status,
  b.started,
  b.stopped,
  b.stopped - b.started AS duration,
  b.host,
  b.pid,
  b.error,
  (SELECT count(*) FROM realizations AS r WHERE r.build_id = b.id)
    + (SELECT count(*) FROM collected_realizations AS c WHERE c.build_id = b.id) AS outputs,
  (SELECT count(*) FROM realizations AS r WHERE r.build_id = b.id) AS present,
  coalesce((SELECT sum(size) FROM realizations AS r WHERE r.build_id = b.id), 0)
    + coalesce((SELECT sum(size) FROM collected_realizations AS c WHERE c.build_id = b.id), 0)
    AS size
FROM builds AS b
  LEFT JOIN derivations AS d ON d.dref = b.dref
  LEFT JOIN collected_derivations AS cd ON cd.dref = b.dref;
