"""Signed packages with OpenSSF model signing (``model-signing``), offline, with a local key.

``sign`` first re-hashes the package against its manifest, then signs the whole directory —
every file, ``manifest.json`` included — into a detached signature beside it (``PKG.sig`` unless
``--signature``). ``verify_signature`` checks that signature against a public key: one changed
byte anywhere, or a manifest re-hashed after tampering, fails (the manifest is itself signed).

``model-signing`` needs pydantic >= 2.12 and typing-extensions >= 4.14, which conflict with the
export toolchain's pins (litert-torch), so it lives in its own venv: ``scripts/bootstrap-sign.sh``
creates ``.venv-sign``; the tool is found as ``$SLMPACK_MODEL_SIGNING``, then ``.venv-sign``
beside this checkout, then ``model_signing`` on PATH. Keyless Sigstore signing (an OIDC identity
recorded in the Rekor log) is ``model_signing sign sigstore PKG`` and ``model_signing verify
sigstore PKG --identity EMAIL --identity_provider https://oauth2.sigstore.dev/auth`` — it needs
network access, so slmpack's commands use keys.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from slmpack.errors import BadInputError, PackageIntegrityError
from slmpack.package import verify

ROOT = Path(__file__).resolve().parents[1]


def signer() -> str:
    for cand in (os.environ.get("SLMPACK_MODEL_SIGNING"), str(ROOT / ".venv-sign" / "bin" / "model_signing"),
                 shutil.which("model_signing")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise BadInputError("model_signing is not installed: run scripts/bootstrap-sign.sh (or set "
                        "SLMPACK_MODEL_SIGNING)", "E_SIGNER_MISSING")


def default_signature(pkg: Path) -> Path:
    return Path(os.path.abspath(pkg)).with_name(Path(os.path.abspath(pkg)).name + ".sig")


def _key(path: Path, what: str) -> Path:
    if not Path(path).is_file():
        raise BadInputError(f"{what} {path}: not a file", "E_SIGNATURE_KEY")
    return Path(path)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([signer(), *args], capture_output=True, text=True, timeout=600)


def sign(pkg: Path, private_key: Path, signature: Path | None = None) -> dict:
    pkg = Path(pkg)
    verify(pkg)  # never sign a package whose files already disagree with its manifest
    sig = Path(signature) if signature else default_signature(pkg)
    res = _run(["sign", "key", str(pkg), "--private_key", str(_key(private_key, "--private-key")),
                "--signature", str(sig)])
    if res.returncode != 0:
        raise BadInputError(f"signing {pkg} failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}",
                            "E_SIGNATURE_KEY")
    return {"package": str(pkg), "signature": str(sig), "signed": True}


def verify_signature(pkg: Path, public_key: Path, signature: Path | None = None) -> dict:
    pkg = Path(pkg)
    sig = Path(signature) if signature else default_signature(pkg)
    if not sig.is_file():
        raise PackageIntegrityError(f"{pkg}: no signature at {sig}", "E_SIGNATURE_INVALID")
    res = _run(["verify", "key", str(pkg), "--signature", str(sig), "--public_key",
                str(_key(public_key, "--public-key"))])
    if res.returncode != 0:
        last = ((res.stderr or res.stdout).strip().splitlines() or ["failed"])[-1][:300]
        raise PackageIntegrityError(f"{pkg}: signature does not verify ({last})", "E_SIGNATURE_INVALID")
    return {"signature": str(sig), "signature_ok": True}
