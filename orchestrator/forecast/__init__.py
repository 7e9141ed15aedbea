"""`orch forecast`: the rest of a live job, simulated from its own evidence, against its budget and DeepSeek-V3."""
