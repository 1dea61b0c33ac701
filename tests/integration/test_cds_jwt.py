"""Verify CDS Hooks security on a real server: signed JWTs pass, every bad one is a 401 before any evaluation.

A server of this module's own is started with a trusted-issuers file (scripts/server start --cds-issuers): issuer
ISS with key k1 in a JWKS file, and a jku allow-list naming one URL of a loopback HTTP server that serves key k3.
Tokens are made with PyJWT (the client's library) and checked by Nimbus JOSE+JWT on the server: two libraries
that did not write each other.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from guideline.remote.cds import call, cds_base_for, discover
from guideline.remote.http import Client
from guideline.remote.jwt_auth import (
    CdsJwtSigner,
    PrivateKey,
    generate_key_pair,
    load_private_key,
    public_jwk,
    sign_cds_calls,
)
from guideline.remote.patients import days_until, load_patient, roll_dates
from guideline.remote.publish import publish_resources
from tests.support import CASES_DIR, ROOT
from tests.support.netutil import free_port, serve_local

pytestmark = pytest.mark.server

ISS = "https://ehr.test.example"
SERVICE = "gl-treatment"
CASE = "r2-galactorrhoea"
# Not JSON: with a good token the servlet answers 400 to it, so a 401 shows the request stopped before the servlet.
NOT_JSON = b"not json: only the CDS servlet would read this"


@dataclass(frozen=True)
class Keys:
    """The module's keys: k1 trusted by file, k2 trusted by nobody, k3 served at an allowed jku."""

    k1: PrivateKey
    k2: PrivateKey
    k3: PrivateKey
    jku_allowed: str
    jku_other: str


class _JwksHandler(BaseHTTPRequestHandler):
    """Serves /allowed.json and /other.json, both k3's public JWKS (only the first is on the allow-list)."""

    body = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        """Answer the JWKS for the two known paths, 404 otherwise."""
        ok = self.path in ("/allowed.json", "/other.json")
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if ok:
            self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def keys_and_issuers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Keys, Path]]:
    """Three key pairs, a loopback JWKS server for k3, and the trusted-issuers file naming k1 and the jku."""
    tmp = tmp_path_factory.mktemp("jwt")
    pairs = {name: generate_key_pair(tmp / name, kid=name) for name in ("k1", "k2", "k3")}
    handler = type("Handler", (_JwksHandler,), {"body": pairs["k3"][1].read_bytes()})
    loaded = {name: load_private_key(p[0]) for name, p in pairs.items()}
    with serve_local(handler) as port:
        base = f"http://127.0.0.1:{port}"
        issuers = tmp / "issuers.json"
        entry = {"iss": ISS, "jwks": "k1/jwks.json", "jku": [f"{base}/allowed.json"]}
        issuers.write_text(json.dumps({"issuers": [entry]}), encoding="utf-8")
        yield Keys(loaded["k1"], loaded["k2"], loaded["k3"], f"{base}/allowed.json", f"{base}/other.json"), issuers


@pytest.fixture(scope="module")
def keys(keys_and_issuers: tuple[Keys, Path]) -> Keys:
    return keys_and_issuers[0]


@pytest.fixture(scope="module")
def secured(keys_and_issuers: tuple[Keys, Path], published: dict[str, Any]) -> Iterator[str]:
    """A knowledge server requiring signed CDS calls (its FHIR base), with the package published on it."""
    port = os.environ.get("GUIDELINE_TEST_JWT_PORT") or str(free_port())
    env = {**os.environ, "GUIDELINE_SERVER_PORT": port}
    script = str(ROOT / "scripts" / "server")
    started = subprocess.run(
        [script, "start", "--cds-issuers", str(keys_and_issuers[1])],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        assert started.returncode == 0, f"the JWT server did not start: {started.stderr[-2000:]}"
        url = started.stdout.strip().rstrip("/")
        with Client(url) as client:
            publish_resources(client, published["pkg"].resources)
            deadline = time.monotonic() + 120
            while SERVICE not in {s["id"] for s in discover(client)}:
                assert time.monotonic() < deadline, f"{SERVICE} not registered within 120 s"
                time.sleep(1)
        yield url
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, check=False)


@pytest.fixture(scope="module")
def patient(secured: str, server_url: str) -> str:
    """One scenario's patient (dates rolled to today) on both the secured and the open server."""
    bundle = json.loads((CASES_DIR / CASE / "patient.json").read_text(encoding="utf-8"))
    expected = json.loads((CASES_DIR / CASE / "expected.json").read_text(encoding="utf-8"))
    rolled = roll_dates(bundle, days_until(expected["at"]))
    for url in (secured, server_url):
        with Client(url) as client:
            load_patient(client, rolled)
    return str(next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"))


def _claims(aud: str, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISS, "sub": ISS, "aud": aud, "iat": now, "exp": now + 240, "jti": str(uuid.uuid4()), **over}


def _token(key: PrivateKey, claims: dict[str, Any], **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm="ES384", headers={"typ": "JWT", **headers})


def _unsigned(claims: dict[str, Any]) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _hs256_with_public_key(key: PrivateKey, claims: dict[str, Any]) -> str:
    # the classic confusion attack: the issuer's public key (as published) used as an HMAC secret
    # (PyJWT itself refuses a whole JWK as a secret: take its public x coordinate)
    return jwt.encode(claims, public_jwk(key, "k1")["x"], algorithm="HS256", headers={"kid": "k1"})


def _post(url: str, token: str | None, body: bytes = NOT_JSON) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url, data=body, headers=headers, timeout=60)


def _no_uuids(node: Any) -> Any:
    if isinstance(node, list):
        return [_no_uuids(v) for v in node]
    if isinstance(node, dict):
        return {k: _no_uuids(v) for k, v in node.items() if k != "uuid"}
    return node


def test_signed_call_gives_the_cards_of_an_unsigned_call_on_the_open_server(
    secured: str, server_url: str, patient: str, keys: Keys
) -> None:
    """Verify that a call signed by a trusted issuer gets exactly the open server's cards (uuids aside)."""
    with Client(server_url) as open_client:
        expected = call(open_client, SERVICE, patient=patient)
    assert expected["cards"], "the scenario should give cards, else the comparison proves nothing"
    with Client(secured) as client:
        sign_cds_calls(client, CdsJwtSigner(keys.k1, ISS, kid="k1"))
        got = call(client, SERVICE, patient=patient)
    assert _no_uuids(got["cards"]) == _no_uuids(expected["cards"])


def test_good_token_reaches_the_servlet(secured: str, keys: Keys) -> None:
    """Verify that the NOT_JSON body with a good token gets the servlet's 400: the 401s below are the filter's."""
    url = f"{cds_base_for(secured)}/{SERVICE}"
    resp = _post(url, _token(keys.k1, _claims(url), kid="k1"))
    assert resp.status_code == 400, resp.text


BAD = {
    "no token": (lambda k, url: None, "JWT is required"),
    "unsigned (alg none)": (lambda k, url: _unsigned(_claims(url)), "not signed"),
    "HS256 with a public key": (lambda k, url: _hs256_with_public_key(k.k1, _claims(url)), "HS256 is not accepted"),
    "wrong key": (lambda k, url: _token(k.k2, _claims(url), kid="k1"), "signature does not verify"),
    "expired": (
        lambda k, url: _token(k.k1, _claims(url, iat=int(time.time()) - 900, exp=int(time.time()) - 600)),
        "expired",
    ),
    "iat in the future": (
        lambda k, url: _token(k.k1, _claims(url, iat=int(time.time()) + 200, exp=int(time.time()) + 280)),
        "iat is in the future",
    ),
    "exp too far ahead": (lambda k, url: _token(k.k1, _claims(url, exp=int(time.time()) + 3600)), "s ahead"),
    "wrong aud": (lambda k, url: _token(k.k1, _claims(url.replace(SERVICE, "gl-rec-1"))), "aud is not"),
    "unknown iss": (lambda k, url: _token(k.k1, _claims(url, iss="https://other.example")), "not a trusted issuer"),
    "no jti": (lambda k, url: _token(k.k1, {**_claims(url), "jti": ""}), "needs a jti"),
    "jku not allowed": (lambda k, url: _token(k.k3, _claims(url), jku=k.jku_other, kid="k3"), "not on the allow-list"),
    "not a JWT": (lambda k, url: "abc.def", "not a JWT"),
}


# Every reject reason is a unit test of the filter (server/src/test: CdsJwtVerifierTest); over HTTP the default tier
# keeps two as the filter's smoke test (no token; a signature that does not verify), --full sends them all.
HTTP_SMOKE = {"no token", "wrong key"}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=() if c in HTTP_SMOKE else pytest.mark.full) for c in BAD], ids=list(BAD)
)
def test_bad_tokens_are_401_before_evaluation(secured: str, keys: Keys, case: str) -> None:
    """Verify that each bad token gets 401 with its reason (never the token) and the body is never read."""
    url = f"{cds_base_for(secured)}/{SERVICE}"
    make, reason = BAD[case]
    token = make(keys, url)
    resp = _post(url, token)
    assert resp.status_code == 401, resp.text
    assert reason in resp.json()["error"], resp.text
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    if token:
        assert token not in resp.text and token.split(".")[1] not in resp.text


def test_replayed_token_is_401(secured: str, keys: Keys) -> None:
    """Verify that a token accepted once is refused the second time (same jti)."""
    url = f"{cds_base_for(secured)}/{SERVICE}"
    token = _token(keys.k1, _claims(url), kid="k1")
    assert _post(url, token).status_code == 400  # accepted: reached the servlet
    again = _post(url, token)
    assert again.status_code == 401 and "replayed" in again.json()["error"], again.text


def test_allowed_jku_served_on_loopback_works(secured: str, patient: str, keys: Keys) -> None:
    """Verify that a token naming the allow-listed jku verifies with the key fetched from there (k3, not in files)."""
    with Client(secured) as client:
        sign_cds_calls(client, CdsJwtSigner(keys.k3, ISS, kid="k3", jku=keys.jku_allowed))
        assert call(client, SERVICE, patient=patient)["cards"]


def test_feedback_needs_a_token_and_discovery_does_not(secured: str) -> None:
    """Verify that feedback is protected like the call, while discovery and the CORS preflight stay open."""
    base = cds_base_for(secured)
    assert _post(f"{base}/{SERVICE}/feedback", None, b"{}").status_code == 401
    assert requests.get(base, timeout=30).status_code == 200
    pre = requests.options(
        f"{base}/{SERVICE}",
        headers={"Origin": "https://sandbox.example", "Access-Control-Request-Headers": "authorization"},
        timeout=30,
    )
    assert pre.status_code == 204
    assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()


@pytest.mark.full  # a unit test of the filter too (CdsJwtFilterTest.startWithoutIssuers); here a real JVM start
def test_server_off_127_0_0_1_refuses_to_start_without_issuers(tmp_path: Path) -> None:
    """Verify that a server bound to another address (127.0.0.2: still loopback, so safe) without issuers exits.

    The JVM is run as scripts/server runs it, but with -Dserver.address=127.0.0.2 (scripts/server binds 127.0.0.1).
    """
    target = ROOT / "server" / "target"
    if not (target / "classpath.txt").exists():
        pytest.fail("server/ is not built: run ./scripts/setup")
    classpath = f"{target / 'classes'}:{(target / 'classpath.txt').read_text(encoding='utf-8').strip()}"
    cmd = ["java", "-Xmx768m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Dserver.address=127.0.0.2"]
    cmd += [f"-Dserver.port={free_port()}", "-cp", classpath, "org.example.gl.server.GuidelineServer"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert "binds to 127.0.0.2 but no trusted-issuers file is set" in proc.stdout + proc.stderr
