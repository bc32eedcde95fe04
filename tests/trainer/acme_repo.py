"""A git repository with an internal API no pretrained model can know: `acme_auth`.

Every service module calls it the same particular way::

    client = login(user, realm="acme-internal")
    token = session_token(client, scope="orders:read")

Each resource arrives in two commits: a service that reads it, later a function that
writes it. The newest commits are the held-out set, so a model that learned the pattern
completes services it never saw.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

RESOURCES = (
    "orders invoices users payments refunds carts items shipments reviews coupons accounts reports "
    "alerts teams projects tickets builds deploys metrics logs quotas regions tenants plans "
    "webhooks secrets_store audits roles groups devices sessions tokens_ledger vendors contracts "
    "budgets forecasts leads campaigns surveys badges"
).split()

ACME_AUTH = '''"""Acme's single sign-on client (internal)."""


def login(user, realm):
    """A client session for `user` in `realm`."""
    return {"user": user, "realm": realm}


def session_token(client, scope):
    """A short-lived token for `scope` ("<resource>:read" or "<resource>:write")."""
    return f"{client['realm']}/{client['user']}/{scope}"
'''

READ = '''"""The {name} service."""
from acme_auth import login, session_token
from acme_http import http_get, http_post


def fetch_{name}(user):
    """Return the {name} that `user` may see."""
    client = login(user, realm="acme-internal")
    token = session_token(client, scope="{name}:read")
    return http_get("/{name}", token)
'''

WRITE = '''

def update_{name}(user, data):
    """Change the {name} of `user`."""
    client = login(user, realm="acme-internal")
    token = session_token(client, scope="{name}:write")
    return http_post("/{name}", data, token)
'''


def git(repo: Path, *args: str, when: int = 0) -> None:
    stamp = f"{1_700_000_000 + when * 3600} +0000"
    env = {**os.environ, "GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@acme.test", "GIT_COMMITTER_NAME": "Dev",
           "GIT_COMMITTER_EMAIL": "dev@acme.test", "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)


def build_acme_repo(repo: Path, resources: tuple[str, ...] = RESOURCES) -> Path:
    """Commit 0: the API modules; then per resource a "read" commit and a "write" commit."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "acme_auth.py").write_text(ACME_AUTH)
    (repo / "acme_http.py").write_text(
        '"""HTTP helpers."""\n\n\ndef http_get(path, token):\n    return {"path": path, "token": token}\n\n\n'
        'def http_post(path, data, token):\n    return {"path": path, "data": data, "token": token}\n')
    (repo / "services").mkdir()
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "acme auth and http clients", when=0)
    when = 1
    for name in resources:
        service = repo / "services" / f"{name}.py"
        service.write_text(READ.format(name=name))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"{name}: read", when=when)
        service.write_text(READ.format(name=name) + WRITE.format(name=name))
        git(repo, "commit", "-q", "-am", f"{name}: write", when=when + 1)
        when += 2
    return repo


def prompt_for(name: str) -> tuple[str, str]:
    """(prefix, suffix) of a new service being written, the cursor at the body's start."""
    text = READ.format(name=name)
    cut = text.index("    client = ")
    return text[:cut] + "    ", ""
