"""Editor options: camelCase names, checked, a bad one named and the old config kept."""
import pytest

from lsp.config import ConfigError, LspConfig, default_user


def test_options_apply_and_nest_under_codeloop():
    cfg = LspConfig().with_options({"serverUrl": "http://10.0.0.5:9000/", "debounceMs": 80, "languages": ["python", "go"]})
    assert (cfg.server_url, cfg.debounce_ms, cfg.languages) == ("http://10.0.0.5:9000", 80, ("python", "go"))
    assert cfg.completes("go") and not cfg.completes("rust")
    nested = LspConfig().with_options({"codeloop": {"maxTokens": 32, "retentionSeconds": [600, 30]}})
    assert nested.max_tokens == 32 and nested.retention_s == (30.0, 600.0)
    assert LspConfig().with_options(None) == LspConfig()
    assert LspConfig().latency_budget_ms == 2000 and LspConfig().with_options({"latencyBudgetMs": None}).latency_budget_ms is None
    assert LspConfig().line_budget_ms == 150 and LspConfig().with_options({"lineBudgetMs": None}).line_budget_ms is None


@pytest.mark.parametrize("options, message", [
    ({"serverUrl": "localhost:8000"}, "serverUrl"),
    ({"debounceMs": -1}, "debounceMs"),
    ({"debounceMs": True}, "debounceMs"),
    ({"languages": "python"}, "languages"),
    ({"retentionSeconds": []}, "retentionSeconds"),
    ({"cancelSuperseded": "no"}, "cancelSuperseded"),
    ({"latencyBudgetMs": 5}, "latencyBudgetMs"),
    ({"lineBudgetMs": 0}, "lineBudgetMs"),
    ({"nonsense": 1}, "unknown option 'nonsense'"),
    (["not", "an", "object"], "object"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        LspConfig().with_options(options)


def test_user_pseudonym_is_stable_and_not_the_name():
    import getpass

    assert default_user() == default_user()
    assert default_user().startswith("u-") and getpass.getuser() not in default_user()


def test_a_bad_option_is_left_out_and_the_others_apply():
    """The issue's case: a typo in one option threw away every option, a valid serverUrl too."""
    cfg, problems = LspConfig().apply({"serverUrl": "http://10.0.0.5:9000", "debounceMS": 80, "maxTokens": "many"})
    assert cfg.server_url == "http://10.0.0.5:9000"
    assert cfg.debounce_ms == LspConfig().debounce_ms and cfg.max_tokens is None
    assert problems == ["unknown option 'debounceMS' ignored; did you mean 'debounceMs'?",
                        "option 'maxTokens' ignored: must be a whole number from 1 to 4096"]
    assert LspConfig().apply({"zzz": 1})[1][0].startswith("unknown option 'zzz' ignored; known: cacheSize")


def test_an_invoked_request_gets_a_budget_under_the_timeout():
    assert LspConfig().invoked_budget_ms == 7000
    assert LspConfig(timeout_ms=1200).invoked_budget_ms == 600
