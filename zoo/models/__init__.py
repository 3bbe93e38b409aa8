"""Zoo models: one file per strategy; each registers itself with `zoo.register_model`."""
