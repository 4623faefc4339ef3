"""Signed packages: sign/verify round-trip with a local EC key (offline, OpenSSF model-signing);
one flipped byte in any file (manifest included) fails; a manifest re-hashed after tampering passes
plain `verify` but fails `verify --signature`; another key fails."""
from __future__ import annotations

import json

import pytest

from slmpack.cli import main
from slmpack.package import MANIFEST, hash_tree, write_json
from tests.hardening.keys import SIGNER, flip, keypair
from tests.hardening.kill_trials import write_package

pytestmark = pytest.mark.skipif(SIGNER is None, reason="model_signing not installed (scripts/bootstrap-sign.sh)")


def _verify(pkg, pub, capsys):
    rc = main(["verify", str(pkg), "--signature", "--public-key", str(pub), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_sign_verify_and_tamper(tmp_path, capsys):
    pkg = tmp_path / "pkg"
    write_package(pkg, False, 0)
    priv, pub = keypair(tmp_path, "key")
    _, other = keypair(tmp_path, "other")
    assert main(["sign", str(pkg), "--private-key", str(priv)]) == 0
    assert (tmp_path / "pkg.sig").is_file()
    capsys.readouterr()
    rc, doc = _verify(pkg, pub, capsys)
    assert rc == 0 and doc["signature_ok"] is True
    rc, doc = _verify(pkg, other, capsys)
    assert (rc, doc["error"]) == (1, "E_SIGNATURE_INVALID")
    for name in (MANIFEST, "part00.bin", "part19.bin"):  # one flipped byte anywhere fails
        f = pkg / name
        original = f.read_bytes()
        flip(f, len(original) // 2)
        rc, doc = _verify(pkg, pub, capsys)
        # a flipped manifest byte may break its JSON (exit 2, E_PACKAGE_INVALID): still refused
        assert (rc, doc["error"]) in ((1, "E_PACKAGE_INTEGRITY"), (1, "E_SIGNATURE_INVALID"),
                                      (2, "E_PACKAGE_INVALID")), name
        f.write_bytes(original)
    assert _verify(pkg, pub, capsys)[0] == 0
    flip(pkg / "part05.bin")  # tamper, then re-hash the manifest: plain verify is fooled ...
    manifest = json.loads((pkg / MANIFEST).read_text())
    manifest["files"] = hash_tree(pkg)
    write_json(pkg / MANIFEST, manifest)
    assert main(["verify", str(pkg)]) == 0
    capsys.readouterr()
    rc, doc = _verify(pkg, pub, capsys)  # ... the signature is not
    assert (rc, doc["error"]) == (1, "E_SIGNATURE_INVALID")
