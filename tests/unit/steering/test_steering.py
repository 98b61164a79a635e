"""Steering: the hooks against activations set by hand, steered batched generation against one prompt
at a time, the residual sums against a hand recount, LID rates and the bootstrap CI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neurospec import interventions, models
from neurospec.collect import counting, encoding
from neurospec.architectures import resolve_blocks, resolve_mlp_taps
from neurospec.errors import NeurospecError
from neurospec.steering import measures, residual
from neurospec.steering.generate import generate, output_nll
from neurospec.steering.prompts import first_half, parallel_sentences, prompts_for, Prompt
from neurospec.steering.vectors import Condition, neuron_values


@pytest.fixture(scope="module")
def loaded(small_model_dir):
    return models.load_model(str(small_model_dir), dtype="float32", device="cpu", attn_implementation="eager")


def _down_inputs(model, ids):
    """The input of every layer's down_proj, recorded by hand (no intervention code)."""
    seen = {}
    handles = [t.down_input.register_forward_pre_hook(
        lambda m, a, layer=t.layer: seen.__setitem__(layer, a[0].detach().clone())) for t in resolve_mlp_taps(model)]
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen, out


@pytest.mark.parametrize("mode", ["set", "add"])
def test_set_and_add_hooks_equal_activations_set_by_hand(loaded, mode):
    model = loaded.model
    ids = torch.tensor([[2, 15, 40, 77, 9, 31]])
    n = resolve_mlp_taps(model)[0].down_input.in_features
    selection = {0: np.array([1, 5, 7]), 2: np.array([0, 3])}
    values = np.random.default_rng(0).normal(size=(3, n))
    # by hand: run layer by layer; replace layer l's down_proj input with the edited tensor
    taps = resolve_mlp_taps(model)

    def edit(layer):
        def hook(m, args):
            h = args[0].clone()
            idx = selection.get(layer)
            if idx is not None:
                v = torch.as_tensor(values[layer, idx], dtype=h.dtype)
                h[..., idx] = v if mode == "set" else h[..., idx] + v
            return (h,)
        return hook

    handles = [t.down_input.register_forward_pre_hook(edit(t.layer)) for t in taps]
    with torch.inference_mode():
        expected = model(input_ids=ids, use_cache=False).last_hidden_state
    for h in handles:
        h.remove()
    before = model(input_ids=ids, use_cache=False).last_hidden_state.detach()
    with interventions.intervene(model, selection, mode, values):
        seen, out = _down_inputs(model, ids)
    torch.testing.assert_close(out.last_hidden_state, expected, rtol=0, atol=0)
    assert not torch.equal(expected, before)  # the intervention changed something
    # the recorded down_proj input of layer 0 holds the set/added values on the selected neurons
    plain, _ = _down_inputs(model, ids)
    got = seen[0][..., [1, 5, 7]]
    want = torch.as_tensor(values[0, [1, 5, 7]], dtype=got.dtype).expand_as(got)
    if mode == "add":
        want = plain[0][..., [1, 5, 7]] + want
    torch.testing.assert_close(got, want)
    # the model is left as it was found
    torch.testing.assert_close(model(input_ids=ids, use_cache=False).last_hidden_state.detach(), before,
                               rtol=0, atol=0)


def test_residual_hook_adds_the_vector_to_each_block_output(loaded):
    model = loaded.model
    ids = torch.tensor([[2, 15, 40, 77, 9]])
    blocks = resolve_blocks(model)
    hidden = model.config.hidden_size
    vec = np.linspace(-1, 1, hidden)
    with torch.inference_mode():
        outs = {}
        hs = [b.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, (o[0] if isinstance(o, tuple) else o).clone()))
              for i, b in enumerate(blocks)]
        with interventions.add_to_residual(model, {1: vec}):
            model(input_ids=ids, use_cache=False)
        for h in hs:
            h.remove()
        # what block 2 reads (its input, the residual stream after block 1) is block 1's output + vec
        seen_in = {}
        h2 = blocks[2].register_forward_pre_hook(
            lambda m, a, kw: seen_in.__setitem__(2, kw.get("hidden_states", a[0] if a else None).clone()),
            with_kwargs=True)
        with interventions.add_to_residual(model, {1: vec}):
            model(input_ids=ids, use_cache=False)
        h2.remove()
    torch.testing.assert_close(seen_in[2], outs[1] + torch.as_tensor(vec, dtype=outs[1].dtype), rtol=1e-6, atol=1e-6)


def test_steered_batched_generation_equals_one_prompt_at_a_time(loaded):
    tok = loaded.tokenizer
    texts = ["Germany", "the Republic of", "South", "Federal Republic of Germany and", "Kingdom of"]
    prompts = [tok(t)["input_ids"] for t in texts]
    n = resolve_mlp_taps(loaded.model)[0].down_input.in_features
    rng = np.random.default_rng(1)
    selection = {0: np.array([2, 4, 8]), 1: np.array([11])}
    values = neuron_values("add", 3.0, rng.normal(size=(3, n)), rng.normal(size=(3, n)))
    cond = Condition("de", "de", "add", 3.0, "selected", None, selection, values)
    plain_tokens, _, _ = generate(loaded, prompts, Condition("de", "de", "none", 0.0, "none"), max_new_tokens=8,
                                  batch_size=5)
    batched, btexts, _ = generate(loaded, prompts, cond, max_new_tokens=8, batch_size=5)
    alone = [generate(loaded, [p], cond, max_new_tokens=8, batch_size=1)[0][0] for p in prompts]
    assert batched == alone
    assert batched != plain_tokens  # steering changed the generations
    resid = Condition("de", "de", "add", 2.0, "residual", residual={1: rng.normal(size=loaded.model.config.hidden_size)})
    assert generate(loaded, prompts, resid, max_new_tokens=6, batch_size=5)[0] == \
        [generate(loaded, [p], resid, max_new_tokens=6, batch_size=1)[0][0] for p in prompts]


def test_output_nll_equals_the_lm_loss_by_hand(loaded):
    tok = loaded.tokenizer
    prompts = [tok("Germany")["input_ids"], tok("the Republic of France")["input_ids"]]
    outputs = [[5, 17, 99], [42]]
    sums, counts = output_nll(loaded, prompts, outputs, batch_size=2)
    assert counts.tolist() == [3, 1]
    for p, o, s in zip(prompts, outputs, sums):
        ids = torch.tensor([list(p) + o])
        with torch.inference_mode():
            logp = torch.log_softmax(loaded.lm(input_ids=ids).logits[0].double(), -1)
        want = -sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(o))
        assert s == pytest.approx(want, rel=1e-5)


def test_residual_sums_equal_a_hand_recount_with_block_hooks(loaded):
    tok = loaded.tokenizer
    src = ["Germany", "the Federal Republic of Germany", "France", "Kingdom of Spain and more"]
    enc = encoding.encode(tok, src, ["en"] * 4, ["de"] * 4, template="Translate from {src_name} to {tgt_name}: {src}")
    enc.even = np.array([True, False, True, False])
    _, _, stats = counting.run_counts(loaded, enc, token_budget=24)  # small budget: several batches
    got = stats["residual_sum"]
    # by hand: one sentence at a time, the block outputs summed over its counted positions
    blocks = resolve_blocks(loaded.model)
    want = np.zeros_like(got)
    for ids, counted in zip(enc.input_ids, enc.counted):
        outs = {}
        hs = [b.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o[0] if isinstance(o, tuple) else o))
              for i, b in enumerate(blocks)]
        with torch.inference_mode():
            loaded.model(input_ids=torch.tensor([ids]), use_cache=False)
        for h in hs:
            h.remove()
        for i in range(len(blocks)):
            want[i] += outs[i][0].double().numpy()[counted].sum(0)
    assert got.shape == (len(blocks), loaded.model.config.hidden_size)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # and the residual vector from tables' sums is the difference of the hand means
    a, b, c = np.full((2, 3), 2.0), np.full((2, 3), 9.0), np.full((2, 3), 30.0)
    meta = {"p1": {"counted_lang": "de", "n_tokens": 2, residual.RESIDUAL_KEY: residual.encode_array(a)},
            "p2": {"counted_lang": "en", "n_tokens": 3, residual.RESIDUAL_KEY: residual.encode_array(b)},
            "p3": {"counted_lang": "ru", "n_tokens": 10, residual.RESIDUAL_KEY: residual.encode_array(c)}}
    per = residual.residual_means(meta)
    np.testing.assert_allclose(residual.residual_vector(per, "de", "balanced"), 1.0 - (3.0 + 3.0) / 2)
    np.testing.assert_allclose(residual.residual_vector(per, "de", "pooled"), 1.0 - 39.0 / 13)


def test_shards_sum_their_residual_sums(tmp_path):
    from neurospec.tables import COUNT_SCHEMA, merge_shard_files, read_counts, write_counts

    df = pd.DataFrame({c: np.zeros(2, dtype=t.to_pandas_dtype()) for c, t in zip(COUNT_SCHEMA.names, COUNT_SCHEMA.types)})
    df["neuron"] = [0, 1]
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    for name, arr in (("a", a), ("b", b)):
        write_counts(df, tmp_path / f"{name}.parquet", {"n_tokens": 1, "pair": "en-de",
                                                       residual.RESIDUAL_KEY: residual.encode_array(arr)})
    merge_shard_files([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "m.parquet")
    _, meta = read_counts(tmp_path / "m.parquet")
    np.testing.assert_array_equal(residual.decode_array(meta[residual.RESIDUAL_KEY]), a + b)


def test_lid_success_rates_on_sentences_of_known_language():
    outputs = pd.DataFrame({
        "group": "de", "mode": "set", "alpha": 1.0, "prompt_kind": "continuation", "condition": "selected",
        "seed": None, "lang": "de", "key": list("abcd"), "n_new_tokens": 5, "nll_sum": 10.0,
        "output": ["Die Regierung hat heute ein neues Gesetz beschlossen, das ab Januar gilt.",
                   "Der Hund schläft im Garten unter dem großen Baum.",
                   "The government passed a new law today that applies from January.",
                   "Le gouvernement a adopté aujourd'hui une nouvelle loi."]})
    from neurospec import lid
    outputs["lid_label"] = lid.identify(outputs["output"].tolist())
    assert outputs["lid_label"].tolist() == ["deu", "deu", "eng", "fra"]
    refs = {"de": {"a": "Die Regierung hat heute ein neues Gesetz beschlossen, das ab Januar gilt."}}
    res = measures.summarize(outputs, refs, seed=0)
    row = res.iloc[0]
    assert row["success"] == 0.5 and row["prompt_lang_share"] == 0.25 and row["n_outputs"] == 4
    assert row["n_chrf"] == 1 and row["chrf"] == pytest.approx(100.0)
    assert row["nll"] == pytest.approx(40.0 / 20)
    # a language heliport does not cover: no rate, visibly
    hausa = outputs.assign(group="ha", lang="ha")
    r = measures.summarize(hausa, {}, seed=0).iloc[0]
    assert np.isnan(r["success"]) and not r["lid_covered"]


def test_bootstrap_ci_against_a_hand_bootstrap_and_the_binomial():
    from scipy.stats import binom

    hits = np.array([1] * 13 + [0] * 27, dtype=float)  # 40 prompts, 13 in the language
    low, high = measures.bootstrap_share(hits, np.random.default_rng(5), n_boot=2000, level=0.9)
    rng = np.random.default_rng(5)  # by hand: the same draws, one resample at a time
    idx = rng.integers(0, 40, size=(2000, 40))
    means = sorted(sum(hits[j] for j in row) / 40 for row in idx)
    assert low == pytest.approx(np.quantile(means, 0.05)) and high == pytest.approx(np.quantile(means, 0.95))
    # an independent check: a resample's mean is Binomial(40, 13/40) / 40
    low2, high2 = measures.bootstrap_share(hits, np.random.default_rng(6), n_boot=20000, level=0.9)
    assert abs(low2 - binom.ppf(0.05, 40, 13 / 40) / 40) <= 1 / 40 + 1e-9
    assert abs(high2 - binom.ppf(0.95, 40, 13 / 40) / 40) <= 1 / 40 + 1e-9


def test_prompts_first_half_and_no_prompt_in_the_steered_language():
    assert first_half("The cat sat on the mat today") == "The cat sat"
    assert first_half("Germany") == "Germany"
    en = ["One two three four", "Five six", "Seven"]
    tables = [(pd.DataFrame({"id": [0, 1, 2], "src_lang": "en", "tgt_lang": "de", "src": en,
                             "tgt": ["Eins zwei drei vier", "Fünf sechs", "Sieben"]}), {}),
              (pd.DataFrame({"id": [5, 6], "src_lang": "fr", "tgt_lang": "en", "src": ["Sept", "Cinq six"],
                             "tgt": ["Seven", "Five six"]}), {})]
    par = parallel_sentences(tables)
    assert [par.english[k] for k in par.keys] == en
    k7 = par.keys[2]
    assert par.by_lang["fr"][k7] == "Sept" and par.by_lang["de"][k7] == "Sieben"  # matched by the English side
    prompts = [Prompt("translation", k, 0, lang, "", [1]) for k, lang in zip(par.keys, ["de", "fr", "de"])]
    assert prompts_for(prompts, "de") == [1] and prompts_for(prompts, "fr") == [0, 2]


def test_residual_layers_and_bad_settings_are_one_line():
    assert residual.parse_layers("all", 3) == [0, 1, 2] and residual.parse_layers([-1, 0], 3) == [0, 2]
    with pytest.raises(NeurospecError, match="residual_layers names layer 7; the model has layers 0..2"):
        residual.parse_layers([7], 3)
    from neurospec.steering.io import check_settings
    with pytest.raises(NeurospecError, match=r"evaluate.steering.n_prompts must be an integer >= 1, got 0"):
        check_settings(alphas=[1.0], modes=["set"], prompt_kinds=["continuation"], max_new_tokens=4, n_prompts=0,
                       random_sets=1, batch_size=4)
    with pytest.raises(NeurospecError, match=r"evaluate.steering.residual_alphas must be a non-empty list of numbers, "
                                             r"got \[\]"):
        check_settings(alphas=[1.0], modes=["set"], prompt_kinds=["continuation"], max_new_tokens=4, n_prompts=1,
                       random_sets=1, batch_size=4, residual_alphas=[])


def test_the_residual_baseline_has_strengths_of_its_own():
    """residual_alphas: the residual conditions at those strengths (alpha x the vector at each chosen
    layer), the neuron conditions at alphas; None: the residual at alphas too."""
    from neurospec.steering.vectors import conditions_for

    mean = np.zeros((3, 4))
    vec = np.arange(3 * 5, dtype=float).reshape(3, 5)  # [layers, hidden]
    sel = {0: np.array([1])}
    common = dict(modes=["set"], alphas=[1.0, 3.0], mean_x=mean, mean_rest=mean, controls=[],
                  residual_vector=vec, residual_layers=[2])
    conds = conditions_for("de", "de", sel, residual_alphas=[10.0, 30.0], **common)
    res = [c for c in conds if c.condition == "residual"]
    assert [c.alpha for c in res] == [10.0, 30.0]
    assert list(res[1].residual) == [2] and np.array_equal(res[1].residual[2], 30.0 * vec[2])
    assert [c.alpha for c in conds if c.condition == "selected"] == [1.0, 3.0]
    assert [c.alpha for c in conditions_for("de", "de", sel, **common) if c.condition == "residual"] == [1.0, 3.0]
