#!/usr/bin/env python3
"""Issues a Switchboard token, as your backend would: an HS256 JWT with a `switchboard` claim.

Python's standard library only. In a real backend, use your JWT library (PyJWT, jsonwebtoken,
jose, ...) the same way: sign {"sub", "exp", "switchboard": {"subscribe": [...], "publish": [...]}}
with the secret the gateway has in --jwt-secret.

    SWITCHBOARD_JWT_SECRET=... python3 examples/issue_token.py ann chat 'room.*' --publish chat
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue(secret: str, claims: dict) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sub", help="who the token is for")
    parser.add_argument("subscribe", nargs="*", help="topic patterns it may subscribe to")
    parser.add_argument("--publish", action="append", default=[], help="a topic pattern it may publish to")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    args = parser.parse_args()
    secret = os.environ.get("SWITCHBOARD_JWT_SECRET")
    if not secret:
        parser.error("set SWITCHBOARD_JWT_SECRET to the gateway's --jwt-secret")
    claims = {
        "sub": args.sub,
        "exp": int(time.time()) + args.ttl,
        "switchboard": {"subscribe": args.subscribe, "publish": args.publish},
    }
    print(issue(secret, claims))


if __name__ == "__main__":
    main()
