"""edgekd.data.augment: the recipe's augmentations.

Recipe augmentation (edgekd/data/augment.py): every draw a function of (seed, view, example), checks that
name the key, and the transforms' real effect on real tensors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.data.augment import TRANSFORMS, Augmentation, AugmentSpec, check_shapes, parse_augment, uniform
from edgekd.errors import EdgekdError


def aug(specs: list[dict], dataset: str = "fashion-mnist", seed: int = 0) -> Augmentation:
    return Augmentation(parse_augment(specs, dataset, "classification"), seed)


def images(n: int = 64, size: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(n, 1, size, size)
    x[:, :, size // 2, size // 2] = 1.0
    return x, torch.arange(n) % 10


def test_uniform_is_a_pure_function_of_its_counters_and_looks_uniform():
    idx = np.arange(20000)
    a = uniform(3, np.zeros(20000), idx, 5)[:, 0]
    assert np.array_equal(a, uniform(3, np.zeros(20000), idx, 5)[:, 0])
    assert not np.array_equal(a, uniform(4, np.zeros(20000), idx, 5)[:, 0])  # seed
    assert not np.array_equal(a, uniform(3, np.ones(20000), idx, 5)[:, 0])  # view
    assert not np.array_equal(a, uniform(3, np.zeros(20000), idx, 6)[:, 0])  # draw
    assert a.min() >= 0 and a.max() < 1
    assert abs(a.mean() - 0.5) < 0.01 and abs(a.var() - 1 / 12) < 0.003
    counts = np.histogram(a, bins=10, range=(0, 1))[0]
    assert counts.min() > 1800 and counts.max() < 2200  # +-10% of 2000 per decile


def test_translate_shifts_every_image_within_bounds_and_independently():
    x, y = images()
    out, _ = aug([{"name": "translate", "params": {"max_shift": 2}}]).apply(
        x, y, np.arange(64), np.zeros(64), 10
    )
    assert out.shape == x.shape and torch.all(out.sum(dim=(1, 2, 3)) == 1)
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # really random per example


def test_a_view_is_regenerated_from_its_seed_whatever_the_batch():
    x = torch.randn(50, 1, 8, 8)
    y = torch.arange(50) % 10
    a = aug([{"name": "crop", "params": {"padding": 2}}, {"name": "erase", "params": {"p": 1.0}},
             {"name": "mixup", "params": {"alpha": 0.4}}])  # fmt: skip
    full, y_full = a.apply(x, y, np.arange(50), np.full(50, 7), 10)
    part, y_part = a.apply(x, y, np.array([31, 4]), np.array([7, 7]), 10)  # another batch, same view
    assert torch.equal(part, full[[31, 4]]) and torch.equal(y_part, y_full[[31, 4]])
    other, _ = a.apply(x, y, np.arange(50), np.full(50, 8), 10)
    assert (other != full).any(dim=(1, 2, 3)).float().mean() > 0.9  # another view differs


def test_pick_views_epoch_without_cache_and_one_of_k_with_it():
    a = aug([{"name": "hflip"}])
    assert np.array_equal(a.pick_views(5, np.arange(10), 0), np.full(10, 5))
    v = a.pick_views(3, np.arange(4000), 8)
    assert v.min() == 0 and v.max() == 7 and np.bincount(v).min() > 400
    assert np.array_equal(v, a.pick_views(3, np.arange(4000), 8))
    assert (v != a.pick_views(4, np.arange(4000), 8)).mean() > 0.8


def test_hflip_flips_about_half_and_exactly_mirrors():
    x = torch.randn(400, 1, 4, 6)
    out, _ = aug([{"name": "hflip", "params": {"p": 0.5}}]).apply(
        x, torch.zeros(400), np.arange(400), np.zeros(400), 10
    )
    flipped = (out == x.flip(3)).all(dim=(1, 2, 3))
    same = (out == x).all(dim=(1, 2, 3))
    assert torch.all(flipped | same) and 150 < int(flipped.sum()) < 250


def test_erase_zeroes_a_square_of_the_given_side():
    x = torch.ones(200, 2, 8, 8)
    out, _ = aug([{"name": "erase", "params": {"size": 0.5, "p": 1.0}}]).apply(
        x, torch.zeros(200), np.arange(200), np.zeros(200), 10
    )
    zeros = (out == 0).all(dim=1).sum(dim=(1, 2))  # both channels erased together
    assert zeros.max() == 16 and (zeros > 0).all()  # a 4x4 square, clipped at the border
    assert (zeros == 16).float().mean() > 0.2


def test_mixup_mixes_inputs_and_labels_by_the_same_beta_weight():
    n = 2000
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    y = torch.arange(n) % 10
    out, soft = aug([{"name": "mixup", "params": {"alpha": 1.0}}]).apply(x, y, np.arange(n), np.zeros(n), 10)
    assert soft.shape == (n, 10) and torch.allclose(soft.sum(1), torch.ones(n))
    lam = soft[torch.arange(n), y]  # weight on the own label (>= lam when the partner shares the class)
    assert abs(float(lam.mean()) - 0.55) < 0.05  # Beta(1, 1) = uniform: mean 1/2 (+ 1/10 same class)
    assert torch.allclose(out[:, 0, 0, 0], out[:, 0, 1, 1])  # one lam per example


def test_cutmix_label_weight_is_the_pasted_area():
    n = 500
    x, y = torch.zeros(n, 1, 8, 8), torch.zeros(n, dtype=torch.long)
    partner = torch.ones(n, 1, 8, 8)
    both = torch.cat([x, partner])
    yy = torch.cat([y, torch.ones(n, dtype=torch.long)])
    out, soft = aug([{"name": "cutmix"}]).apply(both, yy, np.arange(n), np.zeros(n), 2)
    pasted = out.mean(
        dim=(1, 2, 3)
    )  # fraction of the image from a partner (value 1 only from the second half)
    from_ones = soft[:, 1]
    # partners from the first half paste zeros onto zeros: check where the pasted pixels are ones
    assert torch.all(pasted <= from_ones + 1e-6)
    assert torch.allclose(pasted[pasted > 0], from_ones[pasted > 0], atol=1e-6)


def test_time_series_noise_scale_and_time_shift():
    x = torch.zeros(300, 50, 3)
    noisy, _ = aug([{"name": "noise", "params": {"std": 0.1}}], "smd").apply(
        x, torch.zeros(300), np.arange(300), np.zeros(300), 0
    )
    assert abs(float(noisy.std()) - 0.1) < 0.005 and abs(float(noisy.mean())) < 0.002
    ramp = torch.arange(50.0).view(1, 50, 1).expand(300, 50, 3).contiguous()
    shifted, _ = aug([{"name": "time-shift", "params": {"max_shift": 3}}], "smd").apply(
        ramp, torch.zeros(300), np.arange(300), np.zeros(300), 0
    )
    shift = (ramp[:, 25, 0] - shifted[:, 25, 0]).long()
    assert shift.min() == -3 and shift.max() == 3 and torch.all(shifted[:, :, 0] == shifted[:, :, 2])
    scaled, _ = aug([{"name": "scale", "params": {"low": 0.5, "high": 2.0}}], "smd").apply(
        ramp + 1, torch.zeros(300), np.arange(300), np.zeros(300), 0
    )
    f = scaled[:, 0, 0]
    assert f.min() >= 0.5 and f.max() <= 2.0 and torch.allclose(scaled, f.view(-1, 1, 1) * (ramp + 1))


@pytest.mark.parametrize(
    "specs, dataset, task, said",
    [
        ([{"name": "hflip"}], "digits", "classification", "a mirrored digit is not a digit"),
        ([{"name": "hflip"}], "mnist", "classification", "flips are valid for: fashion-mnist"),
        ([{"name": "mixup"}], "smd", "reconstruction", "needs a classification data set"),
        ([{"name": "rotate"}], "digits", None, "unknown transform; valid: crop, cutmix"),
        (
            [{"name": "crop", "params": {"pad": 2}}],
            "digits",
            None,
            "unknown pad for crop; valid: padding, fill",
        ),
        (
            [{"name": "crop", "params": {"padding": 99}}],
            "digits",
            None,
            "padding=99: must be between 0 and 16",
        ),
        (
            [{"name": "crop", "params": {"fill": "edge"}}],
            "digits",
            None,
            "fill='edge': must be zero or reflect",
        ),
        ([{"name": "erase", "params": {"p": "x"}}], "digits", None, "p='x': must be a number"),
        ({"name": "crop"}, "digits", None, "must be a list"),
    ],
)
def test_bad_augment_entries_are_one_line_naming_the_key(specs, dataset, task, said):
    with pytest.raises(EdgekdError, match=said) as e:
        parse_augment(specs, dataset, task)
    assert "\n" not in str(e.value) and "data.augment" in str(e.value)


def test_image_transforms_refuse_series_inputs():
    with pytest.raises(EdgekdError, match=r"crop works on \(C, H, W\) images"):
        check_shapes([AugmentSpec("crop", {"padding": 2, "fill": "zero"})], (100, 38))


def test_every_registered_transform_keeps_shape_dtype_and_is_deterministic():
    for name, t in TRANSFORMS.items():
        series = not t.images_only and not t.classification_only
        x = torch.randn(16, 10, 3) if series else torch.randn(16, 1, 8, 8)
        a = aug([{"name": name}], "smd" if series else "fashion-mnist", seed=1)
        out1, y1 = a.apply(x, torch.arange(16) % 3, np.arange(16), np.full(16, 2), 3)
        out2, y2 = a.apply(x, torch.arange(16) % 3, np.arange(16), np.full(16, 2), 3)
        assert out1.shape == x.shape and out1.dtype == x.dtype, name
        assert torch.equal(out1, out2) and torch.equal(y1, y2), name
        assert not torch.equal(out1, x), f"{name} changed nothing"


def test_recipe_augment_and_jitter_shorthand():
    from edgekd.recipe import augment_specs, recipe_from_dict

    r = recipe_from_dict({"name": "a", "data": {"name": "fashion-mnist", "jitter": 2,
                                                "augment": ["hflip", {"name": "erase", "params": {"p": 0.3}}]}})  # fmt: skip
    specs = augment_specs(r, "classification")
    assert [s.name for s in specs] == ["translate", "hflip", "erase"] and specs[0].params == {"max_shift": 2}
    assert specs[2].params == {"size": 0.25, "p": 0.3}
    with pytest.raises(
        EdgekdError, match=r"recipe: key data.augment\[0\]: hflip changes the meaning of 'digits'"
    ):
        recipe_from_dict({"name": "a", "data": {"name": "digits", "augment": ["hflip"]}})
    with pytest.raises(EdgekdError, match="train.teacher_views"):
        recipe_from_dict({"name": "a", "train": {"teacher_views": -1}})


def test_a_run_recorded_before_augment_existed_still_resumes():
    """Keys a newer edgekd added (data.augment, data.split_seed, train.teacher_views) are absent from
    older run folders' recipe.yaml: absent means the default, not a change."""
    from edgekd.recipe import recipe_from_dict, resume_differences

    current = recipe_from_dict({"name": "a", "data": {"name": "digits", "jitter": 1}}).to_dict()
    old = {k: dict(v) if isinstance(v, dict) else v for k, v in current.items()}
    for section, key in (("data", "augment"), ("data", "split_seed"), ("train", "teacher_views")):
        del old[section][key]
    assert resume_differences(old, current) == []
    changed = recipe_from_dict({"name": "a", "data": {"name": "digits", "jitter": 1, "augment": ["erase"]}})
    assert resume_differences(old, changed.to_dict()) == ["data.augment"]


def test_batch_shows_each_example_the_view_of_its_epoch():
    aug = Augmentation.translation(2, seed=3)
    x, y = torch.rand(10, 1, 6, 6), torch.arange(10)
    idx = torch.tensor([4, 1, 7])
    xb, yb, views = aug.batch(x, y, idx, 5, 0, 10)
    assert views.tolist() == [5, 5, 5] and torch.equal(yb, y[idx])
    want, _ = aug.apply(x, y, idx.numpy(), np.full(3, 5), 10)
    assert torch.equal(xb, want)
    _, _, cached = aug.batch(x, y, idx, 5, 2, 10)  # two stored views: each example shows one of them
    assert set(cached.tolist()) <= {0, 1}
