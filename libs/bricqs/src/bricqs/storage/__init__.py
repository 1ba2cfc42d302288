"""All SQL of the engine lives in this package, one module per aggregate; services and
the mechanics call its functions.

Every write takes whole batches (arrays through unnest), so applying mechanics to a batch
of facts costs a fixed number of round trips whatever its size.

Arrays go as binary parameters (`%b`): psycopg dumps them several times faster than as
text, where every element is escaped.

Batch reads look keys up one by one from the array side (`unnest(...) CROSS JOIN LATERAL`
on the primary key; `OFFSET 0` keeps the planner from flattening the subquery), never as
a join the planner may turn around: on a table that grew since it was last analysed,
psycopg's prepared statements get a generic plan that scans the tenant's rows once per
key (seconds per batch, past the statement timeout).
"""
