-- Sources whose broker keeps no consumer state (Kafka, read without consumer groups): the
-- next offset to read per partition, and which process reads the source (a lease).
CREATE TABLE source_positions (
    source_id   text COLLATE "C" NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    partition_id integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (source_id, partition_id)
);
CREATE TABLE source_leases (
    source_id  text COLLATE "C" PRIMARY KEY REFERENCES sources (id) ON DELETE CASCADE,
    holder     text NOT NULL,
    expires_at bigint NOT NULL
);
