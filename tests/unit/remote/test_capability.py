"""Verify the one capability check against stub CapabilityStatements: what publish, apply and cds need."""

from __future__ import annotations

from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.core.errors import ExitCode, ServerRejectedError
from guideline.remote.capability import APPLY, CDS_PREFETCH, PUBLISH, Capabilities, Needs, check_server
from guideline.remote.http import Client
from tests.unit.remote.stub import Reply, Seen, Stub, capability

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
HAPI_LIKE = capability(PlanDefinition=["apply", "data-requirements"], Library=["evaluate"], Patient=["everything"])


def _subset(node: Any, paths: list[list[str]]) -> Any:
    """What a server honouring nested `_elements` returns: only the named paths (lists kept as lists)."""
    if isinstance(node, list):
        return [_subset(x, paths) for x in node]
    if not isinstance(node, dict) or not paths:
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        below = [p[1:] for p in paths if p[0] == key]
        if below:
            out[key] = value if any(not p for p in below) else _subset(value, [p for p in below if p])
    return out


def subsetting(statement: dict[str, Any], *, nested: bool = True) -> Any:
    """A responder serving `statement` for /metadata, honouring `_elements` like HAPI (tagged SUBSETTED).

    With nested=False it ignores nested paths (rest.interaction), keeping only top-level ones.
    """

    def respond(req: Seen) -> Reply:
        if req.path != "/fhir/metadata":
            return Reply(404)
        elements = req.query.get("_elements")
        if not elements:
            return Reply(200, statement)
        names = elements[0].split(",")
        paths = [n.split(".") for n in names if nested or "." not in n]
        body = {"resourceType": "CapabilityStatement", **_subset(statement, paths)}
        body["meta"] = {"tag": [SUBSETTED]}
        return Reply(200, body)

    return respond


def _check(stub: Stub, needs: Needs) -> dict[str, Any]:
    with Client(f"{stub.url}/fhir") as client:
        return check_server(client, needs)


def test_publish_check_is_one_small_cacheable_request(stub: Stub) -> None:
    """Verify that publishing needs one subsetted, cacheable /metadata read when the server subsets."""
    stub.respond = subsetting(HAPI_LIKE)
    cs = _check(stub, PUBLISH)
    assert len(stub.seen) == 1
    assert stub.seen[0].query == {"_elements": ["fhirVersion,rest.mode,rest.interaction"]}
    assert "Cache-Control" not in stub.seen[0].headers
    assert "resource" not in cs["rest"][0]  # the subset: no per-type search parameters


def test_apply_check_asks_for_operations_in_the_subset(stub: Stub) -> None:
    """Verify that the $apply check's subset holds the resource types and operation names it reads."""
    stub.respond = subsetting(HAPI_LIKE)
    cs = _check(stub, APPLY)
    assert len(stub.seen) == 1
    elements = stub.seen[0].query["_elements"][0].split(",")
    assert {"fhirVersion", "rest.resource.type", "rest.resource.operation.name"} <= set(elements)
    plan = next(r for r in cs["rest"][0]["resource"] if r["type"] == "PlanDefinition")
    assert plan == {"type": "PlanDefinition", "operation": [{"name": "apply"}, {"name": "data-requirements"}]}


@pytest.mark.parametrize("needs", [PUBLISH, APPLY, CDS_PREFETCH], ids=["publish", "apply", "cds"])
def test_a_server_ignoring_elements_is_read_once(stub: Stub, needs: Needs) -> None:
    """Verify that a server answering the whole statement to a subset request is not asked again."""
    stub.routes["GET /fhir/metadata"] = Reply(200, HAPI_LIKE)
    _check(stub, needs)
    assert len(stub.seen) == 1


@pytest.mark.parametrize("needs", [PUBLISH, APPLY], ids=["publish", "apply"])
def test_a_subset_without_nested_elements_falls_back_to_the_whole_statement(stub: Stub, needs: Needs) -> None:
    """Verify that a subset lacking what is checked (no nested subsetting) is followed by one whole read."""
    stub.respond = subsetting(HAPI_LIKE, nested=False)
    _check(stub, needs)
    assert [s.query for s in stub.seen] == [{"_elements": [needs.elements()]}, {}]
    assert all("Cache-Control" not in s.headers for s in stub.seen)


@pytest.mark.parametrize(
    ("needs", "purpose"),
    [(PUBLISH, "publishing"), (APPLY, "`guideline apply`"), (CDS_PREFETCH, "resolving CDS Hooks prefetch")],
    ids=["publish", "apply", "cds"],
)
def test_non_r4_is_refused_after_one_request(stub: Stub, needs: Needs, purpose: str) -> None:
    """Verify that a FHIR 5 server is refused, naming server, version and purpose, without reading again."""
    stub.respond = subsetting(capability("5.0.0", PlanDefinition=["apply"]))
    with pytest.raises(ServerRejectedError) as err:
        _check(stub, needs)
    assert err.value.exit_code == ExitCode.SERVER_REJECTED
    msg = err.value.message
    assert msg.startswith(f"{stub.url}/fhir is FHIR 5.0.0; {purpose} needs FHIR R4 (4.0.x)")
    assert len(stub.seen) == 1


@pytest.mark.parametrize("version", ["4.0.1", "4.0.0", "4.0"])
def test_every_r4_version_is_accepted(stub: Stub, version: str) -> None:
    """Verify that 4.0, 4.0.0 and 4.0.1 all count as R4."""
    stub.routes["GET /fhir/metadata"] = Reply(200, capability(version))
    _check(stub, CDS_PREFETCH)


@pytest.mark.parametrize("version", ["4.3.0", "4.01", "3.0.2", ""])
def test_other_versions_are_refused(stub: Stub, version: str) -> None:
    """Verify that R4B, look-alikes, STU3 and a missing version are not R4."""
    stub.routes["GET /fhir/metadata"] = Reply(200, capability(version))
    with pytest.raises(ServerRejectedError, match=f"is FHIR {version or 'unknown'};"):
        _check(stub, CDS_PREFETCH)


def test_missing_version_is_read_again_whole(stub: Stub) -> None:
    """Verify that an answer without fhirVersion (a subset that dropped it) is followed by one whole read."""
    stub.routes["GET /fhir/metadata"] = [Reply(200, {"resourceType": "CapabilityStatement"}), Reply(200, HAPI_LIKE)]
    _check(stub, PUBLISH)
    assert len(stub.seen) == 2 and stub.seen[1].query == {}


def test_publish_without_transactions_is_refused(stub: Stub) -> None:
    """Verify that a server without transaction support is refused for publishing, saying why it matters."""
    stub.respond = subsetting(capability(interactions=("batch",)))
    with pytest.raises(ServerRejectedError) as err:
        _check(stub, PUBLISH)
    assert err.value.message.startswith(f"{stub.url}/fhir does not support transaction Bundles")
    assert "all-or-nothing" in err.value.message


def test_apply_without_the_operation_is_refused(stub: Stub) -> None:
    """Verify that a server without PlanDefinition/$apply is refused for apply, naming server and operation."""
    stub.respond = subsetting(capability(PlanDefinition=["data-requirements"], Library=["apply"]))
    with pytest.raises(ServerRejectedError) as err:
        _check(stub, APPLY)
    msg = err.value.message
    assert msg.startswith(f"{stub.url}/fhir does not support PlanDefinition/$apply")
    assert "`guideline apply`" in msg and "guideline recommend" in msg
    # a subset tagged SUBSETTED that lacks the operation is read again whole before refusing
    assert len(stub.seen) == 2


def test_operation_names_with_a_dollar_count(stub: Stub) -> None:
    """Verify that an operation listed as "$apply" (some servers keep the dollar) is recognised."""
    stub.routes["GET /fhir/metadata"] = Reply(200, capability(PlanDefinition=["$apply"]))
    _check(stub, APPLY)


def test_publish_does_not_need_apply_and_cds_needs_only_r4(stub: Stub) -> None:
    """Verify that each caller checks only what it needs: no $apply for publishing, nothing more for CDS."""
    stub.routes["GET /fhir/metadata"] = Reply(200, capability(interactions=("transaction",)))
    _check(stub, PUBLISH)
    stub.routes["GET /fhir/metadata"] = Reply(200, capability(interactions=()))
    _check(stub, CDS_PREFETCH)


@pytest.mark.parametrize(
    "body",
    [{"resourceType": "OperationOutcome"}, ["not", "an", "object"], {"services": []}],
    ids=["outcome", "list", "cds-discovery"],
)
def test_an_answer_that_is_no_capability_statement_is_refused(stub: Stub, body: Any) -> None:
    """Verify that /metadata answering something else says the URL is probably not the FHIR base."""
    stub.routes["GET /fhir/metadata"] = Reply(200, body)
    with pytest.raises(ServerRejectedError, match="not a CapabilityStatement; is --server the FHIR base URL"):
        _check(stub, CDS_PREFETCH)


def test_capabilities_tolerate_odd_shapes() -> None:
    """Verify that reading capabilities skips malformed parts instead of failing."""
    caps = Capabilities.of(
        {
            "fhirVersion": "4.0.1",
            "rest": [
                "junk",
                {"interaction": ["junk", {"code": "transaction"}], "resource": ["junk", {"type": "PlanDefinition"}]},
                {"resource": [{"type": "PlanDefinition", "operation": ["junk", {"name": "apply"}]}]},
            ],
        }
    )
    assert caps.is_r4()
    assert caps.interactions == {"transaction"}
    assert caps.operations == {("PlanDefinition", "apply")}
    assert caps.missing(PUBLISH) == [] and caps.missing(APPLY) == []


def test_cli_apply_checks_the_server_once_before_applying(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that `guideline apply` against a server without $apply exits 5 naming it, before any $apply."""
    stub.respond = subsetting(capability(Patient=["everything"]))
    rc = cli.main(["apply", "--server", f"{stub.url}/fhir", "--patient", "p1"])
    err = capsys.readouterr().err
    assert rc == ExitCode.SERVER_REJECTED
    assert f"{stub.url}/fhir does not support PlanDefinition/$apply" in err
    assert {s.path for s in stub.seen} == {"/fhir/metadata"}
    assert "Traceback" not in err


def test_cli_cds_prefetch_checks_the_fhir_server(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that `cds call --prefetch` refuses a non-R4 FHIR server before discovery or any call."""
    stub.respond = subsetting(capability("5.0.0"))
    rc = cli.main(["cds", "call", "--server", f"{stub.url}/fhir", "--patient", "p1", "--prefetch"])
    err = capsys.readouterr().err
    assert rc == ExitCode.SERVER_REJECTED
    assert "is FHIR 5.0.0; resolving CDS Hooks prefetch needs FHIR R4" in err
    assert [s.path for s in stub.seen] == ["/fhir/metadata"]


def test_cli_cds_without_prefetch_does_not_read_metadata(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a CDS call without prefetch never reads the FHIR server's CapabilityStatement."""
    stub.routes["POST /cds-services/GLR4Diet"] = Reply(200, {"cards": []})
    rc = cli.main(["cds", "call", "--server", f"{stub.url}/fhir", "--service", "GLR4Diet", "--patient", "p1"])
    assert rc == 0, capsys.readouterr().err
    assert [s.path for s in stub.seen] == ["/cds-services/GLR4Diet"]
