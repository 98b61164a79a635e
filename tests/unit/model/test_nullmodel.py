"""Null-weights models (``model.null_weights``, neurospec/model/nullmodel.py) through ``load_model`` as the
workflow calls it: every architecture, saved with ``save_pretrained`` as a user's local model whose
every tensor (norms and biases too) is away from its initial value, stands in for a pretrained model.

reinit: every tensor of more than one entry differs from the loaded one and looks like the class's
own fresh init (a model built from the config: constant tensors equal, random ones of the same
scale); shuffle: every matrix differs and keeps its sorted values, vectors are kept; both keep the
shapes and the tokenizer; the same seed gives the same weights, another seed others."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from neurospec.errors import NeurospecError
from neurospec.models import load_model
from neurospec.model.nullmodel import NULL_CHOICES, apply_null_weights
from reference import ARCHITECTURES, randomize

TEXTS = ["Translate from English to German: the country", "Deutschland, Österreich", "हिन्दी भाषा"]


@pytest.fixture(scope="module")
def tokenizer(small_model_dir):
    return tf.AutoTokenizer.from_pretrained(small_model_dir)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    """name -> a local model directory: a tiny model of the architecture, every tensor randomised."""
    root = tmp_path_factory.mktemp("pretrained")
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)

    def build(name):
        directory = root / name
        if not directory.is_dir():
            arch = ARCHITECTURES[name]
            torch.manual_seed(0)
            randomize(getattr(tf, arch.causal)(arch.make_config(len(tokenizer), **ids)), seed=5).save_pretrained(
                directory)
            tokenizer.save_pretrained(directory)
        return directory
    return build


def load(directory, null="none", seed=0):
    # load_model's arguments as the workflow passes them (common.smk: model_params)
    return load_model(model_id=str(directory), revision="main", dtype="float32", device="cpu",
                      attn_implementation="auto", null_weights=null, null_seed=seed)


def state(loaded):
    """Every tensor of the causal LM (parameters and buffers), tied ones under each name."""
    return {k: v.detach().clone() for k, v in loaded.lm.state_dict().items()}


def params(loaded):
    return {k: p.detach().clone() for k, p in loaded.lm.named_parameters()}


def same_tokenizer(a, b):
    assert a.get_vocab() == b.get_vocab()
    assert (a.bos_token_id, a.eos_token_id, a.pad_token_id) == (b.bos_token_id, b.eos_token_id, b.pad_token_id)
    assert a(TEXTS)["input_ids"] == b(TEXTS)["input_ids"]


def real_and_null(directory, mode):
    """The loaded model and its null (seed 0), checked alike: class, config, shapes, tokenizer,
    metadata; with their parameters."""
    real, null = load(directory), load(directory, mode, seed=0)
    before, after = params(real), params(null)
    assert before.keys() == after.keys()
    for key, p in after.items():
        assert p.shape == before[key].shape and p.dtype == before[key].dtype, key
    same_tokenizer(real.tokenizer, null.tokenizer)
    assert type(null.lm) is type(real.lm) and null.lm.config.to_dict() == real.lm.config.to_dict()
    assert null.info["null_weights"] == mode and null.info["null_seed"] == 0
    assert null.info["null_unchanged"] == []
    assert real.info["null_weights"] == "none" and real.info["null_seed"] is None
    return real, null, before, after


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_reinit_redraws_every_tensor_with_the_class_init(name, saved):
    real, null, before, after = real_and_null(saved(name), "reinit")
    for key, p in after.items():
        if p.numel() > 1:
            assert not torch.equal(p, before[key]), f"{key} kept its loaded values"

    # the class's own init: a model built from the config (no weights loaded) has, tensor by tensor,
    # the same constants (norm gains, zero biases) and random tensors of the same scale
    cls = type(real.lm)
    torch.manual_seed(123)
    fresh = {k: p.detach() for k, p in cls(real.lm.config).named_parameters()}
    for key, p in after.items():
        ref = fresh[key].float()
        if p.numel() == 1 or bool((ref == ref.reshape(-1)[0]).all()):
            assert torch.equal(p, ref), f"{key}: not the class's initial constant"
        else:
            assert p.std().item() == pytest.approx(ref.std().item(), rel=0.2), key
            assert abs(p.mean().item()) < 0.25 * ref.std().item() + abs(ref.mean().item()), key


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_shuffle_permutes_every_matrix_and_keeps_its_values(name, saved):
    real, null, before, after = real_and_null(saved(name), "shuffle")
    n_matrices = 0
    for key, p in after.items():
        if p.dim() >= 2:  # weight matrices, embeddings included: permuted, same multiset of values
            n_matrices += 1
            assert not torch.equal(p, before[key]), f"{key} not shuffled"
            assert torch.equal(p.reshape(-1).sort().values, before[key].reshape(-1).sort().values), key
        else:  # norm gains and biases: kept
            assert torch.equal(p, before[key]), f"{key} changed"
    # the embedding, and per block at least the attention's input and output and the MLP's up and down
    assert n_matrices >= 1 + 4 * len(ARCHITECTURES[name].blocks(real.model))
    emb = null.lm.get_input_embeddings().weight
    if real.lm.config.tie_word_embeddings:  # a tied LM head is the embedding, shuffled once
        assert null.lm.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
    assert not torch.equal(emb, real.lm.get_input_embeddings().weight)


@pytest.mark.parametrize("mode", ["reinit", "shuffle"])
def test_same_seed_same_weights_other_seed_other_weights(mode, saved):
    directory = saved("cohere")
    a, b, c = (state(load(directory, mode, seed=s)) for s in (7, 7, 8))
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    changed = [k for k, v in a.items() if v.dim() >= 2]
    assert changed
    for key in changed:
        assert not torch.equal(a[key], c[key]), f"{key}: seeds 7 and 8 gave the same tensor"


def test_a_null_leaves_the_global_random_state_alone(saved):
    directory = saved("llama")
    torch.manual_seed(11)
    expected = torch.rand(5)
    torch.manual_seed(11)
    load(directory, "reinit", seed=3)
    load(directory, "shuffle", seed=3)
    assert torch.equal(torch.rand(5), expected)


def test_none_is_the_loaded_model(saved):
    directory = saved("gemma3")
    a, b = state(load(directory)), state(load(directory, "none", seed=9))
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = load(directory).lm
    assert apply_null_weights(model, "none", 5) == []


def test_the_null_model_computes_other_activations(saved):
    """What collection sees changes: the MLP inputs differ (reinit and shuffle), from the same ids."""
    directory = saved("cohere")
    ids = torch.tensor([[1, 5, 9, 14, 20, 31]])
    outs = {}
    for mode in NULL_CHOICES:
        loaded = load(directory, mode, seed=0)
        with torch.no_grad():
            outs[mode] = loaded.model(input_ids=ids).last_hidden_state
    assert not torch.allclose(outs["none"], outs["reinit"])
    assert not torch.allclose(outs["none"], outs["shuffle"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"null_weights": "random"}, "model.null_weights 'random': choose one of none, reinit, shuffle"),
        ({"null_weights": "shuffle", "null_seed": -1}, "model.null_seed -1: must be an integer from 0 to 2**63 - 1"),
        ({"null_weights": "reinit", "null_seed": "1"}, "model.null_seed '1': must be an integer"),
    ],
)
def test_a_bad_null_is_one_clear_error(kwargs, message, saved):
    with pytest.raises(NeurospecError) as err:
        load_model(str(saved("cohere")), dtype="float32", device="cpu", **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_initialiser_that_fails_is_one_clear_error(saved):
    model = load(saved("cohere")).lm

    def broken(*args, **kwargs):
        raise RuntimeError("no init for you\nsecond line")

    model.init_weights = broken
    with pytest.raises(NeurospecError) as err:
        apply_null_weights(model, "reinit", 0)
    assert str(err.value) == ("model.null_weights 'reinit': cannot apply it to CohereForCausalLM: "
                              "no init for you second line")
