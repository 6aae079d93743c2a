-- Room on each page for the consumer's updates (issue 13). A visitor's row is updated by every
-- batch it appears in (`last_seen_at` moves, and its latest country and device), a session's
-- touch whenever an earlier event of it arrives. With full pages (the default fill factor of
-- 100) every such update writes the new row version on another page and a new entry in each of
-- the table's indexes. Leaving a fifth of each page free lets PostgreSQL keep the new version
-- on the same page without touching the indexes (a heap-only tuple update) whenever no indexed
-- column changed, which is nearly always. Pages written from now on keep the room; existing
-- pages get it as they are rewritten (VACUUM FULL or a table rewrite would do it at once).
ALTER TABLE visitors SET (fillfactor = 80);
ALTER TABLE touches SET (fillfactor = 80);
