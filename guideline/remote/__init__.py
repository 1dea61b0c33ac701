"""Stage 4, remote: one HTTP session, one capability check, publish, $apply, CDS Hooks, loading patients."""
