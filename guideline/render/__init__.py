"""Stage 5, render: the offline static site (decision diagram, recommendation pages, traceability, cases)."""
