"""Secret scrubbing: every kind is caught, ordinary code is left alone, scrubbing is stable."""
from __future__ import annotations

import pytest

from feedback.secrets import contains_secret, placeholder, scrub

# Fake secrets, one per kind. Built from pieces so that no literal in this file looks like a
# live credential to a secret scanner (push protection); none of them is real.
PRIVATE_KEY_BODY = [
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
    "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo",
]
PRIVATE_KEY = "\n".join(["-----BEGIN " + "RSA PRIVATE KEY-----", *PRIVATE_KEY_BODY, "-----END " + "RSA PRIVATE KEY-----"])


def _fake(*parts: str) -> str:
    return "".join(parts)


# (kind, the secret, a line of code holding it as "{}")
PLANTED: list[tuple[str, str, str]] = [
    ("aws_access_key_id", _fake("AKIA", "Z7Q3EGRI5XMPLE2Q"), 'aws_key_id = "{}"'),
    ("aws_secret_access_key", _fake("wJalrXUtnFEMI/K7MDENG/", "bPxRfiCYEXAMPLEKEY"), "AWS_SECRET_ACCESS_KEY = '{}'"),
    ("github_token", _fake("ghp", "_x7Ab3Cd9Ef1Gh5Ij2Kl8Mn4Op6Qr0St3Uv9W"), 'GH_TOKEN = "{}"'),
    ("github_token", _fake("github", "_pat_11ABCDEFG0", "_Zq8Wx7Cv6Bn5Ml4Kj3Hg2Fd1Sa0Po9Iu8Yt7Rr6Ee5Ww4Qq3"), "clone(token='{}')"),
    ("gitlab_token", _fake("gl", "pat-Xy9Zb8Wc7Vd6Ue5Tf4Sg"), 'headers = {{"PRIVATE-TOKEN": "{}"}}'),
    ("slack_token", _fake("xo", "xb-2048163541-4096327683-Ab1Cd2Ef3Gh4"), 'slack = WebClient("{}")'),
    ("slack_webhook", _fake("T0A1B2C3D/B4E5F6G7H/", "q1W2e3R4t5Y6u7I8o9P0a1S2"), 'hook = "https://hooks.slack.com/services/{}"'),
    ("stripe_key", _fake("sk_", "live_", "51HqLyjWDarjtT1zdp7dc4eC39"), 'stripe.api_key = "{}"'),
    ("google_api_key", _fake("AI", "zaSyD4m9Q2x7Lp3Kv8Rw1Tz6Yb0Nc5Hj2Fg8u"), 'maps = Client(key="{}")'),
    ("anthropic_key", _fake("sk-", "ant-api03-", "Zq8Wx7Cv6Bn5Ml4Kj3Hg2Fd1Sa0Po9Iu8Yt7"), 'Anthropic(api_key="{}")'),
    ("openai_key", _fake("sk-", "proj-", "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0Kk"), 'OpenAI(api_key="{}")'),
    ("huggingface_token", _fake("hf", "_QwErTyUiOpAsDfGhJkLzXcVbNm1234567890"), 'login("{}")'),
    ("npm_token", _fake("npm", "_Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78"), 'registry.auth("{}")'),
    ("pypi_token", _fake("pypi", "-AgEIcHlwaS5vcmcCJGE5ZjQ4ZDZkLTk2MjEtNGE4Ny1iZjI0LWQ1YzE3"), 'upload(password="{}")'),
    ("jwt", _fake("eyJhbGciOiJIUzI1NiJ9", ".eyJzdWIiOiJ1c2VyLTQyIn0", ".c2lnbmF0dXJlLXZhbHVlLTEyMzQ"), "session = '{}'"),
    ("url_password", _fake("Tr0ub4dor", "&3xQ9"), 'DATABASE_URL = "postgres://app:{}@db.internal:5432/main"'),
    ("assigned_secret", _fake("Zx9Kq2Lm", "8Np3Rt7V"), 'DB_PASSWORD = "{}"'),
    ("auth_header", _fake("a1B2c3D4e5", "F6g7H8i9J0k1L2"), 'headers = {{"Authorization": "Bearer {}"}}'),
    ("private_key", "\n".join(PRIVATE_KEY_BODY), 'KEY = """{}"""'),
]


def planted_code(line: str, kind: str, secret: str) -> str:
    return line.format(PRIVATE_KEY if kind == "private_key" else secret)


@pytest.mark.parametrize(("kind", "secret", "line"), PLANTED, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(PLANTED)])
def test_each_kind_is_replaced_and_counted(kind, secret, line):
    code = planted_code(line, kind, secret)
    assert contains_secret(code)
    out, found = scrub(code)
    for piece in secret.split("\n"):
        assert piece not in out
    assert placeholder(kind) in out
    assert found == {kind: 1}


def test_the_placeholder_is_plain_and_stable():
    assert placeholder("github_token") == "<SECRET:github_token>"
    code = "\n".join(planted_code(line, kind, secret) for kind, secret, line in PLANTED)
    once, found = scrub(code)
    twice, found_again = scrub(once)
    assert twice == once and not found_again  # scrubbing twice is scrubbing once
    assert not contains_secret(once)
    assert sum(found.values()) == len(PLANTED)


def test_url_password_keeps_user_and_host():
    out, _ = scrub('engine = create_engine("mysql+pymysql://report:' + _fake("s3cr", "et@Pw9") + '@10.0.0.5:3306/db")')
    assert out == 'engine = create_engine("mysql+pymysql://report:<SECRET:url_password>@10.0.0.5:3306/db")'


@pytest.mark.parametrize("code", [
    'DB_PASSWORD="Zx9Kq2Lm8Np3Rt7V"',  # .env
    "export API_KEY=Zx9Kq2Lm8Np3Rt7V",  # shell
    "  client_secret: Zx9Kq2Lm8Np3Rt7V",  # YAML
    '{"apiKey": "Zx9Kq2Lm8Np3Rt7V"}',  # JSON
    "const authToken = 'Zx9Kq2Lm8Np3Rt7V';",  # JS
    'password := "Zx9Kq2Lm8Np3Rt7V"',  # Go
    'self.secret: str = "Zx9Kq2Lm8Np3Rt7V"',  # annotated Python
    "$db_pwd = 'Zx9Kq2Lm8Np3Rt7V';",  # PHP
    "connect(user='app', passwd='hunter2hunter2')",  # a chosen password: less entropy needed
])
def test_assigned_secrets_in_every_style(code):
    out, found = scrub(code)
    assert found == {"assigned_secret": 1}, out
    assert "Zx9Kq2Lm8Np3Rt7V" not in out and "hunter2hunter2" not in out


@pytest.mark.parametrize("code", [
    'password = os.environ["DB_PASSWORD"]',
    "token = get_token()",
    'password = ""',
    'password = "changeme"',
    "password = None",
    "def secret_key(self, request):",
    "    return self._secret_key",
    "secret_key = settings.SECRET_KEY",
    "self.token = token_value2",
    'token_url = "https://auth.example.com/oauth2/token"',
    'tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")',
    'tokenizer_name = "bert-base-uncased-v2"',
    'header = {"name": "X-Auth-Token"}',
    'secret_path = "/run/secrets/db_password"',
    'api_key = "<your-api-key>"',
    'password = "${DB_PASSWORD}"',
    'my_token = f"Token_for_{name}_{action2}"',
    "_token_end = r'(?=\\s|#|[)\\]]|$)'",
    'url = f"postgres://app:{password}@db/main"',
    'author = "Jane Doe"',
    'author_email = "jane.doe@example.com"',
    'slug = "sk-this-is-a-kebab-case-slug-not-a-key"',
    "max_tokens = 256",
    'if line == "-----BEGIN RSA PRIVATE KEY-----":',
    'PEM_HEADER = "-----BEGIN PRIVATE KEY-----"\nPEM_FOOTER = "-----END PRIVATE KEY-----"',
    "git@github.com:org/repo.git",
    'volume = "disk-0a1b2c3d4e5f6g7h8i9j0k"',  # "sk-" inside a word
    'name = "myghp_x7Ab3Cd9Ef1Gh5Ij2Kl8Mn4Op6Qr0St3Uv9W"',
])
def test_ordinary_code_is_left_alone(code):
    assert scrub(code) == (code, {})
    assert not contains_secret(code)


def test_private_key_keep_lines_preserves_line_numbers():
    code = f'KEY = """\n{PRIVATE_KEY}\n"""\nx = 1\n'
    out, found = scrub(code, keep_lines=True)
    assert found == {"private_key": 1}
    assert out.count("\n") == code.count("\n")
    assert out.split("\n")[-2] == "x = 1"
    assert scrub(code)[0] == 'KEY = """\n<SECRET:private_key>\n"""\nx = 1\n'


def test_a_key_cut_by_the_text_edge_is_still_scrubbed():
    """Telemetry text is a window: a key may start or end outside it."""
    head = PRIVATE_KEY.rsplit("\n", 1)[0]  # no END line
    tail = PRIVATE_KEY.split("\n", 1)[1] + "\nnext_line()"  # no BEGIN line
    assert scrub("x = 1\n" + head) == ("x = 1\n<SECRET:private_key>", {"private_key": 1})
    assert scrub(tail) == ("<SECRET:private_key>\nnext_line()", {"private_key": 1})


def test_counts_every_occurrence():
    token = _fake("gh", "p_", "x7Ab3Cd9Ef1Gh5Ij2Kl8Mn4Op6Qr0St3Uv9W")
    out, found = scrub(f"a = '{token}'\nb = '{token}'\n")
    assert found == {"github_token": 2}
    assert out == "a = '<SECRET:github_token>'\nb = '<SECRET:github_token>'\n"
