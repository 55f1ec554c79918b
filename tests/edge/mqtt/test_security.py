"""Credentials and TLS against a real broker: clear errors, no secrets in logs, back-off
without burning CPU."""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import time

import pytest

from edge.errors import UserError
from edge.mqtt.config import MqttConfig
from edge.mqtt.sink import MqttSink
from tests.edge.mqtt.conftest import (
    fake_report,
    free_port,
    make_broker,
    mqtt_config,
    wait_for,
)

PASSWORD = "s3cret-Pa55word!"


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@pytest.fixture
def auth_broker(tmp_path):
    pwfile = tmp_path / "broker-passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "plant", PASSWORD],
                   check=True, capture_output=True)
    b = make_broker(tmp_path, f"password_file {pwfile}\n", anonymous=False)
    b.start()
    yield b
    b.stop()


def test_wrong_password_clear_error_backoff_no_cpu_burn_no_secret_logged(
        auth_broker, tmp_path, caplog):
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("not-the-password\n")
    cfg = mqtt_config(auth_broker.port, username="plant", password_file=str(wrong),
                      allow_plain_password=True, reconnect_min_s=0.2, reconnect_max_s=1.0)
    sink = MqttSink(cfg, state_dir=tmp_path / "state")
    with caplog.at_level(logging.DEBUG):
        sink.open()
        try:
            sink.publish(fake_report(1))
            assert wait_for(lambda: sink.health()["last_error"] is not None)
            cpu0, t0 = _cpu_s(), time.monotonic()
            time.sleep(3.0)
            cpu = _cpu_s() - cpu0
            wall = time.monotonic() - t0
            h = sink.health()
        finally:
            sink.close()
    assert "refused the connection" in h["last_error"]
    assert "Not authorized" in h["last_error"] or "Bad user name" in h["last_error"]
    assert h["connection"] != "connected" and h["outbox_depth"] == 1
    assert cpu / wall < 0.10, f"{cpu:.2f} s CPU in {wall:.1f} s while refused"
    attempts = [r for r in caplog.records if "refused the connection" in r.getMessage()]
    # back-off 0.2 -> 0.4 -> 0.8 -> 1.0 s (with jitter): a handful of attempts, no storm
    assert 2 <= len(attempts) <= 9
    assert "not-the-password" not in caplog.text and PASSWORD not in caplog.text


def test_right_password_from_systemd_credential_delivers(auth_broker, recorder_factory,
                                                          tmp_path, monkeypatch, caplog):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text(PASSWORD + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = mqtt_config(auth_broker.port, username="plant", password_credential="mqtt-password",
                      allow_plain_password=True)
    # the recorder must authenticate too
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    got: list[bytes] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dcs", protocol=mqtt.MQTTv5)
    sub.username_pw_set("plant", PASSWORD)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("plant/cryst/dev1/psd", 1)
    sub.connect("127.0.0.1", auth_broker.port)
    sub.loop_start()
    sink = MqttSink(cfg, state_dir=tmp_path / "state")
    try:
        with caplog.at_level(logging.DEBUG):
            time.sleep(0.3)
            sink.open()
            sink.publish(fake_report(11))
            assert wait_for(lambda: len(got) == 1)
    finally:
        sink.close()
        sub.disconnect()
        sub.loop_stop()
    assert json.loads(got[0])["batch_id"] == 11
    assert PASSWORD not in caplog.text


def test_password_over_plain_tcp_refused_unless_allowed(tmp_path, monkeypatch):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    sink = MqttSink(mqtt_config(1883, username="u", password_file=str(pw)), state_dir=tmp_path)
    with pytest.raises(UserError, match=r"mqtt\.password_file: refusing to send a password "
                                        r"over plain TCP"):
        sink.open()
    missing = MqttSink(mqtt_config(1883, username="u", password_file=str(tmp_path / "nope")),
                       state_dir=tmp_path)
    with pytest.raises(UserError, match=r"mqtt\.password_file: cannot read .*nope"):
        missing.open()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cred = MqttConfig(username="u", password_credential="pw", tls=True)
    with pytest.raises(UserError, match=r"CREDENTIALS_DIRECTORY is not"):
        cred.read_password()


@pytest.fixture
def tls_broker(tmp_path, pki):
    tls_port = free_port()
    conf = (f"listener {tls_port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"cafile {pki['ca']}\ncertfile {pki['server_crt']}\nkeyfile {pki['server_key']}\n"
            "require_certificate true\n")
    b = make_broker(tmp_path, conf, tls_port=tls_port)
    b.start()
    yield b
    b.stop()


def test_mutual_tls_delivers(tls_broker, recorder_factory, pki, tmp_path):
    rec = recorder_factory(tls_broker.port, "plant/cryst/dev1/psd")  # plain listener
    cfg = mqtt_config(tls_broker.tls_port, ca_file=str(pki["ca"]),
                      cert_file=str(pki["client_crt"]), key_file=str(pki["client_key"]))
    sink = MqttSink(cfg, state_dir=tmp_path / "state")
    sink.open()
    try:
        sink.publish(fake_report(21))
        assert wait_for(lambda: len(rec.all) == 1)
    finally:
        sink.close()
    assert json.loads(rec.all[0].payload)["batch_id"] == 21


def test_untrusted_server_certificate_clear_error_and_quiet_backoff(tls_broker, pki, tmp_path,
                                                                     caplog):
    cfg = mqtt_config(tls_broker.tls_port, ca_file=str(pki["rogue_ca"]),
                      cert_file=str(pki["client_crt"]), key_file=str(pki["client_key"]),
                      reconnect_min_s=0.2, reconnect_max_s=1.0)
    sink = MqttSink(cfg, state_dir=tmp_path / "state")
    with caplog.at_level(logging.INFO, logger="edge.mqtt"):
        sink.open()
        try:
            assert wait_for(lambda: sink.health()["last_error"] is not None)
            cpu0, t0 = _cpu_s(), time.monotonic()
            time.sleep(2.5)
            cpu, wall = _cpu_s() - cpu0, time.monotonic() - t0
            h = sink.health()
        finally:
            sink.close()
    assert h["last_error"].startswith(f"TLS: the certificate of 127.0.0.1:{tls_broker.tls_port} "
                                      "was not accepted")
    assert "check sinks.mqtt.ca_file" in h["last_error"]
    assert cpu / wall < 0.10
    assert len([r for r in caplog.records if "not accepted" in r.getMessage()]) <= 8


def test_tls_without_client_certificate_is_refused_by_the_broker(tls_broker, pki, tmp_path):
    cfg = mqtt_config(tls_broker.tls_port, ca_file=str(pki["ca"]))
    sink = MqttSink(cfg, state_dir=tmp_path / "state")
    sink.open()
    try:
        assert wait_for(lambda: sink.health()["last_error"] is not None, timeout=10)
        h = sink.health()
        assert not h["connected"]
        assert "closed the connection before CONNACK" in h["last_error"]
        assert "refuse the client certificate" in h["last_error"]
    finally:
        sink.close()


def test_tls_files_checked_at_open(tmp_path, pki):
    with pytest.raises(UserError, match=r"mqtt\.ca_file: .*missing\.pem does not exist"):
        MqttSink(mqtt_config(8883, ca_file=str(tmp_path / "missing.pem")),
                 state_dir=tmp_path).open()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(UserError, match=r"mqtt\.ca_file: .*junk\.pem: not a PEM CA"):
        MqttSink(mqtt_config(8883, ca_file=str(junk)), state_dir=tmp_path).open()
    with pytest.raises(UserError, match=r"mqtt\.cert_file: .*cannot load the client"):
        MqttSink(mqtt_config(8883, ca_file=str(pki["ca"]), cert_file=str(junk),
                             key_file=str(junk)), state_dir=tmp_path).open()


def test_insecure_tls_is_said_at_start_and_in_health(tls_broker, recorder_factory, pki,
                                                     tmp_path, caplog):
    rec = recorder_factory(tls_broker.port, "plant/cryst/dev1/health")  # plain listener
    cfg = mqtt_config(tls_broker.tls_port, ca_file=str(pki["ca"]), insecure=True,
                      cert_file=str(pki["client_crt"]), key_file=str(pki["client_key"]),
                      health_interval_s=0.2)
    sink = MqttSink(cfg, state_dir=tmp_path / "state")
    with caplog.at_level(logging.INFO, logger="edge.mqtt"):
        sink.open()
        sink.publish_health({"state": "running"})  # the pipeline's snapshot
        try:
            assert wait_for(lambda: len(rec.all) >= 1)
            h = sink.health()
        finally:
            sink.close()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING
              and "[sinks.mqtt] insecure = true" in r.getMessage()]
    assert len(warned) == 1 and "host name is not checked" in warned[0].getMessage()
    assert h["tls_insecure"] is True
    assert json.loads(rec.all[0].payload)["tls_insecure"] is True
    plain = MqttSink(mqtt_config(tls_broker.port), state_dir=tmp_path / "plain")
    assert plain.health()["tls_insecure"] is False
