"""Where work runs: the Ray cluster per-shard stages fan out to, and the device models run on."""
