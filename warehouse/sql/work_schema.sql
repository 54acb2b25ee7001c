-- The pipeline's own state in data/work.duckdb.  Analysts never open this file; the
-- published warehouse copies what they need.
CREATE SCHEMA IF NOT EXISTS ops;
CREATE SCHEMA IF NOT EXISTS stage;
CREATE SCHEMA IF NOT EXISTS identity;
CREATE SCHEMA IF NOT EXISTS features;
CREATE SCHEMA IF NOT EXISTS tags;

CREATE SEQUENCE IF NOT EXISTS ops.load_ids START 1;

CREATE TABLE IF NOT EXISTS ops.runs (
    run_id VARCHAR PRIMARY KEY,
    as_of DATE NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    status VARCHAR NOT NULL,            -- running | success | degraded | failed
    stage_seconds JSON,
    row_counts JSON,
    warnings JSON,
    error VARCHAR
);

CREATE TABLE IF NOT EXISTS ops.loads (
    load_id BIGINT PRIMARY KEY,
    run_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    file VARCHAR NOT NULL,              -- path relative to the inbox
    checksum VARCHAR NOT NULL,          -- sha256 of the file's bytes
    bytes BIGINT NOT NULL,
    entity VARCHAR,                     -- NULL for a file that produced nothing
    status VARCHAR NOT NULL,            -- landed | validated | rejected | duplicate | failed
    rows_in BIGINT NOT NULL,
    rows_loaded BIGINT,
    rows_quarantined BIGINT,
    lake_path VARCHAR,
    message VARCHAR,
    landed_at TIMESTAMPTZ NOT NULL
);

-- Each inbox file's checksum as last computed (warehouse/land.py): a file whose size and
-- modification time are unchanged since is not read again to hash it.
CREATE TABLE IF NOT EXISTS ops.inbox_checksums (
    file VARCHAR PRIMARY KEY,           -- path relative to the inbox
    bytes BIGINT NOT NULL,
    modified_ns BIGINT NOT NULL,
    checksum VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS ops.quarantine (
    run_id VARCHAR NOT NULL,
    load_id BIGINT NOT NULL,
    source VARCHAR NOT NULL,
    file VARCHAR NOT NULL,
    entity VARCHAR NOT NULL,
    "row" BIGINT,
    source_record_id VARCHAR,
    expectation VARCHAR NOT NULL,
    "column" VARCHAR,
    value VARCHAR,
    reason VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS ops.validations (
    run_id VARCHAR NOT NULL,
    load_id BIGINT NOT NULL,
    source VARCHAR NOT NULL,
    entity VARCHAR NOT NULL,
    suite VARCHAR NOT NULL,
    expectation VARCHAR NOT NULL,
    "column" VARCHAR,
    success BOOLEAN NOT NULL,
    element_count BIGINT,
    unexpected_count BIGINT
);

-- Normalised identifiers, computed once per distinct raw value (warehouse/normalize.py);
-- variant: the default phone region the phone keys were made for.
CREATE TABLE IF NOT EXISTS stage.phone_keys (raw VARCHAR, e164 VARCHAR, masked_key VARCHAR, variant VARCHAR);
CREATE TABLE IF NOT EXISTS stage.name_keys (raw VARCHAR, name_key VARCHAR, variant VARCHAR);
-- The validated lake files (paths inside the lake) each incrementally staged table was built from
-- (warehouse/stage.py);
-- definition: a digest of the table's SQL, so a changed definition builds it afresh.
CREATE TABLE IF NOT EXISTS stage.staged_files (
    "table" VARCHAR NOT NULL, definition VARCHAR NOT NULL, path VARCHAR NOT NULL, bytes BIGINT NOT NULL,
    modified_ns BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS identity.customer_ids (
    customer_id VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL,
    first_run_id VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS identity.node_customer (
    source VARCHAR NOT NULL,
    source_customer_id VARCHAR NOT NULL,
    customer_id VARCHAR NOT NULL,
    PRIMARY KEY (source, source_customer_id)
);

-- What identity.golden was last built with: a digest of its SQL, the newest load of the customer
-- records it read and the files they were staged from (warehouse/identity.py builds again only
-- what changed since).
CREATE TABLE IF NOT EXISTS identity.golden_built (
    definition VARCHAR NOT NULL, records_through BIGINT NOT NULL, records_files VARCHAR[] NOT NULL
);

-- What identity resolution last resolved, in the same terms, and each source customer's
-- identifier values as resolved then (hash(source, source_customer_id), hash(kind, value)): the
-- next run resolves again only the source customers the changed records can touch
-- (warehouse/identity.py).
CREATE TABLE IF NOT EXISTS identity.resolved (
    definition VARCHAR NOT NULL, records_through BIGINT NOT NULL, records_files VARCHAR[] NOT NULL
);
CREATE TABLE IF NOT EXISTS identity.resolved_keys (record_hash UBIGINT NOT NULL, key_hash UBIGINT NOT NULL);

-- The links inside each customer of the last run (explain shows them) and the pairs left apart
-- for review (warehouse/identity.py).
CREATE TABLE IF NOT EXISTS identity.links (
    customer_id VARCHAR, source_a VARCHAR, source_customer_id_a VARCHAR, source_b VARCHAR,
    source_customer_id_b VARCHAR, kind VARCHAR, probability DOUBLE
);
CREATE TABLE IF NOT EXISTS identity.review (
    run_id VARCHAR, customer_id_a VARCHAR, source_a VARCHAR, source_customer_id_a VARCHAR, customer_id_b VARCHAR,
    source_b VARCHAR, source_customer_id_b VARCHAR, probability DOUBLE, agreeing VARCHAR[], reason VARCHAR
);

CREATE TABLE IF NOT EXISTS ops.identity_changes (
    run_id VARCHAR NOT NULL,
    change VARCHAR NOT NULL,            -- merge | split
    customer_id VARCHAR NOT NULL,       -- the surviving (merge) or new (split) id
    other_ids VARCHAR[] NOT NULL,       -- absorbed ids (merge) or the id split from (split)
    records BIGINT NOT NULL
);

-- Manual tags and corrections (tagwright tags add|set|revoke), applied after the rules for
-- every as_of in [effective_from, expires_on]; the newest override of a customer and tag wins.
CREATE SEQUENCE IF NOT EXISTS tags.override_ids START 1;
CREATE TABLE IF NOT EXISTS tags.overrides (
    override_id BIGINT PRIMARY KEY,
    customer_id VARCHAR NOT NULL,
    tag VARCHAR NOT NULL,
    value VARCHAR,                      -- NULL: the customer has no value for the tag
    reason VARCHAR NOT NULL,
    author VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    effective_from DATE NOT NULL,
    expires_on DATE,                    -- the last as_of it applies to; NULL: no expiry
    revoked_at TIMESTAMPTZ
);

-- Erasure requests (tagwright forget): what was removed, never who the person was.
CREATE TABLE IF NOT EXISTS ops.erasures (
    erasure_id BIGINT PRIMARY KEY,
    customer_id VARCHAR NOT NULL,
    erased_at TIMESTAMPTZ NOT NULL,
    reason VARCHAR NOT NULL,
    requested_by VARCHAR NOT NULL,
    source_records BIGINT NOT NULL,
    rows_removed JSON NOT NULL
);
-- Source ids of erased people: stage skips their rows if a source delivers them again.
CREATE TABLE IF NOT EXISTS identity.suppressed (
    source VARCHAR NOT NULL,
    source_customer_id VARCHAR NOT NULL,
    erasure_id BIGINT NOT NULL
);
-- Their orders' ids: validation sets aside order lines (which name no customer) of these.
CREATE TABLE IF NOT EXISTS identity.suppressed_orders (
    source VARCHAR NOT NULL,
    order_id VARCHAR NOT NULL,
    erasure_id BIGINT NOT NULL
);
