-- Wake-ups without NOTIFY. A transaction that has queued a NOTIFY takes a database-wide lock
-- at commit, so the trigger of 0001 serialised the commits of every application transaction
-- that called dispatch_webhook() (about 1,100 calls/s from 16 clients, against 7,800 without
-- it). Dispatchers now read the sequence hookrelay_wake_seq (0033) instead: every write that
-- makes deliveries due draws a number from it, and a waiting dispatcher that sees it move
-- claims. The deliveries table stays the truth; the sequence only says when to look.
DROP TRIGGER IF EXISTS deliveries_wake ON deliveries;
DROP FUNCTION IF EXISTS hookrelay_wake();
