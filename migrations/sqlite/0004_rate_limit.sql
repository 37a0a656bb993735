-- Rate limiting (GCRA): the theoretical arrival time of the endpoint's next send.
ALTER TABLE endpoints ADD COLUMN rate_tat INTEGER;
