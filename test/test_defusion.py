"""DeFusion: released state_dict layout, parity with the authors' outputs, checkpoint formats, export,
the method adapter, and the CUD training recipe.

Parity fixtures are ``../shared/golden/defusion`` (see its README): the authors' class run with seeded
weights on two crops, torch 2.13 CPU, 2 threads. Their outputs reach ~130 with random weights; the
authors' own code moves by up to 9.2e-6·max|ref| between 1 and 2 threads, so every float comparison
uses the suite's relative rule (``_tolerance.py``) and runs with whatever thread count the process has.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _tolerance import assert_close_to_reference, assert_grey_levels_close
from fusion_ros.errors import InputError, WeightsError
from fusion_ros.methods.defusion import (
    DeFusionNet,
    authors_grey,
    export_program,
    export_torchscript,
    load_defusion_state_dict,
    run_pipeline,
)
from fusion_ros.training.defusion import CUDConfig, CUDDataset, cud_loss, cud_masks, list_images, train

OUTPUTS = ("common", "upper_ir_recon", "lower_vis_recon", "fused")
CASES = ("case1", "case2")


@pytest.fixture(scope="module")
def golden(shared_dir: Path) -> Path:
    return shared_dir / "golden" / "defusion"


@pytest.fixture(scope="module")
def golden_net(golden: Path) -> DeFusionNet:
    net = DeFusionNet().eval().set_onednn_fusion(True)
    load_defusion_state_dict(net, golden / "weights_seed0.safetensors")
    return net


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small colour images with smooth structure and noise (the CUD task needs natural-ish content)."""
    folder = tmp_path_factory.mktemp("defusion_images")
    rng = np.random.default_rng(0)
    _, x = np.mgrid[0:48, 0:64]
    for i in range(6):
        img = np.stack([np.sin(x / (3 + i) + c) * 0.5 + 0.5 for c in range(3)], -1) * 0.6 + rng.random((48, 64, 3)) * 0.2
        Image.fromarray((img * 255).clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def _random_state() -> dict[str, torch.Tensor]:
    """A randomly initialised state dict, the same every time (the init draws from the global RNG: forked here)."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return DeFusionNet().state_dict()


# ---------------------------------------------------------------------------------------------- layout


def test_defusion_parameter_count_and_shared_aliases() -> None:
    net = DeFusionNet()
    assert sum(p.numel() for p in net.parameters()) == 7_874_473
    state = net.state_dict()
    assert len(state) == 676
    assert state["encoder_lower.0.weight"].data_ptr() == state["encoder_upper.0.weight"].data_ptr()
    assert state["decoder_lower_layer4.0.layer.5.conv3.weight"].data_ptr() == state["decoder_upper_layer4.0.layer.5.conv3.weight"].data_ptr()


def test_defusion_state_dict_matches_released_key_list(shared_dir: Path) -> None:
    lines = (shared_dir / "reference" / "defusion-state-dict-keys.txt").read_text().splitlines()
    expected = []
    for line in lines:
        if line and not line.startswith("#"):
            name, shape = line.split("\t")
            expected.append((name, tuple(int(v) for v in re.findall(r"\d+", shape))))
    got = [(k, tuple(v.shape)) for k, v in DeFusionNet().state_dict().items()]
    assert got == expected


# ---------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("case", CASES)
def test_defusion_parity_all_outputs(golden: Path, golden_net: DeFusionNet, case: str) -> None:
    ir = torch.from_numpy(np.load(golden / f"{case}_input_ir.npy"))
    vis = torch.from_numpy(np.load(golden / f"{case}_input_vis.npy"))
    with torch.inference_mode():
        outs = run_pipeline(golden_net, ir, vis, all_outputs=True)
        fused_only = run_pipeline(golden_net, ir[:, :1], vis[:, :1])  # the method's path: 1 channel, fused only
    for name, out in zip(OUTPUTS, outs):
        assert_close_to_reference(out, np.load(golden / f"{case}_{name}.npy"), what=f"{case}_{name}")
    assert_close_to_reference(fused_only, np.load(golden / f"{case}_fused.npy"), what=f"{case}_fused (1-channel path)")


def test_defusion_parity_channels_last_within_float_rounding(golden: Path, golden_net: DeFusionNet) -> None:
    """The opt-in NHWC path sums in another order: not bit-identical, but within float rounding."""
    nhwc = DeFusionNet().eval().set_onednn_fusion(True)
    nhwc.load_state_dict(golden_net.state_dict())
    nhwc.to(memory_format=torch.channels_last)
    ir = torch.from_numpy(np.load(golden / "case2_input_ir.npy"))
    vis = torch.from_numpy(np.load(golden / "case2_input_vis.npy"))
    with torch.inference_mode():
        fused = run_pipeline(nhwc, ir, vis, channels_last=True).numpy()
    assert_close_to_reference(fused, np.load(golden / "case2_fused.npy"), what="case2_fused (channels_last)")


@pytest.mark.parametrize("case", CASES)
def test_defusion_parity_official_png_through_fuser(golden: Path, case: str) -> None:
    """The CLI path (Fuser + authors_preprocessing) writes the authors' *_recover.png to ±1 grey level."""
    from fusion_ros.fuser import Fuser

    fuser = Fuser(
        "defusion",
        device="cpu",
        options={"weights": str(golden / "weights_seed0.safetensors"), "authors_preprocessing": True},
        warmup=False,
    )
    ir = np.array(Image.open(golden / f"{case}_ir.png"))
    vis = np.array(Image.open(golden / f"{case}_vis.png").convert("RGB"))  # grey case1 as (g,g,g), like the authors' loader
    assert_grey_levels_close(fuser(ir, vis), np.array(Image.open(golden / f"{case}_fused_official.png")), what=case)


def test_defusion_authors_grey_is_pils_convert_l() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    expected = np.array(Image.fromarray(rgb).convert("L")).astype(np.float32) / 255
    got = authors_grey(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy()
    assert np.array_equal(got, expected)


# ---------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["authors_dict", "bare", "safetensors", "module_prefix"])
def test_defusion_loads_every_checkpoint_format(tmp_path: Path, fmt: str) -> None:
    state = _random_state()
    if fmt == "authors_dict":
        path = tmp_path / "models.pth"
        torch.save({"state_dict": state, "optimizers": {}, "schedulers": {}, "epoch": 50}, path)
    elif fmt == "bare":
        path = tmp_path / "bare.pth"
        torch.save(state, path)
    elif fmt == "module_prefix":
        path = tmp_path / "dp.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path))  # no shared storage allowed
    net = DeFusionNet()
    load_defusion_state_dict(net, path)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_defusion_wrong_checkpoint_names_the_keys(tmp_path: Path) -> None:
    state = _random_state()
    state.pop("fusion_rule.0.bias")
    state["extra.weight"] = torch.zeros(1)
    state["common_encoder.0.layer.0.conv1.weight"] = torch.zeros(3, 3, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(WeightsError) as err:
        load_defusion_state_dict(DeFusionNet(), path)
    msg = str(err.value)
    assert "fusion_rule.0.bias" in msg and "extra.weight" in msg and "common_encoder.0.layer.0.conv1.weight" in msg
    assert "\n" not in msg


def test_defusion_method_missing_file_is_a_weights_error(tmp_path: Path) -> None:
    from fusion_ros.fuser import create_method

    with pytest.raises(WeightsError, match="not found"):
        create_method("defusion", device=torch.device("cpu"), dtype=torch.float32, options={"weights": str(tmp_path / "nope.pth")})


# ---------------------------------------------------------------------------------------------- export


@pytest.mark.slow
def test_defusion_exported_graphs_equal_eager() -> None:
    """TorchScript and torch.export compute the eager function (other kernels and fusions: equal up to rounding)."""
    net = DeFusionNet().eval()
    net.load_state_dict(_random_state())
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 3, 41, 46, generator=gen), torch.rand(1, 3, 41, 46, generator=gen)  # odd sizes: the nearest-resize branch is in the graph
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches (documented)
        eager = net.set_onednn_fusion(True).fuse(x, y)
        scripted = export_torchscript(net, (41, 46))(x, y)
        exported = export_program(net, (41, 46)).module()(x, y)
    assert float(eager.abs().max()) > 0  # a non-trivial output to compare
    assert_close_to_reference(scripted, eager, what="TorchScript vs eager")
    assert_close_to_reference(exported, eager, what="torch.export vs eager")


@pytest.mark.parametrize("form", ["generic", "openvino"])
def test_export_mode_computes_the_eager_function(form: str) -> None:
    """Export mode's forms equal eager at an odd size: 1x1 convs before the upsamplings, and the nearest
    resize always applied (generic), or a crop for it and narrow split-attention layers as two dense convs
    with zero weights instead of one grouped conv and a channel split (openvino)."""
    from fusion_ros.methods.defusion.network import SPLIT_FREE_MAX_CHANNELS, SplitAttentionConv2d
    from fusion_ros.methods.defusion.testing import tiny_net

    net = tiny_net(4)
    widths = {m.conv.out_channels // 2 for m in net.modules() if isinstance(m, SplitAttentionConv2d)}
    assert min(widths) <= SPLIT_FREE_MAX_CHANNELS < max(widths)  # both forms run
    gen = torch.Generator().manual_seed(5)
    x, y = torch.rand(1, 3, 43, 37, generator=gen), torch.rand(1, 3, 43, 37, generator=gen)
    with torch.no_grad():
        eager = net.fuse(x, y)
        exported = net.set_export_mode(True, form).fuse(x, y)
    assert float(eager.abs().max()) > 0
    assert_close_to_reference(exported, eager, what="export mode vs eager")


def test_export_mode_refuses_an_unknown_form() -> None:
    from fusion_ros.methods.defusion.testing import tiny_net

    with pytest.raises(ValueError, match="unknown export form 'tflite'; valid: generic, openvino"):
        tiny_net(0).set_export_mode(True, "tflite")


# ---------------------------------------------------------------------------------------------- adapter


@pytest.mark.slow
def test_defusion_method_through_fuser_eager_and_torchscript_agree() -> None:
    from fusion_ros.fuser import Fuser

    rng = np.random.default_rng(2)
    ir = rng.integers(0, 256, (40, 52), dtype=np.uint8)
    vis = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    state = _random_state()
    eager = Fuser("defusion", device="cpu", random_init=True, warmup=False)
    eager.method.net.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = Fuser("defusion", device="cpu", random_init=True, warmup=False, options={"runtime": "torchscript"})
        scripted.method.net.load_state_dict(state)
        out_script = scripted(ir, vis)
    out = eager(ir, vis)
    assert out.shape == vis.shape and out.dtype == np.uint8
    assert_grey_levels_close(out_script, out, what="TorchScript vs eager through the Fuser")
    assert eager.method.color_space == "luma"


def test_defusion_rejects_images_smaller_than_the_padding() -> None:
    net = DeFusionNet().eval()
    with pytest.raises(InputError, match="16-pixel"):
        run_pipeline(net, torch.zeros(1, 1, 12, 40), torch.zeros(1, 1, 12, 40))


# ---------------------------------------------------------------------------------------------- training


def test_defusion_masks_cover_every_pixel() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        a, b = cud_masks(64, CUDConfig(), gen)
        assert set(a.unique().tolist()) <= {0.0, 1.0} and set(b.unique().tolist()) <= {0.0, 1.0}
        assert bool(((a + b) >= 1).all())


@pytest.mark.slow
def test_defusion_training_loss_falls(tiny_images: Path) -> None:
    torch.set_num_threads(1)  # speed only (tiny tensors: OpenMP hand-offs cost more than they gain); restored by conftest
    cfg = CUDConfig(image_size=32, batch_size=2)
    ds = CUDDataset(list_images(tiny_images), cfg, 2)
    view_a, view_b, target = (torch.stack(t) for t in zip(ds[0], ds[1]))
    net = DeFusionNet().train()
    net.load_state_dict(_random_state())
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    losses = []
    for _ in range(5):
        loss = cud_loss(net.forward_train(view_a, view_b), target, 0, cfg)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_defusion_training_is_seeded_and_leaves_the_global_rng_alone(tiny_images: Path, tmp_path: Path) -> None:
    """The seed decides the run (weight init, crops, masks, noise), and the caller's RNG is as it was."""
    torch.set_num_threads(1)  # speed only, as above
    cfg = CUDConfig(image_size=32, batch_size=2, epochs=1, num_samples=2)
    global_state = torch.random.get_rng_state()
    runs = [
        train(tiny_images, tmp_path / str(i), replace(cfg, seed=seed), device=torch.device("cpu"), workers=0, save_every=0,
              max_steps=1, progress=False)
        for i, seed in enumerate((5, 5, 6))
    ]
    assert torch.equal(torch.random.get_rng_state(), global_state)
    weights = [torch.load(tmp_path / str(i) / "latest.pth", weights_only=True)["state_dict"] for i in range(3)]
    assert runs[0] == runs[1] and all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())
    assert runs[0] != runs[2] and any(not torch.equal(v, weights[2][k]) for k, v in weights[0].items())


@pytest.mark.slow
@pytest.mark.parametrize("content", ["garbage", "tensor", "wrong weights"])
def test_defusion_training_refuses_a_bad_resume_file(tiny_images: Path, tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.pth"
    if content == "garbage":
        bad.write_bytes(b"not a checkpoint")
    else:
        torch.save(torch.zeros(3) if content == "tensor" else {"state_dict": {"conv.weight": torch.zeros(1)}, "epoch": 0}, bad)
    match = {"garbage": "cannot read", "tensor": "holds a Tensor", "wrong weights": "missing keys"}[content]
    with pytest.raises(WeightsError, match=match) as err:
        train(tiny_images, tmp_path / "run", CUDConfig(image_size=32, batch_size=2, epochs=1, num_samples=2), device=torch.device("cpu"),
              workers=0, save_every=0, resume=bad, progress=False)
    assert str(bad) in str(err.value)


def test_defusion_training_checkpoint_round_trips_and_resumes(tiny_images: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)  # speed only, as above
    cfg = CUDConfig(image_size=32, batch_size=2, epochs=2, num_samples=4).scaled(1e-4)  # every loss phase within 4 steps
    out = tmp_path / "run"
    first = train(tiny_images, out, cfg, device=torch.device("cpu"), workers=0, save_every=0, max_steps=2, progress=False)
    assert [h["step"] for h in first] == [0, 1]
    ckpt = torch.load(out / "latest.pth", map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"state_dict", "optimizers", "schedulers", "epoch"} and ckpt["epoch"] == 0
    net = DeFusionNet()
    load_defusion_state_dict(net, out / "latest.pth")
    for k, v in net.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k]), k
    second = train(tiny_images, out, cfg, device=torch.device("cpu"), workers=0, save_every=0, resume=out / "latest.pth", progress=False)
    assert [h["step"] for h in second] == [2, 3]
    assert torch.load(out / "latest.pth", map_location="cpu", weights_only=True)["epoch"] == 1
    assert all(np.isfinite(h["total"]) for h in first + second)
    assert second[-1]["fusion"] > 0  # the fusion term is on by step 3 at this schedule scale
