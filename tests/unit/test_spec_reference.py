"""docs/spec.md's field tables are generated from the pydantic models: this fails when they drift
(a field added, a default or bound changed, without `python -m orchestrator.spec.reference_doc --write`)."""

from __future__ import annotations

from orchestrator.spec import reference_doc
from orchestrator.spec.schema import JobSpec


def test_docs_spec_md_is_what_the_models_say():
    current = reference_doc.DOC.read_text()
    assert reference_doc.MARKER in current, "docs/spec.md lost its generated section"
    assert current == reference_doc.document(current), (
        "docs/spec.md differs from the models: run python -m orchestrator.spec.reference_doc --write"
    )


def test_every_field_has_a_row_with_a_description():
    rows = {r[0]: r for r in reference_doc.rows(JobSpec)}
    for name in JobSpec.model_fields:
        assert name in rows
    assert not [path for path, r in rows.items() if not r[6]], "fields without a description"
    assert rows["parallelism.pipeline"][2] == "yes" and rows["parallelism.tensor"][3] == "`1`"
    assert rows["priority"][5] == ">= -1000, <= 1000"
    assert rows["resources.pools[].price_per_gpu_hour"][4] == "USD per device-hour"


def test_a_changed_default_shows_as_drift(monkeypatch):
    current = reference_doc.DOC.read_text()
    field = JobSpec.model_fields["priority"]
    monkeypatch.setattr(field, "default", 5)
    assert reference_doc.document(current) != current and "| `priority` | int | no | `5` |" in reference_doc.document(
        current
    )
