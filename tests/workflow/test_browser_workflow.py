"""The neuron browser and the Python API through the user's path: one small demo run by `snakemake`
(its browser page and the lape ablation), then the page in headless Chromium (Debian's package),
the contexts against an independent recomputation on the run's own model, docs/api.md's example
executed on the run, and the exported selections read back the way LAPE's code reads them."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
import yaml

from neurospec import api
from neurospec.errors import NeurospecError
from neurospec.tables import read_metadata, read_table
from workflow_utils import ROOT, clean_env, job_counts, snakemake, write_config

RUN = "results/demo-small/demo/validation"
TOP_K, MAX_SENTENCES = 5, 8
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def workdir(shared_run):
    """The shared run (tests/workflow/conftest.py): its browser page, its ablation tables."""
    work, config = shared_run
    assert yaml.safe_load(config.read_text())["browser"] == {"top_k": TOP_K, "max_sentences": MAX_SENTENCES}
    return work


class Dom(html.parser.HTMLParser):
    """The dumped DOM: body's attributes, each neuron section's id, each context row's attributes and
    its highlighted token."""

    def __init__(self, text):
        super().__init__()
        self.body, self.sections, self.rows, self._in_mark = {}, [], [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "section" and "neuron" in attrs.get("class", ""):
            self.sections.append(attrs["id"])
        elif tag == "tr" and attrs.get("class") == "ctx":
            self.rows.append({**attrs, "section": self.sections[-1], "token": ""})
        elif tag == "mark":
            self._in_mark = True

    def handle_endtag(self, tag):
        if tag == "mark":
            self._in_mark = False

    def handle_data(self, data):
        if self._in_mark:
            self.rows[-1]["token"] += data


def open_page(path: Path, query: str = "") -> Dom:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (CI installs Debian's package: .ci/run)")
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--virtual-time-budget=10000", "--dump-dom", path.as_uri() + query],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Dom(proc.stdout)


def test_the_page_finds_a_neuron_and_shows_its_stored_contexts(workdir):
    stored = read_table(workdir / RUN / "browser/contexts.parquet")
    layer, neuron = stored.sort_values("activation").iloc[-1][["layer", "neuron"]].astype(int)
    dom = open_page(workdir / RUN / "browser/index.html", "?q=" + quote(f"L{layer} N{neuron}"))
    assert "data-error" not in dom.body
    assert dom.body["data-ready"] == "1" and dom.sections == [f"L{layer}-N{neuron}"]
    want = stored[(stored.layer == layer) & (stored.neuron == neuron)].sort_values("rank")
    assert len(dom.rows) == len(want) == TOP_K
    for row, ctx in zip(dom.rows, want.itertuples()):
        assert float(row["data-act"]) == pytest.approx(ctx.activation, rel=1e-6)
        assert (row["data-pair"], row["data-lang"]) == (ctx.pair, ctx.lang)
        assert (int(row["data-sentence"]), int(row["data-position"])) == (ctx.sentence_id, ctx.position)
        assert row["token"] == ctx.token


def test_the_filters_select_what_the_score_tables_say(workdir):
    lape = read_table(workdir / RUN / "scores/lape.parquet")
    layer = int(lape["layer"].mode()[0])
    lang = str(lape["group"].mode()[0])
    want = lape[(lape.layer == layer) & (lape.group == lang)][["layer", "neuron"]].drop_duplicates()
    dom = open_page(workdir / RUN / "browser/index.html", f"?method=lape&layer={layer}&lang={lang}")
    assert "data-error" not in dom.body
    assert int(dom.body["data-ready"]) == len(want) > 0
    assert sorted(dom.sections) == sorted(f"L{layer}-N{n}" for n in want["neuron"])


def test_a_script_error_is_marked_in_the_page(workdir, tmp_path):
    text = (workdir / RUN / "browser/index.html").read_text(encoding="utf-8")
    broken = tmp_path / "index.html"
    broken.write_text(re.sub(r'(<script id="data" type="application/json">).*?(</script>)', r"\1{not json\2",
                             text, flags=re.S), encoding="utf-8")
    dom = open_page(broken)
    assert "data-error" in dom.body and "data-ready" not in dom.body


def test_contexts_equal_an_independent_recomputation_on_the_runs_model(workdir):
    """The run's own (demo) model, one sentence at a time with hooks on each layer's down_proj, over the
    first MAX_SENTENCES sentences of every pair table, the source's tokens found by their offsets."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = workdir / "results/models/demo"
    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    stored = read_table(workdir / RUN / "browser/contexts.parquet")
    meta = read_metadata(workdir / RUN / "browser/contexts.parquet")
    template = meta["prompt_template"]
    names = {}
    from neurospec.languages import language

    # the first 8 stored neurons of every layer (all of them would only repeat the same check)
    neurons = {layer: np.sort(idx)[:8] for layer, idx in stored.groupby("layer")["neuron"].unique().items()}
    acts: dict[tuple[int, int], dict[tuple[str, int, int], float]] = {}
    for path in sorted((workdir / "results/data/demo/validation").glob("*.parquet")):
        df = read_table(path).sort_values("id").iloc[:MAX_SENTENCES]
        for sid, src, s, t in zip(df["id"], df["src"], df["src_lang"], df["tgt_lang"]):
            text = template.format(src=src, src_name=names.setdefault(s, language(s).name),
                                   tgt_name=names.setdefault(t, language(t).name), src_lang=s, tgt_lang=t)
            start = text.index(src)
            enc = tok(text, return_offsets_mapping=True)
            offs = np.array(enc["offset_mapping"]).reshape(-1, 2)
            positions = np.flatnonzero((offs[:, 0] < start + len(src)) & (offs[:, 1] > start))
            seen = {}
            hooks = [lm.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
                lambda m, a, layer=layer: seen.__setitem__(layer, a[0][0].numpy().copy())) for layer in neurons]
            with torch.no_grad():
                lm(input_ids=torch.tensor([enc["input_ids"]]))
            for h in hooks:
                h.remove()
            for layer, idx in neurons.items():
                for n in idx:
                    d = acts.setdefault((layer, int(n)), {})
                    d.update({(path.stem, int(sid), int(p)): float(seen[layer][p, n]) for p in positions})
    assert len(acts) == sum(len(v) for v in neurons.values()) >= 8
    for (layer, neuron), d in acts.items():
        got = stored[(stored.layer == layer) & (stored.neuron == neuron)].sort_values("rank")
        top = sorted(d.values(), reverse=True)[:TOP_K]
        np.testing.assert_allclose(got["activation"], top, rtol=1e-4, atol=1e-5)
        for row in got.itertuples():
            assert d[(row.pair, row.sentence_id, row.position)] == pytest.approx(row.activation, rel=1e-4, abs=1e-5)


def api_example() -> str:
    text = (ROOT / "docs/api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    assert len(blocks) == 1, "docs/api.md should hold exactly one runnable python block"
    return blocks[0]


def test_api_example_runs(workdir):
    proc = subprocess.run([sys.executable, "-c", api_example()], cwd=workdir, capture_output=True, text=True,
                          timeout=600, env={**clean_env(), "PYTHONPATH": str(ROOT / "workflow" / "scripts")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "max |change| of the logits, zero:" in proc.stdout
    assert (workdir / "lape_mask.pt").exists() and (workdir / "lape.json").exists()


def test_exported_selections_read_back_in_the_anchors_layouts(workdir, tmp_path):
    run = api.load_run(workdir)
    scores = read_table(workdir / RUN / "scores/lape.parquet")
    order = run.export_lape("lape", tmp_path / "mask")
    masks = torch.load(tmp_path / "mask")
    assert json.loads((tmp_path / "mask.json").read_text())["groups"] == order == \
        sorted(set(scores["group"]), key=order.index)
    assert sorted(order) == sorted(set(scores["group"]))
    n_layers = 3  # SMALL_CONFIG's demo model
    # LAPE's ppl.py: for activation_mask, mask_lang in zip(masks, languages): for i, layer_mask in
    # enumerate(activation_mask): activation.index_fill_(2, layer_mask, 0)
    for activation_mask, group in zip(masks, order):
        assert len(activation_mask) == n_layers
        for i, layer_mask in enumerate(activation_mask):
            assert layer_mask.dtype == torch.long
            want = sorted(scores[(scores.group == group) & (scores.layer == i)]["neuron"])
            assert layer_mask.tolist() == want
            activation = torch.ones(1, 2, 96)
            activation.index_fill_(2, layer_mask, 0)
            assert int((activation[0, 0] == 0).sum()) == len(want)
    run.export_json("lape", tmp_path / "lape.json")
    back = json.loads((tmp_path / "lape.json").read_text())
    flat = sorted((g, int(layer), n) for g, s in back.items() for layer, idx in s.items() for n in idx)
    assert flat == sorted(zip(scores["group"], scores["layer"].astype(int), scores["neuron"].astype(int)))


def test_run_tables_and_errors(workdir, tmp_path):
    run = api.load_run(workdir / RUN)
    assert run.methods == ["contrast", "diffmeans", "frequency", "frequency_language", "lape"]
    counts = run.counts("en-de")
    assert counts.attrs["pair"] == "en-de" and len(counts) == 3 * 96
    probs = run.probabilities()
    de = run.counts("de-en")  # the only table counting German tokens (token_scope source)
    np.testing.assert_allclose(probs["de"].to_numpy(), de["gate_active"].to_numpy() / de.attrs["n_tokens"])
    ablation = run.ablation("lape")
    assert set(ablation["condition"]) == {"selected", "random"} and ablation.attrs["method"] == "lape"
    with pytest.raises(NeurospecError, match="is not a neurospec run: it has no activations/ or scores/ folder"):
        api.load_run(tmp_path)
    with pytest.raises(NeurospecError, match="this run has no scores of method 'lap'; it has: contrast, diffmeans"):
        run.scores("lap")
    # a run without frequency's ablation: a copy of the shared run's folder less that table
    shutil.copytree(workdir / RUN, tmp_path / "run", ignore=shutil.ignore_patterns("frequency.parquet"))
    shutil.copy2(workdir / RUN / "scores/frequency.parquet", tmp_path / "run/scores/frequency.parquet")
    with pytest.raises(NeurospecError, match=r"this run has no ablation/frequency.parquet"):
        api.load_run(tmp_path / "run").ablation("frequency")


def test_browser_disabled_plans_no_browser_job(workdir, tmp_path):
    config = write_config(tmp_path, {"browser": {"enabled": False}})
    off = job_counts(snakemake(tmp_path, "-n", configfile=config).stdout)
    on = job_counts(snakemake(tmp_path, "-n", configfile=write_config(tmp_path, name="on.yaml")).stdout)
    assert "browser_contexts" not in off and "browser_page" not in off
    assert on["browser_contexts"] == on["browser_page"] == 1
