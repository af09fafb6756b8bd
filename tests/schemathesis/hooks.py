"""Schemathesis hooks for tests/schemathesis/run.sh.

A long poll (`GET /v1/registration/{service}?index=N`) may legitimately wait up to five
minutes; the fuzzer would spend its whole budget waiting. Any `wait` that could be long is
replaced by `1s` (values with no digit stay, so the parser is still fuzzed with garbage)."""

import schemathesis


@schemathesis.hook
def map_case(context, case):
    query = case.query
    if case.operation.path == "/v1/registration/{service}" and isinstance(query, dict) and "index" in query:
        wait = query.get("wait")
        if wait is None or any(c.isdigit() for c in str(wait)):
            query["wait"] = "1s"
    return case
