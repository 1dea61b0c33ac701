"""Stage 2, validation: every layer (JSON, schema, model, references, CQL, terminology, conventions), located.

One module per layer: loading (1, reading the subject), schema (2), model (3), references (4),
cql (5), terminology (6), conventions (7); subject holds what they share, run runs them all and
report renders the result. Layer 8 (a server's $validate) is guideline.remote.server_validation.
"""
