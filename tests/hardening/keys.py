"""Signing helpers for the tests: the model_signing tool (None when scripts/bootstrap-sign.sh has not
run), an EC P-256 key pair made with its venv's cryptography, and the device-side site dir."""
from __future__ import annotations

import subprocess
from pathlib import Path

from slmpack.errors import BadInputError
from slmpack.signing import ROOT, signer

try:
    SIGNER = signer()
except BadInputError:
    SIGNER = None
DEVICE_SITE = ROOT / ".venv-sign" / "device-site"  # just cryptography: what a device needs


def keypair(d: Path, name: str) -> tuple[Path, Path]:
    py = SIGNER.rsplit("/", 1)[0] + "/python"  # cryptography comes with model-signing, in its venv
    code = ("import sys; from cryptography.hazmat.primitives.asymmetric import ec; "
            "from cryptography.hazmat.primitives import serialization as s; k = ec.generate_private_key(ec.SECP256R1()); "
            "open(sys.argv[1], 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())); "
            "open(sys.argv[2], 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, "
            "s.PublicFormat.SubjectPublicKeyInfo))")
    priv, pub = d / f"{name}.pem", d / f"{name}.pub"
    subprocess.run([py, "-c", code, str(priv), str(pub)], check=True)
    return priv, pub


def flip(path: Path, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
