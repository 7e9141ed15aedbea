"""orch: an orchestrator for large pretraining runs (pipeline + expert + ZeRO-1 parallel MoE jobs)."""

__version__ = "0.1.0"
