"""Selections and variants (neurospec.variants), typed --config values and the lone overlay
(neurospec.overlays), the held-out slice (neurospec.data.holdout): unit tests, values by hand."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
import yaml

from neurospec.errors import NeurospecError
from neurospec.data.holdout import holdout_size, holdout_slice
from neurospec.overlays import check_overlay, coerce
from neurospec.variants import (base_method, check_variants, describe, label, selections, split,
                                wildcard_pattern)
from workflow_utils import ROOT

SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))
SCORING = {"methods": ["frequency", "frequency_language", "lape", "contrast", "diffmeans"], "variants": {},
           "column": "gate_active", "k": 10, "rest": "balanced",
           "lape": {"top_rate": 0.01, "filter_rate": 0.95, "activation_bar_ratio": 0.95},
           "contrast": {"fdr": 0.01, "min_log_odds": 1.0, "unit": "sentence"}, "diffmeans": {"k": 50}}


def scoring(**changes):
    return {**SCORING, **changes}


def test_the_default_selections_are_the_five_methods_with_their_parameters():
    got = selections(SCORING)
    assert list(got) == ["frequency", "frequency_language", "lape", "contrast", "diffmeans"]
    assert got["frequency"] == got["frequency_language"] == {"k": 10}
    assert list(got["lape"]) == ["activation_bar_ratio", "filter_rate", "top_rate"]  # keys sorted
    assert got["contrast"] == {"fdr": 0.01, "min_log_odds": 1.0, "rest": "balanced", "unit": "sentence"}
    assert got["diffmeans"] == {"k": 50, "rest": "balanced"}


def test_a_variant_applies_to_the_methods_whose_settings_it_changes():
    got = selections(scoring(variants={"strict": {"lape": {"top_rate": 0.005}}, "k20": {"k": 20},
                                       "pooled": {"rest": "pooled"}}))
    extra = [s for s in got if "@" in s]
    # variants by name, each for the configured methods it changes, in scoring.methods' order
    assert extra == ["frequency@k20", "frequency_language@k20", "contrast@pooled", "diffmeans@pooled",
                     "lape@strict"]
    assert got["lape@strict"] == {"activation_bar_ratio": 0.95, "filter_rate": 0.95, "top_rate": 0.005}
    assert got["lape"]["top_rate"] == 0.01  # the default untouched
    assert got["frequency@k20"] == {"k": 20} and got["frequency"] == {"k": 10}
    assert got["contrast@pooled"]["rest"] == "pooled" and got["contrast@pooled"]["fdr"] == 0.01
    assert got["diffmeans@pooled"] == {"k": 50, "rest": "pooled"}


def test_scoring_methods_narrows_the_selections_and_their_variants():
    got = selections(scoring(methods=["lape"], variants={"strict": {"lape": {"top_rate": 0.005}}}))
    assert list(got) == ["lape", "lape@strict"]


@pytest.mark.parametrize("variants, message", [
    ({"strict": {"lpe": {"top_rate": 0.005}}},
     "key 'scoring.variants.strict.lpe': not a setting a variant can change; did you mean 'lape'? "
     "a variant takes: k, rest, lape, contrast, diffmeans"),
    ({"strict": {}}, "key 'scoring.variants.strict': a variant changes at least one of k, rest, lape"),
    ({"a b": {"k": 5}}, "key 'scoring.variants.a b': a variant name is letters, digits, '_' and '-' only"),
    ({"k5": {"k": 5}}, "key 'scoring.variants.k5': it changes k, read by frequency, frequency_language only, "
                       "which scoring.methods (lape) leaves out"),
])
def test_bad_variants_are_one_line_naming_the_key(variants, message):
    cfg = scoring(methods=["lape"] if "k5" in variants else SCORING["methods"], variants=variants)
    with pytest.raises(NeurospecError) as exc:
        check_variants(cfg)
    assert str(exc.value).startswith(message), str(exc.value)


def test_names_labels_and_the_report_description():
    assert split("lape@strict") == ("lape", "strict") and split("lape") == ("lape", None)
    assert base_method("frequency_language@k20") == "frequency_language"
    assert label({"method": "lape", "variant": "strict"}) == "lape@strict"
    assert label({"method": "lape"}) == "lape"
    cfg = scoring(variants={"strict": {"lape": {"top_rate": 0.005}, "k": 20}})
    assert describe("lape@strict", cfg) == "lape@strict (lape.top_rate=0.005)"  # only what lape reads
    assert describe("frequency@strict", cfg) == "frequency@strict (k=20)"
    assert describe("lape", cfg) == "lape"
    import re
    pattern = re.compile(f"^(?:{wildcard_pattern(['lape', 'lape@strict', 'frequency'])})$")
    assert pattern.match("lape@strict") and pattern.match("lape") and not pattern.match("lape@other")


def test_nested_config_strings_are_typed_by_the_schema():
    """What Snakemake hands over for --config 'scoring={k: 20, ...}' (YAML's base loader: strings)."""
    given = {"pairs": ["en-de"],
             "scoring": {"k": "20", "lape": {"top_rate": "0.005"}, "methods": ["lape"],
                         "variants": {"strict": {"lape": {"top_rate": "0.002"}, "diffmeans": {"k": "7"}}}},
             "dataset": {"max_samples": "null", "split": "20", "detokenize": "true"},
             "collect": {"prompt_template": "{src} 20", "shards": "2"},
             "evaluate": {"translate": {"chat_template": "false", "max_new_tokens_ratio": "3"},
                          "ablation": {"budgets": ["10", "30"], "max_sentences": "abc"},
                          "enabled": "false"}}
    got = coerce(given, SCHEMA)
    assert got["scoring"]["k"] == 20 and isinstance(got["scoring"]["k"], int)
    assert got["scoring"]["lape"]["top_rate"] == 0.005
    assert got["scoring"]["variants"]["strict"] == {"lape": {"top_rate": 0.002}, "diffmeans": {"k": 7}}
    assert got["dataset"] == {"max_samples": None, "split": "20", "detokenize": True}  # a split is a string
    assert got["collect"] == {"prompt_template": "{src} 20", "shards": 2}
    assert got["evaluate"]["translate"] == {"chat_template": False, "max_new_tokens_ratio": 3}
    assert got["evaluate"]["ablation"] == {"budgets": [10, 30], "max_sentences": "abc"}  # left to the schema
    assert got["evaluate"]["enabled"] is False
    assert got["pairs"] == ["en-de"] and given["scoring"]["k"] == "20"  # the input is not changed
    # oneOf: null | a list of numbers (residual_alphas), "all" | a list of integers (residual_layers)
    steer = {"residual_alphas": ["1", "3.5"], "residual_layers": ["-1", "2"]}
    got = coerce({"evaluate": {"steering": steer}}, SCHEMA)["evaluate"]["steering"]
    assert got == {"residual_alphas": [1, 3.5], "residual_layers": [-1, 2]}
    got = coerce({"evaluate": {"steering": {"residual_alphas": "null", "residual_layers": "all"}}}, SCHEMA)
    assert got["evaluate"]["steering"] == {"residual_alphas": None, "residual_layers": "all"}


def test_a_lone_overlay_is_told_to_put_the_demo_config_first(tmp_path):
    with pytest.raises(NeurospecError) as exc:
        check_overlay({"scoring": {"k": 20}}, ["mine.yaml"])
    assert str(exc.value) == (
        "key 'pairs' is missing from --configfile mine.yaml: a --configfile replaces config/config.yaml (it is not "
        "laid over it); to change a few keys, give config/config.yaml first: --configfile config/config.yaml "
        "mine.yaml")
    check_overlay({"pairs": ["en-de"]}, ["mine.yaml"])  # complete: nothing to say
    with pytest.raises(NeurospecError, match="--configfile config/config.yaml sub/mine.yaml$"):
        check_overlay({}, [str(tmp_path / "sub" / "mine.yaml")], cwd=tmp_path)  # as typed, relative
    check_overlay({}, [])  # no --configfile: the demo config is read


def _hash(text):
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_held_out_slice_is_the_tail_less_repeats_of_selection_sentences():
    src = [f"s{i}" for i in range(20)]
    tgt = [f"t{i}" for i in range(20)]
    src[18] = "s3"  # a held-out row repeating a selection source sentence
    tgt[19] = "s5"  # one whose target is a selection row's source text
    df = pd.DataFrame({"id": range(20), "src_lang": "en", "tgt_lang": "de", "src": src, "tgt": tgt})
    assert holdout_size(20, 0.25) == 5 and holdout_size(21, 0.25) == 6  # ceil
    select, info = holdout_slice(df, 0.25, "select")
    held, info_h = holdout_slice(df, 0.25, "holdout")
    assert list(select["id"]) == list(range(15))
    assert list(held["id"]) == [15, 16, 17]  # 18 and 19 dropped
    assert info == {**info_h, "part": "select"}
    assert info["n_select"] == 15 and info["n_holdout"] == 3 and info["n_holdout_dropped_duplicates"] == 2
    seen = {_hash(t) for t in [*select["src"], *select["tgt"]]}
    assert not any(_hash(t) in seen for t in [*held["src"], *held["tgt"]])


def test_a_held_out_slice_that_leaves_nothing_is_one_line():
    df = pd.DataFrame({"id": [0, 1], "src_lang": "en", "tgt_lang": "de", "src": ["a", "a"], "tgt": ["b", "b"]})
    with pytest.raises(NeurospecError, match="every one of the 1 held-out sentence pairs repeats a sentence"):
        holdout_slice(df, 0.5, "holdout")
    with pytest.raises(NeurospecError, match="a table of 1 sentence pairs leaves 0 to select on"):
        holdout_slice(df.iloc[:1], 0.5, "select")
