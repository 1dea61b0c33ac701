"""`guideline cds` JWT flags (`call --jwt-key/--jwt-iss/--jwt-kid`) and `cds keygen`: CDS Hooks client security."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from guideline.core.errors import UsageError
from guideline.remote.http import Client
from guideline.remote.jwt_auth import ALGORITHMS, CdsJwtSigner, generate_key_pair, load_private_key, sign_cds_calls


def add_jwt_args(parser: argparse.ArgumentParser) -> None:
    """The flags that make `cds call` sign each service call (CDS Hooks 2.0 client JWT)."""
    parser.add_argument(
        "--jwt-key",
        type=Path,
        default=None,
        metavar="PEM",
        help="sign each call with this private key (EC P-384 -> ES384, RSA -> RS384); needs --jwt-iss",
    )
    parser.add_argument(
        "--jwt-iss", default=None, metavar="ISS", help="the JWT issuer (as in the trusted-issuers file)"
    )
    parser.add_argument("--jwt-kid", default=None, metavar="KID", help="the key id put in the JWT header")


def define_keygen(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`cds keygen`: a key pair for an EHR (or a test) that signs CDS calls."""
    k = sub.add_parser("keygen", help="make a JWT signing key pair: private-key.pem (0600) + jwks.json")
    k.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for the two files (never overwritten)"
    )
    k.add_argument("--alg", choices=ALGORITHMS, default="ES384", help="ES384 (default, EC P-384) or RS384 (RSA 3072)")
    k.add_argument("--kid", default=None, metavar="KID", help="key id (default: random)")


def apply_jwt(args: argparse.Namespace, client: Client) -> None:
    """Sign the client's CDS calls when --jwt-key is given (UsageError if --jwt-iss is missing)."""
    if args.jwt_key is None:
        if args.jwt_iss or args.jwt_kid:
            raise UsageError("--jwt-iss/--jwt-kid need --jwt-key (the private key that signs the calls)")
        return
    if not args.jwt_iss:
        raise UsageError("--jwt-key needs --jwt-iss (the issuer the CDS service trusts)")
    sign_cds_calls(client, CdsJwtSigner(load_private_key(args.jwt_key), args.jwt_iss, kid=args.jwt_kid))


def keygen_main(args: argparse.Namespace) -> int:
    """Write the key pair and print where, plus the trusted-issuers entry the CDS server needs."""
    private_path, jwks_path, kid = generate_key_pair(args.out, alg=args.alg, kid=args.kid)
    print(f"private key: {private_path} (mode 0600; keep it secret)")
    print(f"public JWKS: {jwks_path} (kid {kid}, {args.alg})")
    entry = {"issuers": [{"iss": "<your EHR's issuer>", "jwks": str(jwks_path.resolve())}]}
    print("trusted-issuers file for the CDS server (scripts/server start --cds-issuers FILE):")
    print(json.dumps(entry, indent=2))
    return 0
