"""Each image through the vision tower once (PathVQA asks 7.6 questions about every image): the same
answers as encoding it per question, the same gradients, and batches that keep an image's questions
together."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from pathvqa.config import load_config
from pathvqa.data.batches import Collator, ImagePipeline, image_batches, image_groups
from pathvqa.data.prepare import load_split
from pathvqa.evaluation.evaluate import predict
from pathvqa.models.registry import build
from pathvqa.training.stages import fit

TINY = ["model.image_size=32", "model.hidden_size=64", "eval.max_new_tokens=4", "eval.min_new_tokens=2"]
CONFIGS = {
    "blip": ("configs/blip_tiny.yaml", []),
    "vlm": ("configs/vlm_tiny.yaml", ["stages=[]"]),
    **{arch: (f"configs/{arch}_tiny.yaml", ["stages=[]"]) for arch in ("llava", "paligemma", "blip2")},
    **{arch: (f"configs/{arch}_tiny.yaml", ["stages=[]"]) for arch in ("qwen25vl", "smolvlm")},
}
SHARED_TOWER = {  # the module whose rows are counted: one row per image it encodes (blip, vlm: inside the
    "blip": "vision_model.embeddings",  # tower, whose features evaluation keeps: it sees only new images)
    "vlm": "vision.encoder.trunk.patch_embed",
    "llava": "model.vision_tower",
    "paligemma": "model.vision_tower",
    "blip2": "vision_model",
}


def tiny(name, dataset, *extra):
    path, sets = CONFIGS[name]
    return build(load_config(path, [f"data.dataset={dataset}", *TINY, *sets, *extra]))


@pytest.fixture(scope="module")
def questions(pathvqa_dir):
    """60 test questions about few images (6–9 each), in the set's order."""
    return load_split(str(pathvqa_dir), "test", progress=False).samples[:60]


def count_rows(module: torch.nn.Module) -> list[int]:
    rows: list[int] = []
    module.register_forward_pre_hook(lambda _m, args, kwargs: rows.append(_first_tensor(args, kwargs).shape[0]),
                                      with_kwargs=True)  # fmt: skip
    return rows


def _first_tensor(args, kwargs) -> torch.Tensor:
    return next(v for v in (*args, *kwargs.values()) if torch.is_tensor(v))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_answers_equal_encoding_per_question_and_each_image_is_encoded_once(pathvqa_dir, questions, name):
    family, bundle = tiny(name, pathvqa_dir)
    bundle.model.eval()
    if family.name == "hf":  # compare token ids: a random PaliGemma's <loc>/<seg> tokens decode to ""
        bundle.processor.tokenizer.batch_decode = lambda ids, **_: [str(row) for row in ids.tolist()]
    cfg = load_config(CONFIGS[name][0], [f"data.dataset={pathvqa_dir}", *TINY, *CONFIGS[name][1]])
    tower = SHARED_TOWER.get(name)
    rows = count_rows(bundle.model.get_submodule(tower)) if tower else None
    once = predict(family, bundle, questions, cfg, progress=False)
    encoded_once = sum(rows) if rows is not None else None
    plain = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"image_once": False})})
    per_question = predict(family, bundle, questions, plain, progress=False)
    assert [r["prediction"] for r in once] == [r["prediction"] for r in per_question]
    # a random tiny PaliGemma writes one token whatever it sees: its sharing is proven by the gradient test
    assert len({r["prediction"] for r in once}) > 1 or name == "paligemma", "a constant answer proves nothing"
    if rows is not None:
        images = len({s.image_key for s in questions})
        # blip, vlm: features kept for the whole evaluation; hf: once per batch (an image may span 2)
        most = images if name in ("blip", "vlm") else images + 2
        assert images <= encoded_once <= most, f"{encoded_once} images encoded for {images} distinct"
        assert sum(rows) - encoded_once == len(questions)


@pytest.mark.parametrize("name", ["blip", "vlm", "llava", "paligemma", "blip2"])
def test_gradients_of_a_shared_batch_equal_those_per_question(pathvqa_dir, questions, name):
    family, bundle = tiny(
        name, pathvqa_dir, "model.tuning=full", *([] if name == "blip" else ["model.train_vision=true"])
    )
    bundle.model.eval()  # no dropout: its masks are drawn per row, so per image differs from per question
    samples = questions[:20]  # 2–3 images
    pipeline = ImagePipeline(bundle.image_size)

    def gradients(share: bool) -> tuple[float, dict[str, torch.Tensor]]:
        bundle.model.zero_grad()
        collate = Collator(samples, family, bundle, pipeline, "vqa", train=True, share_images=share)
        inputs = collate(list(range(len(samples))))
        assert ("image_index" in inputs.tensors) == share
        assert inputs.tensors["pixel_values"].shape[0] == (
            len({s.image_key for s in samples}) if share else 20
        )
        total, _ = family.loss(bundle, inputs.tensors)
        total.backward()
        return total.item(), {
            n: p.grad.clone() for n, p in bundle.model.named_parameters() if p.grad is not None
        }

    loss_shared, shared = gradients(True)
    loss_plain, plain = gradients(False)
    assert loss_shared == pytest.approx(loss_plain, rel=1e-5)
    assert shared.keys() == plain.keys()
    vision = [n for n in shared if n.startswith(SHARED_TOWER[name])]
    assert vision and all(shared[n].abs().sum() > 0 for n in vision[:3]), "the tower got no gradient"
    # equal up to the order float sums run in (some gradients are float noise around 0: relative to the
    # largest gradient of the model, not each tensor's)
    scale = max(g.abs().max() for g in plain.values())
    for n in shared:
        torch.testing.assert_close(shared[n], plain[n], rtol=1e-4, atol=1e-5 * float(scale), msg=n)


def test_image_batches_keep_each_images_questions_together(questions):
    order = list(range(len(questions)))[::-1]
    batches = image_batches(questions, order, size=16)
    assert sorted(i for b in batches for i in b) == sorted(order)
    assert all(len(b) <= 16 for b in batches)
    key = [s.image_key for s in questions]
    split = [k for k in set(key) if len({n for n, b in enumerate(batches) for i in b if key[i] == k}) > 1]
    assert not split, "an image with at most 16 questions was split across batches"
    grouped = image_groups(questions, order)
    runs = [key[i] for n, i in enumerate(grouped) if n == 0 or key[grouped[n - 1]] != key[i]]
    assert len(runs) == len(set(key)), "an image's questions are not consecutive"


def test_grouped_training_shares_images_and_resumes_exactly(tmp_path, pathvqa_dir):
    """``data.group_by_image``: each batch encodes few images; a run resumed from its middle checkpoint
    ends with the weights of the uninterrupted run (the image order is seeded per epoch)."""
    sets = [
        f"data.dataset={pathvqa_dir}", "data.group_by_image=true", "data.eval_split=null", *TINY[:2],
        "model.num_layers=1", "train.batch_size=16", "train.max_steps=6", "train.save_every=3",
        "train.keep_last=5", "train.threads=1",
    ]  # fmt: skip
    cfg = load_config("configs/blip_tiny.yaml", sets)
    family, bundle = build(cfg)
    samples = load_split(str(pathvqa_dir), "train", progress=False).samples
    from pathvqa.training.stages import epoch_order

    order = image_groups(samples, epoch_order(len(samples), cfg.train.seed, 0))
    collate = Collator(samples, family, bundle, ImagePipeline(bundle.image_size), "vqa", train=True,
                       augment=cfg.train.augment, share_images=True)  # fmt: skip
    first = collate(order[:16]).tensors
    assert first["pixel_values"].shape[0] <= 4 and first["image_index"].shape == (16,)

    fit(cfg, tmp_path / "full", progress=False)
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step-6")
    (tmp_path / "resumed" / "train_summary.json").unlink()
    fit(cfg, tmp_path / "resumed", resume=True, progress=False)
    a, b = (
        load_file(str(tmp_path / r / "checkpoints" / "step-6" / "weights.safetensors"))
        for r in ("full", "resumed")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"


NO_AUGMENT = [f"train.augment.{k}" for k in ("hflip=false", "vflip=false", "rot90=false", "stain_jitter=0")]


@pytest.mark.parametrize("cap_mb", [2048, 0])  # in memory; on disk (no memory at all)
def test_a_frozen_encoders_features_are_cached_and_train_the_same_weights(tmp_path, cap_mb, caplog):
    """``model.cache_image_features`` over 6 epochs of 4 images: each image is encoded once, and the run
    ends with the weights of an uncached run, bit for bit (the same forward, computed once)."""
    from pathvqa.synth import generator as synthetic

    synthetic.write(tmp_path / "data", {"train": 16}, size=32, seed=5, progress=False, style="simple")
    sets = [
        f"data.dataset={tmp_path / 'data'}", *TINY[:2], "model.num_layers=1", "stages=[]", "model.tuning=frozen",
        "model.train_projector=true", "model.train_vision=false", "data.eval_split=null", "train.batch_size=8",
        "train.max_steps=12", "train.threads=1", f"model.feature_cache_mb={cap_mb}", *NO_AUGMENT,
    ]  # fmt: skip
    caplog.set_level("INFO", logger="pathvqa.training.loop")
    for cached in (False, True):
        cfg = load_config("configs/vlm_tiny.yaml", [*sets, f"model.cache_image_features={cached}"])
        fit(cfg, tmp_path / str(cached), progress=False)
    summary = next(r.args for r in caplog.records if r.msg.startswith("feature cache"))
    assert summary["misses"] == 4 and summary["hits"] == 12 * 8 - 4, summary
    assert summary["on_disk"] == (4 if cap_mb == 0 else 0), summary
    a, b = (
        load_file(str(tmp_path / r / "checkpoints" / "step-12" / "weights.safetensors"))
        for r in ("False", "True")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "cached run's weights differ"


def test_the_cache_refuses_what_it_cannot_reproduce_and_keys_by_weights():
    from pathvqa.models.feature_cache import weights_digest, why_not_cached

    encoder = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.0))
    assert why_not_cached(None, 0) and why_not_cached(encoder, 0) == "the image encoder trains"
    encoder.requires_grad_(False)
    assert why_not_cached(encoder, 0.05) and why_not_cached(encoder, 0) is None
    dropping = torch.nn.Sequential(encoder, torch.nn.Dropout(0.1))
    assert why_not_cached(dropping, 0) == "the image encoder applies dropout"
    before = weights_digest(encoder)
    with torch.no_grad():
        encoder[0].weight[0, 0] += 1
    assert weights_digest(encoder) != before, "changed weights must not read the old features"


@pytest.mark.parametrize("config", ["blip_tiny", "vlm_tiny"])
def test_a_served_model_encodes_the_image_under_discussion_once(tmp_path, synth_dir, config):
    """``pathvqa serve`` / ``predict``: follow-up questions about the same image reuse its features
    (exact: the weights never change while serving); the answers are those of an uncached model."""
    from pathvqa.evaluation.answerer import Answerer
    from tests.conftest import noise_image, png_bytes

    sets = [f"data.dataset={synth_dir}", *TINY, "stages=[]", "train.max_steps=1", "data.eval_split=null"]
    fit(load_config(f"configs/{config}.yaml", sets), tmp_path / "run", progress=False)
    cached, plain = Answerer(tmp_path / "run"), Answerer(tmp_path / "run")
    plain.features.close()
    image, other = png_bytes(noise_image(3, 48)), png_bytes(noise_image(4, 48))
    for questions in (["what stain is used?"], ["is this normal?", "what organ is shown?"]):
        got = [a.answer for a in cached.answer(image, questions)]
        assert got == [a.answer for a in plain.answer(image, questions)]
    cached.answer(other, ["is this normal?"])
    assert (cached.features.misses, cached.features.hits) == (2, 1), "one encoding per distinct image"
