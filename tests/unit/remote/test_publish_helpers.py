"""Verify publish's pieces: content comparison, search building, batch lookups, and request counts on a stub."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from guideline.core.errors import ServerRejectedError, VersionConflictError
from guideline.remote.http import Client, RetryPolicy
from guideline.remote.publish import (
    _id_searches,
    _run_searches,
    _search_results,
    _search_value,
    _url_searches,
    plan_publish,
    publish_resources,
    same_content,
    strip_server_fields,
)
from tests.unit.remote.stub import Reply, Seen, Stub, capability, outcome, stub_server

BASE = "http://example.org/fhir/gl"


def _lib(rid: str, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Library", "id": rid, "url": f"{BASE}/Library/{rid}", "version": version, **extra}


def _plan(rid: str, version: str = "1.0.0") -> dict[str, Any]:
    return {"resourceType": "PlanDefinition", "id": rid, "url": f"{BASE}/PlanDefinition/{rid}", "version": version}


# --- content comparison -------------------------------------------------------------------------


def test_strip_server_fields_drops_meta_only_and_copies() -> None:
    """Verify that only meta is dropped, and the resource itself is left untouched."""
    r = _lib("A", meta={"versionId": "3"}, status="active")
    assert strip_server_fields(r) == _lib("A", status="active")
    assert r["meta"] == {"versionId": "3"}


@pytest.mark.parametrize(
    ("theirs", "same"),
    [
        ({**_lib("A", status="active"), "meta": {"versionId": "7", "lastUpdated": "2026-01-01T00:00:00Z"}}, True),
        (
            {"status": "active", "version": "1.0.0", "url": f"{BASE}/Library/A", "id": "A", "resourceType": "Library"},
            True,
        ),
        (_lib("A", status="draft"), False),
        ({**_lib("A", status="active"), "extra": 1}, False),
    ],
    ids=["meta-ignored", "key-order-ignored", "value-differs", "element-added"],
)
def test_same_content_ignores_meta_and_order(theirs: dict[str, Any], same: bool) -> None:
    """Verify that equality is as FHIR JSON: server meta and key order do not count, content does."""
    assert same_content(_lib("A", status="active"), theirs) is same


def test_same_content_compares_numbers_by_value() -> None:
    """Verify that 25 and 25.0 are the same number (servers rewrite decimals), 25 and 26 are not."""
    ours = {"resourceType": "Observation", "valueQuantity": {"value": 25}, "component": [{"v": 1.50}]}
    assert same_content(
        ours, {"resourceType": "Observation", "valueQuantity": {"value": 25.0}, "component": [{"v": 1.5}]}
    )
    assert not same_content(
        ours, {"resourceType": "Observation", "valueQuantity": {"value": 26}, "component": [{"v": 1.5}]}
    )


def test_same_content_compares_narrative_by_meaning() -> None:
    """Verify that narrative XHTML re-escaped by the server (&quot; for ") still counts as the same."""
    ours = {"text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">a "b" c\'s</div>'}}
    theirs = {
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">a &quot;b&quot; c\'s</div>'}
    }
    assert same_content(ours, theirs)
    assert not same_content(ours, {"text": {"status": "generated", "div": "<div>other</div>"}})


def test_same_content_keeps_list_order_and_types() -> None:
    """Verify that list order matters and a string is not a number."""
    assert not same_content({"a": [1, 2]}, {"a": [2, 1]})
    assert not same_content({"a": "1"}, {"a": 1})
    assert same_content({"a": None, "b": True}, {"a": None, "b": True})


# --- search building ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("plain", "plain"),
        ("a,b", "a%5C%2Cb"),  # comma escaped as \, then encoded
        ("cost$1", "cost%5C%241"),
        ("back\\slash", "back%5C%5Cslash"),
        (f"{BASE}/Library/A|1.0", "http%3A%2F%2Fexample.org%2Ffhir%2Fgl%2FLibrary%2FA%7C1.0"),
        ("a b&c=d", "a%20b%26c%3Dd"),
    ],
)
def test_search_value_escapes_then_encodes(raw: str, encoded: str) -> None:
    """Verify that FHIR search escapes (\\ , $) come first, then every reserved character is percent-encoded."""
    assert _search_value(raw) == encoded
    assert unquote(encoded).replace("\\,", ",").replace("\\$", "$").replace("\\\\", "\\") == raw


def test_url_searches_group_by_type_and_version() -> None:
    """Verify one search per (type, version), urls de-duplicated in order, resources without url|version skipped."""
    resources = [
        _lib("A"),
        _lib("B"),
        _lib("A"),
        _lib("C", "2.0.0"),
        _plan("P"),
        {"resourceType": "Library", "id": "X"},
    ]
    searches = _url_searches(resources)
    assert [t for t, _ in searches] == ["Library", "Library", "PlanDefinition"]
    first = parse_qs(searches[0][1])
    assert first == {"url": [f"{BASE}/Library/A,{BASE}/Library/B"], "version": ["1.0.0"]}
    assert parse_qs(searches[1][1]) == {"url": [f"{BASE}/Library/C"], "version": ["2.0.0"]}
    assert _url_searches([]) == []


def test_id_searches_ask_only_for_identity_elements() -> None:
    """Verify one id search per type, reading only id, url and version."""
    searches = _id_searches([_lib("A"), _plan("P"), _lib("B")])
    assert searches == [
        ("Library", "_id=A,B&_elements=id,url,version"),
        ("PlanDefinition", "_id=P&_elements=id,url,version"),
    ]


# --- batch lookups ------------------------------------------------------------------------------


class FakeFhir:
    """Just enough of a FHIR server for publish: metadata, batch searches by url|version or _id, transactions."""

    def __init__(self, resources: list[dict[str, Any]] | None = None, page_size: int = 500) -> None:
        self.store = {f"{r['resourceType']}/{r['id']}": copy.deepcopy(r) for r in resources or []}
        self.page_size = page_size
        self.pages: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, req: Seen) -> Reply:
        if req.method == "GET" and req.path == "/fhir/metadata":
            return Reply(200, capability())
        if req.method == "GET" and req.path == "/fhir/next":
            return Reply(200, self._page(req.query["page"][0]))
        if req.method == "POST" and req.path == "/fhir":
            bundle = req.json()
            if bundle["type"] == "transaction":
                for e in bundle["entry"]:
                    self.store[e["request"]["url"]] = {**e["resource"], "meta": {"versionId": "1"}}
                return Reply(200, {"resourceType": "Bundle", "type": "transaction-response", "entry": []})
            entries = [self._search(e["request"]["url"]) for e in bundle["entry"]]
            return Reply(200, {"resourceType": "Bundle", "type": "batch-response", "entry": entries})
        return Reply(404, outcome("fake: unknown request"))

    def _search(self, url: str) -> dict[str, Any]:
        rtype, _, query = url.partition("?")
        q = {k: v[0].split(",") for k, v in parse_qs(query).items()}
        found = [
            r
            for r in self.store.values()
            if r["resourceType"] == rtype
            and ("url" not in q or (r.get("url") in q["url"] and r.get("version") in q["version"]))
            and ("_id" not in q or r["id"] in q["_id"])
        ]
        key = str(len(self.pages))
        self.pages[key] = found
        return {"response": {"status": "200 OK"}, "resource": self._page(key)}

    def _page(self, key: str) -> dict[str, Any]:
        """The first page of the results under `key`; the rest is the next page's key (a relative link)."""
        found, links = self.pages[key], []
        if len(found) > self.page_size:
            self.pages[key + "n"] = found[self.page_size :]
            links = [{"relation": "next", "url": f"next?page={key}n"}]
            found = found[: self.page_size]
        return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": [{"resource": r} for r in found]}


@pytest.fixture
def fake() -> FakeFhir:
    return FakeFhir()


@pytest.fixture
def stub(fake: FakeFhir) -> Iterator[Stub]:
    with stub_server(respond=fake) as s:
        yield s


@pytest.fixture
def client(stub: Stub) -> Iterator[Client]:
    with Client(f"{stub.url}/fhir", retry=RetryPolicy(attempts=1)) as c:
        yield c


def test_run_searches_sends_one_batch_and_follows_pages(fake: FakeFhir, stub: Stub, client: Client) -> None:
    """Verify that all searches go in one batch and pages beyond the first are followed."""
    fake.store = {f"Library/L{i}": _lib(f"L{i}") for i in range(5)}
    fake.page_size = 2
    found = _run_searches(client, _url_searches(list(fake.store.values())), "url|version")
    assert sorted(r["id"] for r in found) == [f"L{i}" for i in range(5)]
    # 5 results, 2 a page: the batch holds the first page, two more pages are read
    assert [(s.method, s.path) for s in stub.seen] == [("POST", "/fhir"), ("GET", "/fhir/next"), ("GET", "/fhir/next")]
    assert _run_searches(client, [], "id") == [] and len(stub.seen) == 3


def test_run_searches_refuses_a_batch_answer_of_the_wrong_length(stub: Stub, client: Client) -> None:
    """Verify that a batch-response with fewer entries than searches is refused as not following FHIR."""
    stub.respond = lambda req: Reply(200, {"resourceType": "Bundle", "type": "batch-response", "entry": []})
    with pytest.raises(ServerRejectedError, match="batch of 1 searches with 0 entries"):
        _run_searches(client, [("Library", "_id=A")], "id")


def test_run_searches_keeps_only_matches(client: Client) -> None:
    """Verify that _include-d or OperationOutcome entries in a search page are not taken for matches."""
    entry = {
        "response": {"status": "200 OK"},
        "resource": {
            "resourceType": "Bundle",
            "entry": [{"resource": _lib("A")}, {"resource": {"resourceType": "OperationOutcome"}}, {"search": {}}],
        },
    }
    assert [r["resourceType"] for r in _search_results(client, entry, "x")] == ["Library", "OperationOutcome"]


def test_a_failed_search_is_a_rejection_with_its_outcome(client: Client) -> None:
    """Verify that a failed batch entry raises with the server's text, its status and OperationOutcome."""
    oo = outcome("unknown search parameter 'url'")
    entry = {"response": {"status": "400 Bad Request", "outcome": oo}}
    with pytest.raises(ServerRejectedError) as err:
        _search_results(client, entry, "Library resources by url|version")
    assert "could not look up Library resources by url|version (HTTP 400 Bad Request)" in err.value.message
    assert "unknown search parameter 'url'" in err.value.message
    assert err.value.status == 400 and err.value.outcome == oo


def test_a_failed_search_without_detail(client: Client) -> None:
    """Verify that a failed entry with no status or outcome still says what could not be looked up."""
    with pytest.raises(ServerRejectedError, match=r"\(HTTP \?\): no detail") as err:
        _search_results(client, {}, "Library resources by id")
    assert err.value.status is None and err.value.outcome is None


def test_next_links_to_another_origin_are_not_followed(client: Client) -> None:
    """Verify a search page whose next link names another host is refused before any request."""
    entry = {
        "response": {"status": "200 OK"},
        "resource": {
            "resourceType": "Bundle",
            "entry": [{"resource": _lib("A")}],
            "link": [{"relation": "next", "url": "https://elsewhere.example/fhir?_getpages=x"}],
        },
    }
    with pytest.raises(ServerRejectedError, match="another origin"):
        _search_results(client, entry, "Library resources by url|version")
    assert client.requests_sent == 0


# --- planning and publishing --------------------------------------------------------------------


def test_plan_publish_decides_each_action(fake: FakeFhir, client: Client) -> None:
    """Verify created, updated, unchanged and conflict (same url|version, other content) decisions."""
    fake.store = {
        "Library/Same": _lib("Same", status="active"),
        "Library/Old": _lib("Old", "0.9.0"),
        "Library/Changed": _lib("Changed", status="draft"),
        "Library/Elsewhere": {**_lib("Moved", status="draft"), "id": "Elsewhere"},
    }
    ours = [_lib("Same", status="active"), _lib("Old"), _lib("New"), _lib("Changed", status="active"), _lib("Moved")]
    outcomes = {o.key: o for o in plan_publish(client, ours, force=False)}
    assert {k: o.action for k, o in outcomes.items()} == {
        "Library/Same": "unchanged",
        "Library/Old": "updated",
        "Library/New": "created",
        "Library/Changed": "conflict",
        "Library/Moved": "conflict",
    }
    assert "replaces version 0.9.0" in outcomes["Library/Old"].detail
    assert "bump the version" in outcomes["Library/Changed"].detail
    assert "as Library/Elsewhere" in outcomes["Library/Moved"].detail
    forced = {o.key: o.action for o in plan_publish(client, ours, force=True)}
    assert forced["Library/Changed"] == forced["Library/Moved"] == "forced"


def test_cold_publish_is_four_requests_and_one_transaction(fake: FakeFhir, stub: Stub, client: Client) -> None:
    """Verify a first publish: metadata, the url|version batch, the id batch, then ONE transaction of PUTs."""
    ours = [_lib("A"), _lib("B"), _plan("P")]
    result = publish_resources(client, ours)
    assert result.writes == 3 and result.counts() == {"created": 3}
    assert [(s.method, s.path) for s in stub.seen] == [("GET", "/fhir/metadata")] + [("POST", "/fhir")] * 3
    tx = stub.seen[-1].json()
    assert tx["type"] == "transaction"
    assert [e["request"] for e in tx["entry"]] == [
        {"method": "PUT", "url": "Library/A"},
        {"method": "PUT", "url": "Library/B"},
        {"method": "PUT", "url": "PlanDefinition/P"},
    ]
    assert result.requests == 3  # after the capability check


def test_noop_publish_is_two_requests(fake: FakeFhir, stub: Stub, client: Client) -> None:
    """Verify that re-publishing the same content is the capability check and ONE lookup batch, nothing more."""
    ours = [_lib("A"), _lib("B"), _plan("P")]
    publish_resources(client, ours)
    stub.seen.clear()
    before = client.requests_sent
    result = publish_resources(client, ours)
    assert result.writes == 0 and result.counts() == {"unchanged": 3}
    assert [(s.method, s.path) for s in stub.seen] == [("GET", "/fhir/metadata"), ("POST", "/fhir")]
    assert client.requests_sent - before == 2 and result.requests == 1
    assert stub.seen[0].query == {"_elements": ["fhirVersion,rest.mode,rest.interaction"]}


def test_dry_run_and_conflicts_write_nothing(fake: FakeFhir, stub: Stub, client: Client) -> None:
    """Verify that a dry run plans without a transaction, and a conflict refuses before any write."""
    result = publish_resources(client, [_lib("A")], dry_run=True)
    assert result.dry_run and result.writes == 0 and result.counts() == {"created": 1}
    assert result.to_json()["summary"] == {"created": 1}
    fake.store["Library/A"] = _lib("A", status="draft")
    stub.seen.clear()
    with pytest.raises(VersionConflictError) as err:
        publish_resources(client, [_lib("A", status="active")])
    assert "bump the package version" in err.value.message
    assert err.value.details and err.value.details[0].startswith(f"Library/A ({BASE}/Library/A|1.0.0)")
    assert all(s.json()["type"] == "batch" for s in stub.seen if s.method == "POST")


def test_a_transaction_answer_of_the_wrong_type_is_refused(fake: FakeFhir, stub: Stub, client: Client) -> None:
    """Verify that a server answering the transaction with something else than a transaction-response is refused."""

    def respond(req: Seen) -> Reply:
        if req.method == "POST" and req.json()["type"] == "transaction":
            return Reply(200, {"resourceType": "Bundle", "type": "batch-response"})
        return fake(req)

    stub.respond = respond
    with pytest.raises(ServerRejectedError, match="Bundle/batch-response, not a transaction-response"):
        publish_resources(client, [_lib("A")])


def test_search_urls_in_the_batch_are_well_formed(fake: FakeFhir, stub: Stub, client: Client) -> None:
    """Verify that the batch's search URLs carry the escaped values and the page size."""
    publish_resources(client, [_lib("A,1")], dry_run=True)
    url = stub.seen[1].json()["entry"][0]["request"]["url"]
    parts = urlsplit(url)
    assert parts.path == "Library"
    assert "url=http%3A%2F%2Fexample.org%2Ffhir%2Fgl%2FLibrary%2FA%5C%2C1" in parts.query
    assert parts.query.endswith("&_count=500")
