"""Git mining on real repositories built here: examples, filters, duplicates, secrets, errors."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.feedback.test_secrets import PLANTED, PRIVATE_KEY, planted_code
from trainer.config import MiningConfig
from trainer.dedupe import dedupe
from trainer.examples import Example, MiningReport
from trainer.filters import glob_reason, glob_regex
from trainer.mining import MiningError, mine_repositories, mine_repository

T0 = 1_700_000_000  # commit times are T0 + `when`
DEV = ("Dev", "dev@example.com")


class Repo:
    """A real git repository in a temporary folder; commits have fixed authors and dates."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str, when: int = 0, author: tuple[str, str] = DEV, committed: int | None = None) -> str:
        env = {
            **os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1], "GIT_AUTHOR_DATE": f"{T0 + when} +0000",
            "GIT_COMMITTER_NAME": DEV[0], "GIT_COMMITTER_EMAIL": DEV[1],
            "GIT_COMMITTER_DATE": f"{T0 + (when if committed is None else committed)} +0000",
        }
        done = subprocess.run(["git", "-C", str(self.path), *args], env=env, capture_output=True, check=True)
        return done.stdout.decode()

    def commit(self, files: dict[str, str | bytes | None], when: int, **kw) -> str:
        """Write (None: delete) the files, commit them all; return the commit's sha."""
        for name, content in files.items():
            target = self.path / name
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", f"change {when}", when=when, **kw)
        return self.git("rev-parse", "HEAD").strip()


def mine(repo: Repo, **config) -> tuple[list[Example], MiningReport]:
    return mine_repository(repo.path, MiningConfig(**config), progress=False)


V1 = "import os\n\n\ndef area(w, h):\n    return w * h\n\n\ndef main():\n    print(area(2, 3))\n"
V2 = V1.replace("import os\n", "import os\nimport sys\nimport json\n")


def test_an_added_hunk_becomes_a_fim_example(tmp_path):
    repo = Repo(tmp_path / "shapes")
    first = repo.commit({"geo/shapes.py": V1}, when=0)
    second = repo.commit({"geo/shapes.py": V2}, when=60)
    examples, report = mine(repo, functions=False)

    [added] = [e for e in examples if e.commit == second]
    assert (added.prefix, added.middle, added.suffix) == ("import os\n", "import sys\nimport json\n", V1[len("import os\n"):])
    assert (added.kind, added.source, added.path, added.language, added.time) == ("fim", "shapes", "geo/shapes.py", "python", T0 + 60)
    # The first commit added 9 lines: pieces of 8 and 1, the second piece's prefix holds the first.
    pieces = [e for e in examples if e.commit == first]
    assert [(e.prefix, e.middle) for e in pieces] == [("", "".join(V1.splitlines(True)[:8])), ("".join(V1.splitlines(True)[:8]), "    print(area(2, 3))\n")]
    assert [e.suffix for e in pieces] == ["    print(area(2, 3))\n", ""]
    assert (report.commits, report.files_seen, report.examples) == (2, 2, 3)
    assert report.ranges == {"shapes": {"path": str(repo.path.resolve()), "first": first, "last": second, "commits": 2,
                                        "first_time": T0, "last_time": T0 + 60}}


def test_prefix_and_suffix_are_cut_at_line_boundaries(tmp_path):
    repo = Repo(tmp_path / "r")
    before = "".join(f"line_{i} = {i} * 1000\n" for i in range(20))
    repo.commit({"a.py": before}, when=0)
    lines = before.splitlines(True)
    after = "".join(lines[:10]) + "inserted = True\n" + "".join(lines[10:])
    sha = repo.commit({"a.py": after}, when=1)
    [example] = [e for e in mine(repo, functions=False, prefix_chars=50, suffix_chars=45)[0] if e.commit == sha]
    assert example.middle == "inserted = True\n"
    assert example.prefix == "".join(lines[8:10])  # 2 whole lines fit in 50 chars, not 3
    assert example.suffix == "".join(lines[10:12])


def test_tiny_hunks_are_dropped(tmp_path):
    repo = Repo(tmp_path / "r")
    repo.commit({"app.js": "function f() {\n  return 1;\n"}, when=0)
    repo.commit({"app.js": "function f() {\n  return 1;\n}\n"}, when=1)  # adds "}"
    examples, report = mine(repo)
    assert [e.middle for e in examples] == ["function f() {\n  return 1;\n"]
    assert report.dropped["tiny_hunk"] == 1
    assert examples[0].language == "javascript"


SCALE = '''class Numbers:
    def scale(self, values,
              factor=2):
        """Multiply every value by factor."""
        out = []
        for v in values:
            out.append(v * factor)
        return out


def helper(x):
    return sorted(set(x), reverse=True)[:10]


def banner():
    text = """
Welcome, user!
"""
    return text.strip().upper()
'''


def test_functions_added_or_changed_become_function_examples(tmp_path):
    repo = Repo(tmp_path / "r")
    first = repo.commit({"num.py": SCALE}, when=0)
    changed = SCALE.replace("out.append(v * factor)", "out.append(round(v * factor, 2))")
    second = repo.commit({"num.py": changed}, when=1)
    third = repo.commit({"num.py": changed.replace("return text.strip().upper()", "return text.strip().title()")}, when=2)
    examples, report = mine(repo)
    functions = [e for e in examples if e.kind == "function"]

    assert {(e.commit, e.middle.split("\n")[0].strip()) for e in functions} == {
        (first, "out = []"), (first, "return sorted(set(x), reverse=True)[:10]"), (first, 'text = """'),
        (second, "out = []"),  # only the function the commit touched
        (third, 'text = """'),  # a string at column 0 does not hide the function
    }
    [scale] = [e for e in functions if e.commit == second]
    head, rest = changed.split('        out = []\n', 1)
    assert scale.prefix == head and scale.prefix.endswith('"""Multiply every value by factor."""\n')
    assert scale.middle == "        out = []\n" + rest.split("\n\n\n")[0] + "\n"
    assert scale.suffix.startswith("\n\ndef helper(x):")
    assert "function_too_long" not in report.dropped


def test_long_trivial_and_one_line_functions_are_skipped(tmp_path):
    repo = Repo(tmp_path / "r")
    long_body = "".join(f"    total += {i}\n" for i in range(45))
    code = f"def long():\n    total = 0\n{long_body}    return total\n\n\ndef tiny():\n    return 1\n\n\ndef one(): return 2\n"
    repo.commit({"f.py": code}, when=0)
    examples, report = mine(repo)
    assert not [e for e in examples if e.kind == "function"]
    assert report.dropped["function_too_long"] == 1
    assert report.dropped["function_trivial"] == 1


def test_each_filter_drops_and_counts(tmp_path):
    repo = Repo(tmp_path / "r")
    line = "value = compute(1, 2, 3)\n"
    repo.commit({
        "src/app.py": line,
        "vendor/lib/util.py": line,
        "web/node_modules/pkg/index.js": line,
        "package-lock.json": "{}\n",
        "poetry.lock": "[[package]]\n",
        "README.md": "# hello\n",
        "proto/msg_pb2.py": "# Generated by the protocol buffer compiler.  DO NOT EDIT!\n" + line,
        "gen/api.go": "// Code generated by stringer; DO NOT EDIT.\npackage api\n",
        "static/app.min.js": "var a=1;\n",
        "static/bundle.js": "var x = [" + ", ".join(["1"] * 300) + "];\n",
        "data/blob.py": b"\x00\x01\x02binary\x00\n",
        "latin.py": "x = 'd\xe9j\xe0 vu'\n".encode("latin-1"),
        "big.py": "x = 1\n" * 500,
    }, when=0)
    (repo.path / "link.py").symlink_to("src/app.py")
    repo.commit({}, when=0)
    bot = repo.commit({"src/app.py": line + "other = compute(4)\n"}, when=1, author=("dependabot[bot]", "support@github.com"))
    repo.commit({"src/app.py": line + "other = compute(5)\n"}, when=2, author=("ci", "bot@example.com"))
    examples, report = mine(repo, max_file_bytes=2048)

    assert report.dropped == {
        "vendored": 2, "lock_file": 2, "not_source": 1, "generated": 2, "minified": 2, "binary": 2,
        "too_large": 1, "bot_commit": 2, "not_a_file": 1, "exact_duplicate": 0, "near_duplicate": 0,
    }
    assert {e.path for e in examples} == {"src/app.py"} and bot not in {e.commit for e in examples}
    assert report.files_seen == 14 and report.commits == 4


def test_include_and_exclude_globs(tmp_path):
    repo = Repo(tmp_path / "r")
    body = "def run(x):\n    return x * 2 + 1\n"
    repo.commit({"src/a.py": body, "src/legacy/old.py": body + "# old\n", "lib/b.py": body + "# b\n",
                 "src/gen/x_pb2.py": body + "# pb\n"}, when=0)
    examples, report = mine(repo, include=["src/**"], exclude=["src/legacy/", "*_pb2.py"], functions=False)
    assert {e.path for e in examples} == {"src/a.py"}
    assert (report.dropped["excluded_glob"], report.dropped["not_included"]) == (2, 1)


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("src/**", "src/a/b.py", True), ("src/*.py", "src/a/b.py", False), ("src/*.py", "src/b.py", True),
    ("*.py", "a/b/c.py", True), ("**/test_*.py", "test_x.py", True), ("**/test_*.py", "t/test_x.py", True),
    ("docs/", "docs/x/y.md", True), ("docs/", "src/docs.py", False), ("src/?.py", "src/ab.py", False),
    ("src/[ab].py", "src/b.py", True), ("src/[!ab].py", "src/b.py", False),
])
def test_glob_patterns(pattern, path, matches):
    assert bool(glob_regex(pattern).match(path)) is matches
    assert glob_reason(path, [], [pattern]) == ("excluded_glob" if matches else None)


def test_exact_and_near_duplicates_are_removed_oldest_kept(tmp_path):
    repo = Repo(tmp_path / "r")
    code = "".join(f"def handler_{i}(event):\n    return dispatch(event, 'handler_{i}', retries={i})\n\n\n" for i in range(6))
    repo.commit({"a.py": code}, when=0)
    repo.commit({"copy.py": code}, when=1)  # the same file again: every example repeats
    repo.commit({"near.py": code.replace("retries=3", "retries=33")}, when=2)
    examples, report = mine(repo, functions=False, near_duplicate_threshold=0.6)
    assert {e.path for e in examples} == {"a.py"}
    assert report.dropped["exact_duplicate"] >= 3 and report.dropped["near_duplicate"] >= 1
    assert report.examples == len(examples) == 3


def example(middle: str, time: float, prefix: str = "def f(x):\n", suffix: str = "\n") -> Example:
    return Example(prefix=prefix, suffix=suffix, middle=middle, kind="fim", source="s", path="p.py", commit=str(time), time=time)


def test_dedupe_keeps_the_oldest_and_is_deterministic():
    body = "".join(f"    total = total + values[{i}] * weights[{i}]\n" for i in range(30))
    near = body.replace("weights[7]", "weights[8]")
    other = "".join(f"    print('line {i}', file=sys.stderr)\n" for i in range(30))
    examples = [example(body, 5.0), example(near, 3.0), example(body.replace("    ", "\t"), 9.0), example(other, 1.0)]
    kept, exact, near_removed = dedupe(examples, 0.85)
    assert [e.commit for e in kept] == ["3.0", "1.0"]  # the near copy is older than the original
    assert (exact, near_removed) == (1, 1)  # whitespace-only difference: exact
    assert dedupe(examples, 0.85) == (kept, exact, near_removed)
    assert dedupe([], 0.85) == ([], 0, 0)


# Kinds recognised by the value alone, whatever it is assigned to.
SELF_EVIDENT = {"aws_access_key_id", "github_token", "gitlab_token", "slack_token", "stripe_key", "google_api_key",
                "anthropic_key", "openai_key", "huggingface_token", "npm_token", "pypi_token", "jwt"}


def test_planted_secrets_never_reach_an_example(tmp_path):
    repo = Repo(tmp_path / "r")
    lines = [planted_code(line, kind, secret) for kind, secret, line in PLANTED]
    config = "import os\n\n\n" + "\n".join(lines) + "\n\n\ndef connect():\n    return open_db(DATABASE_URL, DB_PASSWORD)\n"
    repo.commit({"settings.py": config}, when=0)
    repo.commit({"settings.py": config.replace("import os\n", "import os\nimport sys\n"),
                 "client.js": "\n".join(f"const {k} = {json.dumps(s)};" for k, s, _ in PLANTED if k in SELF_EVIDENT) + "\n"}, when=1)
    repo.commit({"settings.py": 'import os\n\nDB_PASSWORD = os.environ["DB_PASSWORD"]\n'}, when=2)  # removed
    deploy = ("def deploy(target):\n    url = 'postgres://app:" + PLANTED[15][1] + "@db.internal/main'\n"
              f"    key = '''{PRIVATE_KEY}'''\n    return push(target, url, key, session='{PLANTED[14][1]}')\n")
    repo.commit({"deploy.py": deploy}, when=3)
    history = repo.git("log", "-p")
    assert all(piece in history for _, secret, _ in PLANTED for piece in secret.split("\n"))  # they are there

    examples, report = mine(repo)
    dump = json.dumps([e.to_row() for e in examples])
    assert {e.kind for e in examples} == {"fim", "function"} and len({e.commit for e in examples}) == 4
    for kind, secret, _ in PLANTED:
        for piece in secret.split("\n"):
            assert piece not in dump, kind
    assert "<SECRET:" in dump
    assert set(report.secrets_scrubbed) == {kind for kind, _, _ in PLANTED}
    assert report.secrets_scrubbed["github_token"] >= 4  # 2 in each version of settings.py, 2 in client.js


def test_not_a_repository_and_empty_repository_are_clear_errors(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(MiningError, match="plain is not a git repository"):
        mine_repository(plain, MiningConfig(), progress=False)
    with pytest.raises(MiningError, match="missing is not a git repository \\(no such folder\\)"):
        mine_repository(tmp_path / "missing", MiningConfig(), progress=False)
    empty = Repo(tmp_path / "empty")
    with pytest.raises(MiningError, match="empty is an empty git repository \\(no commits yet\\)"):
        mine_repository(empty.path, MiningConfig(), progress=False)
    with pytest.raises(MiningError):
        mine_repositories([empty.path], MiningConfig(), progress=False)
    (empty.path / "sub").mkdir()
    with pytest.raises(MiningError, match="sub is not a git repository: it is the folder sub/ of the repository .*empty"):
        mine_repository(empty.path / "sub", MiningConfig(), progress=False)


def test_max_commits_keeps_the_newest(tmp_path):
    repo = Repo(tmp_path / "r")
    shas = [repo.commit({f"m{i}.py": f"def f{i}(x):\n    return x + {i} * 1000\n"}, when=i) for i in range(5)]
    examples, report = mine(repo, max_commits=2)
    assert report.commits == 2
    assert {e.commit for e in examples} == set(shas[3:])
    assert report.ranges["r"]["first"] == shas[3] and report.ranges["r"]["last"] == shas[4]


def test_committer_time_odd_paths_renames_and_merges(tmp_path):
    repo = Repo(tmp_path / "r")
    repo.commit({"src/my file é.py": "def f(x):\n    return x * 3 + 7 - len(str(x))\n"}, when=0, committed=500)
    repo.git("checkout", "-q", "-b", "side")
    side = repo.commit({"src/side.ts": "export const answer: number = 42;\n"}, when=600)
    repo.git("checkout", "-q", "main")
    repo.commit({"src/moved é.py": "def f(x):\n    return x * 3 + 7 - len(str(x))\n\n\nprint(f(2))\n", "src/my file é.py": None}, when=700)
    repo.git("merge", "-q", "--no-ff", "-m", "merge side", "side", when=800)
    examples, report = mine_repository(repo.path, MiningConfig(), name="named", progress=False)

    assert report.commits == 3  # the merge commit is skipped; the side branch's commit is not
    assert {(e.path, e.middle, e.time) for e in examples} == {
        ("src/my file é.py", "def f(x):\n    return x * 3 + 7 - len(str(x))\n", T0 + 500),  # committer time
        ("src/my file é.py", "    return x * 3 + 7 - len(str(x))\n", T0 + 500),
        ("src/side.ts", "export const answer: number = 42;\n", T0 + 600),
        ("src/moved é.py", "\n\nprint(f(2))\n", T0 + 700),  # a rename: only what it added
    }
    assert {e.source for e in examples} == {"named"} and side in {e.commit for e in examples}
    assert {e.language for e in examples} == {"python", "typescript"}


def test_several_repositories_are_deduplicated_together(tmp_path):
    code = "def total(items):\n    return sum(item.price * item.count for item in items)\n"
    a, b = Repo(tmp_path / "one" / "app"), Repo(tmp_path / "two" / "app")
    a.commit({"x.py": code}, when=0)
    b.commit({"x.py": code}, when=5)  # a fork: the same code, later
    examples, report = mine_repositories([a.path, b.path], MiningConfig(), progress=False)
    assert set(report.ranges) == {"app", "app-2"}
    assert {e.source for e in examples} == {"app"} and report.dropped["exact_duplicate"] == 2
    assert report.commits == 2 and report.examples == len(examples) == 2


def test_functions_inside_match_cases_are_found():
    """`case` blocks have no line numbers of their own (ast.match_case): mining attrs' history
    crashed on them."""
    from trainer.python_functions import touched_functions

    source = ("def route(event):\n    match event:\n        case {'kind': 'click'}:\n            def handler(e):\n"
              "                return e['x'] + 1\n            return handler\n        case _:\n            return None\n")
    found = touched_functions(source, [(1, 8)])
    assert [first for first, _, _ in found] == [1, 4]
