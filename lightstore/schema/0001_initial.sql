-- lightstore catalogue, version 1.
--
-- This schema is a public interface: users query it with SQL. Times are Unix
-- seconds (REAL, UTC). References are stored in full text form
-- ('dref:<H>-<name>', 'rref:<R>-<H>-<name>'). SQLite enforces the rules:
-- a realization cannot be deleted while another realization, a pin or a
-- running build still refers to it (ON DELETE RESTRICT).

-- Every derivation the store has seen: one row per distinct config.
CREATE TABLE derivations (
  dref     TEXT PRIMARY KEY,                        -- 'dref:<H>-<name>'
  name     TEXT NOT NULL,                           -- the config's name
  config   TEXT NOT NULL CHECK (json_valid(config)),-- canonical JSON, selfrefs unresolved
  created  REAL NOT NULL                            -- when first recorded
);
CREATE INDEX derivations_by_name ON derivations (name);

-- Derivation -> the derivations its config mentions.
CREATE TABLE derivation_deps (
  dref TEXT NOT NULL REFERENCES derivations (dref) ON DELETE CASCADE,
  dep  TEXT NOT NULL REFERENCES derivations (dref) ON DELETE RESTRICT,
  PRIMARY KEY (dref, dep)
) WITHOUT ROWID;
CREATE INDEX derivation_deps_by_dep ON derivation_deps (dep);

-- Build attempts, successful or not. A row with status 'running' whose
-- process is gone is marked 'interrupted' when the store is next opened.
CREATE TABLE builds (
  id            INTEGER PRIMARY KEY,
  dref          TEXT NOT NULL REFERENCES derivations (dref) ON DELETE CASCADE,
  context_hash  TEXT NOT NULL,
  context       TEXT NOT NULL CHECK (json_valid(context)),
  status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
  started       REAL NOT NULL,
  stopped       REAL,
  host          TEXT NOT NULL,
  pid           INTEGER NOT NULL,
  error         TEXT                                -- traceback text of a failed build
);
CREATE INDEX builds_by_dref ON builds (dref, context_hash);
CREATE INDEX builds_running ON builds (status) WHERE status = 'running';

-- The dependency realizations a running build reads. They are temporary GC
-- roots: the rows exist only while the build runs, and RESTRICT makes the
-- database itself refuse to delete an input from under a build.
CREATE TABLE build_inputs (
  build_id INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
  rref     TEXT NOT NULL REFERENCES realizations (rref) ON DELETE RESTRICT,
  PRIMARY KEY (build_id, rref)
) WITHOUT ROWID;
CREATE INDEX build_inputs_by_rref ON build_inputs (rref);

-- Every published realization. "Realizations of D in context C" is one
-- lookup of the (dref, context_hash) index.
CREATE TABLE realizations (
  rref           TEXT PRIMARY KEY,                  -- 'rref:<R>-<H>-<name>'
  dref           TEXT NOT NULL REFERENCES derivations (dref) ON DELETE RESTRICT,
  context        TEXT NOT NULL CHECK (json_valid(context)), -- {dep dref: [rref, ...]}
  context_hash   TEXT NOT NULL,
  build_id       INTEGER REFERENCES builds (id) ON DELETE SET NULL,
  build_started  REAL,
  build_stopped  REAL,
  size           INTEGER NOT NULL CHECK (size >= 0),-- bytes of artifacts
  file_count     INTEGER NOT NULL CHECK (file_count >= 0),
  host           TEXT,
  pid            INTEGER,
  created        REAL NOT NULL                      -- when it entered this store
);
CREATE INDEX realizations_by_context ON realizations (dref, context_hash, build_stopped);
CREATE INDEX realizations_by_time ON realizations (build_stopped);

-- Realization -> the dependency realizations named in its context.
CREATE TABLE realization_deps (
  rref TEXT NOT NULL REFERENCES realizations (rref) ON DELETE CASCADE,
  dep  TEXT NOT NULL REFERENCES realizations (rref) ON DELETE RESTRICT,
  PRIMARY KEY (rref, dep)
) WITHOUT ROWID;
CREATE INDEX realization_deps_by_dep ON realization_deps (dep);

-- GC roots. Named pins, and symlinks made by linkrref/linkdref: a link is a
-- root while it exists and still points at its object.
CREATE TABLE pins (
  name     TEXT PRIMARY KEY,
  dref     TEXT REFERENCES derivations (dref) ON DELETE RESTRICT,
  rref     TEXT REFERENCES realizations (rref) ON DELETE RESTRICT,
  created  REAL NOT NULL,
  CHECK ((dref IS NULL) <> (rref IS NULL))
);
CREATE TABLE links (
  path     TEXT PRIMARY KEY,                        -- absolute path of the symlink
  dref     TEXT REFERENCES derivations (dref) ON DELETE CASCADE,
  rref     TEXT REFERENCES realizations (rref) ON DELETE CASCADE,
  created  REAL NOT NULL,
  CHECK ((dref IS NULL) <> (rref IS NULL))
);

-- Work in progress on the tree that a crash could leave half done: the
-- derivation configs being written ('derive') or realization folders being
-- renamed into place ('install'). Rows of dead processes are rolled forward or
-- back when the store is next opened; live rows are deleted by the same
-- transaction that records the finished work.
CREATE TABLE intents (
  id       INTEGER PRIMARY KEY,
  kind     TEXT NOT NULL CHECK (kind IN ('derive', 'install')),
  refs     TEXT NOT NULL CHECK (json_valid(refs)),  -- derive: [dref]; install: [[rref, context_hash]]
  host     TEXT NOT NULL,
  pid      INTEGER NOT NULL,
  created  REAL NOT NULL
);

-- One row per realization, for history queries.
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
  r.pid
FROM realizations AS r JOIN derivations AS d ON d.dref = r.dref;

-- Every build attempt with its derivation's name.
CREATE VIEW build_log AS
SELECT b.id, b.dref, d.name, b.status, b.started, b.stopped,
       b.stopped - b.started AS duration, b.host, b.pid, b.error
FROM builds AS b JOIN derivations AS d ON d.dref = b.dref;
