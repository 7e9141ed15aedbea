"""The planner: pure functions from a job spec to a layout, memory estimate, FLOPs and cost."""
