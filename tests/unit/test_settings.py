from __future__ import annotations

import pytest

from chalicelib.platform.settings import SettingsError, parse_settings

BASE = {"STAGE": "dev", "PCC_AGENTS": "my-agent", "PCC_SECRET_ID": "s", "TABLE_NAME": "t",
        "OIDC_ISSUER": "https://issuer.example", "OIDC_AUDIENCE": "aud"}


def test_valid_environment_parses_with_defaults() -> None:
    settings = parse_settings(BASE)
    assert settings.pcc.resolved_default_agent == "my-agent"
    assert settings.limits.user_session_limit == 3
    assert settings.auth.jwks_url == "https://issuer.example/.well-known/jwks.json"
    assert settings.limits.session_ttl_seconds == 7200 + 3600


@pytest.mark.parametrize(("missing", "named"), [("TABLE_NAME", "TABLE_NAME"), ("PCC_SECRET_ID", "PCC_SECRET_ID"),
                                                 ("PCC_AGENTS", "PCC_AGENTS")])
def test_missing_setting_is_named(missing: str, named: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(SettingsError, match=named):
        parse_settings(env)


def test_bad_values_are_named() -> None:
    with pytest.raises(SettingsError, match="USER_SESSION_LIMIT"):
        parse_settings({**BASE, "USER_SESSION_LIMIT": "zero"})
    with pytest.raises(SettingsError, match="PCC_API_URL"):
        parse_settings({**BASE, "PCC_API_URL": "ftp://x"})
    with pytest.raises(SettingsError, match="MAX_SESSION_SECONDS"):
        parse_settings({**BASE, "MAX_SESSION_SECONDS": "99999"})


def test_insecure_dev_auth_only_on_local_stage() -> None:
    with pytest.raises(SettingsError, match="local"):
        parse_settings({**BASE, "AUTH_MODE": "insecure-dev"})
    assert parse_settings({**BASE, "STAGE": "local", "AUTH_MODE": "insecure-dev"}).auth.insecure_dev_auth


def test_jwt_mode_needs_issuer_and_audience() -> None:
    env = {k: v for k, v in BASE.items() if k != "OIDC_AUDIENCE"}
    with pytest.raises(SettingsError, match="OIDC"):
        parse_settings(env)


def test_agents_as_json_policies_and_default_agent_check() -> None:
    env = {**BASE, "PCC_AGENTS": '{"a": {"websocket_auth": "none"}, "b": {}}'}
    settings = parse_settings(env)
    assert settings.pcc.agents["a"].websocket_auth == "none"
    assert settings.pcc.resolved_default_agent is None
    with pytest.raises(SettingsError, match="PCC_DEFAULT_AGENT"):
        parse_settings({**env, "PCC_DEFAULT_AGENT": "c"})
    with pytest.raises(SettingsError, match="PCC_AGENTS"):
        parse_settings({**BASE, "PCC_AGENTS": '{"a": {"unknown_option": 1}}'})


def test_events_webhook_must_be_https_except_to_this_machine() -> None:
    assert parse_settings({**BASE, "EVENTS_WEBHOOK_URL": "https://hooks.example.com/x"}).events.webhook_url
    assert parse_settings({**BASE, "EVENTS_WEBHOOK_URL": "http://127.0.0.1:9000/x"}).events.webhook_url
    for url in ("http://hooks.example.com/x", "http://127.0.0.1.example.com/x", "ftp://x"):
        with pytest.raises(SettingsError, match="EVENTS_WEBHOOK_URL"):
            parse_settings({**BASE, "EVENTS_WEBHOOK_URL": url})
    with pytest.raises(SettingsError, match="EVENTS_DELIVERY_ATTEMPTS"):
        parse_settings({**BASE, "EVENTS_DELIVERY_ATTEMPTS": "11"})


def test_budgets_default_to_unlimited_and_tiers_parse_as_json() -> None:
    settings = parse_settings(BASE)
    usage = settings.usage
    assert usage.user_seconds_per_day == usage.user_seconds_per_month == 0 and usage.usage_tiers == {}
    tiers = parse_settings({**BASE, "USAGE_TIERS": '{"pro": {"day": 36000}, "free": {"day": 600, "month": 6000}}'})
    assert tiers.usage.usage_tiers["pro"].day == 36000 and tiers.usage.usage_tiers["pro"].month == 0
    for bad in ('{"pro": {"day": -1}}', '{"pro": {"hour": 5}}', "[1]"):
        with pytest.raises(SettingsError, match="USAGE_TIERS"):
            parse_settings({**BASE, "USAGE_TIERS": bad})
    with pytest.raises(SettingsError, match="USER_SECONDS_PER_DAY"):
        parse_settings({**BASE, "USER_SECONDS_PER_DAY": "-5"})


def test_every_setting_is_read_from_its_group_prefix_and_name_upper_cased_but_the_listed_exceptions() -> None:
    from chalicelib.platform.settings import ENV, ENV_EXCEPTIONS, GROUPS, TOP_LEVEL, Settings

    fields = {(name,) for name in TOP_LEVEL} | {(g, f) for g, model in GROUPS.items() for f in model.model_fields}
    assert sorted(ENV.values()) == sorted(fields)  # every field has its variable, one each
    assert set(Settings.model_fields) == set(TOP_LEVEL) | set(GROUPS)
    by_rule = {var for var, place in ENV.items()
               if var == (place[0] if len(place) == 1 else GROUPS[place[0]].prefix + place[1]).upper()}
    assert set(ENV) - by_rule == set(ENV_EXCEPTIONS)
    assert ENV["PCC_AGENTS"] == ("pcc", "agents") and ENV["MAX_SESSION_SECONDS"] == ("limits", "max_session_seconds")
    assert len(ENV) == 76 + 17 + 1  # the flat model's variables (none renamed), guest access's, ADMIN_GROUP
    assert ENV["GUEST_ACCESS"] == ("guests", "access")


def test_each_group_holds_its_own_settings() -> None:
    settings = parse_settings({**BASE, "MAX_QUEUED": "7", "PROXY_RATE_PER_MINUTE": "9", "DAILY_DIALIN_ATTEMPTS": "2",
                               "ORPHAN_SWEEP": "report", "DIALOUT_ALLOWED_PREFIXES": "+1415, +44"})
    assert settings.queue.max_queued == 7 and settings.proxy.rate_per_minute == 9
    assert settings.telephony.daily_dialin_attempts == 2 and settings.orphans.sweep == "report"
    assert settings.dialout.allowed_prefixes == ["+1415", "+44"]
    with pytest.raises(SettingsError, match="DIALOUT_ALLOWED_PREFIXES"):
        parse_settings({**BASE, "DIALOUT_ALLOWED_PREFIXES": "1415"})
    with pytest.raises(SettingsError, match="QUEUED_ABANDON_SECONDS"):
        parse_settings({**BASE, "QUEUED_ABANDON_SECONDS": "5"})
