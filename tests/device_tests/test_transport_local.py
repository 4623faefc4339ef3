import json

import pytest

from slmpack.device_tests import run_device_test
from slmpack.device_tests.transports import LocalTransport, make_transport
from slmpack.errors import BadInputError, ToolchainError


def test_local_transport_push_run_fetch_cleanup(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("hello")
    (tmp_path / "f.txt").write_text("file")
    with LocalTransport() as tr:
        tr.push(tmp_path / "d", "d")
        tr.push(tmp_path / "f.txt", "sub/f.txt")
        rc, out, err = tr.run([*tr.python_argv(), "-c",
                               "import pathlib; print(pathlib.Path('d/a.txt').read_text()); "
                               "pathlib.Path('o.txt').write_text('out')"], timeout=60)
        assert (rc, out.strip()) == (0, "hello")
        tr.fetch("o.txt", tmp_path / "back" / "o.txt")
        assert (tmp_path / "back" / "o.txt").read_text() == "out"
        assert tr.run(["sh", "-c", "exit 3"], timeout=60).rc == 3
        with pytest.raises(ToolchainError) as e:
            tr.run(["sleep", "5"], timeout=0.2)
        assert e.value.code == "E_DEVICE_TIMEOUT"
        for bad in ("/etc/passwd", "../x", ""):
            with pytest.raises(BadInputError):
                tr.push(tmp_path / "f.txt", bad)
        workdir = tr.workdir
    assert not workdir.exists()


def test_matrix_on_host_writes_reports(tiny_package, package_copy, tmp_path):
    (package_copy / "model.onnx").write_bytes((package_copy / "model.onnx").read_bytes() + b"\0")
    out = tmp_path / "report"
    report = run_device_test([tiny_package, package_copy], ["host"], "local", out_dir=out)
    good, bad = report.results
    assert good.status == "passed" and good.checks["greedy_match"] and good.device_json["ok"]
    assert bad.status == "failed" and bad.checks["hashes_ok"] is False and "hashes_ok" in bad.reason
    assert not report.ok and report.counts() == {"passed": 1, "failed": 1, "skipped": 0, "error": 0}
    doc = json.loads((out / "report.json").read_text())
    assert [r["status"] for r in doc["results"]] == ["passed", "failed"]
    md = (out / "report.md").read_text()
    assert "| tiny-onnx | host | local | passed | match |" in md
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Decode throughput" in html
    # the matrix view: one cell per package x device, judged numbers beside the bound that judged them
    ok_cell, bad_cell = doc["matrix"]
    assert (ok_cell["status"], bad_cell["status"]) == ("passed", "failed")
    assert ok_cell["max_abs_diff"] <= ok_cell["atol"] and ok_cell["agreement"] == 1.0 and ok_cell["greedy"] == "match"
    assert ok_cell["peak_rss_mb"] > 0 and ok_cell["rss_baseline_mb"] is None and ok_cell["emulated"] is False
    assert ok_cell["fit_needed_mb"] > 0
    assert "## Matrix" in md and "| package | host |" in md and "| tiny-onnx (2) | FAILED" in md and "qemu" not in md
    assert "max |Δ| per cell" in html and "class='matrix'" in html


def test_matrix_skips_and_errors_are_reported(tiny_package):
    report = run_device_test([tiny_package], ["iphone15pro", "rpi4"])  # xcode on Linux; ssh without host
    ios, pi = report.results
    assert ios.status == "skipped" and "E_REQUIRES_MACOS" in ios.reason
    assert pi.status == "error" and "host" in pi.reason


def test_make_transport_rejects_unknown():
    with pytest.raises(BadInputError) as e:
        make_transport("carrier-pigeon")
    assert e.value.code == "E_TRANSPORT_UNKNOWN"
