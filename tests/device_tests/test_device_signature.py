"""`device-test --require-signature`: the on-device runner verifies the package's model-signing
signature itself (with `cryptography` only, no torch, no model_signing) before it reads anything
else, through the local transport. The "device" gets `cryptography` as a device would: a site dir
of just that package (.venv-sign/device-site, made by scripts/bootstrap-sign.sh) on its path.
The qemu test does the same inside the emulated aarch64 Raspberry Pi 5, whose sysroot carries
aarch64 wheels of the same cryptography (device_tests/sysroot.py WHEELS)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slmpack.cli import main
from slmpack.device_tests import device_runner, run_device_test
from slmpack.device_tests.transports import LocalTransport
from slmpack.package import MANIFEST, hash_tree, verify, write_json
from tests.hardening.keys import DEVICE_SITE, SIGNER, flip, keypair

pytestmark = pytest.mark.skipif(SIGNER is None or not (DEVICE_SITE / "cryptography").is_dir(),
                                reason="model_signing / device-site not installed (scripts/bootstrap-sign.sh)")
RUNNER = str(Path(device_runner.__file__))


@pytest.fixture(scope="module")
def signed(tiny_package, tmp_path_factory):
    d = tmp_path_factory.mktemp("signed")
    pkg = d / "signed"
    shutil.copytree(tiny_package, pkg)
    priv, pub = keypair(d, "key")
    _, other = keypair(d, "other")
    assert main(["sign", str(pkg), "--private-key", str(priv)]) == 0
    return pkg, pub, other


def _variant(signed, tmp_path, name, with_sig=True):
    pkg = tmp_path / name
    shutil.copytree(signed[0], pkg)
    if with_sig:
        shutil.copy(signed[0].with_name("signed.sig"), tmp_path / f"{name}.sig")
    return pkg


def _device_test(pkgs, key, site=True):
    tr = LocalTransport(env={"PYTHONPATH": str(DEVICE_SITE) if site else ""})
    try:
        return run_device_test(pkgs, ["host"], tr, signature_key=key).results
    finally:
        tr.cleanup()


def _refused(r, code="E_SIGNATURE_INVALID"):
    doc = r.device_json
    assert r.status == "failed" and r.checks["signature_ok"] is False, r
    assert doc["error"]["code"] == code, doc
    assert "hashes_ok" not in doc and "load_ms" not in doc  # refused before the package was read
    return doc["error"]["message"]


def test_signed_passes_unsigned_and_tampered_fail_on_the_device(signed, tmp_path):
    pkg, pub, other = signed
    unsigned = _variant(signed, tmp_path, "unsigned", with_sig=False)
    flipped = _variant(signed, tmp_path, "flipped")
    flip(flipped / "model.onnx", (flipped / "model.onnx").stat().st_size // 2)
    manifest_flipped = _variant(signed, tmp_path, "manifest-flipped")
    text = (manifest_flipped / MANIFEST).read_text()  # one flipped byte that keeps it valid JSON: a digit
    at = text.index(json.loads(text)["files"]["model.onnx"])  # of a listed sha256
    flip(manifest_flipped / MANIFEST, next(i for i in range(at, at + 64) if text[i].isdigit()))
    rehashed = _variant(signed, tmp_path, "rehashed")  # tamper, then re-hash the manifest
    flip(rehashed / "model.onnx", 100)
    m = json.loads((rehashed / MANIFEST).read_text())
    write_json(rehashed / MANIFEST, {**m, "files": hash_tree(rehashed)})
    assert verify(rehashed)["ok"]  # integrity alone is fooled ...
    good, *bad = _device_test([pkg, unsigned, flipped, manifest_flipped, rehashed], pub)
    assert good.status == "passed" and good.checks["signature_ok"] and good.checks["greedy_match"], good
    assert good.device_json["signature"]["files"] == sum(p.is_file() for p in pkg.rglob("*"))
    messages = [_refused(r) for r in bad]  # ... the signature is not
    assert "unsigned.sig: missing" in messages[0]
    assert all("differ from the signed sha256" in msg for msg in messages[1:]), messages
    [wrong_key] = _device_test([pkg], other)
    assert "another key" in _refused(wrong_key)


def test_a_forged_statement_or_bundle_is_refused(signed, tmp_path):
    pkg, pub, _ = signed
    forged = _variant(signed, tmp_path, "forged")
    flip(forged / "model.onnx", 100)
    bundle = json.loads((tmp_path / "forged.sig").read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    for res in statement["predicate"]["resources"]:  # list the tampered file's new digest ...
        if res["name"] == "model.onnx":
            res["digest"] = hash_tree(forged)["model.onnx"]
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (tmp_path / "forged.sig").write_text(json.dumps(bundle))
    garbage = _variant(signed, tmp_path, "garbage")
    (tmp_path / "garbage.sig").write_text("[" * 100_000)
    extra = _variant(signed, tmp_path, "extra")
    (extra / "notes.txt").write_text("not signed")
    forged_r, garbage_r, extra_r = _device_test([forged, garbage, extra], pub)
    assert "does not verify" in _refused(forged_r)  # ... without the key, it cannot be re-signed
    assert "not JSON" in _refused(garbage_r)
    assert "extra ['notes.txt']" in _refused(extra_r)


def test_without_cryptography_the_device_names_what_to_install(signed):
    pkg, pub, _ = signed
    [r] = _device_test([pkg], pub, site=False)
    assert r.status == "error" and r.device_json["error"]["code"] == "E_RUNTIME_MISSING"
    assert "pip install cryptography" in r.reason


def test_runner_cli_exit_codes(signed, tmp_path):
    pkg, pub, _ = signed
    env = {**os.environ, "PYTHONPATH": str(DEVICE_SITE)}

    def run(*args):
        res = subprocess.run([sys.executable, RUNNER, *args], capture_output=True, text=True, env=env, timeout=300)
        return res.returncode, json.loads(res.stdout)["error"]

    rc, err = run(str(pkg), "--require-signature")
    assert (rc, err["code"]) == (2, "E_SIGNATURE_KEY")
    unsigned = _variant(signed, tmp_path, "unsigned", with_sig=False)
    rc, err = run(str(unsigned), "--require-signature", "--public-key", str(pub))
    assert (rc, err["code"]) == (1, "E_SIGNATURE_INVALID")
    rc, err = run(str(unsigned), "--require-signature", "--public-key", str(pub),
                  "--signature", str(pkg.with_name("signed.sig")))  # a signature of the same files: accepted
    assert (rc, err) == (0, None)


def test_cli_device_test_passes_the_flag_through(signed, tmp_path, capsys):
    pkg, pub, _ = signed
    assert main(["device-test", str(pkg), "-d", "host", "--require-signature", "--json"]) == 2  # no key
    capsys.readouterr()
    unsigned = _variant(signed, tmp_path, "unsigned", with_sig=False)
    rc = main(["device-test", str(unsigned), "-d", "host", "--transport", "local", "--require-signature",
               "--public-key", str(pub), "--report", str(tmp_path / "rep"), "--json"])
    doc, _ = json.JSONDecoder().raw_decode(capsys.readouterr().out)  # the report, then the error
    assert rc == 1 and doc["results"][0]["checks"]["signature_ok"] is False
    assert doc["results"][0]["device_json"]["error"]["code"] in ("E_SIGNATURE_INVALID", "E_RUNTIME_MISSING")


def _cli_device_test(capsys, pkgs, *args) -> tuple[int, dict]:
    rc = main(["device-test", *map(str, pkgs), *args, "--json"])
    doc, _ = json.JSONDecoder().raw_decode(capsys.readouterr().out)  # the report (then an error, if any)
    return rc, doc


@pytest.mark.qemu
def test_signature_is_checked_on_the_emulated_rpi5(signed, tmp_path, capsys, aarch64_sysroot):
    """`slmpack device-test -d rpi5-emulated --require-signature`: python3.11 for aarch64 under
    qemu verifies the signature with the sysroot's aarch64 cryptography; a signed package passes
    there, a tampered one (re-hashed manifest, so integrity alone would pass) is refused there."""
    pkg, pub, _ = signed
    common = ["-d", "rpi5-emulated", "--require-signature", "--public-key", str(pub)]
    rc, doc = _cli_device_test(capsys, [pkg], *common, "--report", str(tmp_path / "good"))
    (good,) = doc["results"]
    assert rc == 0 and good["status"] == "passed" and good["transport"] == "qemu", good
    dev = good["device_json"]
    assert dev["machine"]["machine"] == "aarch64" and dev["signature_ok"] is True and dev["greedy_match"]
    assert dev["signature"]["files"] == sum(p.is_file() for p in pkg.rglob("*"))
    rehashed = _variant(signed, tmp_path, "rehashed")
    flip(rehashed / "model.onnx", 100)
    write_json(rehashed / MANIFEST, {**json.loads((rehashed / MANIFEST).read_text()), "files": hash_tree(rehashed)})
    assert verify(rehashed)["ok"]
    rc, doc = _cli_device_test(capsys, [rehashed], *common, "--report", str(tmp_path / "bad"))
    (bad,) = doc["results"]
    assert rc == 1 and bad["status"] == "failed" and bad["checks"]["signature_ok"] is False, bad
    dev = bad["device_json"]
    assert dev["machine"]["machine"] == "aarch64" and dev["error"]["code"] == "E_SIGNATURE_INVALID", dev
    assert "differ from the signed sha256" in dev["error"]["message"]
    assert "hashes_ok" not in dev and "load_ms" not in dev  # refused on the device before anything was read
