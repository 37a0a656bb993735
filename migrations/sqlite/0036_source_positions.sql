-- Sources whose broker keeps no consumer state (Kafka, read without consumer groups): the
-- next offset to read per partition, and which process reads the source (a lease).
CREATE TABLE source_positions (
    source_id   TEXT NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    partition_id INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (source_id, partition_id)
);
CREATE TABLE source_leases (
    source_id  TEXT PRIMARY KEY REFERENCES sources (id) ON DELETE CASCADE,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
