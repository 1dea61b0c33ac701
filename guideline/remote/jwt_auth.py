"""CDS Hooks client authentication: sign each service call with a JWT (CDS Hooks 2.0), and make key pairs for it.

The EHR (here: our `guideline cds call`) signs a fresh token per call with its private key: header `alg`
ES384 or RS384, `kid`, `typ` JWT; claims `iss` (the EHR), `sub` (the client id, = iss here), `aud` (the
service URL, e.g. https://cds.example.org/cds-services/gl-treatment), `iat`, `exp` (at most 5 minutes
later), `jti` (random, never reused). The service checks them against its trusted-issuers file.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from guideline.core.errors import BadInputError, UsageError
from guideline.remote.http import Client

ALGORITHMS = ("ES384", "RS384")  # what CDS Hooks 2.0 recommends; what keygen makes and the signer uses
MAX_LIFETIME_S = 300  # CDS Hooks: exp no more than 5 minutes after iat
PRIVATE_KEY_FILE = "private-key.pem"
JWKS_FILE = "jwks.json"
# A service call or its feedback endpoint: .../cds-services/{id} or .../cds-services/{id}/feedback
_SERVICE_URL = re.compile(r"^(?P<service>https?://[^?#]+/cds-services/[^/?#]+)(?:/feedback)?/?(?:[?#].*)?$")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def load_private_key(path: Path) -> PrivateKey:
    """The EC P-384 or RSA (>= 2048 bits) private key in a PEM file; BadInputError says what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"cannot read the JWT private key {path}: {e.strerror or e}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise BadInputError(
            f"{path} is not an unencrypted PEM private key; make one with `guideline cds keygen --out DIR`"
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return key
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key
    raise BadInputError(f"{path}: use an EC P-384 (ES384) or RSA >= 2048-bit (RS384) key")


def algorithm_for(key: PrivateKey) -> str:
    """ES384 for an EC key, RS384 for an RSA key."""
    return "ES384" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS384"


def public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The public half of `key` as a JWK (with kid, use sig and alg), for the service's JWKS file."""
    pub = key.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(pub, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(pub, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": algorithm_for(key)}


class CdsJwtSigner:
    """Signs one fresh JWT per CDS service call for issuer `iss` with a private key."""

    def __init__(
        self,
        key: PrivateKey,
        iss: str,
        *,
        kid: str | None = None,
        jku: str | None = None,
        lifetime_s: int = MAX_LIFETIME_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not iss.strip():
            raise UsageError("--jwt-iss must name the issuer (the EHR's id in the service's trusted-issuers file)")
        if not 0 < lifetime_s <= MAX_LIFETIME_S:
            raise UsageError(f"a CDS Hooks JWT lives at most {MAX_LIFETIME_S} s, got {lifetime_s}")
        self._key = key
        self.iss = iss
        self.kid = kid
        self.jku = jku
        self.alg = algorithm_for(key)
        self.lifetime_s = lifetime_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"<CdsJwtSigner iss={self.iss!r} alg={self.alg} kid={self.kid!r}>"

    def sign(self, aud: str) -> str:
        """A compact JWS for a call to the service at `aud` (its URL, without /feedback)."""
        now = int(self._clock())
        claims = {
            "iss": self.iss,
            "sub": self.iss,
            "aud": aud,
            "iat": now,
            "exp": now + self.lifetime_s,
            "jti": str(uuid.uuid4()),
        }
        headers: dict[str, Any] = {"typ": "JWT"}
        if self.kid:
            headers["kid"] = self.kid
        if self.jku:
            headers["jku"] = self.jku
        return jwt.encode(claims, self._key, algorithm=self.alg, headers=headers)


def service_url(url: str) -> str | None:
    """The service URL (the JWT's aud) for a call or feedback URL under /cds-services/{id}; None for others."""
    m = _SERVICE_URL.match(url)
    return m.group("service") if m else None


class CdsJwtAuth(requests.auth.AuthBase):
    """Adds a freshly signed JWT to each POST to a CDS service (or its feedback); other requests keep `inner`.

    Each attempt gets its own token (requests calls auth per send), so a retry never replays a jti.
    """

    def __init__(self, signer: CdsJwtSigner, inner: Any = None) -> None:
        self.signer = signer
        self.inner = inner

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        aud = service_url(r.url or "") if r.method == "POST" else None
        if aud is None:
            return self.inner(r) if self.inner is not None else r
        r.headers["Authorization"] = f"Bearer {self.signer.sign(aud)}"
        return r

    def __repr__(self) -> str:
        return f"<CDS JWT auth {self.signer!r}>"


def sign_cds_calls(client: Client, signer: CdsJwtSigner) -> None:
    """Make `client` sign every CDS service call with `signer` (its other requests are unchanged)."""
    client.session.auth = CdsJwtAuth(signer, client.session.auth)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet, created with `mode` (never briefly wider), via temp + rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate_key_pair(out_dir: Path, *, alg: str = "ES384", kid: str | None = None) -> tuple[Path, Path, str]:
    """A new key pair in `out_dir`: private-key.pem (mode 0600) and jwks.json (its public JWK). Returns both + kid.

    Refuses to overwrite an existing key (losing it would lock the EHR out; reusing a folder is a mistake).
    """
    if alg not in ALGORITHMS:
        raise UsageError(f"--alg must be one of {', '.join(ALGORITHMS)}, got {alg}")
    private_path, jwks_path = out_dir / PRIVATE_KEY_FILE, out_dir / JWKS_FILE
    existing = [p for p in (private_path, jwks_path) if p.exists()]
    if existing:
        raise UsageError(f"{existing[0]} exists; keygen never overwrites a key: give a new --out folder")
    key: PrivateKey = (
        ec.generate_private_key(ec.SECP384R1()) if alg == "ES384" else rsa.generate_private_key(65537, 3072)
    )
    kid = kid or uuid.uuid4().hex[:16]
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    jwks = json.dumps({"keys": [public_jwk(key, kid)]}, indent=2) + "\n"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_new(private_path, pem, 0o600)
        _write_new(jwks_path, jwks.encode("utf-8"), 0o644)
    except OSError as e:
        raise UsageError(f"cannot write the key pair in {out_dir}: {e.strerror or e}") from None
    return private_path, jwks_path, kid
