"""The README and docs/ say what is true: the README stays short, its Quick start is the two commands,
every relative link and anchor resolves, the example configs shown are the files that are tested and
they plan (and read a corpus) through snakemake, overlays behave as documented, and the
configuration reference names every key of the schema."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from test_configs import OFFLINE, leaves, load, with_defaults
from workflow_utils import ROOT, effective_config, job_counts, snakemake

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [README, ROOT / "config" / "README.md", *DOCS]
EXAMPLES = {"own-corpus": ROOT / "config" / "examples" / "own-corpus.yaml",
            "own-model": ROOT / "config" / "examples" / "own-model.yaml"}
QUICK_START = [
    'pip install torch==2.13.0 -e ".[test]" && snakemake --cores 1 --resources gpu=1',
    "python -m pytest -q tests",
]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def without_code(text: str) -> str:
    """The text with fenced blocks and inline code removed (links inside them are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def yaml_blocks(text: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(text) if m.group(1) == "yaml"]


def test_slug_is_githubs():
    assert slug("Figures (all in `snakemake --report report.html`, with captions)") == \
        "figures-all-in-snakemake---report-reporthtml-with-captions"
    assert slug("The real experiment: Aya-23-8B on EC40, on a GPU") == "the-real-experiment-aya-23-8b-on-ec40-on-a-gpu"
    assert slug("GPU (H100/H200)") == "gpu-h100h200"


def test_readme_is_at_most_200_lines():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= 200, f"README.md has {n} lines; move detail into docs/"


def test_quick_start_is_exactly_the_two_commands():
    quick = section(README.read_text(encoding="utf-8"), "## Quick start")
    blocks = [m.group(2) for m in FENCE.finditer(quick)]
    assert blocks, "no code block in Quick start"
    assert [ln for ln in blocks[0].splitlines() if ln.strip()] == QUICK_START
    # and the two lines are true: the extra exists, the torch pin is CI's, CI runs the same tests
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "pytest>=8" in extras["test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q torch==2.13.0" in ci
    # the README's command exactly, its exit status kept for CI's timing line
    assert "\npython3 -m pytest -q tests || status=$?\n" in ci and '\nexit "$status"\n' in ci


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    text = without_code(path.read_text(encoding="utf-8"))
    targets = LINK.findall(text)
    assert path != README or len(targets) >= 10  # the README links into docs/
    bad = []
    for target in targets:
        if re.match(r"^[a-z]+:", target):  # http(s), mailto
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not bad, bad


TEST_PATH = re.compile(r"tests/[A-Za-z0-9_/]+\.py(?:::[A-Za-z0-9_]+)?")


def test_every_test_the_docs_name_exists():
    """A doc that says "tested in tests/x.py::test_y" names a file (and test) that is there."""
    sources = [*MARKDOWN, ROOT / "workflow/scripts/neurospec/data/languages.tsv"]
    bad = []
    for path in sources:
        for ref in sorted(set(TEST_PATH.findall(path.read_text(encoding="utf-8")))):
            file, _, name = ref.partition("::")
            if not (ROOT / file).is_file():
                bad.append(f"{path.name}: {ref}: no such file")
            elif name and not re.search(rf"^(async )?def {name}\(", (ROOT / file).read_text(), re.M):
                bad.append(f"{path.name}: {ref}: no such test")
    assert not bad, bad


def test_every_doc_is_linked_from_the_readme():
    text = README.read_text(encoding="utf-8")
    missing = [p.name for p in DOCS if f"(docs/{p.name}" not in text]
    assert not missing, missing


def test_the_readme_shows_the_tested_example_configs():
    """Every YAML block that names a file in its first line is that file, verbatim; the README shows
    both examples."""
    shown = set()
    for path in MARKDOWN:
        for block in yaml_blocks(path.read_text(encoding="utf-8")):
            first, _, rest = block.partition("\n")
            m = re.fullmatch(r"# (config/\S+\.yaml)", first.strip())
            if not m:
                continue
            assert (ROOT / m.group(1)).read_text(encoding="utf-8") == rest, f"{path.name}: {m.group(1)}"
            if path == README:
                shown.add(m.group(1))
    assert shown == {str(p.relative_to(ROOT)) for p in EXAMPLES.values()}


def write_corpus(root: Path, langs: list[str], n: int = 3) -> dict:
    """corpus/{split}.{lang}: n aligned lines per language, each line naming its split, language and number."""
    (root / "corpus").mkdir()
    lines = {}
    for split in ("validation", "test"):
        for lang in langs:
            lines[split, lang] = [f"{split} sentence {i} in {lang}" for i in range(n)]
            (root / "corpus" / f"{split}.{lang}").write_text("\n".join(lines[split, lang]) + "\n")
    return lines


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_config_dry_runs(name, tmp_path):
    """`snakemake -n --configfile config/examples/X.yaml` plans the whole workflow offline."""
    path = EXAMPLES[name]
    cfg = with_defaults(load(path))
    if name == "own-corpus":
        write_corpus(tmp_path, ["en", "de", "fr"])
    proc = snakemake(tmp_path, "--dry-run", configfile=path, env=OFFLINE)
    counts = job_counts(proc.stdout)
    n = len(cfg["pairs"])
    assert counts["collect_activations"] == n
    assert counts["pair_table"] == 2 * n  # the selection split and the held-out split
    assert counts["ablation"] == 5 and counts["translate"] == n
    assert ("build_demo_model" in counts) == (cfg["model"]["id"] == "demo")
    folder = cfg["dataset"]["folder"] or cfg["dataset"]["name"]
    assert f"results/{cfg['model']['name']}/{folder}/validation/activations/de-en.parquet" in proc.stdout
    if name == "own-corpus":  # the files are the pair tables' inputs: editing one reruns its tables
        assert re.search(r"input: corpus/test\.de, corpus/test\.en|input: corpus/test\.en, corpus/test\.de",
                         proc.stdout)
    assert not (tmp_path / "results").exists()


def test_own_corpus_example_reads_the_files(tmp_path):
    """Through snakemake: the own-corpus example turns the line-aligned files into the pair table."""
    from neurospec.tables import read_table

    lines = write_corpus(tmp_path, ["en", "de", "fr"])
    target = "results/data/my-corpus/validation/fr-en.parquet"
    snakemake(tmp_path, target, configfile=EXAMPLES["own-corpus"], env=OFFLINE)
    table = read_table(tmp_path / target)
    assert list(table["src"]) == lines["validation", "fr"]
    assert list(table["tgt"]) == lines["validation", "en"]
    assert set(table["src_lang"]) == {"fr"} and set(table["tgt_lang"]) == {"en"}


def overlay(tmp_path: Path) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text("scoring:\n  k: 25\n")
    return path


@pytest.mark.parametrize("base", ["config.yaml", "ec40-aya23.yaml"])
def test_an_overlay_changes_only_its_keys(base, tmp_path):
    """`--configfile config/X.yaml mine.yaml`: X, with mine.yaml's keys replaced."""
    cfg = load(ROOT / "config" / base)
    expected = copy.deepcopy(cfg)
    expected["scoring"]["k"] = 25
    assert cfg["scoring"]["k"] != 25
    assert effective_config(tmp_path, ROOT / "config" / base, overlay(tmp_path)) == with_defaults(expected)


def test_overlay_dry_run(tmp_path):
    """The documented command line, as typed: two files after one --configfile."""
    proc = snakemake(tmp_path, "--dry-run", "--configfile", str(ROOT / "config" / "config.yaml"),
                     str(overlay(tmp_path)), env=OFFLINE)
    counts = job_counts(proc.stdout)
    assert counts["collect_activations"] == len(load(ROOT / "config" / "config.yaml")["pairs"])


def test_configuration_doc_names_every_key():
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = section(doc, "## Every key")
    keys = set(leaves(with_defaults({"pairs": ["en-de"]})))
    missing = sorted(k for k in keys if f"| `{k}` |" not in table)
    assert not missing, missing


def test_flores_block_is_what_differs_from_the_ec40_config():
    """docs/configuration.md shows the keys in which config/flores-plus-aya23.yaml differs from
    config/ec40-aya23.yaml (defaults filled in): the block merged over the EC40 config gives it."""
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    block = yaml.safe_load(yaml_blocks(section(doc, "## FLORES+ instead of EC40"))[0])

    def merge(base: dict, over: dict) -> dict:
        out = copy.deepcopy(base)
        for key, value in over.items():
            out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
        return out

    ec40 = leaves(with_defaults(load(ROOT / "config" / "ec40-aya23.yaml")))
    flores = leaves(with_defaults(load(ROOT / "config" / "flores-plus-aya23.yaml")))
    assert leaves(with_defaults(merge(load(ROOT / "config" / "ec40-aya23.yaml"), block))) == flores
    assert {k for k in flores if flores[k] != ec40.get(k)} <= set(leaves(block))
