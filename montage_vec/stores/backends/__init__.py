"""The database backends: a small adapter per driver under the one SQL session."""
