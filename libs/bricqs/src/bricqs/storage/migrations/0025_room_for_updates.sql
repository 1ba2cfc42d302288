-- Criterion progress, participants and balances are updated far more than inserted (with
-- the bench's 20 rules, 1.6, 0.6 and 0.5 updates per event), and none of those updates
-- changes an indexed column, so each could be a HOT update (a new row version on the same
-- page, no new index entry) if its page had room. At the default fillfactor (100) pages
-- are filled by inserts, and about a quarter of the updates were not HOT: each added an
-- entry to the primary key and work for vacuum. Leaving a fifth of each new page free
-- made 20-rule drains faster (docs/scaling.md) for about 25% more heap in these tables.
-- It applies to pages written from now on; a table rewrite (pg_repack, VACUUM FULL)
-- applies it to the old ones. streak_state is left as it is: most of its updates move
-- its deadline, an indexed column, so they cannot be HOT anyway.
ALTER TABLE criterion_progress SET (fillfactor = 80);
ALTER TABLE participants SET (fillfactor = 80);
ALTER TABLE points_balances SET (fillfactor = 80);
