"""The job spec: typed models (``spec.schema``) and the reader that validates YAML into them
(``spec.loader``). Import from those modules; like every orch package, this one re-exports nothing."""
