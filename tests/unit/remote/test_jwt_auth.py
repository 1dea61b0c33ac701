"""Unit tests for the CDS Hooks client JWT: claims, header, which requests get one, and the key tool."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import jwt
import pytest
import requests

from guideline.core.errors import BadInputError, UsageError
from guideline.remote.http import Client
from guideline.remote.jwt_auth import (
    CdsJwtAuth,
    CdsJwtSigner,
    generate_key_pair,
    load_private_key,
    service_url,
    sign_cds_calls,
)

AUD = "https://cds.example.org/cds-services/gl-treatment"


@pytest.fixture(scope="module")
def es384(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    return generate_key_pair(tmp_path_factory.mktemp("es") / "keys", kid="k-es")


@pytest.fixture(scope="module")
def rs384(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    return generate_key_pair(tmp_path_factory.mktemp("rs") / "keys", alg="RS384", kid="k-rs")


def _decode(token: str, jwks: Path, *, now: bool = True) -> tuple[dict[str, object], dict[str, object]]:
    """Header and claims of a token that verifies with the JWKS (times checked against now unless `now` is False)."""
    key = jwt.PyJWKSet.from_dict(json.loads(jwks.read_text(encoding="utf-8"))).keys[0]
    options = {} if now else {"verify_exp": False, "verify_iat": False}
    claims = jwt.decode(token, key.key, algorithms=["ES384", "RS384"], audience=AUD, options=options)
    return jwt.get_unverified_header(token), claims


@pytest.mark.parametrize("which,alg", [("es384", "ES384"), ("rs384", "RS384")])
def test_signed_token_has_the_cds_hooks_claims_and_header(which: str, alg: str, request: pytest.FixtureRequest) -> None:
    """Verify that a token verifies with the public JWKS and carries iss, sub, aud, iat, exp (<= 5 min), jti."""
    private, jwks, kid = request.getfixturevalue(which)
    signer = CdsJwtSigner(load_private_key(private), "https://ehr.example.org", kid=kid, clock=lambda: 1_800_000_000)
    header, claims = _decode(signer.sign(AUD), jwks, now=False)
    assert header == {"alg": alg, "kid": kid, "typ": "JWT"}
    assert claims["iss"] == claims["sub"] == "https://ehr.example.org"
    assert claims["aud"] == AUD
    assert claims["iat"] == 1_800_000_000
    assert claims["exp"] == 1_800_000_000 + 300


def test_every_token_has_a_fresh_jti(es384: tuple[Path, Path, str]) -> None:
    """Verify that two tokens for the same call differ in jti (the service refuses a replayed one)."""
    signer = CdsJwtSigner(load_private_key(es384[0]), "iss")
    jtis = {_decode(signer.sign(AUD), es384[1])[1]["jti"] for _ in range(20)}
    assert len(jtis) == 20


def test_jku_goes_in_the_header_when_given(es384: tuple[Path, Path, str]) -> None:
    """Verify that a jku given to the signer is put in the header (the service checks it against its allow-list)."""
    signer = CdsJwtSigner(load_private_key(es384[0]), "iss", jku="https://ehr.example.org/jwks.json")
    assert jwt.get_unverified_header(signer.sign(AUD))["jku"] == "https://ehr.example.org/jwks.json"


def test_lifetime_over_five_minutes_and_empty_issuer_are_refused(es384: tuple[Path, Path, str]) -> None:
    """Verify that a lifetime over 300 s or a blank iss is a usage error, not a token the service would refuse."""
    key = load_private_key(es384[0])
    with pytest.raises(UsageError, match="at most 300"):
        CdsJwtSigner(key, "iss", lifetime_s=301)
    with pytest.raises(UsageError, match="--jwt-iss"):
        CdsJwtSigner(key, " ")


@pytest.mark.parametrize(
    "url,service",
    [
        (AUD, AUD),
        (AUD + "/feedback", AUD),
        (AUD + "/", AUD),
        ("http://127.0.0.1:8080/cds-services", None),
        ("http://127.0.0.1:8080/fhir/Patient/1", None),
        ("http://127.0.0.1:8080/cds-services/a/b", None),
    ],
)
def test_service_url_is_the_aud_of_calls_and_feedback(url: str, service: str | None) -> None:
    """Verify that calls and feedback map to the service URL, discovery and FHIR URLs to nothing."""
    assert service_url(url) == service


def test_auth_signs_only_service_posts_and_keeps_the_fhir_token(es384: tuple[Path, Path, str]) -> None:
    """Verify that POSTs to a service get a JWT for that service, other requests the client's own bearer token."""
    with Client("http://127.0.0.1:9/fhir", token="fhir-token") as client:  # noqa: S106 - a test token
        sign_cds_calls(client, CdsJwtSigner(load_private_key(es384[0]), "iss"))
        auth = client.session.auth
        assert isinstance(auth, CdsJwtAuth)
        call = auth(requests.Request("POST", AUD + "/feedback", json={}).prepare())
        token = call.headers["Authorization"].removeprefix("Bearer ")
        assert _decode(token, es384[1])[1]["aud"] == AUD
        other = auth(requests.Request("GET", "http://127.0.0.1:9/fhir/Patient/1").prepare())
        assert other.headers["Authorization"] == "Bearer fhir-token"
        discovery = auth(requests.Request("GET", "http://127.0.0.1:9/cds-services").prepare())
        assert discovery.headers["Authorization"] == "Bearer fhir-token"
        assert "fhir-token" not in repr(auth)


def test_keygen_writes_a_private_key_only_its_owner_reads(es384: tuple[Path, Path, str]) -> None:
    """Verify that the private key is mode 0600, the JWKS public only (no 'd'), with kid, use and alg."""
    private, jwks, kid = es384
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    (key,) = json.loads(jwks.read_text(encoding="utf-8"))["keys"]
    assert "d" not in key
    assert (key["kid"], key["use"], key["alg"], key["kty"], key["crv"]) == (kid, "sig", "ES384", "EC", "P-384")


def test_keygen_never_overwrites_a_key(es384: tuple[Path, Path, str]) -> None:
    """Verify that keygen into a folder that has a key refuses, leaving the key as it was."""
    before = es384[0].read_bytes()
    with pytest.raises(UsageError, match="never overwrites"):
        generate_key_pair(es384[0].parent)
    assert es384[0].read_bytes() == before


def test_bad_private_keys_are_bad_input(tmp_path: Path, es384: tuple[Path, Path, str]) -> None:
    """Verify that a missing file, a non-PEM file and a public JWKS each give one BadInputError saying what to do."""
    with pytest.raises(BadInputError, match="cannot read"):
        load_private_key(tmp_path / "missing.pem")
    with pytest.raises(BadInputError, match="keygen"):
        load_private_key(es384[1])
