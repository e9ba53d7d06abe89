"""The job journal on PostgreSQL (psycopg 3, async, with a connection pool)."""
