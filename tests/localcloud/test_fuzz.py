"""The short fuzz of every route (the long one is tests/bench/fuzz_localcloud.py).

Any body, header or query value gets a 2xx or a 4xx with the service's error JSON or XML, never
a 5xx or a traceback (issue 13, point 2). See fuzzing.py for what is drawn and why it is safe.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quickstart.localcloud import LocalCloud

from .fuzzing import FuzzTarget, ModelBodies, send_drawn


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    state = tmp_path_factory.mktemp("fuzz") / "state"
    with LocalCloud(state, port=0, cluster_allocation_delay=0.05) as cloud:
        yield FuzzTarget(cloud).prepare()


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_request_gets_a_2xx_or_the_services_4xx(fuzz_target, data):
    bodies = ModelBodies([fuzz_target.zero_cluster], [fuzz_target.share_url])
    send_drawn(fuzz_target, data, bodies)


def test_the_fuzz_left_no_traceback_in_the_log(fuzz_target):
    assert fuzz_target.tried >= 150
    assert fuzz_target.tracebacks() == 0
