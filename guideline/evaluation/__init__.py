"""Stage 3, evaluation: the one recommendation model, the pathway walk, one patient and whole populations."""
