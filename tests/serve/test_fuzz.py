"""The HTTP API fuzzed from its own OpenAPI schema (hypothesis): whatever a client sends, the answer is
never a 5xx, never a traceback, and never names a file of the server."""

import json
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", ""]), "content": st.text(max_size=60) | JSON}
)
CHAT = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["tiny", "paramem:alice", "paramem:bob", "paramem-milp:alice", "gpt-9"]) | JSON,
        "messages": st.lists(MESSAGE, max_size=3) | JSON,
    },
    optional={
        "max_tokens": st.integers(-5, 40) | JSON,
        "stream": st.booleans() | JSON,
        "temperature": JSON,
    },
)
BODY = st.one_of(
    CHAT.map(lambda c: json.dumps(c).encode()),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
)


def test_no_request_gets_a_server_error_or_a_path(served, isolated_home):
    _, url, tokens = served
    root = url.removesuffix("/v1")
    schema = httpx.get(f"{root}/openapi.json").json()
    routes = [(method.upper(), path) for path, item in schema["paths"].items() for method in item]
    assert len(routes) >= 7
    client = httpx.Client(timeout=60)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        route=st.sampled_from(routes),
        parameter=st.text(max_size=30),
        body=BODY,
        auth=st.sampled_from([None, "Bearer nope", f"Bearer {tokens['alice']}", f"Bearer {tokens['bob']}", "Basic x"]),
    )
    def request(route, parameter, body, auth):
        method, template = route
        path = template
        for name in ("{job}", "{conversation}"):
            path = path.replace(name, quote(parameter, safe="/") or "x")
        headers = {"Authorization": auth} if auth else {}
        response = client.request(method, root + path, content=body if method == "POST" else None, headers=headers)
        assert response.status_code < 500, (method, path, body, response.text)
        text = response.text
        assert "Traceback" not in text and str(isolated_home) not in text and "/tmp/" not in text
        if response.status_code >= 400:
            assert response.json()["error"]["message"] if "error" in response.json() else response.json()["detail"]

    request()
