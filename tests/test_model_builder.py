"""The model factory: offline ImageNet weights for EfficientNet-Lite, clear errors offline."""
import pytest
import torch
from PIL import Image

from going_modular import model_builder
from going_modular.model_builder import WeightsUnavailableError, create_model
from going_modular.utils import count_parameters

IMAGENET_PIZZA = 963


@pytest.mark.parametrize("name", ["effnet_lite0", "effnet_lite2"])
def test_lite_loads_real_imagenet_weights(name, shared_data):
    """strict=True key mapping + a real photo: the 1000-class ImageNet head says 'pizza'."""
    model, transform = create_model(name, num_classes=1000)
    sd = model_builder._lite_state_dict(*model_builder._LITE[name][1:3])
    mapped = model_builder.map_lite_keys(sd, model)
    import timm

    full = timm.create_model(model_builder._LITE[name][0], pretrained=False).eval()
    full.load_state_dict(mapped, strict=True)
    img = Image.open(shared_data / "custom_images" / "pizza-dad.jpeg").convert("RGB")
    with torch.inference_mode():
        probs = full(transform(img).unsqueeze(0)).softmax(1)[0]
    assert probs.argmax().item() == IMAGENET_PIZZA and probs.max() > 0.3


@pytest.mark.parametrize("name", ["effnet_lite0", "effnet_lite2"])
def test_lite_feature_extractor_is_frozen_but_head(name):
    model, transform = create_model(name, num_classes=3)
    params = count_parameters(model)
    assert params["trainable"] == 1280 * 3 + 3
    assert all(p.requires_grad for p in model.classifier.parameters())
    size = 224 if name == "effnet_lite0" else 260
    assert transform(Image.new("RGB", (500, 300))).shape == (3, size, size)


@pytest.mark.parametrize("name,head,features", [("effnetb2", "classifier", 1408), ("vit_b_16", "heads", 768)])
def test_torchvision_models_train_a_step_without_weights(name, head, features):
    model, transform = create_model(name, num_classes=3, weights=None)
    assert model_builder.head_name(model) == head
    assert count_parameters(model)["trainable"] == features * 3 + 3
    x = torch.stack([transform(Image.new("RGB", (320, 240), c)) for c in ("red", "green")])
    y = torch.tensor([0, 1])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    frozen_before = next(model.parameters()).detach().clone()
    head_before = [p.detach().clone() for p in getattr(model, head).parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.equal(next(model.parameters()), frozen_before)  # backbone untouched
    assert any(not torch.equal(a, b) for a, b in zip(head_before, getattr(model, head).parameters()))


def test_course_wrappers_and_seeded_heads():
    m1, _ = model_builder.create_effnetb2_model(num_classes=3, weights=None, seed=7)
    m2, _ = model_builder.create_effnetb2_model(num_classes=3, weights=None, seed=7)
    assert torch.equal(m1.classifier[1].weight, m2.classifier[1].weight)
    assert isinstance(m1.classifier[0], torch.nn.Dropout) and m1.classifier[0].p == 0.3
    vit, _ = model_builder.create_vit_model(num_classes=5, weights=None)
    assert vit.heads[0].out_features == 5


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


def test_unknown_model_name():
    with pytest.raises(ValueError, match="Unknown model 'resnet9000'"):
        create_model("resnet9000")
