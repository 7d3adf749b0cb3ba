"""PostgreSQL: the connection pool (the only place driver errors are inspected) and the SQL of each use case."""
