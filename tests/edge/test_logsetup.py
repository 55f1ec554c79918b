"""Structured log lines (JSON, key=value, journal mode) and secret redaction."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest
from pydantic import ValidationError

from edge.service import logsetup
from edge.service.logsetup import LoggingConfig, redact, register_secret, setup_logging


@pytest.fixture(autouse=True)
def _restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    logsetup._clear_registered_secrets()


def _lines(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if line]


def test_json_one_line_per_event_with_extra_fields():
    buf = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=buf)
    log = logging.getLogger("edge.service.pipeline.batch")
    log.info("batch %d closed", 3, extra={"batch_id": 3, "x50_um": 85.25, "n": 120})
    log.debug("not shown at INFO")
    (line,) = _lines(buf)
    event = json.loads(line)
    assert event["level"] == "INFO"
    assert event["logger"] == "edge.service.pipeline.batch"
    assert event["msg"] == "batch 3 closed"
    assert event["batch_id"] == 3 and event["n"] == 120 and event["x50_um"] == 85.25
    assert event["ts"].endswith("Z") and len(event["ts"]) == 24


def test_exception_stays_on_one_line():
    buf = io.StringIO()
    setup_logging(fmt="json", stream=buf)
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        logging.getLogger("edge.x").exception("failed")
    (line,) = _lines(buf)
    event = json.loads(line)
    assert "RuntimeError: boom" in event["exc"] and "Traceback" in event["exc"]

    buf2 = io.StringIO()
    setup_logging(fmt="kv", stream=buf2)
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("edge.x").exception("failed again")
    assert len(_lines(buf2)) == 1
    assert 'msg="failed again"' in buf2.getvalue()


def test_key_value_format_quotes_where_needed():
    buf = io.StringIO()
    setup_logging(fmt="kv", level="DEBUG", stream=buf)
    logging.getLogger("edge.vision.analyzer").debug(
        "frame rejected", extra={"reason": "blur", "score": 12.345678, "path": "/a b/c.png"})
    (line,) = _lines(buf)
    assert line.startswith("ts=")
    assert (' level=DEBUG logger=edge.vision.analyzer msg="frame rejected" reason=blur '
            'score=12.3457 path="/a b/c.png"') in line


def test_level_from_config():
    buf = io.StringIO()
    setup_logging(LoggingConfig(level="WARNING", format="kv"), stream=buf)
    logging.getLogger("edge").info("quiet")
    logging.getLogger("edge").warning("loud")
    assert len(_lines(buf)) == 1 and "loud" in buf.getvalue()


def test_reconfiguration_replaces_handler_and_basicconfig_handler():
    root = logging.getLogger()
    plain = logging.StreamHandler(io.StringIO())
    root.addHandler(plain)
    buf1, buf2 = io.StringIO(), io.StringIO()
    h1 = setup_logging(fmt="kv", stream=buf1)
    h2 = setup_logging(fmt="json", stream=buf2)
    assert plain not in root.handlers and h1 not in root.handlers and h2 in root.handlers
    logging.getLogger("edge").warning("once")
    assert buf1.getvalue() == "" and len(_lines(buf2)) == 1


def test_journal_mode_uses_priority_prefix_and_no_timestamp(tmp_path, monkeypatch):
    path = tmp_path / "journal.log"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logsetup.journal_connected(stream)
        setup_logging(fmt="auto", stream=stream)
        logging.getLogger("edge.run").error("camera lost", extra={"device": "/dev/video0"})
        logging.getLogger("edge.run").info("started")
    lines = path.read_text().splitlines()
    assert lines == [
        '<3>level=ERROR logger=edge.run msg="camera lost" device=/dev/video0',
        '<6>level=INFO logger=edge.run msg=started',
    ]


def test_auto_outside_journal_is_kv_with_timestamps(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    buf = io.StringIO()  # no fileno: not the journal
    assert not logsetup.journal_connected(buf)
    setup_logging(fmt="auto", stream=buf)
    logging.getLogger("edge").info("hello")
    assert buf.getvalue().startswith("ts=")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("connect mqtts://edge:s3cr3t-pw@broker:8883", "connect mqtts://edge:***@broker:8883"),
        ("password=hunter22 user=edge", "password=*** user=edge"),
        ('{"password": "hunter22", "port": 1883}', '{"password": "***", "port": 1883}'),
        ("mqtt_password: abc123def", "mqtt_password: ***"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y", "Authorization: ***"),
        ("header Bearer eyJhbGciOiJIUzI1NiJ9", "header Bearer ***"),
        ("api_key='k-123456' ok", "api_key='***' ok"),
        ("frames=120 fps=9.8", "frames=120 fps=9.8"),
    ],
)
def test_redact_patterns(text, expected):
    assert redact(text) == expected


def test_registered_secret_is_redacted_everywhere():
    buf = io.StringIO()
    setup_logging(fmt="json", stream=buf)
    register_secret("Tr0ub4dor&3")
    register_secret("ab")  # too short to be redacted blindly: ignored
    log = logging.getLogger("edge.mqtt")
    log.warning("auth failed with %s", "Tr0ub4dor&3",
                extra={"password": "anything", "detail": "pw was Tr0ub4dor&3",
                       "nested": {"token": "zzz", "ok": 1}, "about": "ab"})
    event = json.loads(_lines(buf)[0])
    assert "Tr0ub4dor" not in buf.getvalue()
    assert event["msg"] == "auth failed with ***"
    assert event["password"] == "***"
    assert event["detail"] == "pw was ***"
    assert event["nested"] == {"token": "***", "ok": 1}
    assert event["about"] == "ab"


def test_secret_in_exception_text_is_redacted():
    buf = io.StringIO()
    setup_logging(fmt="json", stream=buf)
    register_secret("very-secret-value")
    try:
        raise ConnectionError("login very-secret-value refused")
    except ConnectionError:
        logging.getLogger("edge.mqtt").exception("connect failed")
    assert "very-secret-value" not in buf.getvalue()


def test_bad_level_or_format_is_rejected():
    with pytest.raises(ValidationError):
        setup_logging(level="LOUD", stream=io.StringIO())
    with pytest.raises(ValidationError):
        LoggingConfig(format="xml")
    with pytest.raises(ValidationError):
        LoggingConfig(colour=True)


def test_non_json_extra_values_are_stringified():
    import numpy as np

    buf = io.StringIO()
    setup_logging(fmt="json", stream=buf)
    logging.getLogger("edge").info("x", extra={"n": np.int64(5), "v": float("nan"),
                                               "obj": object()})
    event = json.loads(_lines(buf)[0])
    assert event["n"] == 5 and event["v"] == "nan" and isinstance(event["obj"], str)
