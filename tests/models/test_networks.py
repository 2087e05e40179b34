import pytest
import torch

from dsflow.models import make_oracle
from dsflow.models.networks import Oracle


@pytest.mark.parametrize(
    "arch,shape,options",
    [
        ("mlp", (1, 8, 8), {}),
        ("lenet5", (1, 28, 28), {}),
        ("lenet5", (1, 16, 16), {}),
        ("lenet5", (3, 32, 32), {}),
        ("resnet18_cifar", (3, 32, 32), {"width": 4}),
        ("convnet", (1, 28, 28), {"width": 8}),
        ("convnet", (1, 8, 8), {"width": 4, "depth": 2}),
        ("mlp", (1, 8, 8), {"hidden": []}),  # logistic regression
    ],
)
def test_architectures_take_flat_rows(arch, shape, options):
    d = shape[0] * shape[1] * shape[2]
    oracle = make_oracle(arch, input_dim=d, image_shape=shape, classes=[2, 5, 7], **options)
    out = oracle(torch.rand(4, d))
    assert out.shape == (4, 3)
    assert oracle.predict(torch.rand(4, d)).tolist()[0] in (2, 5, 7)


def test_lenet_classic_flatten_size():
    oracle = make_oracle("lenet5", input_dim=784, image_shape=(1, 28, 28), classes=range(10))
    feats = oracle.network.features(torch.zeros(1, 1, 28, 28))
    assert feats.shape == (1, 16, 5, 5)  # classic LeNet-5: the adaptive pool is the identity on 28x28


def test_convnet_is_the_distillation_convnet_and_refuses_too_small_images():
    oracle = make_oracle("convnet", input_dim=784, image_shape=(1, 28, 28), classes=range(10))
    convs = [m for m in oracle.network.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 128, 128] and oracle.network.fc.in_features == 128 * 3 * 3
    with pytest.raises(ValueError, match="lower options.depth"):
        make_oracle("convnet", input_dim=16, image_shape=(1, 4, 4), classes=range(2))


def test_wrong_feature_dimension_is_a_clear_error():
    oracle = make_oracle("lenet5", input_dim=784, image_shape=(1, 28, 28), classes=range(10))
    with pytest.raises(ValueError, match="expects rows of 784 features"):
        oracle(torch.rand(2, 64))


def test_bad_architecture_inputs():
    with pytest.raises(ValueError, match="valid: mlp, lenet5, resnet18_cifar"):
        make_oracle("vgg", input_dim=4, image_shape=None, classes=[0, 1])
    with pytest.raises(ValueError, match="needs image data"):
        make_oracle("lenet5", input_dim=64, image_shape=None, classes=[0, 1])
    with pytest.raises(ValueError, match="side >= 12"):
        make_oracle("lenet5", input_dim=64, image_shape=(1, 8, 8), classes=[0, 1])
    with pytest.raises(ValueError, match="sorted and unique"):
        Oracle(torch.nn.Linear(2, 2), input_dim=2, classes=[3, 1])


def test_normalisation_is_applied_inside_forward():
    oracle = make_oracle("lenet5", input_dim=2 * 16 * 16, image_shape=(2, 16, 16), classes=[0, 1])
    x = torch.rand(32, 2 * 16 * 16) * 3 + 1
    x[:, 256:] += 5  # channel 1 has another mean
    oracle.set_normalization(x)
    img = x.reshape(32, 2, 16, 16)
    expected_mean = img.transpose(0, 1).reshape(2, -1).mean(1)
    assert torch.allclose(oracle.mean, expected_mean, atol=1e-4)
    manual = oracle.network((img - oracle.mean.view(1, 2, 1, 1)) / oracle.std.view(1, 2, 1, 1))
    assert torch.allclose(oracle(x), manual, atol=1e-5)


def test_frozen_oracle_weights_survive_gradient_steps_on_inputs():
    # small images keep this fast; BatchNorm layers make "frozen" non-trivial (running stats)
    oracle = make_oracle("resnet18_cifar", input_dim=3 * 8 * 8, image_shape=(3, 8, 8), classes=range(10), width=4)
    oracle.freeze()
    before = {k: v.clone() for k, v in oracle.state_dict().items()}
    assert not any(p.requires_grad for p in oracle.parameters())
    oracle.train()  # a frozen oracle stays in eval mode (BatchNorm statistics must not move)
    assert not oracle.training and not any(m.training for m in oracle.modules())
    x = torch.rand(6, 3 * 8 * 8, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.5)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(oracle(x), torch.arange(6))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0  # the gradient reached the inputs
    after = oracle.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BatchNorm running stats
