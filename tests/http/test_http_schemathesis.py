"""Schemathesis over the live OpenAPI spec: generated requests, valid and invalid, never get a 5xx.

Driven through hypothesis directly (``operation.as_strategy``) rather than schemathesis's
pytest plugin, which does not load under pytest 9. valid requests to all 6 operations and invalid ones to
/v1/detect, 40 examples each (the coverage phase adds its own).
"""

from __future__ import annotations

import pytest
import schemathesis
from conftest import TOKEN, RunningAgent
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/status"),
    ("POST", "/v1/detect"),
    ("GET", "/v1/snapshot"),
]
EXAMPLES = 40
# invalid inputs only exist where there are parameters or a body to break
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [("POST", "/v1/detect", GenerationMode.NEGATIVE)]


@pytest.fixture(scope="module")
def api_schema(agent: RunningAgent) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{agent.base_url}/openapi.json", headers=AUTH)


def test_spec_lists_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_no_server_errors(
    api_schema: schemathesis.BaseSchema, agent: RunningAgent, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    seen: dict[int, int] = {}

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=agent.base_url, headers=AUTH, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}"
        if response.status_code >= 400:
            assert "Traceback" not in response.text

    run()
    assert seen, "no request was sent"
    assert agent.alive
