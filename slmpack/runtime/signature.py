"""Check a package's OpenSSF model-signing signature on the device, before anything is loaded.

``slmpack sign`` writes a Sigstore bundle (``PKG.sig``) holding a DSSE envelope: an in-toto
statement listing the sha256 of every file of the package (``manifest.json`` included), signed
with an EC key (P-256/384/521, ECDSA with SHA-256/384/512 over the DSSE pre-authentication
encoding). ``model_signing`` itself needs pydantic and sigstore; this module verifies the same
bundle with ``cryptography`` alone, so the device needs only ``pip install cryptography``.

``check(pkg, signature, public_key)`` refuses (``E_SIGNATURE_INVALID``) a missing or malformed
bundle, a bundle made for another key, a signature that does not verify, a statement whose root
digest disagrees with its resources, and a package whose files are not exactly the signed ones
with the signed sha256s (no symlink, no extra or missing file). Nothing but the signature, the
key and the package's bytes is read.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import BadInputError, ErrorCode, PackageIntegrityError
from .integrity import sha256_file, walk

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
MAX_BUNDLE_BYTES = 16 << 20
CURVE_HASH = {"secp256r1": "SHA256", "secp384r1": "SHA384", "secp521r1": "SHA512"}


@dataclass(frozen=True)
class SignatureCheck:
    signature: str       # the bundle's file name
    key_sha256: str      # sha256 of the public key's PEM (the bundle's key hint)
    subject_sha256: str  # the statement's root digest over every file's digest
    files: int

    def to_json(self) -> dict:
        return {"signature": self.signature, "key_sha256": self.key_sha256,
                "subject_sha256": self.subject_sha256, "files": self.files}


def _invalid(message: str) -> PackageIntegrityError:
    return PackageIntegrityError(message, ErrorCode.E_SIGNATURE_INVALID)


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError as exc:
        raise BadInputError(f"--require-signature needs the 'cryptography' package on the device "
                            f"(pip install cryptography): {exc}", ErrorCode.E_RUNTIME_MISSING) from None
    return InvalidSignature, hashes, serialization, ec


def _regular_bytes(path: Path, what: str, limit: int = MAX_BUNDLE_BYTES) -> bytes:
    if path.is_symlink() or not path.is_file():
        raise _invalid(f"{what} {path.name}: missing or not a regular file")
    if path.stat().st_size > limit:
        raise _invalid(f"{what} {path.name}: larger than {limit} bytes")
    return path.read_bytes()


def _json(data: bytes, what: str) -> dict:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _invalid(f"{what}: not JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise _invalid(f"{what}: not a JSON object")
    return doc


def _b64(value, what: str) -> bytes:
    if not isinstance(value, str):
        raise _invalid(f"signature bundle: {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"signature bundle: {what} is not base64") from None


def pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of an in-toto payload (what the key signed)."""
    return b" ".join([f"DSSEv1 {len(PAYLOAD_TYPE)} {PAYLOAD_TYPE} {len(payload)}".encode(), payload])


def _verified_payload(bundle: dict, key_pem: bytes) -> tuple[bytes, str]:
    InvalidSignature, hashes, serialization, ec = _crypto()
    try:
        key = serialization.load_pem_public_key(key_pem)
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"--public-key: not a PEM public key ({exc})", ErrorCode.E_SIGNATURE_KEY) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in CURVE_HASH:
        raise BadInputError("--public-key: not an EC P-256/384/521 key (what slmpack sign uses)",
                            ErrorCode.E_SIGNATURE_KEY)
    spki = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_sha = hashlib.sha256(spki).hexdigest()
    material = bundle.get("verificationMaterial")
    hint = ((material.get("publicKey") or {}) if isinstance(material, dict) else {}).get("hint")
    if not isinstance(hint, str):
        raise _invalid("signature bundle: no public-key hint (sign it with slmpack sign)")
    if hint != key_sha:
        raise _invalid("the signature was made for another key (its key hint differs)")
    env = bundle.get("dsseEnvelope")
    if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE:
        raise _invalid(f"signature bundle: no DSSE envelope of type {PAYLOAD_TYPE}")
    sigs = env.get("signatures")
    if not (isinstance(sigs, list) and len(sigs) == 1 and isinstance(sigs[0], dict)):
        raise _invalid("signature bundle: expected exactly one signature")
    payload, sig = _b64(env.get("payload"), "payload"), _b64(sigs[0].get("sig"), "sig")
    try:
        key.verify(sig, pae(payload), ec.ECDSA(getattr(hashes, CURVE_HASH[key.curve.name])()))
    except InvalidSignature:
        raise _invalid("the signature does not verify with this key") from None
    return payload, key_sha


def _signed_files(statement: dict) -> tuple[dict[str, str], str]:
    """{relpath: sha256} of the signed statement, after checking its root digest."""
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise _invalid(f"signed statement: not a {PREDICATE_TYPE} in-toto statement")
    subjects, pred = statement.get("subject"), statement.get("predicate")
    if not (isinstance(subjects, list) and len(subjects) == 1 and isinstance(subjects[0], dict)
            and isinstance(pred, dict)):
        raise _invalid("signed statement: expected one subject and a predicate")
    ser = pred.get("serialization") or {}
    if not isinstance(ser, dict) or (ser.get("method"), ser.get("hash_type")) != ("files", "sha256"):
        raise _invalid("signed statement: only per-file sha256 serialization is verified here")
    files, root = {}, hashlib.sha256()
    for res in pred.get("resources") if isinstance(pred.get("resources"), list) else [None]:
        if not (isinstance(res, dict) and res.get("algorithm") == "sha256" and isinstance(res.get("name"), str)
                and isinstance(res.get("digest"), str) and len(res["digest"]) == 64):
            raise _invalid(f"signed statement: malformed resource {str(res)[:120]}")
        name = res["name"]
        p = PurePosixPath(name)
        if not name or p.is_absolute() or ".." in p.parts or p.as_posix() != name or name in files:
            raise _invalid(f"signed statement: resource name {name[:120]!r} is not a plain unique relative path")
        try:
            root.update(bytes.fromhex(res["digest"]))
        except ValueError:
            raise _invalid(f"signed statement: digest of {name[:120]!r} is not hex") from None
        files[name] = res["digest"].lower()
    subject = (subjects[0].get("digest") or {}).get("sha256") if isinstance(subjects[0].get("digest"), dict) else None
    if subject != root.hexdigest():
        raise _invalid("signed statement: the root digest disagrees with the listed files")
    return files, subject


def check(pkg: Path, signature: Path, public_key: Path) -> SignatureCheck:
    pkg, signature, public_key = Path(pkg), Path(signature), Path(public_key)
    if public_key.is_symlink() or not public_key.is_file():
        raise BadInputError(f"--public-key {public_key.name}: missing or not a regular file", ErrorCode.E_SIGNATURE_KEY)
    if pkg.is_symlink() or not pkg.is_dir():
        raise BadInputError(f"{pkg}: not a package directory", ErrorCode.E_PACKAGE_MISSING)
    bundle = _json(_regular_bytes(signature, "signature"), "signature bundle")
    payload, key_sha = _verified_payload(bundle, _regular_bytes(public_key, "public key", 1 << 16))
    signed, subject = _signed_files(_json(payload, "signed statement"))
    entries, bad = walk(pkg)
    if bad:
        raise _invalid(f"{pkg.name}: {bad[0].path}: {bad[0].reason} (a signed package holds regular files only)")
    if set(entries) != set(signed):
        extra, missing = sorted(set(entries) - set(signed)), sorted(set(signed) - set(entries))
        raise _invalid(f"{pkg.name}: files differ from the signed ones (extra {extra[:5]}, missing {missing[:5]})")
    changed = [rel for rel in sorted(signed) if sha256_file(pkg / rel) != signed[rel]]
    if changed:
        raise _invalid(f"{pkg.name}: {len(changed)} file(s) differ from the signed sha256: {changed[:5]}")
    return SignatureCheck(signature.name, key_sha, subject, len(signed))


__all__ = ["SignatureCheck", "check", "pae"]
