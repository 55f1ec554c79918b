"""The bounded batch history and ``crystal-edge trend`` on a JSON-lines file and on the
history: the same rows, a PNG and a CSV."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone

import pytest

from edge.cli import main
from edge.sinks.history import HistorySink, HistorySinkConfig, read_history
from edge.web.payloads import agglomerate_fraction, crystals_per_frame, q3_curve, trend_row


def payload(batch_id: int, end: datetime, x50: float, *, version: int = 2) -> dict:
    """A psd payload with what the trends read (schema 1 or 2 key names)."""
    p = {"schema_version": version, "batch_id": batch_id, "device_id": "d",
         "batch_start": (end - timedelta(seconds=30)).isoformat(),
         "batch_end": end.isoformat(),
         "frames": {"used": 4, "rejected": 1, "rejected_by_reason": {"defocused": 1}},
         "crystals": {"measured": 40, "rejected": 12,
                      "rejected_by_reason": {"agglomerate": 10, "border": 2}},
         "statistics": {"x10_3_um": x50 * 0.7, "x50_3_um": x50, "x90_3_um": x50 * 1.4,
                        "x50_3_ci95_um": [x50 - 1.0, x50 + 1.0]},
         "lognormal": {"x50_3_um": x50, "s_lnd": 0.3, "rmse": 0.01}}
    if version == 1:
        p["classes"] = {"upper_edges_um": [10.0, 20.0, 30.0], "q3": [0.1, 0.6, 1.0]}
    else:
        p["classes"] = {"upper_edges_um": [10.0, 20.0, 30.0], "q3": [0.1, 0.5, 0.4],
                        "Q3": [0.1, 0.6, 1.0]}
        p["process"] = {"crystals_per_frame": 10.0, "agglomerate_fraction_number": 0.2}
    return p


NOW = datetime.now(timezone.utc)


def test_payload_readers_take_schema_1_and_2():
    v1, v2 = payload(1, NOW, 30.0, version=1), payload(2, NOW, 30.0)
    assert q3_curve(v1) == q3_curve(v2) == ([10.0, 20.0, 30.0], [0.1, 0.6, 1.0])
    # the overflow class of the fixed grid has no upper edge
    v2["classes"]["upper_edges_um"].append(None)
    v2["classes"]["Q3"].append(1.0)
    assert q3_curve(v2) == ([10.0, 20.0, 30.0], [0.1, 0.6, 1.0])
    assert crystals_per_frame(v1) == crystals_per_frame(v2) == 10.0
    assert agglomerate_fraction(v1) == agglomerate_fraction(v2) == 0.2
    row = trend_row(v2)
    assert (row["x50_3_ci95_low_um"], row["x50_3_ci95_high_um"]) == (29.0, 31.0)
    assert trend_row({"batch_id": 3})["x50_3_um"] is None  # nothing there: None, no error


def test_history_is_bounded_by_age_and_count(tmp_path):
    sink = HistorySink(HistorySinkConfig(enabled=True, days=1.0, max_batches=5),
                       state_dir=tmp_path)
    sink.open()
    sink.add(payload(1, NOW - timedelta(days=2), 10.0))  # too old: dropped at once
    for i in range(2, 10):
        sink.add(payload(i, NOW - timedelta(minutes=60 - i), 20.0 + i))
    sink.add(payload(9, NOW - timedelta(minutes=51), 99.0))  # a retry replaces its row
    sink.close()
    rows = read_history(tmp_path)
    assert [r["batch_id"] for r in rows] == [5, 6, 7, 8, 9]
    assert rows[-1]["statistics"]["x50_3_um"] == 99.0
    assert [r["batch_id"] for r in read_history(tmp_path, limit=2)] == [8, 9]
    since = (NOW - timedelta(minutes=53, seconds=30)).timestamp()
    assert [r["batch_id"] for r in read_history(tmp_path, since=since)] == [7, 8, 9]
    assert read_history(tmp_path / "elsewhere") == []


def _jsonl(path, payloads) -> None:
    lines = [json.dumps({"type": "health", "payload": {}})]
    lines += [json.dumps({"type": "psd", "payload": p}) for p in payloads]
    path.write_text("\n".join(lines) + "\n")


def test_trend_from_jsonl_writes_png_and_csv(tmp_path, capsys):
    pays = [payload(i, NOW - timedelta(hours=10 - i), 20.0 + i) for i in range(10)]
    _jsonl(tmp_path / "out.jsonl", pays)
    png, out = tmp_path / "trend.png", tmp_path / "trend.csv"
    assert main(["trend", "--jsonl", str(tmp_path / "out.jsonl"), "--since", "270m",
                 "--plot", str(png), "--csv", str(out)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    rows = list(csv.DictReader(out.open()))
    assert [int(r["batch_id"]) for r in rows] == [6, 7, 8, 9]  # the last 4.5 h
    assert float(rows[-1]["x50_3_um"]) == 29.0 and float(rows[-1]["x50_3_ci95_high_um"]) == 30.0
    assert float(rows[0]["agglomerate_fraction"]) == 0.2
    # the same rows from the appliance's history
    sink = HistorySink(HistorySinkConfig(enabled=True), state_dir=tmp_path / "state")
    for p in pays:
        sink.add(p)
    sink.close()
    capsys.readouterr()
    assert main(["trend", "--state-dir", str(tmp_path / "state"), "--since", "270m"]) == 0
    assert list(csv.DictReader(capsys.readouterr().out.splitlines())) == rows


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "yesterday"], "--since 'yesterday': not an age"),
    (["--state-dir", "{tmp}/none"], "no batch history there"),
    (["--jsonl", "{tmp}/bad.jsonl"], "bad.jsonl:2: not JSON"),
])
def test_trend_mistakes_are_one_line(tmp_path, capsys, args, message):
    (tmp_path / "bad.jsonl").write_text('{"type": "psd", "payload": {}}\n{oops\n')
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--jsonl" not in args and "--state-dir" not in args:
        args += ["--state-dir", str(tmp_path)]
    assert main(["trend", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_page_reads_the_history_again_only_after_a_new_batch(tmp_path):
    from edge.web.app import HistoryCache

    sink = HistorySink(HistorySinkConfig(enabled=True), state_dir=tmp_path)
    sink.add(payload(1, NOW - timedelta(minutes=5), 30.0))
    cache = HistoryCache(sink.path, limit=100)
    for _ in range(5):
        assert [t["batch_id"] for _, _, t in cache.rows()] == [1]
    assert cache.reads == 1
    sink.add(payload(2, NOW, 31.0))
    assert [t["x50_3_um"] for _, _, t in cache.rows()] == [30.0, 31.0] and cache.reads == 2
    assert [t["batch_id"] for _, _, t in cache.rows(since=NOW.timestamp() - 60)] == [2]
    sink.close()
