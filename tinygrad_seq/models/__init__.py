"""Ready-made models built from tinygrad_seq.nn: each a config dataclass and a Module."""
