"""Every ``laion-hf`` command with a bad input of each kind: exit 2, the file named, no traceback, nothing half-written.

The kinds: a missing path, an empty folder, a damaged file (a tar cut at a member
boundary, a garbage parquet / WAT / card / recipe), a column of the wrong type, and an
OUTPUT that is a regular file or read-only. Commands run through the real entry point
(``laion_hf.cli.main``); read-only OUTPUT runs in a subprocess (as root, without the
capability that lets root write anywhere).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laion_hf.testing.synthetic.shards import write_shards
from laion_hf.testing.wat import Image, Page, write_wat
from tests.damaged_shards import cut_tar
from tests.entry_point import run_entry_point

IMAGE_COMMANDS = ("filter", "score", "dedup", "clean", "publish", "build")
#: What each command is given: INPUT and OUTPUT are filled per case.
COMMANDS = {
    "extract": ["extract", "{input}", "{output}", "--no-language"],
    "download": ["download", "{input}", "{output}", "--allow-private-network", "--timeout", "1"],
    "filter": ["filter", "{input}", "{output}", "--model", "laion-hf-tiny", "--batch-size", "4"],
    "score": ["score", "{input}", "{output}", "--nsfw", "tiny", "--watermark", "tiny", "--aesthetic", "tiny",
              "--clip", "laion-hf-tiny", "--batch-size", "4"],
    "dedup": ["dedup", "{input}", "{output}"],
    "clean": ["clean", "{input}", "{output}", "--remove", "url-md5={removal_list}"],
    "verify-clean": ["verify-clean", "{input}", "--remove", "url-md5={removal_list}"],
    "publish": ["publish", "{input}", "--folder", "{output}", "--family", "laion5b"],
    "push": ["push", "{input}", "--to", "{output}"],
    "build": ["build", "{input}", "{output}", "--recipe", "relaion5b", "--start-at", "configs"],
    "oig build": ["oig", "build", "{input}", "{output}"],
    "demo": ["demo", "--output", "{output}"],
}


@dataclass
class Inputs:
    """One good input per command (built once), from which each case makes its bad one."""

    root: Path

    def good(self, command: str) -> Path:
        return self.root / command.replace(" ", "-")

    @property
    def removal_list(self) -> Path:
        return self.root / "url-md5.txt"


def _image_shards(directory: Path) -> Path:
    write_shards(str(directory), shards=1, per_shard=4, seed=5)
    return directory


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("good")
    found = Inputs(root)
    found.removal_list.write_text(hashlib.md5(b"http://images.example/000000001.jpg").hexdigest() + "\n")
    wat = found.good("extract") / "site.warc.wat.gz"
    wat.parent.mkdir()
    write_wat(str(wat), [Page(url="https://site.example/", images=[Image("https://cdn.example/a.jpg", "a picture of a")])])
    found.good("download").mkdir()
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"], "caption": ["a"]}), found.good("download") / "c.parquet")
    for command in (*IMAGE_COMMANDS, "verify-clean"):
        _image_shards(found.good(command))
    folder = found.good("push")
    folder.mkdir()
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files: data/*.parquet\n---\n# x\n")
    (folder / "data").mkdir()
    pq.write_table(pa.table({"a": [1]}), folder / "data" / "train.parquet")
    found.good("oig build").mkdir()
    shutil.copytree(Path(__file__).resolve().parents[2] / "oig" / "samples", found.good("oig build") / "samples")
    shutil.copytree(Path(__file__).resolve().parents[2] / "oig" / "recipes", found.good("oig build") / "recipes")
    return found


def good_input(inputs: Inputs, command: str, tmp_path: Path) -> Path:
    """A private copy of the command's good input (a case may damage it)."""
    source = inputs.good(command)
    copy = tmp_path / "input"
    shutil.copytree(source, copy)
    if command == "oig build":
        return copy / "recipes" / "sample.yaml"
    if command == "extract":
        return copy / "site.warc.wat.gz"
    return copy


# -- the bad inputs ----------------------------------------------------------------------------------


def damage(command: str, good: Path) -> Path:
    """Damage one file of the good input the way real copies get damaged; return the damaged file."""
    if command == "extract":
        target = good
        target.write_bytes(b"this is not a gzip member, nor a WARC record\n" * 10)
    elif command == "download":
        target = good / "c.parquet"
        target.write_bytes(target.read_bytes()[:-100])
    elif command == "push":
        target = good / "README.md"
        target.write_text("---\nconfigs: [unclosed\n---\n")
    elif command == "oig build":
        target = good
        target.write_text("seed: 1\nconstituents:\n  - name: x\n    source: [unclosed\n")
    else:  # image shards: the silent case, a tar cut exactly at a member boundary
        target = good / "00000.tar"
        cut_tar(target, "member-boundary")
    return target


#: The column each command reads that a bad copy may hold as int64 (``url`` as int64 is the issue's example).
WRONG_TYPE_COLUMN = {
    "download": "url", "dedup": "url", "clean": "url", "verify-clean": "url",
    "filter": "caption", "score": "key", "publish": "key", "build": "key",
}


def wrong_type(command: str, good: Path) -> Path | None:
    """Rewrite the input's parquet with the command's column as int64; None where the command reads no parquet."""
    if command not in WRONG_TYPE_COLUMN:
        return None
    target = good / ("c.parquet" if command == "download" else "00000.parquet")
    table = pq.read_table(target)
    column = WRONG_TYPE_COLUMN[command]
    numbers = pa.array(range(table.num_rows), pa.int64())
    pq.write_table(table.set_column(table.column_names.index(column), column, numbers), target)
    return target


KINDS = ("missing-path", "empty-folder", "damaged-file", "wrong-column-type", "output-is-a-file", "output-read-only")
READS_INPUT = [c for c in COMMANDS if c != "demo"]
WRITES_OUTPUT = [c for c in COMMANDS if c != "verify-clean"]


def case(command: str, kind: str, inputs: Inputs, tmp_path: Path) -> tuple[list[str], Path, Path]:
    """(argv, the path the message must name, the OUTPUT to check for half-written files)."""
    good = good_input(inputs, command, tmp_path) if command != "demo" else tmp_path / "unused"
    output = tmp_path / "output"
    named = good
    if kind == "missing-path":
        good = named = tmp_path / "no-such-input"
    elif kind == "empty-folder":
        good = named = tmp_path / "empty"
        good.mkdir()
    elif kind == "damaged-file":
        named = damage(command, good)
    elif kind == "wrong-column-type":
        named = wrong_type(command, good)
        if named is None:
            pytest.skip(f"{command} reads no parquet")
    elif kind == "output-is-a-file":
        output.write_text("a file where OUTPUT should go\n")
        named = output
    elif kind == "output-read-only":
        output.mkdir()
        output.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        named = output
    argv = [part.format(input=good, output=output, removal_list=inputs.removal_list) for part in COMMANDS[command]]
    return argv, named, output


# -- running a command -------------------------------------------------------------------------------


def _without_dac_override() -> list[str]:
    """A prefix that runs a command as root *without* CAP_DAC_OVERRIDE, so file modes apply to it."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is absent: a read-only folder cannot be made read-only for root")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", "--"]


def run_subprocess(argv: list[str]) -> tuple[int, str]:
    done = subprocess.run(
        [*_without_dac_override(), sys.executable, "-c", "from laion_hf.cli import main; main()", *argv],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "1000"}, timeout=600,
    )
    return done.returncode, done.stdout + done.stderr


def half_written(output: Path) -> list[str]:
    """Files under OUTPUT that a failed run must not leave: temporaries, data shards, done markers."""
    if not output.is_dir():
        return []
    return sorted(
        str(p.relative_to(output)) for p in output.rglob("*")
        if p.is_file() and (p.name.endswith((".tmp", ".tar", ".parquet", ".done.json")) or p.name == "README.md")
    )


CASES = [
    pytest.param(c, k, id=f"{c}:{k}")
    for c in COMMANDS for k in KINDS
    if (k.startswith("output") and c in WRITES_OUTPUT) or (not k.startswith("output") and c in READS_INPUT)
]


@pytest.mark.parametrize(("command", "kind"), CASES)
def test_a_bad_input_is_a_clear_error(command, kind, inputs, tmp_path, monkeypatch, capsys):
    argv, named, output = case(command, kind, inputs, tmp_path)
    before = output.read_bytes() if output.is_file() else None
    if kind == "output-read-only":
        code, text = run_subprocess(argv)
    else:
        code, text = run_entry_point(monkeypatch, capsys, *argv)
    text = " ".join(text.split())  # rich wraps long paths
    assert "Traceback" not in text, text
    assert code == 2, text
    assert "error:" in text and str(named) in text, text
    assert half_written(output) == []
    if before is not None:
        assert output.read_bytes() == before
