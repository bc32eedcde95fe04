"""Who may call what: FastAPI dependencies the routers declare.

`require_user` guards every /v1 route, `require_admin` the ones that change what is served
or read everyone's data (adapters, experiments, export, logs, forgetting a user). With no
token file (server/tokens.py) auth is off and both let every request through, as before.
The answer to a bad token never says which tokens exist: one message for missing, unknown
and revoked.
"""
from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.schemas import Error
from server.tokens import Principal, TokenStore

bearer = HTTPBearer(auto_error=False, description="a token from `codeloop token create`")
USER_RESPONSES = {401: {"model": Error, "description": "missing, unknown or revoked token"}}
ADMIN_RESPONSES = {**USER_RESPONSES, 403: {"model": Error, "description": "the route needs an admin token"}}
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def token_store(request: Request) -> TokenStore | None:
    return getattr(request.app.state, "tokens", None)


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal | None:
    """The request's principal; None when auth is off. Raises 401 when auth is on and the
    token is missing or does not check out."""
    store = token_store(request)
    if store is None:
        return None
    if not store.enabled:  # re-reads the file if it changed: auth turns on when the first token appears
        return None
    if credentials is None:
        raise HTTPException(401, "this server needs `Authorization: Bearer <token>`; ask its operator for a token "
                                 "(`codeloop token create --user NAME`)", headers=_CHALLENGE)
    principal = store.check(credentials.credentials)
    if principal is None and store.problem:
        raise HTTPException(401, f"no token is valid now: {store.problem}", headers=_CHALLENGE)
    if principal is None:
        raise HTTPException(401, "the token is not valid (unknown or revoked)", headers=_CHALLENGE)
    request.state.principal = principal
    return principal


async def require_user(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal | None:
    return authenticate(request, credentials)


async def require_admin(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal | None:
    principal = authenticate(request, credentials)
    if principal is not None and not principal.admin:
        raise HTTPException(403, "this route needs an admin token (`codeloop token create --admin`)")
    return principal


def principal_of(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)
