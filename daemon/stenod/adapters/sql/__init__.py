"""The journal as SQL, shared by the SQLite and PostgreSQL adapters: each operation is a
generator of statements that either adapter runs on its own connection, in one transaction."""
