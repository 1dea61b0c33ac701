"""Stage 1, content: read the hand-authored sources, compile the CQL, assemble the package and write dist/."""
