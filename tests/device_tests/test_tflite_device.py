"""The device runner's TFLite adapter on the host, against the exporter's own TFLite package."""
from slmpack.device_tests import run_device_test


def test_tiny_tflite_package_passes_on_host(tiny_tflite_package, tmp_path):
    pkg = tiny_tflite_package
    report = run_device_test([pkg.path], ["host"], out_dir=tmp_path / "report")
    (r,) = report.results
    assert r.status == "passed", r.reason
    doc = r.device_json
    assert doc["target"] == "tflite" and doc["runtime"]["name"] in ("ai_edge_litert", "tflite_runtime")
    assert r.checks == {k: True for k in r.checks} and doc["hashes_ok"]
    assert doc["greedy_ids"] == pkg.validation["greedy"]["reference_ids"]
    assert doc["ttft_ms"] > 0 and doc["peak_rss_mb"] > 0
