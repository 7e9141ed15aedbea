"""Checkpoints: object stores (file://, s3://), the sharded store with manifest commits, the interval
policy and the per-rank asynchronous checkpointer."""
