-- codeloop telemetry, schema 1.
-- Timestamps are naive UTC (DuckDB TIMESTAMP); the writer converts aware datetimes.

-- One row per suggestion the server returned. prefix/suffix/text are NULL when
-- store_code is off; the lengths and hashes are always kept so metrics still work.
CREATE TABLE completions (
    id                VARCHAR PRIMARY KEY,
    created_at        TIMESTAMP NOT NULL,
    user_id           VARCHAR,
    client            VARCHAR,
    repo              VARCHAR,
    filepath          VARCHAR,
    language          VARCHAR,
    adapter           VARCHAR,
    experiment        VARCHAR,
    arm               VARCHAR,
    prefix            VARCHAR,
    suffix            VARCHAR,
    text              VARCHAR,
    prefix_chars      INTEGER,
    suffix_chars      INTEGER,
    text_chars        INTEGER,
    prefix_sha256     VARCHAR,
    text_sha256       VARCHAR,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    queue_ms          DOUBLE,
    engine_ms         DOUBLE,
    total_ms          DOUBLE,
    first_token_ms    DOUBLE,
    finish_reason     VARCHAR
);

-- What happened to a suggestion, as reported by the client. Unique by
-- (completion_id, kind, "at") so a re-sent event (client retry, spool replay) is not counted
-- twice, but deliberately WITHOUT a PRIMARY KEY: DuckDB's ART index on that key made a
-- 10-million-event file 2.1 GB instead of 0.13 GB, held the whole index in memory, cut
-- inserts from ~130k to ~20k rows/s and stalled each checkpoint for seconds. The writer
-- (feedback/ingest.py, the only code that inserts events) de-duplicates with an anti-join
-- restricted to the batch's "at" ranges, which zone maps prune to a few row groups.
CREATE TABLE events (
    completion_id  VARCHAR NOT NULL,
    kind           VARCHAR NOT NULL,
    "at"           TIMESTAMP NOT NULL,  -- quoted: AT is a keyword in DuckDB 2
    elapsed_ms     DOUBLE,
    accepted_chars INTEGER,
    retained_ratio DOUBLE,
    age_s          DOUBLE,
    received_at    TIMESTAMP NOT NULL  -- server clock; rows are appended in this order
);

-- One row per completion: the columns reports group by, copied from completions, plus a
-- running summary of its events, updated by the writer in the transaction that inserts
-- them. Derived data: feedback.outcomes.rebuild_outcomes() recomputes it from events.
-- It exists for speed: at 10 M events, aggregating events for acceptance() took 7 s;
-- scanning this table takes well under one.
CREATE TABLE completion_outcomes (
    completion_id       VARCHAR NOT NULL,
    created_at          TIMESTAMP NOT NULL,
    user_id             VARCHAR,
    client              VARCHAR,
    language            VARCHAR,
    adapter             VARCHAR,
    experiment          VARCHAR,
    arm                 VARCHAR,
    text_chars          INTEGER,
    total_ms            DOUBLE,
    shown_event         BOOLEAN NOT NULL DEFAULT FALSE,  -- a 'shown' event arrived
    accepted_full       BOOLEAN NOT NULL DEFAULT FALSE,  -- an 'accepted' event arrived
    partial             BOOLEAN NOT NULL DEFAULT FALSE,
    partial_chars       INTEGER,                         -- largest partial accepted_chars
    rejected            BOOLEAN NOT NULL DEFAULT FALSE,
    dismissed           BOOLEAN NOT NULL DEFAULT FALSE,
    cancelled           BOOLEAN NOT NULL DEFAULT FALSE,
    final_kind          VARCHAR,                         -- latest accepted/partial/rejected/…
    final_at            TIMESTAMP,
    retained_30s        DOUBLE,                          -- ratio of the report nearest 30 s…
    retained_30s_age    DOUBLE,                          -- …and its age, to keep the nearest
    retained_120s       DOUBLE,
    retained_120s_age   DOUBLE,
    retained_600s       DOUBLE,
    retained_600s_age   DOUBLE,
    retained_latest     DOUBLE,                          -- ratio at the greatest age
    retained_latest_age DOUBLE,
    retained_best       DOUBLE
);

CREATE TABLE adapters (
    name       VARCHAR PRIMARY KEY,
    base_model VARCHAR,
    path       VARCHAR,
    sha256     VARCHAR,
    created_at TIMESTAMP,
    parent     VARCHAR,
    status     VARCHAR,
    metrics    JSON
);

CREATE TABLE experiments (
    id               VARCHAR PRIMARY KEY,
    name             VARCHAR,
    arms             JSON,
    control          VARCHAR,
    status           VARCHAR,
    created_at       TIMESTAMP,
    stopped_at       TIMESTAMP,
    winner           VARCHAR,
    alpha            DOUBLE,
    sequential_state JSON
);

CREATE TABLE train_runs (
    id          VARCHAR PRIMARY KEY,
    started_at  TIMESTAMP,
    finished_at TIMESTAMP,
    status      VARCHAR,
    adapter     VARCHAR,
    params      JSON,
    metrics     JSON
);
