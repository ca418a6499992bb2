"""The registry's builders (`build_base`, `<Class>.from_config`) and SAM/XSAM argument checks."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from tests.trainables.optim.conftest import closures, make_batches, make_model
from trainables.optim import GSAM, SAM, WSAM, XSAM, SharpnessAware, build_base
from xsam_contract import OPTIMIZERS, validate_trial_config

BASE_KW = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)

# Values differ from the defaults so a key that from_config drops is noticed.
CONFIG = dict(
    rho=0.2,
    steps=2,
    adaptive=True,
    eta=0.02,
    rho_max=0.4,
    alpha_max=1.5,
    alpha_delta=0.25,
    alpha=0.75,
    gsam_alpha=0.3,
    wsam_gamma=0.8,
    wsam_decouple=False,
)

EXPECTED_CLASS = {"sam": SAM, "xsam": XSAM, "gsam": GSAM, "wsam": WSAM, "asam": SAM}


def _config(name: str) -> dict[str, Any]:
    return validate_trial_config({"optimizer": name, **CONFIG})


@pytest.mark.parametrize("name", OPTIMIZERS.names)
def test_every_registry_entry_builds_its_optimizer(name: str) -> None:
    model = make_model()
    config = _config(name)
    opt = OPTIMIZERS.load(name)(model.parameters(), torch.optim.SGD, BASE_KW, config, model)
    if name == "sgd":
        assert type(opt) is torch.optim.SGD
        assert opt.defaults["lr"] == BASE_KW["lr"]
        return
    assert type(opt) is EXPECTED_CLASS[name]
    assert opt.model is model
    assert isinstance(opt.base_optimizer, torch.optim.SGD)
    assert opt.base_optimizer.defaults["momentum"] == BASE_KW["momentum"]
    for key in type(opt).config_keys:
        # rho_max/alpha/... are attributes; the α grid stands for alpha_max and alpha_delta
        if key in ("alpha_max", "alpha_delta"):
            assert opt.alphas[-1] == pytest.approx(1.5) and opt.alphas[1] == 0.25
        else:
            assert getattr(opt, key) == config[key], key
    assert opt.adaptive is (name == "asam" or CONFIG["adaptive"])


@pytest.mark.parametrize("cls", [SAM, XSAM, GSAM, WSAM])
def test_from_config_steps_like_the_constructor(cls: type[SharpnessAware]) -> None:
    config = validate_trial_config({"optimizer": cls.__name__.lower(), **CONFIG})
    a = make_model()
    b = copy.deepcopy(a)
    direct_kw = {k: config[k] for k in cls.config_keys}
    opt_a = cls.from_config(a.parameters(), torch.optim.SGD, BASE_KW, config, a)
    opt_b = cls(b.parameters(), torch.optim.SGD, model=b, **direct_kw, **BASE_KW)
    for i, (x, y) in enumerate(make_batches(3)):
        for model, opt in ((a, opt_a), (b, opt_b)):
            closure, probe = closures(model, x, y)
            opt.step(closure, probe=probe if i == 1 else None)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_build_base_ignores_config_and_model() -> None:
    model = make_model()
    opt = build_base(model.parameters(), torch.optim.AdamW, {"lr": 0.01}, _config("sgd"), model)
    assert type(opt) is torch.optim.AdamW and opt.defaults["lr"] == 0.01


def test_xsam_builds_on_sam() -> None:
    assert issubclass(XSAM, SAM)
    assert XSAM._search is SAM._search
    assert set(SAM.config_keys) < set(XSAM.config_keys)


@pytest.mark.parametrize("cls", [SAM, XSAM])
@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("alpha_delta", 0, "> 0"),
        ("alpha_delta", -0.1, "> 0"),
        ("rho_max", 0.0, "> 0"),
        ("alpha_max", -1.0, ">= 0"),
        ("rho", -0.1, ">= 0"),
        ("steps", 0, "an integer >= 1"),
    ],
)
def test_sam_and_xsam_reject_bad_arguments_alike(
    cls: type[SAM], field: str, value: float, allowed: str
) -> None:
    model = make_model()
    with pytest.raises(ValueError) as err:
        cls(model.parameters(), torch.optim.SGD, lr=0.1, **{field: value})
    assert str(err.value) == f"{field}={value!r} is not allowed; expected {allowed}"


def test_xsam_rejects_negative_alpha() -> None:
    with pytest.raises(ValueError, match=r"^alpha=-0.5 is not allowed; expected >= 0$"):
        XSAM(make_model().parameters(), torch.optim.SGD, lr=0.1, alpha=-0.5)
