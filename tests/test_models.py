"""The model factory and the exact parameter counts of docs/models.md."""

import jax
import jax.numpy as jnp
import pytest

from pfca_jax import models


def param_tree(name, attention='none', size=32, **options):
  model = models.create(name, attention=attention, **options)
  # eval_shape traces init without allocating or computing: ResNet-152 costs ~0.5 s.
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))['params']


REFERENCE_COUNTS = {  # torchvision, the SimAM reference code, BasicSR.
    'resnet18': 11_689_512,
    'resnet34': 21_797_672,
    'resnet50': 25_557_032,
    'resnet101': 44_549_160,
    'resnet152': 60_192_808,
    'cifar_resnet20': 278_324,
    'cifar_resnet32': 472_756,
    'cifar_resnet56': 861_620,
    'cifar_resnet110': 1_736_564,
    'cifar_resnet164': 1_727_284,
}


@pytest.mark.parametrize('attention', ['none', 'pfca', 'simam'])
@pytest.mark.parametrize('name', list(REFERENCE_COUNTS))
def test_parameter_free_attention_keeps_reference_counts(name, attention):
  assert models.count_params(param_tree(name, attention)) == REFERENCE_COUNTS[name]


@pytest.mark.parametrize('attention', ['none', 'pfca', 'simam'])
@pytest.mark.parametrize('scale, count', [(4, 1_517_571), (3, 1_554_499), (2, 1_369_859)])
def test_msrresnet_counts(scale, count, attention):
  assert models.count_params(param_tree('msrresnet', attention, size=8, scale=scale)) == count


def test_se_resnet50_count():
  # Each bottleneck with C output channels gains Dense(C, C/16) + Dense(C/16, C) with
  # biases: 2 C^2 / 16 + C / 16 + C. Stages: 3 x C=256, 4 x 512, 6 x 1024, 3 x 2048:
  #   3 x 8,464 + 4 x 33,312 + 6 x 132,160 + 3 x 526,464 = 2,530,992 over ResNet-50,
  # which is timm's seresnet50 (28,088,024).
  assert models.count_params(param_tree('resnet50', 'se')) == 25_557_032 + 2_530_992 == 28_088_024


def test_eca_resnet50_count():
  # ECA adds one bias-free 1-D kernel of size k(C) per block: k(256) = k(512) = k(1024) = 5,
  # k(2048) = 7, so 3 x 5 + 4 x 5 + 6 x 5 + 3 x 7 = 86.
  assert models.count_params(param_tree('resnet50', 'eca')) == 25_557_032 + 86


def test_submodule_names_mirror_pytorch():
  p = param_tree('resnet50')
  assert set(p) == {'conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4', 'fc'}
  assert [len(p[f'layer{i}']) for i in range(1, 5)] == [3, 4, 6, 3]
  block = p['layer2']['0']
  assert set(block) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'downsample'}
  assert block['downsample']['0']['kernel'].shape == (1, 1, 256, 512)  # torch: downsample.0.weight
  assert set(block['downsample']['1']) == {'scale', 'bias'}             # torch: downsample.1
  assert block['conv2']['kernel'].shape == (3, 3, 128, 128)
  assert p['fc']['kernel'].shape == (2048, 1000)
  # torchvision ResNet-50 has 53 convolutions and 53 BatchNorms.
  paths = [tuple(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(p)]
  assert sum(path[-2].startswith('conv') or path[-2] == '0' for path in paths if path[-1] == 'kernel') == 53
  assert sum(path[-1] == 'scale' for path in paths) == 53

  sr = param_tree('msrresnet', size=8)
  assert set(sr) == {'conv_first', 'body', 'upconv1', 'upconv2', 'conv_hr', 'conv_last'}
  assert set(sr['body']) == {str(i) for i in range(16)}
  assert set(sr['body']['15']) == {'conv1', 'conv2'}


def test_attention_lives_in_each_block():
  p = param_tree('cifar_resnet20', 'se')
  assert all('attention' in p[f'layer{s}'][str(b)] for s in (1, 2, 3) for b in range(3))
  sr = param_tree('msrresnet', 'eca', size=8)
  assert all('attention' in sr['body'][str(b)] for b in range(16))


@pytest.mark.parametrize('name, classes', [('resnet18', 1000), ('cifar_resnet20', 100)])
def test_num_classes(name, classes):
  assert param_tree(name)['fc']['kernel'].shape[-1] == classes
  assert param_tree(name, num_classes=10)['fc']['kernel'].shape[-1] == 10


def one_line_error(fn, *args, **kwargs) -> str:
  with pytest.raises(ValueError) as err:
    fn(*args, **kwargs)
  message = str(err.value)
  assert '\n' not in message
  return message


def test_factory_errors_name_bad_value_and_valid_ones():
  msg = one_line_error(models.create, 'resnet51')
  assert "'resnet51'" in msg and all(name in msg for name in models.MODELS)
  msg = one_line_error(models.create, 'resnet50', widthh=2)
  assert "'widthh'" in msg and all(o in msg for o in models.RESNET_OPTIONS)
  msg = one_line_error(models.create, 'msrresnet', attention_position='post_bn')
  assert "'attention_position'" in msg and 'scale' in msg
  msg = one_line_error(models.create, 'resnet50', attention='cbam')
  assert "'cbam'" in msg and 'none, pfca, se, eca, simam' in msg
  msg = one_line_error(models.create, 'resnet50', attention_position='pre_bn')
  assert "'pre_bn'" in msg and 'auto, post_bn, post_conv' in msg
  msg = one_line_error(models.create, 'resnet50', dtype='float8')
  assert "'float8'" in msg and 'bfloat16' in msg
  msg = one_line_error(models.create, 'msrresnet', scale=8)
  assert 'scale=8' in msg and '(2, 3, 4)' in msg
  msg = one_line_error(models.create, 'msrresnet', num_classes=10)
  assert 'num_classes=10' in msg
  msg = one_line_error(models.create, 'resnet50', num_classes=0)
  assert 'num_classes=0' in msg
  msg = one_line_error(models.create, 'resnet50', attention='pfca', attention_options={'reduction': 4})
  assert "'reduction'" in msg and 'lam' in msg


def test_dtype_names_are_accepted():
  model = models.create('cifar_resnet20', dtype='bfloat16')
  assert model.dtype == jnp.bfloat16
