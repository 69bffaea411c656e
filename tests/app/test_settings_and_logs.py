"""Settings come from KINDRED_* variables; logs are structured and carry request ids."""

import json
import logging

import pytest

from app.logs import JsonFormatter, RequestIdFilter, request_id_var
from app.settings import Environment, LogFormat, Settings


def test_settings_read_the_kindred_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINDRED_MONGODB_URI", "mongodb://db.example:27017")
    monkeypatch.setenv("KINDRED_ENV", "prod")
    monkeypatch.setenv("KINDRED_LOG_FORMAT", "json")
    monkeypatch.setenv("KINDRED_PORT", "9000")
    settings = Settings()
    assert settings.mongodb_uri == "mongodb://db.example:27017"
    assert settings.env is Environment.PROD
    assert settings.log_format is LogFormat.JSON
    assert settings.port == 9000
    assert not settings.embedded


def test_no_mongodb_uri_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KINDRED_MONGODB_URI", raising=False)
    assert Settings().embedded


def test_a_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINDRED_ENV", "staging")
    with pytest.raises(ValueError, match="env"):
        Settings()


def test_json_logs_carry_the_request_id_and_extras() -> None:
    record = logging.LogRecord("kindred", logging.INFO, __file__, 1, "request", None, None)
    record.status = 200
    token = request_id_var.set("req-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "request"
    assert line["request_id"] == "req-1"
    assert line["status"] == 200
    assert line["level"] == "INFO"


def test_identity_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINDRED_IDENTITY_BLOCKED_VALUES", '["nobody@example.com"]')
    monkeypatch.setenv("KINDRED_IDENTITY_MAX_EMAILS", "2")
    monkeypatch.setenv("KINDRED_MATCH_SUGGEST", "0.8")
    monkeypatch.setenv("KINDRED_MATCH_AUTO_MERGE", "0.995")
    settings = Settings()
    rules = settings.identity_rules()
    assert rules.blocklist.blocks("email:nobody@example.com")
    assert not rules.blocklist.blocks("user_id:null")  # the list replaces the defaults
    assert rules.limits.per_kind["email"] == 2
    thresholds = settings.match_settings().thresholds
    assert (thresholds.suggest, thresholds.auto_merge) == (0.8, 0.995)


def test_a_suggest_threshold_above_the_merge_threshold_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KINDRED_MATCH_SUGGEST", "0.999")
    with pytest.raises(ValueError, match="match_suggest must not exceed match_auto_merge"):
        Settings()
