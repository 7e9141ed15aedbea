"""The job spec: typed models (``schema``) and the reader that validates YAML into them (``loader``)."""

from orchestrator.spec.loader import load_spec, validate_mapping
from orchestrator.spec.schema import JobSpec, ModelSpec

__all__ = ["JobSpec", "ModelSpec", "load_spec", "validate_mapping"]
