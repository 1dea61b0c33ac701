"""Stage 2, validation: every layer (JSON, schema, model, references, CQL, terminology, conventions), located."""
